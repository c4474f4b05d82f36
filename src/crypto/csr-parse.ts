// The one PKCS#10 (RFC 2986) parser, on the bounded DER reader in der.ts: only what the CSR policies look at (the
// public key, the subject CNs, the requested SANs, basicConstraints and keyUsage) and what the signature check needs
// (the signed bytes, the algorithm, the signature). Policy decisions live in csr-policy.ts; this module only says what
// the CSR contains, and throws CsrFormatError for anything that is not a well-formed CSR.
import { constants, createPublicKey, verify } from "node:crypto";
import { decodeSinglePem, PemFormatError, toPem } from "./pem.js";
import { DerError, DerReader, Tag, type DerElement } from "./der.js";

/** The CSR is not a well-formed PEM PKCS#10 request. The message never carries the input. */
export class CsrFormatError extends Error {
  override readonly name = "CsrFormatError";
}

export type CsrPublicKey =
  /** `nullParameters`: the rsaEncryption AlgorithmIdentifier carries NULL parameters (RFC 3279 requires it). */
  | { readonly type: "RSA"; readonly modulusBits: number; readonly nullParameters: boolean }
  /**
   * `curve` is "P-256", "P-384", "P-521", another curve's OID, or undefined for explicit curve parameters.
   * `point` is the encoding of the public point, from its first byte (SEC 1 2.3.3): 0x04 uncompressed, 0x02/0x03
   * compressed, 0x06/0x07 hybrid; "invalid" for anything else.
   */
  | { readonly type: "EC"; readonly curve: string | undefined; readonly point: EcPointForm }
  /** Any other key type, by name ("Ed25519", "RSA-PSS", ...) or OID. */
  | { readonly type: "other"; readonly name: string };

export type EcPointForm = "uncompressed" | "compressed" | "hybrid" | "invalid";

export type HashName = "SHA-1" | "SHA-224" | "SHA-256" | "SHA-384" | "SHA-512";

export interface CsrSignatureAlgorithm {
  /** "ECDSA", "RSASSA-PKCS1-v1_5", "RSA-PSS", "Ed25519", or the OID of anything else. */
  readonly name: string;
  readonly hash: HashName | undefined;
  /** RSA-PSS only. */
  readonly pss?: { readonly mgf1Hash: HashName | undefined; readonly saltLength: number };
}

export interface CsrGeneralName {
  /** Named as @peculiar/x509 names them: "url", "dns", "email", "ip", "dn", "id", "upn", "guid", else the ASN.1 name. */
  readonly type: string;
  /** The text of url/dns/email names (IA5String bytes as latin1); empty for the other types. */
  readonly value: string;
}

export interface ParsedCsr {
  /** DER of certificationRequestInfo: the bytes the signature covers. */
  readonly info: Uint8Array;
  /** DER of subjectPublicKeyInfo, exactly as sent. */
  readonly spki: Uint8Array;
  /** The subjectPublicKey BIT STRING's bytes (the SKI is their SHA-1). */
  readonly subjectPublicKey: Uint8Array;
  readonly publicKey: CsrPublicKey;
  readonly signatureAlgorithm: CsrSignatureAlgorithm;
  readonly signature: Uint8Array;
  /** OIDs of the requested extensions (extensionRequest attribute), each at most once. */
  readonly extensionOids: readonly string[];
  /**
   * The subject's commonName values, in order. UTF8String, PrintableString, IA5String, VisibleString and BMPString
   * are decoded; any other string type reads as "\uFFFD" (never equal to a name a policy expects).
   */
  readonly subjectCommonNames: readonly string[];
  /** Names from a requested subjectAltName extension, in order; empty without one. */
  readonly subjectAltNames: readonly CsrGeneralName[];
  /** basicConstraints cA from a requested basicConstraints extension. */
  readonly requestsCa: boolean;
  /** Requested keyUsage as @peculiar/x509 KeyUsageFlags bits (bit n of the BIT STRING is 1 << n); 0 without one. */
  readonly keyUsage: number;
}

const CSR_LABELS = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];

