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
  /**
   * A JWT held in memory instead of the file: doctor's token from the TokenRequest API (checked from a laptop, where
   * there is no projected token file). The agent never sets it.
   */
  jwt?: string | undefined;
}

const SA_TOKEN = "service-account token";
const SA_TOKEN_EXPECTED = "a projected token with the Vault audience";

function serviceAccountJwt(opts: KubernetesAuthOptions): Promise<string> {
  return opts.jwt !== undefined
    ? Promise.resolve(opts.jwt)
    : readCredentialFile(opts.tokenPath, SA_TOKEN, SA_TOKEN_EXPECTED);
}

/**
 * The two methods that present the service-account JWT as `{role, jwt}`; they differ only in who checks it:
 * Kubernetes auth has Vault review it with the apiserver (TokenReview), JWT auth checks it against the issuer's keys
 * (no call to the apiserver).
 */
const SERVICE_ACCOUNT_JWT_METHODS = { kubernetes: "Kubernetes auth", jwt: "JWT auth" } as const;

function serviceAccountJwtMethod(
  name: keyof typeof SERVICE_ACCOUNT_JWT_METHODS,
  opts: KubernetesAuthOptions,
): AuthMethod {
  return {
    name,
    title: SERVICE_ACCOUNT_JWT_METHODS[name],
    logFields: { mount: opts.mountPath, role: opts.role },
    ownsToken: true,
    async login(vault) {
      return vault.login(opts.mountPath, { role: opts.role, jwt: await serviceAccountJwt(opts) });
    },
  };
}

export const kubernetesAuthMethod = (opts: KubernetesAuthOptions): AuthMethod =>
  serviceAccountJwtMethod("kubernetes", opts);
export const jwtAuthMethod = (opts: KubernetesAuthOptions): AuthMethod => serviceAccountJwtMethod("jwt", opts);

/** A token session on Kubernetes auth (the default method). */
export class KubernetesAuth extends VaultTokenSession {
  constructor(vault: VaultClient, opts: KubernetesAuthOptions, log: Logger, metrics: AgentMetrics, clock?: Clock) {
    super(vault, kubernetesAuthMethod(opts), log, metrics, clock);
  }
}
