// Signs workload leaf certificates with the in-memory intermediate. The CSR contributes only its public key (its SPKI,
// copied verbatim) and its (policy-checked) URI SANs; every other field and extension is set here, so nothing
// requested can widen the leaf. The certificate is encoded directly with der.ts (one fixed shape) and signed with
// node:crypto; everything that depends only on the intermediate is computed once per bundle.
import { createHash, randomFillSync, sign, type KeyObject } from "node:crypto";
import type { KeyAlgorithmName } from "../crypto/keys.js";
import { toPem } from "../crypto/pem.js";
import {
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
  smallInteger,
  time,
  tlv,
  type DerElement,
} from "./der.js";
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

// Peers whose clocks run a little behind must still accept a fresh leaf.
const CLOCK_SKEW_MS = 60_000;

export async function signLeaf(
  bundle: LeafIssuer,
  csrPem: string,
  ttlSeconds: number,
  policy: LeafPolicy,
  now: Date,
  opts: SignLeafOptions = {},
): Promise<SignedLeaf> {
  // TTL first: it is the cheapest check and also refuses early when the intermediate has expired.
  const ttl = resolveTtl(ttlSeconds, policy, bundle.notAfter, now);
  const { spki, subjectPublicKey, uriSans, keyType } = await checkCsr(csrPem, policy, opts);

  // Certificates carry whole seconds; truncating here makes the returned notAfter exactly the encoded one.
  const notBefore = new Date(Math.max(floorToSecond(now.getTime() - CLOCK_SKEW_MS), bundle.notBefore.getTime()));
  const notAfter = new Date(floorToSecond(now.getTime() + ttl * 1000));
  if (notAfter.getTime() <= notBefore.getTime()) {
    throw new CaValidityError("ca_not_yet_valid", `intermediate is valid only from ${bundle.notBefore.toISOString()}`);
  }

  const issuer = issuerContext(bundle);
  const serial = randomSerial();
  const tbs = sequence(
    VERSION_V3,
    tlv(Tag.INTEGER, serial),
    issuer.signatureAlgorithm,
    issuer.name,
    sequence(time(notBefore), time(notAfter)),
    EMPTY_NAME, // no subject: identity lives in the SAN only (as Istio does)
    spki,
    explicit(
      3,
      sequence(
        ...(keyType === "RSA" ? FIXED_EXTENSIONS_RSA : FIXED_EXTENSIONS_EC),
        // RFC 5280 4.2.1.6: with an empty subject the SAN extension must be critical. [6] is uniformResourceIdentifier,
        // an IA5String; checkCsr lets only SPIFFE IDs through, which are ASCII, and ascii() checks again.
        extension(OID_SUBJECT_ALT_NAME, true, sequence(...uriSans.map((uri) => contextPrimitive(6, ascii(uri))))),
        issuer.authorityKeyIdentifier,
        extension(OID_SUBJECT_KEY_IDENTIFIER, false, octetString(sha1(subjectPublicKey))),
      ),
    ),
  );
  // ECDSA signatures come out DER-encoded (Ecdsa-Sig-Value), RSA ones as PKCS #1 v1.5: what X.509 carries. Signing
  // is synchronous (~25 us for P-256); for more than one core, the gRPC server can use the worker pool.
  const signature = sign(issuer.hash, tbs, issuer.key);
  const certPem = toPem(sequence(tbs, issuer.signatureAlgorithm, bitString(signature)), "CERTIFICATE");
  return {
    certPem,
    chainPem: [certPem, ...bundle.chainPem],
    notAfter,
    serialHex: Buffer.from(serial.buffer, serial.byteOffset, serial.byteLength).toString("hex"),
  };
}

function floorToSecond(ms: number): number {
  return Math.floor(ms / 1000) * 1000;
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

/** The same for every leaf: basicConstraints CA:false (critical), keyUsage (critical), extKeyUsage server+client. */
const fixedExtensions = (keyUsage: Buffer): readonly Buffer[] => [
  extension("2.5.29.19", true, sequence()),
  extension("2.5.29.15", true, keyUsage),
  extension("2.5.29.37", false, sequence(oid("1.3.6.1.5.5.7.3.1"), oid("1.3.6.1.5.5.7.3.2"))),
];
const FIXED_EXTENSIONS_RSA = fixedExtensions(KEY_USAGE_RSA_LEAF);
const FIXED_EXTENSIONS_EC = fixedExtensions(KEY_USAGE_EC_LEAF);

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
