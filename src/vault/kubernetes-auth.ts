// Kubernetes and JWT auth: both present the pod's projected service-account token (re-read at every login: the
// kubelet rotates it) as `{role, jwt}` to `auth/<mount>/login`. Kubernetes auth has Vault check it with a TokenReview
// against the apiserver; JWT auth has Vault check its signature against the issuer's keys (its discovery document or
// configured public keys), for private clusters whose apiserver Vault cannot reach. Neither the JWT nor the Vault token
// ever reaches a log line or an error message.
import type { Logger } from "pino";
import type { AgentMetrics } from "../observability/metrics.js";
import type { Clock } from "../util/clock.js";
import { VaultTokenSession, readCredentialFile, type AuthMethod } from "./auth.js";
import type { VaultClient } from "./client.js";

export interface KubernetesAuthOptions {
  mountPath: string;
  role: string;
  /** File holding the service-account JWT (a projected token with the Vault audience). */
  tokenPath: string;
}

const SA_TOKEN = "service-account token";
const SA_TOKEN_EXPECTED = "a projected token with the Vault audience";

/** Kubernetes auth: Vault reviews the service-account JWT with the apiserver (TokenReview). */
export function kubernetesAuthMethod(opts: KubernetesAuthOptions): AuthMethod {
  return {
    name: "kubernetes",
    title: "Kubernetes auth",
    logFields: { mount: opts.mountPath, role: opts.role },
    ownsToken: true,
    async login(vault) {
      const jwt = await readCredentialFile(opts.tokenPath, SA_TOKEN, SA_TOKEN_EXPECTED);
      return vault.kubernetesLogin(opts.mountPath, opts.role, jwt);
    },
  };
}

/** JWT auth: the same service-account JWT, checked by Vault against the issuer's keys (no call to the apiserver). */
export function jwtAuthMethod(opts: KubernetesAuthOptions): AuthMethod {
  return {
    name: "jwt",
    title: "JWT auth",
    logFields: { mount: opts.mountPath, role: opts.role },
    ownsToken: true,
    async login(vault) {
      const jwt = await readCredentialFile(opts.tokenPath, SA_TOKEN, SA_TOKEN_EXPECTED);
      return vault.login(opts.mountPath, { role: opts.role, jwt });
    },
  };
}

/** A token session on Kubernetes auth (the default method). */
export class KubernetesAuth extends VaultTokenSession {
  constructor(vault: VaultClient, opts: KubernetesAuthOptions, log: Logger, metrics: AgentMetrics, clock?: Clock) {
    super(vault, kubernetesAuthMethod(opts), log, metrics, clock);
  }
}
