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

export function createAuthMethod(auth: AuthSettings): AuthMethod {
  switch (auth.method) {
    case "kubernetes":
      return kubernetesAuthMethod(auth);
    case "jwt":
      return jwtAuthMethod(auth);
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
