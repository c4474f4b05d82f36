// AppRole auth: role-id and secret-id are read from files at every login, because whatever delivers them (a CSI
// driver, a Secret volume, an operator's job) rotates the secret-id and destroys the old one. Neither value ever
// reaches a log line or an error message.
import { readCredentialFile, type AuthMethod, type AuthSettings } from "./auth.js";

export function appRoleAuthMethod(opts: Pick<AuthSettings, "mountPath" | "roleIdFile" | "secretIdFile">): AuthMethod {
  return {
    name: "approle",
    title: "AppRole auth",
    logFields: { mount: opts.mountPath, roleIdFile: opts.roleIdFile, secretIdFile: opts.secretIdFile },
    ownsToken: true,
    async login(vault) {
      const roleId = await readCredentialFile(opts.roleIdFile, "AppRole role-id", "the AppRole's role-id");
      const secretId = await readCredentialFile(opts.secretIdFile, "AppRole secret-id", "a current AppRole secret-id");
      return vault.login(opts.mountPath, { role_id: roleId, secret_id: secretId });
    },
  };
}
