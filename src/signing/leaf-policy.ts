// What a workload may ask for: the SPIFFE leaf profile of the shared CSR checks (crypto/csr-policy.ts), refusals as
// LeafPolicyError, and the TTL a leaf gets.
import {
  CsrPolicyError,
  DEFAULT_MAX_CSR_BYTES,
  type CsrRefusalCode,
  checkCsrBasics,
  spiffeLeafIdentity,
  spiffeTrustDomain,
} from "../crypto/csr-policy.js";

export { DEFAULT_MAX_CSR_BYTES, spiffeTrustDomain };

export interface LeafPolicy {
  /** SPIFFE trust domain every URI SAN must belong to, e.g. "cluster.local". */
  trustDomain: string;
  maxTtlSeconds: number;
  /** Used when the request asks for TTL 0 ("whatever the CA gives"). */
  defaultTtlSeconds: number;
  /**
   * When the intermediate has less than this left, refuse (UNAVAILABLE) rather than clip the leaf to a life too short
   * to use. A caller asking for less than this still gets what it asked for.
   */
  minTtlSeconds: number;
  /** Upper bound on the CSR PEM length; DEFAULT_MAX_CSR_BYTES unless configured. */
  maxCsrBytes: number;
}

export type LeafPolicyCode = CsrRefusalCode;

/** A request the leaf policy refuses: the shared CSR refusal, or a TTL the policy cannot grant. */
export class LeafPolicyError extends CsrPolicyError {
  override readonly name: string = "LeafPolicyError";
}

/**
 * The intermediate cannot sign right now (expired, or not yet valid). Not the caller's fault and fixed by rotation,
 * hence a separate class the server maps to a retryable status.
 */
export class CaValidityError extends Error {
  override readonly name = "CaValidityError";
  readonly code = "UNAVAILABLE";
  constructor(
    readonly rule: "ca_expired" | "ca_expiring" | "ca_not_yet_valid",
    message: string,
  ) {
    super(`${rule}: ${message}`);
  }
}

export interface CheckedCsr {
  /** The CSR's subjectPublicKeyInfo DER, exactly as sent (the leaf carries it verbatim). */
  spki: Uint8Array;
  /** The subjectPublicKey BIT STRING's bytes, for the leaf's subject key identifier. */
  subjectPublicKey: Uint8Array;
  /** The CSR's one URI SAN (an X.509-SVID carries exactly one), a valid SPIFFE ID in the policy's trust domain. */
  uriSans: [string];
  /** The subject key's type: the leaf's keyUsage depends on it (RFC 8813: no keyEncipherment for ECDSA keys). */
  keyType: "RSA" | "EC";
}

export interface CheckCsrOptions {
  /** The caller's authenticated identity; when set, every URI SAN must equal it. */
  requiredIdentity?: string;
}

const invalid = (rule: string, message: string): LeafPolicyError =>
  new LeafPolicyError("INVALID_ARGUMENT", rule, message);

/** Checks a CSR against the policy; the promise rejects with a LeafPolicyError saying which rule failed. */
export function checkCsr(csrPem: string, policy: LeafPolicy, opts: CheckCsrOptions = {}): Promise<CheckedCsr> {
  // The executor turns a throw into a rejection.
  return new Promise((resolve) => resolve(checkCsrNow(csrPem, policy, opts)));
}

// Everything here is synchronous (parsing, policy, one signature check with node:crypto), ~0.1 ms per CSR.
function checkCsrNow(csrPem: string, policy: LeafPolicy, opts: CheckCsrOptions): CheckedCsr {
  try {
    const { csr, keyType } = checkCsrBasics(csrPem, policy.maxCsrBytes);
    const uri = spiffeLeafIdentity(csr, policy.trustDomain, opts.requiredIdentity);
    return { spki: csr.spki, subjectPublicKey: csr.subjectPublicKey, uriSans: [uri], keyType };
  } catch (err) {
    if (err instanceof CsrPolicyError) {
      throw new LeafPolicyError(
        err.code,
        err.rule,
        err.detail,
        err.cause === undefined ? undefined : { cause: err.cause },
      );
    }
    throw err;
  }
}

const MAX_SANE_TTL_SECONDS = 10 * 366 * 24 * 3600;

/**
 * Leaf lifetime in whole seconds: 0 means the policy default; the result never exceeds the policy maximum nor the
 * intermediate's remaining life (a leaf outliving its issuer fails path validation). When that remaining life is
 * below the policy minimum the request is refused (CaValidityError, UNAVAILABLE): a leaf that expires moments after
 * it is received is useless, and verifiers reject it once it has.
 */
export function resolveTtl(
  requestedSeconds: number,
  policy: LeafPolicy,
  intermediateNotAfter: Date,
  now: Date,
): number {
  if (!Number.isInteger(requestedSeconds) || requestedSeconds < 0 || requestedSeconds > MAX_SANE_TTL_SECONDS) {
    throw invalid(
      "ttl_invalid",
      `requested TTL ${String(requestedSeconds)} is invalid; expected whole seconds in [0, ${MAX_SANE_TTL_SECONDS}]`,
    );
  }
  const remaining = Math.floor((intermediateNotAfter.getTime() - now.getTime()) / 1000);
  if (remaining < 1) {
    throw new CaValidityError("ca_expired", `intermediate expired at ${intermediateNotAfter.toISOString()}`);
  }
  const wanted = Math.min(requestedSeconds === 0 ? policy.defaultTtlSeconds : requestedSeconds, policy.maxTtlSeconds);
  if (remaining < Math.min(wanted, policy.minTtlSeconds)) {
    throw new CaValidityError(
      "ca_expiring",
      `intermediate expires at ${intermediateNotAfter.toISOString()}, in ${remaining}s, less than the minimum leaf lifetime (${policy.minTtlSeconds}s); it is being renewed, retry later`,
    );
  }
  return Math.min(wanted, remaining);
}
