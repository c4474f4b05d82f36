// Vault's TLS-certificate auth method (`cert` in Vault and OpenBao): the credential is the client certificate the
// connection itself presents (VAULT_CLIENT_CERT/KEY, src/vault/transport.ts), so a login sends only the optional
// certificate-role name. Vault binds the token to that certificate: renew-self must come over a connection presenting
// it too, which the shared transport does for every request. The token lifecycle (renew at 2/3 of the lease, log in
// again when renewal is refused or a call gets 403, revoke at shutdown) is KubernetesAuth's, with method "cert".
import type { VaultAuth, VaultClient } from "./client.js";

/** One cert-auth login at auth/<mount>/login; `role` names the certificate role (auth/<mount>/certs/<role>). */
export function certLogin(vault: VaultClient, mount: string, role: string | undefined): Promise<VaultAuth> {
  return vault.certLogin(mount, role);
}
