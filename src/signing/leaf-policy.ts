// What a workload may ask for: the checks a CSR must pass before the agent signs it, and the TTL it gets. Everything
// here runs on attacker-controlled input, so cheap checks come first and parsing is bounded.
import { x509 } from "../crypto/x509.js";

export interface LeafPolicy {
  /** SPIFFE trust domain every URI SAN must belong to, e.g. "cluster.local". */
  trustDomain: string;
  maxTtlSeconds: number;
  /** Used when the request asks for TTL 0 ("whatever the CA gives"). */
  defaultTtlSeconds: number;
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
    readonly rule: "ca_expired" | "ca_not_yet_valid",
    message: string,
  ) {
    super(`${rule}: ${message}`);
  }
}

export interface CheckedCsr {
  publicKey: x509.PublicKey;
  /** The CSR's URI SANs, all valid SPIFFE IDs in the policy's trust domain. */
  uriSans: string[];
}

export interface CheckCsrOptions {
  /** The caller's authenticated identity; when set, every URI SAN must equal it. */
  requiredIdentity?: string;
}

const invalid = (rule: string, message: string, cause?: unknown): LeafPolicyError =>
  new LeafPolicyError("INVALID_ARGUMENT", rule, message, cause === undefined ? undefined : { cause });
const denied = (rule: string, message: string): LeafPolicyError =>
  new LeafPolicyError("PERMISSION_DENIED", rule, message);

// asn1js limits for untrusted input: a CSR is shallow and small, so anything deeper or bigger is hostile.
const BER_LIMITS = { berOptions: { maxDepth: 24, maxNodes: 2000, maxContentLength: 64 * 1024 } };

export async function checkCsr(csrPem: string, policy: LeafPolicy, opts: CheckCsrOptions = {}): Promise<CheckedCsr> {
  // String length is O(1) and never exceeds the UTF-8 byte length, so this cannot let a big input through to the
  // parser; non-ASCII input then fails the PEM check.
  if (typeof csrPem !== "string") throw invalid("csr_malformed", "CSR must be a PEM string");
  if (csrPem.length > policy.maxCsrBytes) {
    throw invalid("csr_too_large", `CSR is larger than ${policy.maxCsrBytes} bytes; expected a single PEM CSR`);
  }
  const csr = parseCsr(decodeCsrPem(csrPem));
  const publicKey = checkKey(csr);
  await checkSignature(csr);
  const extensions = requestedExtensions(csr);
  refuseCaRequest(extensions);
  const uriSans = checkSans(extensions, policy, opts.requiredIdentity);
  return { publicKey, uriSans };
}

const PEM_RE =
  /^\s*-----BEGIN (NEW )?CERTIFICATE REQUEST-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END (NEW )?CERTIFICATE REQUEST-----\s*$/;

/** Exactly one CERTIFICATE REQUEST block with strict base64; the library would also take hex, bare base64, etc. */
function decodeCsrPem(pem: string): Uint8Array {
  const match = PEM_RE.exec(pem);
  const body = match?.[2]?.replace(/\r?\n/g, "");
  if (body === undefined || !/^[A-Za-z0-9+/]+={0,2}$/.test(body) || body.length % 4 !== 0) {
    throw invalid("csr_malformed", "CSR is not a PEM block of type CERTIFICATE REQUEST");
  }
  return new Uint8Array(Buffer.from(body, "base64"));
}

function parseCsr(der: Uint8Array): x509.Pkcs10CertificateRequest {
  // asn1js ignores bytes after the outer SEQUENCE; require the DER to be exactly one SEQUENCE so that what we
  // verify is all that was sent.
  if (outerSequenceLength(der) !== der.length) {
    throw invalid("csr_malformed", "CSR is not a single DER-encoded SEQUENCE");
  }
  try {
    const csr = new x509.Pkcs10CertificateRequest(der, BER_LIMITS);
    // Most fields are decoded lazily; touch them here so malformed content is reported as such.
    void csr.subjectName;
    void csr.signatureAlgorithm;
    return csr;
  } catch (err) {
    throw invalid("csr_malformed", "CSR could not be parsed as PKCS#10", err);
  }
}

/** Total length (header + content) of a DER SEQUENCE at the start of `der`, or -1 if it is not one. */
function outerSequenceLength(der: Uint8Array): number {
  if (der.length < 2 || der[0] !== 0x30) return -1;
  const first = der[1]!;
  if (first < 0x80) return 2 + first;
  const lengthBytes = first & 0x7f;
  // DER forbids the indefinite form (0x80); 3 length bytes already cover far more than maxCsrBytes.
  if (lengthBytes === 0 || lengthBytes > 3 || der.length < 2 + lengthBytes) return -1;
  let length = 0;
  for (let i = 0; i < lengthBytes; i++) length = length * 256 + der[2 + i]!;
  return 2 + lengthBytes + length;
}

