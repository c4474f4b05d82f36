// Authenticates a caller's Kubernetes service-account JWT with the TokenReview API (as istiod does) and turns it into
// a SPIFFE identity. The JWT itself is never logged or put in an error.
import { createHash } from "node:crypto";
import type { AgentMetrics } from "../observability/metrics.js";
import type { KubeClient } from "./client.js";

/** Why a token was refused; also the metric and log-sampling label. */
export type AuthenticationFailure =
  | "no_status"
  | "review_error"
  | "not_authenticated"
  | "no_audiences"
  | "wrong_audience"
  | "not_service_account"
  | "not_service_account_group";

export class AuthenticationError extends Error {
  override readonly name = "AuthenticationError";
  constructor(
    readonly reason: AuthenticationFailure,
    message: string,
  ) {
    super(message);
  }
}

export interface ReviewedIdentity {
  namespace: string;
  serviceAccount: string;
  spiffeId: string;
  /**
   * What the apiserver says the token is bound to (TokenReview status.user.extra, first value of each key, as istiod's
   * tokenreview package reads them): set only for tokens bound to a pod (TokenRequest boundObjectRef, i.e. every
   * projected token a kubelet mounts), and node-name only on apiservers that record it (1.30+). The caller cannot
   * choose them: they come from the apiserver's answer, not the request.
   */
  podName?: string;
  podUid?: string;
  nodeName?: string;
}

/** TokenReview extra keys of a pod-bound token (k8s.io/apiserver serviceaccount claims). */
export const POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name";
export const POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid";
export const NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name";

/** The group the apiserver puts every service-account token's user in. */
const SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts";
/** system:serviceaccount:<namespace (DNS-1123 label)>:<name (DNS-1123 subdomain)>. */
const SERVICE_ACCOUNT_USER =
  /^system:serviceaccount:([a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?):([a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?)$/;

/**
 * Reads a TokenReview answer strictly: anything short of an authenticated service-account user whose token the
 * apiserver confirmed for `audience` is refused. A missing field is a refusal, not a pass: an apiserver (or a proxy in
 * front of it) that omits `audiences` has not confirmed the audience.
 */
export function identityFromTokenReview(answer: unknown, audience: string, trustDomain: string): ReviewedIdentity {
  const status = (answer as { status?: unknown } | null)?.status;
  if (status === null || typeof status !== "object")
    throw new AuthenticationError("no_status", "the TokenReview answer has no status; expected status.authenticated");
  const s = status as { authenticated?: unknown; error?: unknown; audiences?: unknown; user?: unknown };
  if (typeof s.error === "string" && s.error !== "") {
    throw new AuthenticationError(
      "review_error",
      `the token was rejected by TokenReview (${printable(s.error)}); expected a service-account token with audience ${audience}`,
    );
  }
  if (s.authenticated !== true) {
    throw new AuthenticationError(
      "not_authenticated",
      `the token was rejected by TokenReview (expected a service-account token with audience ${audience})`,
    );
  }
  if (!Array.isArray(s.audiences)) {
    throw new AuthenticationError(
      "no_audiences",
      `TokenReview did not confirm the token's audiences; expected it to list ${audience}`,
    );
  }
  if (!s.audiences.includes(audience)) {
    throw new AuthenticationError(
      "wrong_audience",
      `the token is for audience ${s.audiences.map((a) => printable(String(a))).join(", ") || "(none)"}, not ${audience}`,
    );
  }
  const user = (s.user ?? {}) as { username?: unknown; groups?: unknown; extra?: unknown };
  const m = typeof user.username === "string" ? SERVICE_ACCOUNT_USER.exec(user.username) : null;
  if (!m) {
    throw new AuthenticationError(
      "not_service_account",
      "the token does not belong to a service account; expected user system:serviceaccount:<namespace>:<name>",
    );
  }
  if (!Array.isArray(user.groups) || !user.groups.includes(SERVICE_ACCOUNTS_GROUP)) {
    throw new AuthenticationError(
      "not_service_account_group",
      `the token's user is not in group ${SERVICE_ACCOUNTS_GROUP}; only service-account tokens are accepted`,
    );
  }
  const [, namespace = "", serviceAccount = ""] = m;
  const extra = (user.extra ?? {}) as Record<string, unknown>;
  const first = (key: string): string | undefined => {
    const v = extra[key];
    const s0: unknown = Array.isArray(v) ? (v as unknown[])[0] : undefined;
    return typeof s0 === "string" && s0 !== "" ? s0 : undefined;
  };
  const podName = first(POD_NAME_EXTRA);
  const podUid = first(POD_UID_EXTRA);
  const nodeName = first(NODE_NAME_EXTRA);
  return {
    namespace,
    serviceAccount,
    spiffeId: `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`,
    ...(podName ? { podName } : {}),
    ...(podUid ? { podUid } : {}),
    ...(nodeName ? { nodeName } : {}),
  };
}

/** Reviews tokens; successful reviews are cached briefly (keyed by a hash of the token) to spare the apiserver. */
export class TokenReviewer {
  private readonly cache = new Map<string, { identity: ReviewedIdentity; until: number }>();

  constructor(
    private readonly kube: KubeClient,
    private readonly audience: string,
    private readonly trustDomain: string,
    private readonly cacheMs = 30_000,
    private readonly metrics?: AgentMetrics,
  ) {}

  /** The identity of a token reviewed successfully in the last cacheMs, without asking the apiserver. */
  cached(token: string): ReviewedIdentity | undefined {
    const cached = this.cache.get(cacheKey(token));
    return cached && cached.until > Date.now() ? cached.identity : undefined;
  }

  async review(token: string): Promise<ReviewedIdentity> {
    const hit = this.cached(token);
    if (hit) return hit;
    let answer: unknown;
    try {
      answer = await this.kube.create<unknown>("/apis/authentication.k8s.io/v1/tokenreviews", {
        apiVersion: "authentication.k8s.io/v1",
        kind: "TokenReview",
        spec: { token, audiences: [this.audience] },
      });
    } catch (err) {
      this.metrics?.tokenReviews.inc({ outcome: "error" });
      throw err;
    }
    let identity: ReviewedIdentity;
    try {
      identity = identityFromTokenReview(answer, this.audience, this.trustDomain);
    } catch (err) {
      this.metrics?.tokenReviews.inc({ outcome: "refused" });
      throw err;
    }
    this.metrics?.tokenReviews.inc({ outcome: "authenticated" });
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(cacheKey(token), { identity, until: Date.now() + this.cacheMs });
    return identity;
  }
}

function cacheKey(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

/** Text from the apiserver, made safe for one log line or status message: printable ASCII, at most 200 chars. */
function printable(text: string): string {
  const clean = text.replace(/[^\x20-\x7e]/g, "?");
  return clean.length > 200 ? `${clean.slice(0, 200)}…` : clean;
}