/** Exactly one CERTIFICATE REQUEST block with strict base64 (no hex, no bare base64, no second block). */
export function decodeCsrPem(pem: string): Uint8Array {
  try {
    return decodeSinglePem(pem, CSR_LABELS);
  } catch (err) {
    if (err instanceof PemFormatError) throw new CsrFormatError("CSR is not a PEM block of type CERTIFICATE REQUEST");
    throw err;
  }
}

export function parseCsrPem(pem: string): ParsedCsr {
  return parseCsrDer(decodeCsrPem(pem));
}

const OID = {
  extensionRequest: "1.2.840.113549.1.9.14",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  rsaEncryption: "1.2.840.113549.1.1.1",
  rsaPss: "1.2.840.113549.1.1.10",
  mgf1: "1.2.840.113549.1.1.8",
  ecPublicKey: "1.2.840.10045.2.1",
  upn: "1.3.6.1.4.1.311.20.2.3",
  guid: "1.3.6.1.4.1.311.25.1",
} as const;

const CURVES: Record<string, string> = {
  "1.2.840.10045.3.1.7": "P-256",
  "1.3.132.0.34": "P-384",
  "1.3.132.0.35": "P-521",
};

const OTHER_KEY_TYPES: Record<string, string> = {
  [OID.rsaPss]: "RSA-PSS",
  "1.3.101.110": "X25519",
  "1.3.101.111": "X448",
  "1.3.101.112": "Ed25519",
  "1.3.101.113": "Ed448",
  "1.2.840.10040.4.1": "DSA",
};

const HASHES: Record<string, HashName> = {
  "1.3.14.3.2.26": "SHA-1",
  "2.16.840.1.101.3.4.2.4": "SHA-224",
  "2.16.840.1.101.3.4.2.1": "SHA-256",
  "2.16.840.1.101.3.4.2.2": "SHA-384",
  "2.16.840.1.101.3.4.2.3": "SHA-512",
};