const MIN_RSA_BITS = 2048;
// Bigger RSA keys only make verification slow (a cheap CPU-exhaustion lever) and no Istio client uses them.
const MAX_RSA_BITS = 8192;
const ALLOWED_CURVES = new Set(["P-256", "P-384"]);

function checkKey(csr: x509.Pkcs10CertificateRequest): x509.PublicKey {
  let publicKey: x509.PublicKey;
  try {
    publicKey = csr.publicKey;
  } catch (err) {
    throw invalid("csr_malformed", "CSR public key could not be parsed", err);
  }
  const alg = publicKey.algorithm as { name: string; namedCurve?: string; modulusLength?: number };
  if (alg.name === "RSASSA-PKCS1-v1_5") {
    const bits = alg.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) {
      throw invalid("key_too_weak", `RSA key is ${bits} bits; expected at least ${MIN_RSA_BITS}`);
    }
    if (bits > MAX_RSA_BITS) {
      throw invalid("key_unsupported", `RSA key is ${bits} bits; expected at most ${MAX_RSA_BITS}`);
    }
    return publicKey;
  }
  if (alg.name === "ECDSA" && alg.namedCurve !== undefined && ALLOWED_CURVES.has(alg.namedCurve)) {
    return publicKey;
  }
  const what = alg.name === "ECDSA" ? `EC key on curve ${alg.namedCurve ?? "unknown"}` : `key type ${alg.name}`;
  throw invalid("key_unsupported", `${what} is not supported; expected RSA (>= 2048 bits) or ECDSA P-256/P-384`);
}

const ALLOWED_SIGNATURE_HASHES = new Set(["SHA-256", "SHA-384", "SHA-512"]);

async function checkSignature(csr: x509.Pkcs10CertificateRequest): Promise<void> {
  const hash = (csr.signatureAlgorithm as { hash?: { name?: string } }).hash?.name;
  if (hash === undefined || !ALLOWED_SIGNATURE_HASHES.has(hash)) {
    throw invalid(
      "csr_signature",
      `CSR signature algorithm is not supported; expected SHA-256/384/512 with RSA or ECDSA`,
    );
  }
  let ok: boolean;
  try {
    ok = await csr.verify();
  } catch (err) {
    // Import or format failures (e.g. an ECDSA signature on an RSA key) are bad signatures too.
    throw invalid("csr_signature", "CSR signature could not be verified with the CSR's own public key", err);
  }
  if (!ok) throw invalid("csr_signature", "CSR signature does not verify with the CSR's own public key");
}

function requestedExtensions(csr: x509.Pkcs10CertificateRequest): x509.Extension[] {
  let extensions: x509.Extension[];
  try {
    // The extensionRequest attribute is decoded as a whole: one SAN of a type the library cannot represent
    // (otherName other than UPN/GUID, x400Address, ediPartyName) makes the whole request unreadable.
    extensions = csr.extensions;
  } catch (err) {
    throw invalid("csr_malformed", "CSR requested extensions could not be parsed (or use unsupported SAN types)", err);
  }
  const seen = new Set<string>();
  for (const ext of extensions) {
    if (seen.has(ext.type)) throw invalid("csr_malformed", `CSR requests extension ${ext.type} more than once`);
    seen.add(ext.type);
  }
  return extensions;
}

// keyCertSign / cRLSign in a requested keyUsage is a CA request as much as basicConstraints CA:true is.
const CA_KEY_USAGES = x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign;

function refuseCaRequest(extensions: x509.Extension[]): void {
  for (const ext of extensions) {
    if (ext instanceof x509.BasicConstraintsExtension && ext.ca) {
      throw denied("ca_requested", "CSR requests basicConstraints CA:true; expected a leaf (CA:false or absent)");
    }
    if (ext instanceof x509.KeyUsagesExtension && (ext.usages & CA_KEY_USAGES) !== 0) {
      throw denied("ca_requested", "CSR requests keyCertSign/cRLSign key usage; expected a leaf");
    }
  }
}

function checkSans(extensions: x509.Extension[], policy: LeafPolicy, requiredIdentity: string | undefined): string[] {
  const names = extensions.flatMap((ext) =>
    ext instanceof x509.SubjectAlternativeNameExtension ? ext.names.items : [],
  );
  const uris: string[] = [];
  for (const name of names) {
    if (name.type !== "url") {
      throw invalid("san_forbidden_type", `CSR has a ${name.type} SAN; expected only URI SANs (SPIFFE IDs)`);
    }
    uris.push(name.value);
  }
  if (uris.length === 0) {
    throw invalid("no_identity", `CSR has no URI SAN; expected spiffe://${policy.trustDomain}/...`);
  }
  for (const uri of uris) {
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
  }
  return uris;
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
 * intermediate's remaining life (a leaf outliving its issuer fails path validation).
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
  const wanted = requestedSeconds === 0 ? policy.defaultTtlSeconds : requestedSeconds;
  return Math.min(wanted, policy.maxTtlSeconds, remaining);
}
