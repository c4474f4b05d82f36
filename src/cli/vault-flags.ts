// The Vault and Kubernetes-auth section every Vault-using mode shares (sidecar, init, doctor, setup-vault, relay):
// the same flags, environment variables and parsers; each mode's defaults object supplies its own defaults.
import type { AuthSettings } from "../vault/auth.js";
import { fieldFlags, valueFlag, type FlagTable } from "./flags.js";
import { Expected, authMount, durationMs, nonEmpty, text, vaultName, vaultUrlProblem } from "./validate.js";

export interface VaultAuthSection {
  vault: { address: string; caFile: string | undefined; namespace: string | undefined };
  auth: AuthSettings;
}

/** The flags of the section, in help order. The address is checked with the rest of the config (vaultUrlProblem). */
export function vaultAuthFlags<C extends VaultAuthSection>(): FlagTable<C> {
  const { option } = fieldFlags<C>();
  return {
    "vault-addr": option("Vault (or OpenBao) address, e.g. https://vault.vault:8200", text, (c) => c.vault.address, {
      env: "VAULT_ADDR",
      arg: "URL",
    }),
    "vault-cacert": valueFlag<C, string>({
      help: "PEM file of the CAs that sign Vault's TLS certificate",
      defaultText: "the system CAs",
      env: "VAULT_CACERT",
      arg: "FILE",
      parse: text,
      set: (c, v) => (c.vault.caFile = v || undefined),
    }),
    "vault-namespace": valueFlag<C, string>({
      help: "Vault namespace",
      env: "VAULT_NAMESPACE",
      parse: text,
      set: (c, v) => (c.vault.namespace = v || undefined),
    }),
    "auth-mount": option(
      "Kubernetes auth mount (kubernetes, auth/kubernetes and /v1/auth/kubernetes/ all mean the same)",
      authMount,
      (c) => c.auth.mountPath,
    ),
    "auth-role": option("Kubernetes auth role", vaultName, (c) => c.auth.role),
    "token-path": option(
      "projected service-account token file, re-read at every login",
      nonEmpty,
      (c) => c.auth.tokenPath,
      { arg: "FILE" },
    ),
  };
}

/**
 * The Vault connection problems every Vault-using mode reports the same way: a missing or unusable address, a CA
 * bundle without a certificate. `name` says how the mode names the field (a config path or a flag).
 */
export function vaultConnectionProblems(
  vault: { address: string; caPem?: string },
  name: { address: string; ca: string },
): string[] {
  const p: string[] = [];
  if (!vault.address) {
    p.push(
      `${name.address}: missing; expected the Vault URL, e.g. https://vault.vault:8200 (flag --vault-addr or VAULT_ADDR)`,
    );
  } else {
    const problem = vaultUrlProblem(vault.address);
    if (problem) p.push(`${name.address}: ${problem}`);
  }
  if (vault.caPem !== undefined && !vault.caPem.includes("BEGIN CERTIFICATE"))
    p.push(`${name.ca}: not a PEM certificate bundle; expected one or more -----BEGIN CERTIFICATE----- blocks`);
  return p;
}

/** --vault-probe-interval (sidecar and relay): the help, and its parser: 0 (off) or 1s to 1h. */
export const VAULT_PROBE_HELP =
  "probe Vault's sys/health this often for the vault_up metric (alerts within a minute of an outage); 0 disables";

export function vaultProbeInterval(v: string): number {
  const ms = durationMs("15s (0 disables)", 0, 3600)(v);
  // Faster would only load Vault; the alert waits a minute anyway.
  if (ms !== 0 && ms < 1000) throw new Expected("0 (off) or a duration from 1s to 1h, such as 15s");
  return ms;
}
