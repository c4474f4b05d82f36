// The Vault and Kubernetes-auth section every Vault-using mode shares (sidecar, init, doctor, setup-vault, relay):
// the same flags, environment variables and parsers; each mode's defaults object supplies its own defaults.
import { AUTH_METHOD_NAMES, DEFAULT_AUTH_MOUNTS, type AuthMethodName, type AuthSettings } from "../vault/auth.js";
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
    "auth-method": option(
      "how to log in to Vault: kubernetes (TokenReview by Vault), jwt (the same service-account token checked " +
        "against the issuer's keys: private clusters), approle (--role-id-file, --secret-id-file), token " +
        "(--vault-token-file) or cert (TLS client certificate)",
      authMethod,
      (c) => c.auth.method,
      { arg: "METHOD" },
    ),
    "auth-mount": option(
      "auth mount of that method (kubernetes, auth/kubernetes and /v1/auth/kubernetes/ all mean the same)",
      authMount,
      (c) => c.auth.mountPath,
      { defaultText: "the method's name: kubernetes, jwt, approle, cert" },
    ),
    "auth-role": option("role of the kubernetes, jwt or cert auth method", vaultName, (c) => c.auth.role),
    "token-path": option(
      "kubernetes, jwt: projected service-account token file, re-read at every login",
      nonEmpty,
      (c) => c.auth.tokenPath,
      { arg: "FILE" },
    ),
    "role-id-file": option(
      "approle: file holding the role-id, re-read at every login",
      nonEmpty,
      (c) => c.auth.roleIdFile,
      {
        arg: "FILE",
      },
    ),
    "secret-id-file": option(
      "approle: file holding the secret-id, re-read at every login (it may rotate)",
      nonEmpty,
      (c) => c.auth.secretIdFile,
      { arg: "FILE" },
    ),
    "vault-token-file": option(
      "token: file holding a Vault token; re-read when Vault refuses the held one, renewed while renewable, " +
        "never revoked by the agent",
      nonEmpty,
      (c) => c.auth.vaultTokenFile,
      { arg: "FILE" },
    ),
  };
}

function authMethod(v: string): AuthMethodName {
  const m = v.trim().toLowerCase();
  if ((AUTH_METHOD_NAMES as readonly string[]).includes(m)) return m as AuthMethodName;
  throw new Expected(AUTH_METHOD_NAMES.join(", "));
}

/**
 * Defaults that follow --auth-method: another method's mount is the method's name unless --auth-mount names one (the
 * default and the policy's kubernetesAuth mount are Kubernetes auth's). Called by every mode after its flags.
 */
export function resolveAuthDefaults(auth: AuthSettings, mountGiven: boolean): void {
  if (!mountGiven && auth.method !== "kubernetes") auth.mountPath = DEFAULT_AUTH_MOUNTS[auth.method];
}

/** What the chosen method needs and what it would silently ignore, each with the flag to use. */
export function authSettingsProblems(auth: AuthSettings, given: (flag: string) => boolean): string[] {
  const p: string[] = [];
  const m = `--auth-method=${auth.method}`;
  if (auth.method !== "token" && (!auth.mountPath || /\s/.test(auth.mountPath)))
    p.push(`--auth-mount: "${auth.mountPath}" is not a mount path; expected e.g. ${DEFAULT_AUTH_MOUNTS[auth.method]}`);
  if ((auth.method === "kubernetes" || auth.method === "jwt") && !auth.role)
    p.push(`--auth-role: missing; ${m} needs the Vault role name, e.g. istiod-agent`);
  if ((auth.method === "kubernetes" || auth.method === "jwt") && !auth.tokenPath)
    p.push(`--token-path: missing; ${m} needs the path of the projected service-account token`);
  if (auth.method === "approle") {
    if (!auth.roleIdFile) p.push(`--role-id-file: missing; ${m} needs the file holding the AppRole's role-id`);
    if (!auth.secretIdFile) p.push(`--secret-id-file: missing; ${m} needs the file holding a current secret-id`);
  }
  if (auth.method === "token" && !auth.vaultTokenFile)
    p.push(`--vault-token-file: missing; ${m} needs the file holding a Vault token`);
  if (auth.method === "cert")
    p.push(`${m}: TLS-certificate auth is not available in this build; expected kubernetes, jwt, approle or token`);
  // A credential flag of another method would be ignored: say so rather than log in some other way than meant.
  const belongs: Record<string, readonly AuthMethodName[]> = {
    "role-id-file": ["approle"],
    "secret-id-file": ["approle"],
    "vault-token-file": ["token"],
  };
  for (const [flag, methods] of Object.entries(belongs)) {
    if (given(flag) && !methods.includes(auth.method))
      p.push(
        `--${flag}: only used with --auth-method=${methods.join("|")}, not with ${m}; remove it or change the method`,
      );
  }
  if (auth.method === "token" && given("auth-mount"))
    p.push(`--auth-mount: not used with ${m} (the token is used as it is); remove it`);
  return p;
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
