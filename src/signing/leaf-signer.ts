// The one leaf signer: every end-entity certificate this project makes with an in-memory intermediate (SPIFFE workload
// leaves, relay client certificates, the Istio CA listener's serving certificate) is encoded by issueLeaf. A CSR
// contributes only its public key (its SPKI, copied verbatim) and the names its policy checked; every other field and
// extension is set here, so nothing requested can widen the leaf. The certificate is encoded directly with der.ts (one
// fixed shape) and signed with node:crypto; everything that depends only on the intermediate is computed once per
// bundle.
import { createHash, randomFillSync, sign, type KeyObject } from "node:crypto";
import { isIP } from "node:net";
import { CLOCK_SKEW_MS, floorToSecond } from "../crypto/validity.js";
import type { KeyAlgorithmName } from "../crypto/keys.js";
import { toPem } from "../crypto/pem.js";
import {
  DerError,
  DerReader,
  Tag,
  ascii,
  bitString,
  boolean,
  contextPrimitive,
  explicit,
  nullValue,
  octetString,
  oid,
  sequence,
  set,
  smallInteger,
  time,
  tlv,
  type DerElement,
} from "../crypto/der.js";
import { CaValidityError, checkCsr, resolveTtl, type CheckCsrOptions, type LeafPolicy } from "./leaf-policy.js";

export type SignLeafOptions = CheckCsrOptions;