/** Signature algorithms whose parameters are absent or NULL. */
const SIGNATURE_ALGORITHMS: Record<string, { name: string; hash: HashName | undefined }> = {
  "1.2.840.10045.4.1": { name: "ECDSA", hash: "SHA-1" },
  "1.2.840.10045.4.3.1": { name: "ECDSA", hash: "SHA-224" },
  "1.2.840.10045.4.3.2": { name: "ECDSA", hash: "SHA-256" },
  "1.2.840.10045.4.3.3": { name: "ECDSA", hash: "SHA-384" },
  "1.2.840.10045.4.3.4": { name: "ECDSA", hash: "SHA-512" },
  "1.2.840.113549.1.1.5": { name: "RSASSA-PKCS1-v1_5", hash: "SHA-1" },
  "1.2.840.113549.1.1.14": { name: "RSASSA-PKCS1-v1_5", hash: "SHA-224" },
  "1.2.840.113549.1.1.11": { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
  "1.2.840.113549.1.1.12": { name: "RSASSA-PKCS1-v1_5", hash: "SHA-384" },
  "1.2.840.113549.1.1.13": { name: "RSASSA-PKCS1-v1_5", hash: "SHA-512" },
  "1.3.101.112": { name: "Ed25519", hash: undefined },
  "1.3.101.113": { name: "Ed448", hash: undefined },
};

/** Parses a DER CertificationRequest that must span all of `der`. */
export function parseCsrDer(der: Uint8Array): ParsedCsr {
  try {
    return parse(der);
  } catch (err) {
    if (err instanceof DerError) throw new CsrFormatError(`CSR could not be parsed as PKCS#10: ${err.message}`);
    throw err;
  }
}

function parse(der: Uint8Array): ParsedCsr {
  const top = new DerReader(der);
  const outer = top.expect(Tag.SEQUENCE, "CertificationRequest");
  // Bytes after the outer SEQUENCE would not be covered by the signature: refuse them.
  if (!top.atEnd) throw new CsrFormatError("CSR is not a single DER-encoded SEQUENCE");
  const request = top.children(outer, "CertificationRequest");
  const infoEl = request.expect(Tag.SEQUENCE, "certificationRequestInfo");
  const signatureAlgorithm = readSignatureAlgorithm(request);
  const signatureBits = request.readBitString("signature");
  if (signatureBits.unusedBits !== 0) throw new DerError("signature: not a whole number of bytes");
  request.finish("CertificationRequest");

  const info = request.children(infoEl, "certificationRequestInfo");
  if (info.readSmallInteger("version") !== 0) throw new DerError("version: expected v1 (0)");
  const subjectCommonNames = readName(info, info.expect(Tag.SEQUENCE, "subject"));
  const spkiEl = info.expect(Tag.SEQUENCE, "subjectPKInfo");
  const { publicKey, subjectPublicKey } = readSpki(info.children(spkiEl, "subjectPKInfo"));
  // attributes [0] IMPLICIT SET OF Attribute; some encoders drop it when it is empty.
  const attributesEl = info.optional(0xa0, "attributes");
  info.finish("certificationRequestInfo");

  const extensions = attributesEl ? readExtensionRequest(info.children(attributesEl, "attributes")) : undefined;
  return {
    info: request.raw(infoEl),
    spki: info.raw(spkiEl),
    subjectPublicKey,
    publicKey,
    signatureAlgorithm,
    signature: signatureBits.bytes,
    subjectCommonNames,
    extensionOids: extensions?.oids ?? [],
    subjectAltNames: extensions?.sans ?? [],
    requestsCa: extensions?.requestsCa ?? false,
    keyUsage: extensions?.keyUsage ?? 0,
  };
}

const OID_COMMON_NAME = "2.5.4.3";

/** Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }: checked for shape; returns the commonName values. */
function readName(parent: DerReader, nameEl: DerElement): string[] {
  const commonNames: string[] = [];
  const rdns = parent.children(nameEl, "subject");
  while (!rdns.atEnd) {
    const rdn = rdns.children(rdns.expect(Tag.SET, "subject RDN"), "subject RDN");
    if (rdn.atEnd) throw new DerError("subject RDN: empty SET");
    while (!rdn.atEnd) {
      const atv = rdn.children(rdn.expect(Tag.SEQUENCE, "subject attribute"), "subject attribute");
      const type = atv.readOid("subject attribute type");
      const value = atv.next("subject attribute value");
      if (type === OID_COMMON_NAME) commonNames.push(directoryString(value.tag, atv.content(value)));
      atv.finish("subject attribute");
    }
  }
  return commonNames;
}

/** The text of a DirectoryString-like value; U+FFFD for types not decoded here. */
function directoryString(tag: number, bytes: Uint8Array): string {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (tag) {
    case 0x0c: // UTF8String
      return buf.toString("utf8");
    case 0x13: // PrintableString
    case 0x16: // IA5String
    case 0x1a: // VisibleString
      return buf.toString("latin1");
    case 0x1e: // BMPString (UCS-2, big-endian)
      return buf.length % 2 === 0 ? Buffer.from(buf).swap16().toString("utf16le") : "\uFFFD";
    default:
      return "\uFFFD";
  }
}

/** The subjectPublicKey BIT STRING's bytes of a SubjectPublicKeyInfo DER (for a subject key identifier). */
export function spkiSubjectPublicKey(spki: Uint8Array): Uint8Array {
  const top = new DerReader(spki);
  const outer = top.expect(Tag.SEQUENCE, "subjectPKInfo");
  top.finish("subjectPKInfo");
  return readSpki(top.children(outer, "subjectPKInfo")).subjectPublicKey;
}

function readSpki(spki: DerReader): { publicKey: CsrPublicKey; subjectPublicKey: Uint8Array } {
  const alg = spki.children(spki.expect(Tag.SEQUENCE, "public key algorithm"), "public key algorithm");
  const bits = spki.readBitString("subjectPublicKey");
  spki.finish("subjectPKInfo");
  if (bits.unusedBits !== 0) throw new DerError("subjectPublicKey: not a whole number of bytes");
  const algorithm = alg.readOid("public key algorithm");
  let publicKey: CsrPublicKey;
  if (algorithm === OID.rsaEncryption) {
    const nullParameters = !alg.atEnd;
    if (nullParameters) alg.readNull("RSA key parameters");
    publicKey = { type: "RSA", modulusBits: rsaModulusBits(bits.bytes), nullParameters };
  } else if (algorithm === OID.ecPublicKey) {
    // namedCurve OID; implicitCurve (NULL) and specifiedCurve (SEQUENCE) name no curve we accept.
    const curveOid = alg.peekTag() === Tag.OID ? alg.readOid("EC curve") : (alg.next("EC parameters"), undefined);
    const curve = curveOid === undefined ? undefined : (CURVES[curveOid] ?? curveOid);
    publicKey = { type: "EC", curve, point: ecPointForm(bits.bytes) };
  } else {
    if (!alg.atEnd) alg.next("public key parameters");
    publicKey = { type: "other", name: OTHER_KEY_TYPES[algorithm] ?? algorithm };
  }
  alg.finish("public key algorithm");
  return { publicKey, subjectPublicKey: bits.bytes };
}

/** SEC 1 2.3.3 encodings by their first byte. */
function ecPointForm(point: Uint8Array): EcPointForm {
  switch (point[0]) {
    case 0x04:
      return "uncompressed";
    case 0x02:
    case 0x03:
      return "compressed";
    case 0x06:
    case 0x07:
      return "hybrid";
    default:
      return "invalid";
  }
}

/** RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }: the modulus' bit length. */
function rsaModulusBits(bytes: Uint8Array): number {
  const outer = new DerReader(bytes);
  const key = outer.children(outer.expect(Tag.SEQUENCE, "RSA public key"), "RSA public key");
  outer.finish("RSA public key");
  const modulus = key.readIntegerBytes("RSA modulus");
  const exponent = key.readIntegerBytes("RSA exponent");
  key.finish("RSA public key");
  if (modulus[0]! & 0x80 || exponent[0]! & 0x80) throw new DerError("RSA public key: negative INTEGER");
  // With e = 1 (or any even e) a signature proves nothing; Go's crypto/rsa, and so istiod, refuses such keys too.
  const e = exponent.length > 4 ? Number.POSITIVE_INFINITY : exponent.reduce((acc, b) => acc * 256 + b, 0);
  if (e < 3 || e % 2 === 0 || e > 2 ** 31 - 1) {
    throw new DerError("RSA public key: the public exponent must be odd, at least 3 and below 2^31");
  }
  let i = 0;
  while (i < modulus.length && modulus[i] === 0) i++;
  if (i === modulus.length) return 0;
  return (modulus.length - i - 1) * 8 + (32 - Math.clz32(modulus[i]!));
}

function readSignatureAlgorithm(request: DerReader): CsrSignatureAlgorithm {
  const alg = request.children(request.expect(Tag.SEQUENCE, "signatureAlgorithm"), "signatureAlgorithm");
  const algorithm = alg.readOid("signatureAlgorithm");
  if (algorithm === OID.rsaPss) {
    const pss = readPssParams(alg);
    alg.finish("signatureAlgorithm");
    return pss;
  }
  if (alg.peekTag() === Tag.NULL) alg.readNull("signature parameters");
  else if (!alg.atEnd) alg.next("signature parameters");
  alg.finish("signatureAlgorithm");
  return SIGNATURE_ALGORITHMS[algorithm] ?? { name: algorithm, hash: undefined };
}

/**
 * RSASSA-PSS-params (RFC 4055): hash [0] (default SHA-1), maskGen [1] (default MGF1 with SHA-1), saltLength [2]
 * (default 20), trailerField [3] (must be 1).
 */
function readPssParams(alg: DerReader): CsrSignatureAlgorithm {
  const params = alg.children(alg.expect(Tag.SEQUENCE, "RSA-PSS parameters"), "RSA-PSS parameters");
  let hash: HashName | undefined = "SHA-1";
  let mgf1Hash: HashName | undefined = "SHA-1";
  let saltLength = 20;
  const hashEl = params.optional(0xa0, "RSA-PSS hash");
  if (hashEl) hash = readHashAlgorithm(params.children(hashEl, "RSA-PSS hash"));
  const mgfEl = params.optional(0xa1, "RSA-PSS mask generation");
  if (mgfEl) {
    const mgfOuter = params.children(mgfEl, "RSA-PSS mask generation");
    const mgf = mgfOuter.children(mgfOuter.expect(Tag.SEQUENCE, "MGF"), "MGF");
    mgfOuter.finish("RSA-PSS mask generation");
    const mgfOid = mgf.readOid("MGF algorithm");
    if (mgfOid === OID.mgf1) {
      mgf1Hash = readHashAlgorithm(mgf);
    } else {
      mgf1Hash = undefined;
      if (!mgf.atEnd) mgf.next("MGF parameters");
    }
    mgf.finish("MGF");
  }
  const saltEl = params.optional(0xa2, "RSA-PSS salt length");
  if (saltEl) {
    const salt = params.children(saltEl, "RSA-PSS salt length");
    saltLength = salt.readSmallInteger("RSA-PSS salt length");
    salt.finish("RSA-PSS salt length");
  }
  const trailerEl = params.optional(0xa3, "RSA-PSS trailer");
  if (trailerEl) {
    const trailer = params.children(trailerEl, "RSA-PSS trailer");
    if (trailer.readSmallInteger("RSA-PSS trailer") !== 1) throw new DerError("RSA-PSS trailer: must be 1");
    trailer.finish("RSA-PSS trailer");
  }
  params.finish("RSA-PSS parameters");
  return { name: "RSA-PSS", hash, pss: { mgf1Hash, saltLength } };
}

/** AlgorithmIdentifier of a hash (parameters absent or NULL); undefined for hashes not known here. */
function readHashAlgorithm(outer: DerReader): HashName | undefined {
  const alg = outer.children(outer.expect(Tag.SEQUENCE, "hash algorithm"), "hash algorithm");
  outer.finish("hash algorithm");
  const hash = HASHES[alg.readOid("hash algorithm")];
  if (!alg.atEnd) alg.readNull("hash parameters");
  alg.finish("hash algorithm");
  return hash;
}

interface RequestedExtensions {
  oids: string[];
  sans: CsrGeneralName[];
  requestsCa: boolean;
  keyUsage: number;
}

/** Attributes: only extensionRequest is read (once); other attributes (challengePassword, ...) are skipped. */
function readExtensionRequest(attributes: DerReader): RequestedExtensions | undefined {
  let found: RequestedExtensions | undefined;
  while (!attributes.atEnd) {
    const attribute = attributes.children(attributes.expect(Tag.SEQUENCE, "attribute"), "attribute");
    const type = attribute.readOid("attribute type");
    const values = attribute.children(attribute.expect(Tag.SET, "attribute values"), "attribute values");
    attribute.finish("attribute");
    if (type !== OID.extensionRequest) continue;
    if (found) throw new CsrFormatError("CSR has more than one extensionRequest attribute");
    const extensionsEl = values.expect(Tag.SEQUENCE, "extensionRequest");
    values.finish("extensionRequest values");
    found = readExtensions(values.children(extensionsEl, "extensionRequest"));
  }
  return found;
}

function readExtensions(list: DerReader): RequestedExtensions {
  const result: RequestedExtensions = { oids: [], sans: [], requestsCa: false, keyUsage: 0 };
  while (!list.atEnd) {
    const ext = list.children(list.expect(Tag.SEQUENCE, "extension"), "extension");
    const id = ext.readOid("extension id");
    if (ext.peekTag() === Tag.BOOLEAN) ext.readBoolean("extension critical");
    const valueEl = ext.expect(Tag.OCTET_STRING, "extension value");
    ext.finish("extension");
    if (result.oids.includes(id)) throw new CsrFormatError(`CSR requests extension ${id} more than once`);
    result.oids.push(id);
    const value = new DerReader(ext.bytes, valueEl.start, valueEl.end);
    if (id === OID.subjectAltName) result.sans = readGeneralNames(value);
    else if (id === OID.basicConstraints) result.requestsCa = readBasicConstraintsCa(value);
    else if (id === OID.keyUsage) result.keyUsage = readKeyUsage(value);
  }
  return result;
}

/** GeneralName tag byte -> type name (context-specific; [0], [3], [4], [5] are constructed). */
const GENERAL_NAME_TYPES: Record<number, string> = {
  0xa0: "otherName",
  0x81: "email",
  0x82: "dns",
  0xa3: "x400Address",
  0xa4: "dn",
  0xa5: "ediPartyName",
  0x86: "url",
  0x87: "ip",
  0x88: "id",
};

function readGeneralNames(value: DerReader): CsrGeneralName[] {
  const names = value.children(value.expect(Tag.SEQUENCE, "subjectAltName"), "subjectAltName");
  value.finish("subjectAltName");
  const out: CsrGeneralName[] = [];
  while (!names.atEnd) {
    const el = names.next("subjectAltName entry");
    let type = GENERAL_NAME_TYPES[el.tag];
    if (type === undefined) throw new DerError("subjectAltName entry: unknown GeneralName type");
    let text = "";
    if (type === "url" || type === "dns" || type === "email") {
      text = Buffer.from(names.content(el)).toString("latin1");
    } else if (type === "otherName") {
      const other = names.children(el, "otherName");
      const typeId = other.readOid("otherName type");
      other.expect(0xa0, "otherName value");
      other.finish("otherName");
      type = typeId === OID.upn ? "upn" : typeId === OID.guid ? "guid" : type;
    }
    out.push({ type, value: text });
  }
  return out;
}

/** BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER OPTIONAL }. */
function readBasicConstraintsCa(value: DerReader): boolean {
  const bc = value.children(value.expect(Tag.SEQUENCE, "basicConstraints"), "basicConstraints");
  value.finish("basicConstraints");
  const ca = bc.peekTag() === Tag.BOOLEAN ? bc.readBoolean("basicConstraints cA") : false;
  if (!bc.atEnd) bc.readSmallInteger("basicConstraints pathLen");
  bc.finish("basicConstraints");
  return ca;
}

/** KeyUsage BIT STRING: bit n (counted from the first byte's most significant bit) becomes 1 << n. */
function readKeyUsage(value: DerReader): number {
  const { bytes } = value.readBitString("keyUsage");
  value.finish("keyUsage");
  let flags = 0;
  // Nine named bits (digitalSignature .. decipherOnly); anything after them is not a usage.
  for (let n = 0; n < 9 && n < bytes.length * 8; n++) {
    if (bytes[n >> 3]! & (0x80 >> (n & 7))) flags |= 1 << n;
  }
  return flags;
}

const NODE_HASH: Record<HashName, string> = {
  "SHA-1": "sha1",
  "SHA-224": "sha224",
  "SHA-256": "sha256",
  "SHA-384": "sha384",
  "SHA-512": "sha512",
};

/**
 * Whether the CSR's signature verifies with its own public key under its stated algorithm. Throws (from node:crypto)
 * when the key cannot be imported, e.g. an EC point that is not on its curve.
 */
export function verifyCsrSignature(csr: ParsedCsr): boolean {
  const alg = csr.signatureAlgorithm;
  if (alg.hash === undefined) return false;
  const keyType = csr.publicKey.type;
  const pss = alg.name === "RSA-PSS" ? alg.pss : undefined;
  if (alg.name === "ECDSA" ? keyType !== "EC" : alg.name === "RSASSA-PKCS1-v1_5" || pss ? keyType !== "RSA" : true) {
    return false;
  }
  // node:crypto's PSS uses MGF1 with the message hash, as WebCrypto does.
  if (pss && pss.mgf1Hash !== alg.hash) return false;
  // The SPKI as a PEM string, not as { key, format: "der", type: "spki" }: with an object argument Node 24 spends
  // ~14 us per call in argument checks, half of the import (bench/RESULTS.md). Same bytes either way.
  const key = createPublicKey(toPem(csr.spki, "PUBLIC KEY"));
  const keyInput = pss ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: pss.saltLength } : key;
  // Synchronous on purpose: the libuv thread pool's hand-off costs more than the ~55 us check (see bench/RESULTS.md).
  return verify(NODE_HASH[alg.hash], csr.info, keyInput, csr.signature);
}
