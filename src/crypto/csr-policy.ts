// What any mode may be asked to sign: the checks every CSR must pass (size, one strict PEM block, the one parser in
// csr-parse.ts, a strong and canonically encoded key, proof of possession, no CA request), then a profile for the
// identity the mode issues: a SPIFFE workload leaf (exactly one URI SAN in the trust domain) or a relay cluster's DNS
// identity (exactly one DNS SAN, equal to the cluster name). Everything here runs on attacker-controlled input, so
// cheap checks come first and parsing is bounded. Each mode maps CsrPolicyError onto its own refusal type.
import { CsrFormatError, parseCsrPem, verifyCsrSignature, type ParsedCsr } from "./csr-parse.js";

export const DEFAULT_MAX_CSR_BYTES = 8192;

export type CsrRefusalCode = "INVALID_ARGUMENT" | "PERMISSION_DENIED";

/** A CSR a policy refuses. `rule` is a stable metrics label; `detail` never carries key material. */
export class CsrPolicyError extends Error {
  override readonly name: string = "CsrPolicyError";
  constructor(
    readonly code: CsrRefusalCode,
    readonly rule: string,
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(`${rule}: ${detail}`, options);
  }
}

const invalid = (rule: string, detail: string, cause?: unknown): CsrPolicyError =>
  new CsrPolicyError("INVALID_ARGUMENT", rule, detail, cause === undefined ? undefined : { cause });
const denied = (rule: string, detail: string): CsrPolicyError => new CsrPolicyError("PERMISSION_DENIED", rule, detail);

/** A CSR that passed the checks every profile shares. */
export interface CheckedCsrKey {
  readonly csr: ParsedCsr;
  /** The subject key's type: a leaf's keyUsage depends on it (RFC 8813: no keyEncipherment for ECDSA keys). */
  readonly keyType: "RSA" | "EC";
}

/**
 * The checks every profile shares, in order: a string of at most `maxBytes`, one PEM block the parser accepts, a
 * supported key, a signature by that key (proof of possession), and no CA request. Throws CsrPolicyError.
 */
export function checkCsrBasics(csrPem: unknown, maxBytes: number): CheckedCsrKey {
  // String length is O(1) and never exceeds the UTF-8 byte length, so this cannot let a big input through to the
  // parser; non-ASCII input then fails the PEM check.
  if (typeof csrPem !== "string" || csrPem.length === 0) {
    throw invalid("csr_malformed", "CSR must be a non-empty PEM string (CERTIFICATE REQUEST)");
  }
  if (csrPem.length > maxBytes) {
    throw invalid("csr_too_large", `CSR is larger than ${maxBytes} bytes; expected a single PEM CSR`);
  }
  const csr = parse(csrPem);
  const keyType = checkKey(csr);
  checkSignature(csr);
  refuseCaRequest(csr);
  return { csr, keyType };
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
// Bigger RSA keys only make verification slow (a cheap CPU-exhaustion lever) and no client uses them.
const MAX_RSA_BITS = 8192;
const ALLOWED_CURVES = new Set(["P-256", "P-384"]);

// Uncompressed point sizes (0x04 || X || Y): leaves copy the SPKI verbatim, so only the canonical form gets in.
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

// ------------------------------------------------------------------------------------------------ SPIFFE profile

/**
 * The SPIFFE workload leaf profile: URI SANs only, exactly one, a valid SPIFFE ID in `trustDomain`, equal to
 * `requiredIdentity` when that is set. The subject is ignored (the leaf has none). Returns the ID.
 */
export function spiffeLeafIdentity(csr: ParsedCsr, trustDomain: string, requiredIdentity?: string): string {
  const uris: string[] = [];
  for (const name of csr.subjectAltNames) {
    if (name.type !== "url") {
      throw invalid("san_forbidden_type", `CSR has a ${name.type} SAN; expected only URI SANs (SPIFFE IDs)`);
    }
    uris.push(name.value);
  }
  const [uri] = uris;
  if (uri === undefined) {
    throw invalid("no_identity", `CSR has no URI SAN; expected exactly one spiffe://${trustDomain}/... ID`);
  }
  // An X.509-SVID carries exactly one URI SAN (go-spiffe refuses more); a repeat of the same ID counts too.
  if (uris.length > 1) {
    throw invalid(
      "multiple_identities",
      `CSR has ${uris.length} URI SANs; expected exactly one spiffe://${trustDomain}/... ID (an X.509-SVID carries one)`,
    );
  }
  const domain = spiffeTrustDomain(uri);
  if (domain === undefined) {
    throw invalid(
      "san_not_spiffe",
      `URI SAN ${printable(uri)} is not a SPIFFE ID; expected spiffe://${trustDomain}/...`,
    );
  }
  if (domain !== trustDomain) {
    throw denied(
      "san_wrong_trust_domain",
      `URI SAN ${printable(uri)} is outside trust domain ${trustDomain}; expected spiffe://${trustDomain}/...`,
    );
  }
  if (requiredIdentity !== undefined && uri !== requiredIdentity) {
    throw denied(
      "identity_mismatch",
      `URI SAN ${printable(uri)} is not the caller's identity; expected ${printable(requiredIdentity)}`,
    );
  }
  return uri;
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

// --------------------------------------------------------------------------------------- relay DNS identity profile

/**
 * The relay cluster identity profile: exactly one SAN, a DNS name equal to `cluster` (compared without case), no
 * SAN of any other type, and every subject CN, if any, equal to `cluster` too. `cluster` must be lower case.
 */
export function clusterDnsIdentity(csr: ParsedCsr, cluster: string): void {
  const other = csr.subjectAltNames.find((n) => n.type !== "dns");
  if (other) {
    throw denied(
      "csr_extra_san",
      `the CSR has a ${other.type} SAN; expected exactly one DNS SAN, the cluster name ${cluster}, and nothing else`,
    );
  }
  const dns = csr.subjectAltNames.map((n) => n.value.toLowerCase());
  if (dns.length === 0) throw invalid("csr_no_cluster_name", `the CSR has no DNS SAN; expected one: ${cluster}`);
  const foreign = dns.find((d) => d !== cluster);
  if (foreign !== undefined) {
    throw denied(
      "csr_other_cluster",
      `the CSR names "${printable(foreign)}", not this cluster; expected exactly one DNS SAN: ${cluster}`,
    );
  }
  if (dns.length > 1) {
    throw denied("csr_other_cluster", `the CSR repeats the DNS SAN; expected exactly one DNS SAN: ${cluster}`);
  }
  for (const cn of csr.subjectCommonNames) {
    if (cn.toLowerCase() !== cluster) {
      throw denied(
        "csr_other_cluster",
        `the CSR's subject CN "${printable(cn)}" is not this cluster; expected CN=${cluster} or no CN`,
      );
    }
  }
}

/** Attacker-supplied text for a message: bounded, printable ASCII, one line. */
export function printable(text: string, max = 200): string {
  const clean = text.replace(/[^\x20-\x7e]/g, "?");
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}
