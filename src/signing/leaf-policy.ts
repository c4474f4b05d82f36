// What a workload may ask for: the checks a CSR must pass before the agent signs it, and the TTL it gets. Everything
// here runs on attacker-controlled input, so cheap checks come first and parsing is bounded (fast-csr.ts parses with
// the bounded DER reader in der.ts; this module makes every policy decision on what it found).
import { CsrFormatError, parseCsrPem, verifyCsrSignature, type ParsedCsr } from "./fast-csr.js";

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

export const DEFAULT_MAX_CSR_BYTES = 8192;

export type LeafPolicyCode = "INVALID_ARGUMENT" | "PERMISSION_DENIED";

/** A request the policy refuses. `rule` is a stable metrics label; the message never carries key material. */
export class LeafPolicyError extends Error {
  override readonly name = "LeafPolicyError";
  constructor(
    readonly code: LeafPolicyCode,
    readonly rule: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${rule}: ${message}`, options);
  }
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

const invalid = (rule: string, message: string, cause?: unknown): LeafPolicyError =>
  new LeafPolicyError("INVALID_ARGUMENT", rule, message, cause === undefined ? undefined : { cause });
const denied = (rule: string, message: string): LeafPolicyError =>
  new LeafPolicyError("PERMISSION_DENIED", rule, message);

/** Checks a CSR against the policy; the promise rejects with a LeafPolicyError saying which rule failed. */
export function checkCsr(csrPem: string, policy: LeafPolicy, opts: CheckCsrOptions = {}): Promise<CheckedCsr> {
  // The executor turns a throw into a rejection.
  return new Promise((resolve) => resolve(checkCsrNow(csrPem, policy, opts)));
}

// Everything here is synchronous (parsing, policy, one signature check with node:crypto), ~0.1 ms per CSR.
function checkCsrNow(csrPem: string, policy: LeafPolicy, opts: CheckCsrOptions): CheckedCsr {
  // String length is O(1) and never exceeds the UTF-8 byte length, so this cannot let a big input through to the
  // parser; non-ASCII input then fails the PEM check.
  if (typeof csrPem !== "string") throw invalid("csr_malformed", "CSR must be a PEM string");
  if (csrPem.length > policy.maxCsrBytes) {
    throw invalid("csr_too_large", `CSR is larger than ${policy.maxCsrBytes} bytes; expected a single PEM CSR`);
  }
  const csr = parse(csrPem);
  const keyType = checkKey(csr);
  checkSignature(csr);
  refuseCaRequest(csr);
  const uriSans = checkSans(csr, policy, opts.requiredIdentity);
  return { spki: csr.spki, subjectPublicKey: csr.subjectPublicKey, uriSans, keyType };
}

function parse(csrPem: string): ParsedCsr {
  try {
    return parseCsrPem(csrPem);
  } catch (err) {
    if (err instanceof CsrFormatError) throw invalid("csr_malformed", err.message, err);
    throw err;
  }
}

const MIN_RSA_BITS = 2048;
// Bigger RSA keys only make verification slow (a cheap CPU-exhaustion lever) and no Istio client uses them.
const MAX_RSA_BITS = 8192;
const ALLOWED_CURVES = new Set(["P-256", "P-384"]);

// Uncompressed point sizes (0x04 || X || Y): the leaf copies the SPKI verbatim, so only the canonical form gets in.
const UNCOMPRESSED_POINT_BYTES: Record<string, number> = { "P-256": 65, "P-384": 97 };

/** Strength and canonical encoding of the subject key; returns its type. */
function checkKey({ publicKey: key, subjectPublicKey }: ParsedCsr): "RSA" | "EC" {
  if (key.type === "RSA") {
    const bits = key.modulusBits;
    if (bits < MIN_RSA_BITS) {
      throw invalid("key_too_weak", `RSA key is ${bits} bits; expected at least ${MIN_RSA_BITS}`);
    }
    if (bits > MAX_RSA_BITS) {
      throw invalid("key_unsupported", `RSA key is ${bits} bits; expected at most ${MAX_RSA_BITS}`);
    }
    if (!key.nullParameters) {
      throw invalid(
        "key_not_canonical",
        "RSA key's rsaEncryption algorithm has no parameters; expected NULL parameters (RFC 3279)",
      );
    }
    return "RSA";
  }
  if (key.type === "EC" && key.curve !== undefined && ALLOWED_CURVES.has(key.curve)) {
    if (key.point !== "uncompressed" || subjectPublicKey.length !== UNCOMPRESSED_POINT_BYTES[key.curve]) {
      const form = key.point === "uncompressed" ? "an uncompressed point of the wrong length" : `a ${key.point} point`;
      throw invalid(
        "key_not_canonical",
        `EC public key is ${form}; expected an uncompressed point on ${key.curve} (RFC 5480)`,
      );
    }
    return "EC";
  }
  const what = key.type === "EC" ? `EC key on curve ${key.curve ?? "unknown"}` : `key type ${key.name}`;
  throw invalid("key_unsupported", `${what} is not supported; expected RSA (>= 2048 bits) or ECDSA P-256/P-384`);
}

const ALLOWED_SIGNATURE_HASHES = new Set(["SHA-256", "SHA-384", "SHA-512"]);

function checkSignature(csr: ParsedCsr): void {
  const hash = csr.signatureAlgorithm.hash;
  if (hash === undefined || !ALLOWED_SIGNATURE_HASHES.has(hash)) {
    throw invalid(
      "csr_signature",
      `CSR signature algorithm is not supported; expected SHA-256/384/512 with RSA or ECDSA`,
    );
  }
  let ok: boolean;
  try {
    ok = verifyCsrSignature(csr);
  } catch (err) {
    // Import or format failures (e.g. an EC point not on its curve) are bad signatures too.
    throw invalid("csr_signature", "CSR signature could not be verified with the CSR's own public key", err);
  }
  if (!ok) throw invalid("csr_signature", "CSR signature does not verify with the CSR's own public key");
}

// keyCertSign / cRLSign (KeyUsageFlags 32 / 64) in a requested keyUsage is a CA request as much as CA:true is.
const KEY_CERT_SIGN = 1 << 5;
const CRL_SIGN = 1 << 6;

function refuseCaRequest(csr: ParsedCsr): void {
  if (csr.requestsCa) {
    throw denied("ca_requested", "CSR requests basicConstraints CA:true; expected a leaf (CA:false or absent)");
  }
  if ((csr.keyUsage & (KEY_CERT_SIGN | CRL_SIGN)) !== 0) {
    throw denied("ca_requested", "CSR requests keyCertSign/cRLSign key usage; expected a leaf");
  }
}

function checkSans(csr: ParsedCsr, policy: LeafPolicy, requiredIdentity: string | undefined): [string] {
  const uris: string[] = [];
  for (const name of csr.subjectAltNames) {
    if (name.type !== "url") {
      throw invalid("san_forbidden_type", `CSR has a ${name.type} SAN; expected only URI SANs (SPIFFE IDs)`);
    }
    uris.push(name.value);
  }
  const [uri] = uris;
  if (uri === undefined) {
    throw invalid("no_identity", `CSR has no URI SAN; expected exactly one spiffe://${policy.trustDomain}/... ID`);
  }
  // An X.509-SVID carries exactly one URI SAN (go-spiffe refuses more); a repeat of the same ID counts too.
  if (uris.length > 1) {
    throw invalid(
      "multiple_identities",
      `CSR has ${uris.length} URI SANs; expected exactly one spiffe://${policy.trustDomain}/... ID (an X.509-SVID carries one)`,
    );
  }
  const trustDomain = spiffeTrustDomain(uri);
  if (trustDomain === undefined) {
    throw invalid(
      "san_not_spiffe",
      `URI SAN ${printable(uri)} is not a SPIFFE ID; expected spiffe://${policy.trustDomain}/...`,
    );
  }
  if (trustDomain !== policy.trustDomain) {
    throw denied(
      "san_wrong_trust_domain",
      `URI SAN ${printable(uri)} is outside trust domain ${policy.trustDomain}; expected spiffe://${policy.trustDomain}/...`,
    );
  }
  if (requiredIdentity !== undefined && uri !== requiredIdentity) {
    throw denied(
      "identity_mismatch",
      `URI SAN ${printable(uri)} is not the caller's identity; expected ${printable(requiredIdentity)}`,
    );
  }
  return [uri];
}

