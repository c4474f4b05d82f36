// TokenRequest: a short-lived, audience-bound token for a service account, minted by the apiserver. `doctor` uses it
// to log in to Vault as istiod would, from a laptop, before istiod's pod exists. The token is returned to the caller
// only; errors name the service account and the apiserver's own message, never the token.
import type { KubeClient } from "./client.js";
import { HttpStatusError } from "../net/http-json.js";

export interface TokenRequestSpec {
  namespace: string;
  serviceAccount: string;
  audience: string;
  /** The apiserver raises anything below 600 s to 600 s (and may cap long ones), so 600 is the shortest honoured. */
  expirationSeconds: number;
}

export interface RequestedToken {
  token: string;
  /** When the apiserver says it expires (status.expirationTimestamp), if it said. */
  expiresAt: Date | undefined;
}

/** Why a TokenRequest failed, in words an operator can act on. */
export class TokenRequestError extends Error {
  constructor(
    message: string,
    /**
     * "not_found": no such service account; "forbidden": the caller may not create serviceaccounts/token;
     * "unauthenticated": the apiserver did not accept the caller's credentials at all.
     */
    readonly reason: "not_found" | "forbidden" | "unauthenticated" | "other",
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "TokenRequestError";
  }
}

/** `POST /api/v1/namespaces/NS/serviceaccounts/SA/token` with one audience. */
export async function requestServiceAccountToken(kube: KubeClient, spec: TokenRequestSpec): Promise<RequestedToken> {
  const who = `${spec.namespace}/${spec.serviceAccount}`;
  const path = `/api/v1/namespaces/${encodeURIComponent(spec.namespace)}/serviceaccounts/${encodeURIComponent(spec.serviceAccount)}/token`;
  let answer: { status?: { token?: unknown; expirationTimestamp?: unknown } };
  try {
    answer = await kube.create(path, {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenRequest",
      spec: { audiences: [spec.audience], expirationSeconds: spec.expirationSeconds },
    });
  } catch (err) {
    if (err instanceof HttpStatusError && err.status === 404)
      throw new TokenRequestError(`service account ${who} not found (${err.message})`, "not_found", { cause: err });
    if (err instanceof HttpStatusError && err.status === 401)
      throw new TokenRequestError(
        `the apiserver refused the credentials before the TokenRequest for ${who} (${err.message})`,
        "unauthenticated",
        { cause: err },
      );
    if (err instanceof HttpStatusError && err.status === 403)
      throw new TokenRequestError(
        `not allowed to request a token for ${who} (${err.message}); expected a user that may create serviceaccounts/token in ${spec.namespace}`,
        "forbidden",
        { cause: err },
      );
    throw new TokenRequestError(`TokenRequest for ${who} failed: ${(err as Error).message}`, "other", { cause: err });
  }
  const token = answer?.status?.token;
  if (typeof token !== "string" || token.length === 0)
    throw new TokenRequestError(`TokenRequest for ${who} answered without status.token`, "other");
  const exp = answer.status?.expirationTimestamp;
  const expiresAt = typeof exp === "string" && !Number.isNaN(Date.parse(exp)) ? new Date(exp) : undefined;
  return { token, expiresAt };
}
