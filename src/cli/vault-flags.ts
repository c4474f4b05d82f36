// The Vault and Kubernetes-auth section every Vault-using mode shares (sidecar, init, doctor, setup-vault, relay):
// the same flags, environment variables and parsers; each mode's defaults object supplies its own defaults.
import { valueFlag, type FlagTable } from "./flags.js";
import { authMount, nonEmpty, text, vaultName } from "./validate.js";

export interface VaultAuthSection {
  vault: { address: string; caFile: string | undefined; namespace: string | undefined };
  auth: { mountPath: string; role: string; tokenPath: string };
}

/** The flags of the section, in help order. The address is checked with the rest of the config (vaultUrlProblem). */
export function vaultAuthFlags<C extends VaultAuthSection>(): FlagTable<C> {
  return {
    "vault-addr": valueFlag<C, string>({
      help: "Vault (or OpenBao) address, e.g. https://vault.vault:8200",
      env: "VAULT_ADDR",
      arg: "URL",
      parse: text,
      set: (c, v) => (c.vault.address = v),
      get: (c) => c.vault.address,
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
    "auth-mount": valueFlag<C, string>({
      help: "Kubernetes auth mount (kubernetes, auth/kubernetes and /v1/auth/kubernetes/ all mean the same)",
      parse: authMount,
      set: (c, v) => (c.auth.mountPath = v),
      get: (c) => c.auth.mountPath,
    }),
    "auth-role": valueFlag<C, string>({
      help: "Kubernetes auth role",
      parse: vaultName,
      set: (c, v) => (c.auth.role = v),
      get: (c) => c.auth.role,
    }),
    "token-path": valueFlag<C, string>({
      help: "projected service-account token file, re-read at every login",
      arg: "FILE",
      parse: nonEmpty,
      set: (c, v) => (c.auth.tokenPath = v),
      get: (c) => c.auth.tokenPath,
    }),
  };
}
