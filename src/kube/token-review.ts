// Authenticates a caller's Kubernetes service-account JWT with the TokenReview API (as istiod does) and turns it into
// a SPIFFE identity. The JWT itself is never logged or put in an error.
import { createHash } from "node:crypto";
import type { KubeClient } from "./client.js";

export class AuthenticationError extends Error {
  override readonly name = "AuthenticationError";
}

export interface ReviewedIdentity {
  namespace: string;
  serviceAccount: string;
  spiffeId: string;
}

interface TokenReviewStatus {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string };
}

/** Reviews tokens; successful reviews are cached briefly (keyed by a hash of the token) to spare the apiserver. */
export class TokenReviewer {
  private readonly cache = new Map<string, { identity: ReviewedIdentity; until: number }>();

  constructor(
    private readonly kube: KubeClient,
    private readonly audience: string,
    private readonly trustDomain: string,
    private readonly cacheMs = 30_000,
  ) {}

  async review(token: string): Promise<ReviewedIdentity> {
    const key = createHash("sha256").update(token).digest("hex");
    const cached = this.cache.get(key);
    if (cached && cached.until > Date.now()) return cached.identity;
    const res = await this.kube.create<{ status?: TokenReviewStatus }>("/apis/authentication.k8s.io/v1/tokenreviews", {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenReview",
      spec: { token, audiences: [this.audience] },
    });
    const status = res.status ?? {};
    if (!status.authenticated) {
      throw new AuthenticationError(
        `the token was rejected by TokenReview (expected a service-account token with audience ${this.audience})`,
      );
    }
    if (status.audiences && !status.audiences.includes(this.audience)) {
      throw new AuthenticationError(`the token is not for audience ${this.audience}`);
    }
    const m = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(status.user?.username ?? "");
    if (!m) throw new AuthenticationError("the token does not belong to a service account");
    const identity = {
      namespace: m[1]!,
      serviceAccount: m[2]!,
      spiffeId: `spiffe://${this.trustDomain}/ns/${m[1]}/sa/${m[2]}`,
    };
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(key, { identity, until: Date.now() + this.cacheMs });
    return identity;
  }
}