/** What signing needs of a SigningBundle (any SigningBundle is one; the worker pool builds them from messages). */
export interface LeafIssuer {
  readonly signingCert: { readonly rawData: ArrayBuffer };
  /** Intermediate first, then every issuer up to and including the root. */
  readonly chainPem: readonly string[];
  /** The intermediate's node:crypto key (never a CryptoKey: KeyObject.from() on one is deprecated, DEP0204). */
  readonly signingKey: KeyObject;
  readonly keyAlgorithm: KeyAlgorithmName;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface SignedLeaf {
  certPem: string;
  /** The leaf, then the bundle's chain (intermediate .. root). */
  chainPem: string[];
  notAfter: Date;
  /** Lower-case hex, as in SigningBundle.serialHex. */
  serialHex: string;
}

/** The CSR-checked subject key a leaf certifies: its SPKI is copied verbatim. */
export interface LeafSubjectKey {
  /** subjectPublicKeyInfo DER, exactly as sent. */
  readonly spki: Uint8Array;
  /** The subjectPublicKey BIT STRING's bytes, for the subject key identifier. */
  readonly subjectPublicKey: Uint8Array;
  /** RSA keys of servers get keyEncipherment too; ECDSA keys digitalSignature only (RFC 8813). */
  readonly keyType: "RSA" | "EC";
}

export type ExtendedKeyUsage = "serverAuth" | "clientAuth";

export interface SubjectAttribute {
  readonly type: "CN" | "OU";
  readonly value: string;
}

/** Everything that varies between the leaves this project signs; every other field is fixed in issueLeaf. */
export interface LeafSpec extends LeafSubjectKey {
  /** Subject attributes in order (one RDN each); empty for no subject, which makes the SAN extension critical. */
  readonly subject?: readonly SubjectAttribute[];
  readonly uris?: readonly string[];
  readonly dnsNames?: readonly string[];
  /** IPv4 or IPv6 addresses, as text. */
  readonly ips?: readonly string[];
  readonly extendedKeyUsages: readonly ExtendedKeyUsage[];
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface IssuedLeaf {
  der: Buffer;
  certPem: string;
  /** Lower-case hex, as in SigningBundle.serialHex. */
  serialHex: string;
}

/** A new leaf's notBefore: backdated by the clock skew, never before the issuer's own notBefore. */
export function leafNotBefore(issuer: Pick<LeafIssuer, "notBefore">, now: Date): Date {
  return new Date(Math.max(floorToSecond(now.getTime() - CLOCK_SKEW_MS), issuer.notBefore.getTime()));
}

/** Signs a workload leaf for `csrPem` under `bundle`: signLeaf on this thread, SigningPool.sign on a worker. */
export type SignLeafFn<B extends LeafIssuer = LeafIssuer> = (
  bundle: B,
  csrPem: string,
  ttlSeconds: number,
  policy: LeafPolicy,
  now: Date,
  opts?: SignLeafOptions,
) => Promise<SignedLeaf>;

export const signLeaf: SignLeafFn = async (bundle, csrPem, ttlSeconds, policy, now, opts = {}) => {
  // TTL first: it is the cheapest check and also refuses early when the intermediate has expired.
  const ttl = resolveTtl(ttlSeconds, policy, bundle.notAfter, now);
  const { spki, subjectPublicKey, uriSans, keyType } = await checkCsr(csrPem, policy, opts);

  // Certificates carry whole seconds; truncating here makes the returned notAfter exactly the encoded one.
  const notBefore = leafNotBefore(bundle, now);
  const notAfter = new Date(floorToSecond(now.getTime() + ttl * 1000));
  if (notAfter.getTime() <= notBefore.getTime()) {
    throw new CaValidityError("ca_not_yet_valid", `intermediate is valid only from ${bundle.notBefore.toISOString()}`);
  }
  // No subject: identity lives in the SAN only (as Istio does). Workload leaves serve and dial mTLS.
  const { certPem, serialHex } = issueLeaf(bundle, {
    spki,
    subjectPublicKey,
    keyType,
    uris: uriSans,
    extendedKeyUsages: SERVER_AND_CLIENT,
    notBefore,
    notAfter,
  });
  return { certPem, chainPem: [certPem, ...bundle.chainPem], notAfter, serialHex };
};

const SERVER_AND_CLIENT: readonly ExtendedKeyUsage[] = ["serverAuth", "clientAuth"];

/**
 * The one leaf encoder: a v3 end-entity certificate for `spec`'s key and names, signed by `issuer`. basicConstraints
 * CA:false and keyUsage are critical and fixed; the SAN extension is critical exactly when the subject is empty (RFC
 * 5280 4.2.1.6); AKI is the issuer's SKI, SKI the SHA-1 of the subject key. Synchronous: ~25 us for P-256.
 */
export function issueLeaf(issuer: LeafIssuer, spec: LeafSpec): IssuedLeaf {
  const ctx = issuerContext(issuer);
  const serial = randomSerial();
  const subject = spec.subject ?? [];
  const tbs = sequence(
    VERSION_V3,
    tlv(Tag.INTEGER, serial),
    ctx.signatureAlgorithm,
    ctx.name,
    sequence(time(spec.notBefore), time(spec.notAfter)),
    subject.length === 0 ? EMPTY_NAME : name(subject),
    spec.spki,
    explicit(
      3,
      sequence(
        ...fixedExtensions(spec.keyType, spec.extendedKeyUsages),
        extension(OID_SUBJECT_ALT_NAME, subject.length === 0, generalNames(spec)),
        ctx.authorityKeyIdentifier,
        extension(OID_SUBJECT_KEY_IDENTIFIER, false, octetString(sha1(spec.subjectPublicKey))),
      ),
    ),
  );
  // ECDSA signatures come out DER-encoded (Ecdsa-Sig-Value), RSA ones as PKCS #1 v1.5: what X.509 carries. For more
  // than one core, the gRPC server can use the worker pool.
  const signature = sign(ctx.hash, tbs, ctx.key);
  const der = sequence(tbs, ctx.signatureAlgorithm, bitString(signature));
  return {
    der,
    certPem: toPem(der, "CERTIFICATE"),
    serialHex: Buffer.from(serial.buffer, serial.byteOffset, serial.byteLength).toString("hex"),
  };
}

const UTF8_STRING = 0x0c;
const ATTRIBUTE_OIDS: Record<SubjectAttribute["type"], string> = { CN: "2.5.4.3", OU: "2.5.4.11" };

/** A Name with one UTF8String attribute per RDN, in order. */
function name(attributes: readonly SubjectAttribute[]): Buffer {
  return sequence(
    ...attributes.map((a) =>
      set(sequence(oid(ATTRIBUTE_OIDS[a.type]), tlv(UTF8_STRING, Buffer.from(a.value, "utf8")))),
    ),
  );
}

/**
 * GeneralNames: URIs ([6] IA5String), DNS names ([2] IA5String) and IP addresses ([7] OCTET STRING of 4 or 16
 * bytes). ascii() refuses anything that is not 7-bit; callers pass only names their policy checked.
 */
function generalNames(spec: LeafSpec): Buffer {
  const names = [
    ...(spec.dnsNames ?? []).map((d) => contextPrimitive(2, ascii(d))),
    ...(spec.ips ?? []).map((ip) => contextPrimitive(7, ipBytes(ip))),
    ...(spec.uris ?? []).map((uri) => contextPrimitive(6, ascii(uri))),
  ];
  if (names.length === 0) throw new DerError("a leaf needs at least one subject alternative name");
  return sequence(...names);
}

/** The 4 or 16 bytes of an IPv4 or IPv6 address in text form. */
export function ipBytes(ip: string): Buffer {
  const kind = isIP(ip);
  if (kind === 4) return Buffer.from(ip.split(".").map(Number));
  if (kind !== 6) throw new DerError("not an IP address");
  let text = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)?.[1];
  if (v4 !== undefined) {
    const [a, b, c, d] = v4.split(".").map(Number) as [number, number, number, number];
    text = `${text.slice(0, -v4.length)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const words = (part: string) => (part === "" ? [] : part.split(":").map((w) => parseInt(w, 16)));
  const left = words(head);
  const right = tail === undefined ? [] : words(tail);
  const all = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  const out = Buffer.alloc(16);
  all.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

const VERSION_V3 = explicit(0, smallInteger(2));
const EMPTY_NAME = sequence();
const OID_SUBJECT_ALT_NAME = "2.5.29.17";
const OID_SUBJECT_KEY_IDENTIFIER = "2.5.29.14";
const OID_AUTHORITY_KEY_IDENTIFIER = "2.5.29.35";

function extension(id: string, critical: boolean, value: Uint8Array): Buffer {
  return critical ? sequence(oid(id), boolean(true), octetString(value)) : sequence(oid(id), octetString(value));
}

// KeyUsage for RSA subject keys: bits 0 (digitalSignature) and 2 (keyEncipherment), 1010 0000 with 5 unused bits
// (RSA key transport in TLS 1.2 needs keyEncipherment). ECDSA keys cannot encipher, and RFC 8813 forbids asserting it
// for them: bit 0 alone, 1000 0000 with 7 unused bits.
const KEY_USAGE_RSA_LEAF = bitString(Uint8Array.of(0xa0), 5);
const KEY_USAGE_EC_LEAF = bitString(Uint8Array.of(0x80), 7);

const EKU_OIDS: Record<ExtendedKeyUsage, string> = {
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
};
const fixedExtensionSets = new Map<string, readonly Buffer[]>();

/** basicConstraints CA:false (critical), keyUsage for the key type (critical), extKeyUsage: cached per combination. */
function fixedExtensions(keyType: "RSA" | "EC", ekus: readonly ExtendedKeyUsage[]): readonly Buffer[] {
  const id = `${keyType}:${ekus.join(",")}`;
  let exts = fixedExtensionSets.get(id);
  if (!exts) {
    if (ekus.length === 0) throw new DerError("a leaf needs at least one extended key usage");
    exts = [
      extension("2.5.29.19", true, sequence()),
      // keyEncipherment is for RSA key transport by a TLS server: a client-only leaf never enciphers (and zlint's
      // e_key_usage_and_extended_key_usage_inconsistent refuses it with clientAuth alone).
      extension(
        "2.5.29.15",
        true,
        keyType === "RSA" && ekus.includes("serverAuth") ? KEY_USAGE_RSA_LEAF : KEY_USAGE_EC_LEAF,
      ),
      extension("2.5.29.37", false, sequence(...ekus.map((e) => oid(EKU_OIDS[e])))),
    ];
    fixedExtensionSets.set(id, exts);
  }
  return exts;
}

function sha1(bytes: Uint8Array): Buffer {
  return createHash("sha1").update(bytes).digest();
}

// Serials come from a buffer of CSPRNG bytes refilled in blocks: one randomFill per 256 leaves, not one per leaf.
const SERIAL_BYTES = 16;
const serialPool = Buffer.alloc(SERIAL_BYTES * 256);
let serialPoolOffset = serialPool.length;

/**
 * 16 random bytes with the top bit cleared (a positive INTEGER without a 0x00 pad) and the next bit set (no leading
 * zero byte to strip), so the serial is always exactly 16 bytes and its hex round-trips through the certificate.
 */
function randomSerial(): Buffer {
  if (serialPoolOffset === serialPool.length) {
    randomFillSync(serialPool);
    serialPoolOffset = 0;
  }
  const serial = Buffer.from(serialPool.subarray(serialPoolOffset, serialPoolOffset + SERIAL_BYTES));
  serialPoolOffset += SERIAL_BYTES;
  serial[0] = (serial[0]! & 0x7f) | 0x40;
  return serial;
}

/** Everything about the issuer that every leaf repeats, computed once per bundle. */
interface IssuerContext {
  key: KeyObject;
  hash: "sha256" | "sha384";
  /** AlgorithmIdentifier DER, used in the TBSCertificate and the Certificate. */
  signatureAlgorithm: Buffer;
  /** The intermediate's subject Name DER, verbatim. */
  name: Uint8Array;
  /** The AuthorityKeyIdentifier extension DER. */
  authorityKeyIdentifier: Buffer;
}

const issuerContexts = new WeakMap<LeafIssuer, IssuerContext>();

function issuerContext(bundle: LeafIssuer): IssuerContext {
  let ctx = issuerContexts.get(bundle);
  if (ctx) return ctx;
  const fields = intermediateFields(new Uint8Array(bundle.signingCert.rawData));
  // Copy the issuer's SKI when it has one (RFC 5280 4.2.1.1) so path builders match it byte for byte, whatever
  // method the issuing CA (Vault) used to derive it; otherwise derive it from the issuer's key.
  const keyId = fields.subjectKeyIdentifier ?? sha1(fields.subjectPublicKey);
  ctx = {
    key: bundle.signingKey,
    ...signatureAlgorithmFor(bundle.keyAlgorithm),
    name: fields.subject,
    authorityKeyIdentifier: extension(OID_AUTHORITY_KEY_IDENTIFIER, false, sequence(contextPrimitive(0, keyId))),
  };
  issuerContexts.set(bundle, ctx);
  return ctx;
}

/** Matches algorithmParams(): ECDSA with the curve's hash, RSA PKCS #1 v1.5 with SHA-256. */
function signatureAlgorithmFor(alg: KeyAlgorithmName): { hash: "sha256" | "sha384"; signatureAlgorithm: Buffer } {
  switch (alg) {
    case "ECDSA_P256":
      return { hash: "sha256", signatureAlgorithm: sequence(oid("1.2.840.10045.4.3.2")) };
    case "ECDSA_P384":
      return { hash: "sha384", signatureAlgorithm: sequence(oid("1.2.840.10045.4.3.3")) };
    case "RSA_2048":
    case "RSA_3072":
    case "RSA_4096":
      return { hash: "sha256", signatureAlgorithm: sequence(oid("1.2.840.113549.1.1.11"), nullValue()) };
  }
}

/** The intermediate's subject Name (verbatim), subjectPublicKey bits and SKI, read from its DER. */
function intermediateFields(der: Uint8Array): {
  subject: Uint8Array;
  subjectPublicKey: Uint8Array;
  subjectKeyIdentifier: Uint8Array | undefined;
} {
  const top = new DerReader(der);
  const cert = top.children(top.expect(Tag.SEQUENCE, "Certificate"), "Certificate");
  const tbs = cert.children(cert.expect(Tag.SEQUENCE, "tbsCertificate"), "tbsCertificate");
  tbs.optional(0xa0, "version");
  tbs.expect(Tag.INTEGER, "serialNumber");
  tbs.expect(Tag.SEQUENCE, "signature");
  tbs.expect(Tag.SEQUENCE, "issuer");
  tbs.expect(Tag.SEQUENCE, "validity");
  const subject = tbs.raw(tbs.expect(Tag.SEQUENCE, "subject"));
  const spki = tbs.children(tbs.expect(Tag.SEQUENCE, "subjectPublicKeyInfo"), "subjectPublicKeyInfo");
  spki.expect(Tag.SEQUENCE, "algorithm");
  const subjectPublicKey = spki.readBitString("subjectPublicKey").bytes;
  tbs.optional(0x81, "issuerUniqueID");
  tbs.optional(0x82, "subjectUniqueID");
  const extensionsEl: DerElement | undefined = tbs.optional(0xa3, "extensions");
  let subjectKeyIdentifier: Uint8Array | undefined;
  if (extensionsEl) {
    const outer = tbs.children(extensionsEl, "extensions");
    const list = outer.children(outer.expect(Tag.SEQUENCE, "extensions"), "extensions");
    while (!list.atEnd) {
      const ext = list.children(list.expect(Tag.SEQUENCE, "extension"), "extension");
      const id = ext.readOid("extension id");
      if (ext.peekTag() === Tag.BOOLEAN) ext.readBoolean("critical");
      const value = ext.expect(Tag.OCTET_STRING, "extension value");
      if (id !== OID_SUBJECT_KEY_IDENTIFIER) continue;
      const inner = new DerReader(der, value.start, value.end);
      subjectKeyIdentifier = inner.content(inner.expect(Tag.OCTET_STRING, "subjectKeyIdentifier"));
    }
  }
  return { subject, subjectPublicKey, subjectKeyIdentifier };
}
