// Token auth: a Vault token handed in through a file (written by an operator, a CSI driver, Vault Agent). There is no
// credential to log in again with, so a "login" re-reads the file and asks Vault about the token (lookup-self): a
// token replaced in the file is picked up at the next login; one that expired or was revoked while the file still
// holds it is a clear error naming the file. The session renews it (renew-self) while it is renewable, and never
// revokes it at shutdown: it is the operator's, not the agent's. The token never reaches a log line or an error.
import { HttpStatusError } from "../net/http-json.js";
import { readCredentialFile, type AuthMethod, type AuthSettings } from "./auth.js";

export function tokenFileAuthMethod(opts: Pick<AuthSettings, "vaultTokenFile">): AuthMethod {
  return {
    name: "token",
    title: "a token from a file",
    logFields: { tokenFile: opts.vaultTokenFile },
    ownsToken: false,
    async login(vault) {
      const token = await readCredentialFile(opts.vaultTokenFile, "Vault token", "a Vault token");
      try {
        const info = await vault.lookupSelf(token);
        return {
          client_token: token,
          accessor: info.accessor,
          policies: info.policies ?? [],
          lease_duration: info.ttl,
          renewable: info.renewable,
        };
      } catch (err) {
        if (err instanceof HttpStatusError && err.status === 403)
          throw new Error(
            `Vault refuses the token in ${opts.vaultTokenFile} (HTTP 403: expired, revoked or unknown); the token ` +
              `method cannot log in again by itself: write a valid token to ${opts.vaultTokenFile}`,
            { cause: err },
          );
        throw err;
      }
    },
  };
}
