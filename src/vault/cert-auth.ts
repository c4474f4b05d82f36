// Vault's TLS-certificate auth method (`cert` in Vault and OpenBao): the credential is the client certificate the
// connection itself presents (VAULT_CLIENT_CERT/KEY, read and re-read on rotation by src/vault/transport.ts), so a
// login sends only the optional certificate-role name. Vault binds the token to that certificate: renew-self must come
// over a connection presenting it too, which the shared transport does for every request. The token lifecycle (renew
// at 2/3 of the lease, log in again when renewal is refused or a call gets 403, revoke at shutdown) is
// VaultTokenSession's, as for every method.
import type { AuthMethod, AuthSettings } from "./auth.js";

export function certAuthMethod(opts: Pick<AuthSettings, "mountPath" | "role">): AuthMethod {
  return {
    name: "cert",
    title: "TLS certificate auth",
    logFields: { mount: opts.mountPath, ...(opts.role ? { role: opts.role } : {}) },
    ownsToken: true,
    // `name` picks the certificate role (auth/<mount>/certs/<role>); without it Vault tries every role.
    login: (vault) => vault.login(opts.mountPath, opts.role ? { name: opts.role } : {}),
  };
}
