// The auth method named by the configuration (--auth-method), and the token session every Vault-using mode holds.
// A new method adds its file beside kubernetes-auth.ts, a case here, and its settings to AuthSettings.
import type { Logger } from "pino";
import type { AgentMetrics } from "../observability/metrics.js";
import type { Clock } from "../util/clock.js";
import { VaultTokenSession, type AuthMethod, type AuthSettings } from "./auth.js";
import type { VaultClient } from "./client.js";
import { jwtAuthMethod, kubernetesAuthMethod } from "./kubernetes-auth.js";
import { appRoleAuthMethod } from "./approle-auth.js";
import { tokenFileAuthMethod } from "./token-file-auth.js";
import { certAuthMethod } from "./cert-auth.js";

/**
 * `serviceAccountJwt` replaces the token file of the kubernetes and jwt methods with a JWT held in memory (doctor's
 * requested token); the other methods have no JWT and ignore it.
 */
export function createAuthMethod(auth: AuthSettings, opts: { serviceAccountJwt?: string } = {}): AuthMethod {
  switch (auth.method) {
    case "kubernetes":
      return kubernetesAuthMethod({ ...auth, jwt: opts.serviceAccountJwt });
    case "jwt":
      return jwtAuthMethod({ ...auth, jwt: opts.serviceAccountJwt });
    case "approle":
      return appRoleAuthMethod(auth);
    case "token":
      return tokenFileAuthMethod(auth);
    case "cert":
      return certAuthMethod(auth);
  }
}

export function createAuthSession(
  vault: VaultClient,
  auth: AuthSettings,
  log: Logger,
  metrics: AgentMetrics,
  clock?: Clock,
): VaultTokenSession {
  return new VaultTokenSession(vault, createAuthMethod(auth), log, metrics, clock);
}