const MAX_SPIFFE_ID_LENGTH = 2048;
const TRUST_DOMAIN_RE = /^[a-z0-9._-]+$/;
const PATH_SEGMENT_RE = /^[A-Za-z0-9._-]+$/;

/** Trust domain of a syntactically valid SPIFFE workload ID (SPIFFE-ID spec section 2), else undefined. */
export function spiffeTrustDomain(uri: string): string | undefined {
  const prefix = "spiffe://";
  if (!uri.startsWith(prefix) || uri.length > MAX_SPIFFE_ID_LENGTH) return undefined;
  const rest = uri.slice(prefix.length);
  const slash = rest.indexOf("/");
  if (slash <= 0) return undefined; // no trust domain, or no path: the bare trust domain names no workload
  const trustDomain = rest.slice(0, slash);
  const segments = rest.slice(slash + 1).split("/");
  if (!TRUST_DOMAIN_RE.test(trustDomain)) return undefined;
  const segmentOk = (s: string): boolean => PATH_SEGMENT_RE.test(s) && s !== "." && s !== "..";
  return segments.every(segmentOk) ? trustDomain : undefined;
}

/** Attacker-supplied text for a message: bounded, one line. */
function printable(text: string): string {
  const clean = text.replace(/[^\x20-\x7e]/g, "?");
  return clean.length > 200 ? `${clean.slice(0, 200)}...` : clean;
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
