// Hostile requests for the agent's two signing RPCs (SignCertificate on the Unix socket, CreateCertificate on the
// Istio CA listener), each tagged with the exact gRPC status it must get. Everything is derived from a seed
// (mulberry32), and case i depends only on (seed, i), so a run, or one case of it, replays with IVA_HOSTILE_SEED.
// Key pairs are expensive and are made once (makeHostileKeys) and reused by every case; CSRs are assembled by hand
// (a small DER writer below) so that every field, length and OID can be made wrong on purpose, then signed for real
// so that the one thing wrong with a request is the thing the case is about.
import { createHash, randomInt, webcrypto } from "node:crypto";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { CertificateAuthorityAgentClient, SignCertificateRequest } from "../../src/gen/istiodvaultagent/v1/agent.js";
import { IstioCertificateRequest } from "../../src/gen/istio/v1/auth/ca.js";
import { toPem } from "../../src/crypto/keys.js";
import { x509 } from "../../src/crypto/x509.js";

const subtle = webcrypto.subtle;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

// --- seeded randomness -----------------------------------------------------------------------------------------------

/** mulberry32: a tiny 32-bit PRNG; good enough to pick fuzz cases, never for keys. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `length` bytes drawn from `next` (a mulberry32 stream), one draw per byte. */
export function randomBytes(next: () => number, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = Math.floor(next() * 256);
  return out;
}

/** The seed of case `index` of a run: a 32-bit mix of both, so any case can be rebuilt on its own. */
export function caseSeed(seed: number, index: number): number {
  let h = (seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** The seed in env[name] when set (a decimal 32-bit number), else a fresh random one. */
export function hostileSeed(env: NodeJS.ProcessEnv = process.env, name = "IVA_HOSTILE_SEED"): number {
  const raw = env[name];
  // CI uses one fixed seed so a landing run is reproducible; by hand every run explores a new one.
  if (raw === undefined || raw === "") return env.CI ? 20261123 : randomInt(0, 2 ** 32);
  if (!/^\d+$/.test(raw) || Number(raw) >= 2 ** 32) throw new Error(`${name}=${raw}: expected 0..4294967295`);
  return Number(raw);
}

export class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  float(): number {
    return this.next();
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("pick from an empty list");
    return items[Math.floor(this.next() * items.length)]!;
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = Math.floor(this.next() * 256);
    return out;
  }
  string(n: number, alphabet: string): string {
    let s = "";
    for (let i = 0; i < n; i++) s += alphabet[Math.floor(this.next() * alphabet.length)];
    return s;
  }
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [items[i], items[j]] = [items[j]!, items[i]!];
    }
    return items;
  }
}

const LOWER = "abcdefghijklmnopqrstuvwxyz";
const ALNUM = `${LOWER}0123456789`;
const PRINTABLE = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).join("");
const B64URL = `${ALNUM}ABCDEFGHIJKLMNOPQRSTUVWXYZ-_`;

// --- a small DER writer ----------------------------------------------------------------------------------------------

const concat = (parts: readonly Uint8Array[]): Uint8Array => Buffer.concat(parts);

function derLength(n: number): Uint8Array {
  if (n < 0x80) return Uint8Array.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

export function tlv(tag: number, ...content: Uint8Array[]): Uint8Array {
  const body = concat(content);
  return concat([Uint8Array.of(tag), derLength(body.length), body]);
}

export const seq = (...c: Uint8Array[]): Uint8Array => tlv(0x30, ...c);
const set = (...c: Uint8Array[]): Uint8Array => tlv(0x31, ...c);
const octet = (b: Uint8Array): Uint8Array => tlv(0x04, b);
const bitString = (b: Uint8Array, unusedBits = 0): Uint8Array => tlv(0x03, Uint8Array.of(unusedBits), b);
const NULL = Uint8Array.of(0x05, 0x00);
const TRUE = Uint8Array.of(0x01, 0x01, 0xff);
const latin1 = (s: string): Uint8Array => Buffer.from(s, "latin1");
const utf8 = (s: string): Uint8Array => tlv(0x0c, Buffer.from(s, "utf8"));

/** INTEGER from unsigned big-endian bytes (minimal, positive). */
function uintBytes(b: Uint8Array): Uint8Array {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const v = b.subarray(i);
  return tlv(0x02, (v[0] ?? 0) & 0x80 ? concat([Uint8Array.of(0), v]) : v);
}
const int = (n: number): Uint8Array => {
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return uintBytes(Uint8Array.from(bytes.length ? bytes : [0]));
};

function base128(v: bigint): number[] {
  const out = [Number(v & 0x7fn)];
  for (v >>= 7n; v > 0n; v >>= 7n) out.unshift(Number(v & 0x7fn) | 0x80);
  return out;
}
/** The content octets of an OBJECT IDENTIFIER. */
function oidContent(arcs: readonly bigint[]): Uint8Array {
  const [a = 0n, b = 0n, ...rest] = arcs;
  return Uint8Array.from([a * 40n + b, ...rest].flatMap(base128));
}
export const oid = (dotted: string): Uint8Array => tlv(0x06, oidContent(dotted.split(".").map((s) => BigInt(s))));

/** `depth` nested constructed TLVs (tags cycling through `tags`) around `inner`, written in one pass. */
export function nested(depth: number, tags: readonly number[], inner: Uint8Array): Uint8Array {
  const lengths: number[] = [inner.length];
  for (let k = 0; k < depth; k++) lengths.push(1 + derLength(lengths[k]!).length + lengths[k]!);
  const out = new Uint8Array(lengths[depth]!);
  let pos = 0;
  for (let k = depth - 1; k >= 0; k--) {
    out[pos++] = tags[k % tags.length]!;
    const l = derLength(lengths[k]!);
    out.set(l, pos);
    pos += l.length;
  }
  out.set(inner, pos);
  return out;
}

const OID = {
  organizationalUnit: "2.5.4.11",
  ecPublicKey: "1.2.840.10045.2.1",
  p256: "1.2.840.10045.3.1.7",
  secp256k1: "1.3.132.0.10",
  brainpoolP256r1: "1.3.36.3.3.2.8.1.1.7",
  rsaEncryption: "1.2.840.113549.1.1.1",
  sha256WithRsa: "1.2.840.113549.1.1.11",
  sha1WithRsa: "1.2.840.113549.1.1.5",
  md5WithRsa: "1.2.840.113549.1.1.4",
  ecdsaSha1: "1.2.840.10045.4.1",
  ecdsaSha256: "1.2.840.10045.4.3.2",
  ecdsaSha384: "1.2.840.10045.4.3.3",
  ecdsaSha512: "1.2.840.10045.4.3.4",
  ed25519: "1.3.101.112",
  x25519: "1.3.101.110",
  ed448: "1.3.101.113",
  dsa: "1.2.840.10040.4.1",
  extensionRequest: "1.2.840.113549.1.9.14",
  challengePassword: "1.2.840.113549.1.9.7",
  san: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  cn: "2.5.4.3",
  org: "2.5.4.10",
  upn: "1.3.6.1.4.1.311.20.2.3",
  guid: "1.3.6.1.4.1.311.25.1",
} as const;

const ext = (id: Uint8Array, value: Uint8Array, critical = false): Uint8Array =>
  seq(id, ...(critical ? [TRUE] : []), octet(value));
const sanExt = (names: Uint8Array[], critical = false): Uint8Array => ext(oid(OID.san), seq(...names), critical);
const uriName = (s: string): Uint8Array => tlv(0x86, latin1(s));
const name = (cn: string): Uint8Array => seq(set(seq(oid(OID.cn), utf8(cn))));
const extensionRequest = (extensions: Uint8Array[]): Uint8Array =>
  seq(oid(OID.extensionRequest), set(seq(...extensions)));
/** keyUsage BIT STRING from bit numbers (0 = digitalSignature, 5 = keyCertSign, 6 = cRLSign), DER named-bit form. */
function keyUsage(bits: number[]): Uint8Array {
  const bytes = new Uint8Array(2);
  for (const b of bits) bytes[b >> 3]! |= 0x80 >> (b & 7);
  const used = bytes[1] ? 2 : 1;
  const last = bytes[used - 1]!;
  let unused = 0;
  while (unused < 7 && !(last & (1 << unused))) unused++;
  return bitString(bytes.subarray(0, used), last ? unused : 0);
}

// --- key pairs and signers -----------------------------------------------------------------------------------------

/** Signs a CertificationRequestInfo; `algorithm` is the AlgorithmIdentifier written next to the signature. */
export interface CsrSigner {
  label: string;
  spki: Uint8Array;
  algorithm: Uint8Array;
  sign(tbs: Uint8Array): Promise<Uint8Array>;
}

function p1363ToDer(sig: Uint8Array): Uint8Array {
  const half = sig.length / 2;
  return seq(uintBytes(sig.subarray(0, half)), uintBytes(sig.subarray(half)));
}

async function ecdsaSigner(
  label: string,
  namedCurve: "P-256" | "P-384" | "P-521",
  hash: string,
  algOid: string,
): Promise<CsrSigner & { keys: CryptoKeyPair }> {
  const keys = await subtle.generateKey({ name: "ECDSA", namedCurve }, false, ["sign", "verify"]);
  const spki = new Uint8Array(await subtle.exportKey("spki", keys.publicKey));
  return {
    label,
    keys,
    spki,
    algorithm: seq(oid(algOid)),
    sign: async (tbs) => p1363ToDer(new Uint8Array(await subtle.sign({ name: "ECDSA", hash }, keys.privateKey, tbs))),
  };
}

async function rsaSigner(label: string, bits: number): Promise<CsrSigner> {
  const keys = await subtle.generateKey(
    { name: "RSASSA-PKCS1-v1_5", modulusLength: bits, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
  return {
    label,
    spki: new Uint8Array(await subtle.exportKey("spki", keys.publicKey)),
    algorithm: seq(oid(OID.sha256WithRsa), NULL),
    sign: async (tbs) => new Uint8Array(await subtle.sign("RSASSA-PKCS1-v1_5", keys.privateKey, tbs)),
  };
}

async function ed25519Signer(): Promise<CsrSigner & { keys: CryptoKeyPair }> {
  const keys = (await subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"])) as unknown as CryptoKeyPair;
  return {
    label: "Ed25519",
    keys,
    spki: new Uint8Array(await subtle.exportKey("spki", keys.publicKey)),
    algorithm: seq(oid(OID.ed25519)),
    sign: async (tbs) => new Uint8Array(await subtle.sign("Ed25519", keys.privateKey, tbs)),
  };
}

/**
 * An RSA "key" with public exponent 1 and a random 2048-bit modulus: s^1 mod n = s, so anyone can make a signature
 * that verifies (the EMSA-PKCS1-v1_5 encoding of the hash is its own signature). Proof of possession means nothing
 * for such a key, and a certificate for it can be used by whoever sees it.
 */
function rsaExponentOneSigner(modulus: Uint8Array): CsrSigner {
  const n = modulus.slice();
  n[0] = n[0]! | 0x80;
  n[n.length - 1] = n[n.length - 1]! | 1;
  const digestInfoPrefix = Buffer.from("3031300d060960864801650304020105000420", "hex");
  return {
    label: "RSA-2048 e=1",
    spki: seq(seq(oid(OID.rsaEncryption), NULL), bitString(seq(uintBytes(n), int(1)))),
    algorithm: seq(oid(OID.sha256WithRsa), NULL),
    sign: (tbs) => {
      const t = concat([digestInfoPrefix, createHash("sha256").update(tbs).digest()]);
      const em = new Uint8Array(n.length).fill(0xff);
      em[0] = 0;
      em[1] = 1;
      em[n.length - t.length - 1] = 0;
      em.set(t, n.length - t.length);
      return Promise.resolve(em);
    },
  };
}

export interface HostileKeys {
  /** The keys the policy accepts: several P-256, one P-384, one RSA-2048. */
  p256: CsrSigner[];
  p384: CsrSigner;
  rsa2048: CsrSigner;
  rsa1024: CsrSigner;
  /** A P-256 key that signs with ecdsa-with-SHA1. */
  p256Sha1: CsrSigner;
  p521: CsrSigner & { keys: CryptoKeyPair };
  ed25519: CsrSigner & { keys: CryptoKeyPair };
  rsaExponentOne: CsrSigner;
}

/** Every key pair the generator uses, made once (about a second, most of it RSA). */
export async function makeHostileKeys(): Promise<HostileKeys> {
  const p256 = await Promise.all(
    [0, 1, 2, 3].map((i) => ecdsaSigner(`P-256#${i}`, "P-256", "SHA-256", OID.ecdsaSha256)),
  );
  const first = p256[0]!;
  return {
    p256,
    p384: await ecdsaSigner("P-384", "P-384", "SHA-384", OID.ecdsaSha384),
    rsa2048: await rsaSigner("RSA-2048", 2048),
    rsa1024: await rsaSigner("RSA-1024", 1024),
    p256Sha1: {
      ...first,
      label: "P-256/SHA-1",
      algorithm: seq(oid(OID.ecdsaSha1)),
      sign: async (tbs) =>
        p1363ToDer(new Uint8Array(await subtle.sign({ name: "ECDSA", hash: "SHA-1" }, first.keys.privateKey, tbs))),
    },
    p521: await ecdsaSigner("P-521", "P-521", "SHA-512", OID.ecdsaSha512),
    ed25519: await ed25519Signer(),
    rsaExponentOne: rsaExponentOneSigner(webcrypto.getRandomValues(new Uint8Array(256))),
  };
}

// --- CSRs ------------------------------------------------------------------------------------------------------------

interface CsrParts {
  cri: Uint8Array;
  algorithm: Uint8Array;
  /** The BIT STRING's bytes after the unused-bits octet. */
  signature: Uint8Array;
}

interface CsrSpec {
  signer: CsrSigner;
  subject?: Uint8Array;
  /** Extensions for one extensionRequest attribute; none means no such attribute. */
  extensions?: Uint8Array[];
  attributes?: Uint8Array[];
  /** Replaces the signer's SubjectPublicKeyInfo in the signed info. */
  spki?: Uint8Array;
  /** Replaces the signer's AlgorithmIdentifier next to the signature. */
  algorithm?: Uint8Array;
}

async function signedParts(spec: CsrSpec): Promise<CsrParts> {
  const attrs = [...(spec.extensions ? [extensionRequest(spec.extensions)] : []), ...(spec.attributes ?? [])];
  const cri = seq(int(0), spec.subject ?? seq(), spec.spki ?? spec.signer.spki, tlv(0xa0, ...attrs));
  return { cri, algorithm: spec.algorithm ?? spec.signer.algorithm, signature: await spec.signer.sign(cri) };
}

const assemble = (p: CsrParts, unusedBits = 0): Uint8Array =>
  seq(p.cri, p.algorithm, bitString(p.signature, unusedBits));
const csrPem = (der: Uint8Array): string => toPem(der, "CERTIFICATE REQUEST");

// --- requests --------------------------------------------------------------------------------------------------------

export type Rpc = "sign" | "create";

/** What a case sends. `authorization` is for CreateCertificate only: undefined = no header. */
export interface HostileCase {
  index: number;
  rpc: Rpc;
  category: string;
  /** The variant, for a mismatch report; never contains a token. */
  note: string;
  expected: grpc.status;
  /** The serialized request message, sent as is. */
  body: Uint8Array;
  /** Send the message gzip-compressed. */
  gzip: boolean;
  authorization: string | undefined;
}

export interface HostileContext {
  seed: number;
  keys: HostileKeys;
  trustDomain: string;
  /** CreateCertificate: the caller's SPIFFE ID (the one its valid token reviews to). */
  identity: string;
  tokens: {
    /** The caller's token, audience istio-ca. */
    valid: string;
    /** The caller's token with another audience. */
    wrongAudience: string;
    /** A token of a service account that has since been deleted. */
    deletedServiceAccount: string;
  };
  /** Largest CSR the policy takes, and largest message the servers take. */
  maxCsrBytes: number;
  maxMessageBytes: number;
}

/** The contract's upper bound on a leaf TTL request (resolveTtl: whole seconds in [0, 10 × 366 days]). */
export const MAX_SANE_TTL_SECONDS = 10 * 366 * 24 * 3600;

interface Draft {
  expected: grpc.status;
  note: string;
  csr?: string;
  /** SignCertificate ttl_seconds / CreateCertificate validity_duration; a valid one when unset. */
  ttl?: number;
  /** A hand-made message that replaces the encoded csr + ttl. */
  raw?: Uint8Array;
  gzip?: boolean;
  /** CreateCertificate authorization header: undefined = the caller's valid token, null = none. */
  authorization?: string | null;
}

const S = grpc.status;

/** A draft the agent must refuse as malformed: INVALID_ARGUMENT for the CSR `der`. */
const invalidCsr = (note: string, der: Uint8Array): Draft => ({ expected: S.INVALID_ARGUMENT, note, csr: csrPem(der) });

class Gen {
  /** SignCertificate has no caller: any valid workload ID of the trust domain; CreateCertificate: the caller's. */
  readonly identity: string;
  constructor(
    readonly rng: Rng,
    readonly ctx: HostileContext,
    readonly rpc: Rpc,
  ) {
    this.identity =
      rpc === "create"
        ? ctx.identity
        : `spiffe://${ctx.trustDomain}/ns/${this.segment()}/sa/${this.segment()}${rng.chance(0.1) ? `/${this.segment()}` : ""}`;
  }
  segment(): string {
    return this.rng.string(this.rng.int(1, 12), `${ALNUM}-._`).replace(/^\.+$/, "x");
  }
  /** A key the policy accepts (mostly P-256). */
  goodSigner(): CsrSigner {
    const k = this.ctx.keys;
    return this.rng.pick([...k.p256, ...k.p256, k.p384, k.rsa2048]);
  }
  /** A request that passes every check but the one the caller then breaks. */
  goodSpec(extra: Partial<CsrSpec> & { sans?: Uint8Array[] } = {}): CsrSpec {
    const { sans, ...rest } = extra;
    return {
      signer: this.goodSigner(),
      subject: this.rng.chance(0.3) ? name(this.segment()) : seq(),
      extensions: [sanExt(sans ?? [uriName(this.identity)], this.rng.chance(0.5))],
      ...rest,
    };
  }
  async goodDer(extra: Partial<CsrSpec> & { sans?: Uint8Array[] } = {}): Promise<Uint8Array> {
    return assemble(await signedParts(this.goodSpec(extra)));
  }
  validTtl(): number {
    if (this.rng.chance(0.3)) return 0;
    if (this.rpc === "create" && this.rng.chance(0.2)) return -this.rng.int(1, 1e9); // "0 or less": the default
    return this.rng.int(60, 30 * 86400);
  }
  foreignTrustDomain(): string {
    const td = this.ctx.trustDomain;
    const made = this.rng.pick([
      "evil.example",
      `${td}.evil.example`,
      `${td}.`,
      `${td}x`,
      td.slice(0, -1),
      td.replace(/\./g, "-"),
      `x${td}`,
      "localhost",
      "example.org",
      this.rng.string(this.rng.int(1, 60), `${ALNUM}.-_`),
    ]);
    return made === td || made === "" ? "evil.example" : made;
  }
  /** URI SANs that are not SPIFFE workload IDs (spiffeTrustDomain returns undefined for each). */
  nonSpiffeUri(): string {
    const td = this.ctx.trustDomain;
    const r = this.rng;
    return r.pick([
      () => `https://${td}/ns/a/sa/b`,
      () => `http://${td}/ns/${this.segment()}/sa/${this.segment()}`,
      () => `SPIFFE://${td}/ns/a/sa/b`,
      () => `spiffe:/${td}/ns/a/sa/b`,
      () => `spiffe://${td}`,
      () => `spiffe://${td}/`,
      () => `spiffe://${td}//ns/a`,
      () => `spiffe://${td}/ns/a/sa/b/`,
      () => `spiffe://${td}/ns/../sa/b`,
      () => `spiffe://${td}/./sa`,
      () => `spiffe://${td.toUpperCase()}/ns/a/sa/b`,
      () => `spiffe://${td}:8443/ns/a/sa/b`,
      () => `spiffe://user@${td}/ns/a/sa/b`,
      () => `spiffe://${td}/ns/a/sa/b?x=1`,
      () => `spiffe://${td}/ns/a/sa/b#frag`,
      () => `spiffe://${td}/ns/%61/sa/b`,
      () => `spiffe://${td}/ns/a b/sa/b`,
      () => `spiffe://${td}\\ns\\a`,
      () => `spiffe://${td}/ns/\u00e9/sa/b`,
      () => `spiffe://${td}/ns/a/sa/b\u0000`,
      () => `spiffe://${td}/ns/${"a".repeat(r.int(2100, 4000))}`,
      () => "spiffe:///ns/a/sa/b",
      () => "spiffe://",
      () => "",
      () => `urn:uuid:${r.string(32, "0123456789abcdef")}`,
      () => `file:///etc/passwd`,
      () => `*${r.string(r.int(0, 80), PRINTABLE)}`,
    ])();
  }
  otherIdentity(): string {
    const td = this.ctx.trustDomain;
    const other = this.rng.pick([
      `spiffe://${td}/ns/default/sa/other`,
      `spiffe://${td}/ns/kube-system/sa/${this.segment()}`,
      `${this.identity}/x`,
      this.identity.replace(/sa\/(.)/, (_m, c: string) => `sa/${c.toUpperCase() === c ? "Z" : c.toUpperCase()}`),
      `spiffe://${td}/ns/${this.segment()}/sa/${this.segment()}`,
      `spiffe://${td}/sa/sleep/ns/default`,
    ]);
    return other === this.identity ? `spiffe://${td}/ns/default/sa/other` : other;
  }

  /** A good CSR whose URI SANs are `uri` alone or beside the caller's identity (either order), and their count. */
  async csrWithUriBesideIdentity(uri: string): Promise<{ sans: number; csr: string }> {
    const sans = this.rng.pick([[uri], [this.identity, uri], [uri, this.identity]]);
    return { sans: sans.length, csr: csrPem(await this.goodDer({ sans: sans.map(uriName) })) };
  }

  /**
   * A CSR for a well-formed identity the caller may not have (`kind` names it in the note): alone it is refused for
   * what it names (PERMISSION_DENIED); beside the caller's own, the two URI SANs are refused as such (an X.509-SVID
   * carries one) before any identity check.
   */
  async wrongIdentity(uri: string, kind: string): Promise<Draft> {
    const { sans, csr } = await this.csrWithUriBesideIdentity(uri);
    return {
      expected: sans > 1 ? S.INVALID_ARGUMENT : S.PERMISSION_DENIED,
      note: `SANs ${sans}, ${kind} ${uri.slice(0, 80)}`,
      csr,
    };
  }
}

// Weights are relative; categories not applicable to an RPC are skipped for it.
interface Category {
  name: string;
  weight: number;
  rpcs: readonly Rpc[];
  make(g: Gen): Promise<Draft>;
}

const BOTH: readonly Rpc[] = ["sign", "create"];

function category(name: string, weight: number, rpcs: readonly Rpc[], make: Category["make"]): Category {
  return { name, weight, rpcs, make };
}

const CATEGORIES: Category[] = [
  category("random-bytes", 6, BOTH, (g) => {
    const r = g.rng;
    const n = r.int(0, r.chance(0.1) ? 9000 : 600);
    const v = r.int(0, 3);
    if (v === 0)
      return Promise.resolve({ expected: S.INVALID_ARGUMENT, note: `printable x${n}`, csr: r.string(n, PRINTABLE) });
    if (v === 1) {
      const s = Array.from({ length: Math.min(n, 4000) }, () => String.fromCharCode(r.int(0, 0xffff))).join("");
      return Promise.resolve({ expected: S.INVALID_ARGUMENT, note: `UTF-16 units x${s.length}`, csr: s });
    }
    if (v === 2) {
      const body = r.string(n, `${PRINTABLE}\n`);
      const csr = `-----BEGIN CERTIFICATE REQUEST-----\n${body}\n-----END CERTIFICATE REQUEST-----\n`;
      return Promise.resolve({ expected: S.INVALID_ARGUMENT, note: `PEM armour around printable x${n}`, csr });
    }
    // Not UTF-8 at all: field 1 carries raw bytes (the decoder substitutes U+FFFD; the CSR is still garbage).
    const bytes = r.bytes(Math.max(n, 1));
    bytes[0] = 0xc0 | (bytes[0]! & 1); // an overlong-encoding lead byte: never valid UTF-8
    return Promise.resolve({
      expected: S.INVALID_ARGUMENT,
      note: `invalid UTF-8 x${bytes.length}`,
      raw: concat([field(1, 2, bytes), ttlField(g, g.validTtl())]),
    });
  }),
  category("random-der-pem", 6, BOTH, (g) => {
    const r = g.rng;
    const n = r.int(1, 5800);
    const content = r.bytes(n);
    // Half of them pass the cheap outer check: a SEQUENCE header whose length is exactly right.
    const der = r.chance(0.5) ? tlv(0x30, content) : content;
    return Promise.resolve(invalidCsr(`random DER x${der.length}`, der));
  }),
  category("truncated-der", 6, BOTH, async (g) => {
    const der = await g.goodDer();
    const cut = g.rng.int(1, der.length - 1);
    let out = der.subarray(0, cut);
    let note = `cut at ${cut}/${der.length}`;
    if (g.rng.chance(0.5) && cut > 8) {
      // Re-frame what is left so the outer length is right and the damage is inside.
      const headerLen = 2 + (der[1]! & 0x80 ? der[1]! & 0x7f : 0);
      out = tlv(0x30, der.subarray(headerLen, Math.max(headerLen, cut)));
      note += ", outer length fixed";
    }
    return invalidCsr(note, out);
  }),
  category("garbled-pem", 5, BOTH, async (g) => {
    const r = g.rng;
    const der = await g.goodDer();
    const pem = csrPem(der);
    const lines = pem.trimEnd().split("\n");
    const body = lines.slice(1, -1);
    const variants: Array<[string, () => string]> = [
      ["label CERTIFICATE", () => pem.replace(/CERTIFICATE REQUEST/g, "CERTIFICATE")],
      ["label PUBLIC KEY", () => pem.replace(/CERTIFICATE REQUEST/g, "PUBLIC KEY")],
      ["lower-case label", () => pem.replace(/CERTIFICATE REQUEST/g, "certificate request")],
      ["two CSR blocks", () => pem + pem],
      ["no END line", () => lines.slice(0, -1).join("\n")],
      ["no BEGIN line", () => lines.slice(1).join("\n")],
      ["text after END", () => `${pem}trailing ${r.string(r.int(1, 40), ALNUM)}`],
      ["text before BEGIN", () => `hello ${pem}`],
      [
        "bad base64 character",
        () => {
          const i = r.int(0, body.length - 1);
          const line = body[i]!;
          const at = r.int(0, line.length);
          const bad = r.pick(["*", ".", "_", "-", " ", "\t", "!", "\u00e9", "%"]);
          const changed = [...body];
          changed[i] = line.slice(0, at) + bad + line.slice(at);
          return [lines[0], ...changed, lines.at(-1)].join("\n");
        },
      ],
      [
        "padding in the middle",
        () => [lines[0], body[0]!.slice(0, -2) + "==", ...body.slice(1), lines.at(-1)].join("\n"),
      ],
      [
        "base64 length not a multiple of 4",
        () => [lines[0], ...body.slice(0, -1), body.at(-1)!.replace(/=+$/, "").slice(0, -1), lines.at(-1)].join("\n"),
      ],
      ["BEGIN line runs into the body", () => pem.replace("-----\n", "-----")],
      ["trailing DER bytes", () => csrPem(concat([der, r.bytes(r.int(1, 64))]))],
      ["hex instead of base64", () => `${lines[0]}\n${Buffer.from(der).toString("hex")}\n${lines.at(-1)}\n`],
    ];
    const [note, make] = r.pick(variants);
    return { expected: S.INVALID_ARGUMENT, note, csr: make() };
  }),
  category("huge-csr", 3, BOTH, async (g) => {
    const r = g.rng;
    if (r.chance(0.3)) {
      // A valid small CSR drowned in whitespace the PEM syntax allows.
      const pem = csrPem(await g.goodDer());
      const pad = r.int(g.ctx.maxCsrBytes + 1 - pem.length, 16_000);
      return {
        expected: S.INVALID_ARGUMENT,
        note: `valid CSR + ${pad} B whitespace`,
        csr: pem + " \n".repeat(pad >> 1) + "\n",
      };
    }
    const csr = await bigCsr(g, r.int(g.ctx.maxCsrBytes + 1, 16_384));
    return { expected: S.INVALID_ARGUMENT, note: `signed CSR of ${csr.length} B`, csr };
  }),
  category("huge-csr-60k", 1, BOTH, async (g) => {
    const csr = await bigCsr(g, g.rng.int(56_000, 61_000));
    return { expected: S.INVALID_ARGUMENT, note: `signed CSR of ${csr.length} B`, csr };
  }),
  category("deep-asn1", 4, BOTH, async (g) => {
    const r = g.rng;
    const tags = r.pick([[0x30], [0x31], [0x30, 0xa0], [0xa3, 0x30, 0x31]]);
    const v = r.int(0, 3);
    if (v === 0) {
      const depth = r.int(25, 1500);
      return {
        expected: S.INVALID_ARGUMENT,
        note: `whole DER: depth ${depth}`,
        csr: csrPem(nested(depth, [0x30, ...tags], NULL)),
      };
    }
    if (v === 1) {
      // Indefinite lengths all the way down (BER, never DER).
      const depth = r.int(25, 2000);
      const der = concat([
        new Uint8Array(depth * 2).map((_, i) => (i % 2 ? 0x80 : 0x30)),
        NULL,
        new Uint8Array(depth * 2),
      ]);
      return invalidCsr(`indefinite-length nesting, depth ${depth}`, der);
    }
    // Inside an otherwise valid, correctly signed CSR, in a structure the policy has to read: the SAN extension's
    // value (v 2, not GeneralNames) or a SAN directoryName (v 3, beside the valid URI SAN).
    const depth = r.int(40, 1200);
    const der =
      v === 2
        ? await g.goodDer({ extensions: [ext(oid(OID.san), nested(depth, tags, NULL))] })
        : await g.goodDer({ sans: [uriName(g.identity), tlv(0xa4, nested(depth, [0x30, 0x31], NULL))] });
    return {
      expected: S.INVALID_ARGUMENT,
      note: `signed CSR with ${v === 2 ? "a SAN value" : "a SAN directoryName"} nested ${depth} deep`,
      csr: csrPem(der),
    };
  }),
  category("long-oid", 4, BOTH, async (g) => {
    const r = g.rng;
    const forms: Array<[string, () => Uint8Array]> = [
      [
        "many arcs",
        () => tlv(0x06, oidContent([1n, 2n, ...Array.from({ length: r.int(200, 3000) }, () => BigInt(r.int(0, 200)))])),
      ],
      [
        "one huge arc",
        () => tlv(0x06, oidContent([2n, 999n, BigInt(`0x${Buffer.from(r.bytes(r.int(64, 2500))).toString("hex")}`)])),
      ],
      [
        "non-minimal arcs",
        () => tlv(0x06, Uint8Array.from([0x2a, ...new Array<number>(r.int(1, 2000)).fill(0x80), 0x01])),
      ],
      [
        "unterminated arc",
        () => tlv(0x06, Uint8Array.from([0x2a, 0x86, 0x48, ...new Array<number>(r.int(1, 500)).fill(0xff)])),
      ],
      ["empty OID", () => Uint8Array.of(0x06, 0x00)],
    ];
    const [form, make] = r.pick(forms);
    const bad = make();
    const signer = g.goodSigner();
    // No valid URI SAN anywhere: whichever check catches it, the answer is INVALID_ARGUMENT.
    const places: Array<[string, () => Promise<Uint8Array>]> = [
      ["signature algorithm", async () => assemble(await signedParts({ signer, algorithm: seq(bad) }))],
      [
        "key algorithm",
        async () => assemble(await signedParts({ signer, spki: seq(seq(bad, NULL), bitString(r.bytes(65))) })),
      ],
      [
        "EC curve",
        async () =>
          assemble(await signedParts({ signer, spki: seq(seq(oid(OID.ecPublicKey), bad), bitString(r.bytes(65))) })),
      ],
      ["attribute type", async () => assemble(await signedParts({ signer, attributes: [seq(bad, set(NULL))] }))],
      ["extension id", async () => assemble(await signedParts({ signer, extensions: [ext(bad, NULL)] }))],
      [
        "subject attribute type",
        async () => assemble(await signedParts({ signer, subject: seq(set(seq(bad, utf8("x")))) })),
      ],
      [
        "SAN registeredID",
        async () =>
          assemble(
            await signedParts({
              signer,
              extensions: [sanExt([tlv(0x88, bad.subarray(2 + (bad[1]! & 0x80 ? bad[1]! & 0x7f : 0)))])],
            }),
          ),
      ],
      [
        "SAN otherName",
        async () =>
          assemble(await signedParts({ signer, extensions: [sanExt([tlv(0xa0, bad, tlv(0xa0, utf8("x")))])] })),
      ],
    ];
    const [place, build] = r.pick(places);
    const der = await build();
    return invalidCsr(`${form} (${bad.length} B) as ${place}`, der);
  }),
  category("bad-signature", 8, BOTH, async (g) => {
    const r = g.rng;
    const parts = await signedParts(g.goodSpec());
    const v = r.int(0, 7);
    if (v === 7) {
      // The right signature value, encoded in a way DER does not allow: what is verified must be what was sent.
      const ec = await signedParts({ ...g.goodSpec(), signer: r.pick(g.ctx.keys.p256) });
      const [note, make] = r.pick(nonDerSignatures(ec.signature, r));
      return invalidCsr(note, make(ec));
    }
    if (v <= 2) {
      const sig = parts.signature.slice();
      const at = r.int(0, sig.length - 1);
      sig[at]! ^= 1 << r.int(0, 7);
      return {
        expected: S.INVALID_ARGUMENT,
        note: `signature bit flipped at ${at}/${sig.length}`,
        csr: csrPem(assemble({ ...parts, signature: sig })),
      };
    }
    if (v === 3) {
      // Signed by one key, presenting another (accepted) key.
      const [presented, signing] = r.shuffle([...g.ctx.keys.p256]);
      const forged = await signedParts({ ...g.goodSpec(), signer: signing!, spki: presented!.spki });
      return {
        expected: S.INVALID_ARGUMENT,
        note: "signed by a key other than the one presented",
        csr: csrPem(assemble(forged)),
      };
    }
    if (v === 4) {
      // A valid signature over another request, pasted onto this one.
      const other = await signedParts(g.goodSpec({ subject: name(`other-${g.segment()}`) }));
      return {
        expected: S.INVALID_ARGUMENT,
        note: "signature of another request",
        csr: csrPem(assemble({ ...parts, signature: other.signature })),
      };
    }
    if (v === 5) {
      const sig = r.pick([new Uint8Array(0), seq(int(0), int(0)), seq(int(1), int(1)), r.bytes(r.int(1, 600))]);
      return {
        expected: S.INVALID_ARGUMENT,
        note: `degenerate signature (${sig.length} B)`,
        csr: csrPem(assemble({ ...parts, signature: sig })),
      };
    }
    const labels: Array<[string, Uint8Array]> = [
      ["ECDSA SHA-384 label", seq(oid(OID.ecdsaSha384))],
      ["ECDSA SHA-256 label", seq(oid(OID.ecdsaSha256))],
      ["RSA SHA-256 label", seq(oid(OID.sha256WithRsa), NULL)],
      ["MD5 RSA label", seq(oid(OID.md5WithRsa), NULL)],
      ["Ed25519 label", seq(oid(OID.ed25519))],
      ["SHA-1 ECDSA, correctly signed", new Uint8Array(0)],
    ];
    // Any label but the true one (which would make the request valid).
    const [note, algorithm] = r.pick(labels.filter(([, a]) => Buffer.compare(a, parts.algorithm) !== 0));
    if (algorithm.length === 0) {
      const sha1 = await signedParts({ ...g.goodSpec(), signer: g.ctx.keys.p256Sha1 });
      return invalidCsr(note, assemble(sha1));
    }
    return invalidCsr(note, assemble({ ...parts, algorithm }));
  }),
  category("ca-request", 6, BOTH, async (g) => {
    const r = g.rng;
    const v = r.int(0, 2);
    const extensions: Uint8Array[] = [sanExt([uriName(g.identity)])];
    const notes: string[] = [];
    if (v !== 1) {
      const pathLen = r.chance(0.5) ? [int(r.int(0, 5))] : [];
      extensions.push(ext(oid(OID.basicConstraints), seq(TRUE, ...pathLen), r.chance(0.5)));
      notes.push(`basicConstraints CA:true${pathLen.length ? " pathlen" : ""}`);
    }
    if (v !== 0) {
      const bits = r.pick([[5], [6], [5, 6], [0, 5], [0, 2, 6], [0, 1, 2, 3, 4, 5, 6, 7, 8]]);
      extensions.push(ext(oid(OID.keyUsage), keyUsage(bits), r.chance(0.5)));
      notes.push(`keyUsage bits ${bits.join(",")}`);
    }
    const der = await g.goodDer({ extensions: r.shuffle(extensions) });
    return { expected: S.PERMISSION_DENIED, note: notes.join(" + "), csr: csrPem(der) };
  }),
  category("foreign-trust-domain", 6, BOTH, (g) =>
    g.wrongIdentity(`spiffe://${g.foreignTrustDomain()}/ns/${g.segment()}/sa/${g.segment()}`, "foreign"),
  ),
  category("other-identity", 6, ["create"], (g) => g.wrongIdentity(g.otherIdentity(), "other")),
  category("non-spiffe-uri", 6, BOTH, async (g) => {
    const bad = g.nonSpiffeUri();
    const { csr } = await g.csrWithUriBesideIdentity(bad);
    return { expected: S.INVALID_ARGUMENT, note: `URI ${JSON.stringify(bad.slice(0, 60))} (${bad.length})`, csr };
  }),
  category("non-uri-san", 6, BOTH, async (g) => {
    const r = g.rng;
    const kinds: Array<[string, () => Uint8Array]> = [
      ["dns", () => tlv(0x82, latin1(r.pick(["localhost", "istiod.istio-system.svc", "*.example.com", g.identity])))],
      ["email", () => tlv(0x81, latin1(`${g.segment()}@example.com`))],
      ["ip", () => tlv(0x87, r.bytes(r.pick([4, 16, 0, 5, 32])))],
      ["dn", () => tlv(0xa4, name(g.segment()))],
      ["registeredID", () => tlv(0x88, oidContent([1n, 3n, 6n, 1n, BigInt(r.int(0, 1000))]))],
      ["otherName UPN", () => tlv(0xa0, oid(OID.upn), tlv(0xa0, utf8(`${g.segment()}@corp`)))],
      ["otherName GUID", () => tlv(0xa0, oid(OID.guid), tlv(0xa0, octet(r.bytes(16))))],
      ["otherName private OID", () => tlv(0xa0, oid(`1.3.6.1.4.1.${r.int(1, 60000)}.1`), tlv(0xa0, utf8(g.identity)))],
      ["x400Address", () => tlv(0xa3, seq(r.bytes(r.int(0, 30))))],
      ["ediPartyName", () => tlv(0xa5, tlv(0xa1, utf8("edi")))],
      ["unknown tag [9]", () => tlv(0x89, r.bytes(4))],
    ];
    const chosen = Array.from({ length: r.int(1, 3) }, () => r.pick(kinds));
    const names = chosen.map(([, make]) => make());
    if (r.chance(0.6)) names.push(uriName(g.identity));
    const der = await g.goodDer({ sans: r.shuffle(names) });
    return invalidCsr(`SAN types ${chosen.map(([k]) => k).join(",")}`, der);
  }),
  category("no-identity", 3, BOTH, async (g) => {
    const r = g.rng;
    const eku = ext(oid(OID.extKeyUsage), seq(oid(OID.serverAuth)));
    const variants: Array<[string, Partial<CsrSpec>]> = [
      ["no attributes", { extensions: undefined }],
      ["extensionRequest without SAN", { extensions: [eku] }],
      ["empty SAN", { extensions: [sanExt([])] }],
      ["SAN value is garbage", { extensions: [ext(oid(OID.san), r.bytes(r.int(0, 40)))] }],
      ["SAN twice", { extensions: [sanExt([uriName(g.identity)]), sanExt([uriName(g.identity)])] }],
      ["empty extensionRequest", { extensions: [], attributes: [] }],
      [
        "extensionRequest with no value",
        { extensions: undefined, attributes: [seq(oid(OID.extensionRequest), set())] },
      ],
    ];
    const [note, spec] = r.pick(variants);
    const der = assemble(await signedParts({ ...g.goodSpec(), ...spec }));
    return invalidCsr(note, der);
  }),
  category("weak-or-odd-rsa", 3, BOTH, async (g) => {
    const r = g.rng;
    const k = g.ctx.keys;
    const v = r.int(0, 3);
    if (v <= 1) {
      const der = await g.goodDer({ signer: k.rsa1024 });
      return invalidCsr("RSA-1024, correctly signed", der);
    }
    // A made-up modulus: too small or too big; the key check comes before any signature check.
    const bits = r.pick([512, 1016, 2040, 8200, 16384]);
    const n = r.bytes(bits / 8);
    n[0]! |= 0x80;
    const spki = seq(seq(oid(OID.rsaEncryption), NULL), bitString(seq(uintBytes(n), int(65537))));
    const der = await g.goodDer({ spki, signer: k.rsa2048 });
    return invalidCsr(`RSA modulus of ${bits} bits`, der);
  }),
  category("rsa-exponent-1", 1, BOTH, async (g) => {
    const der = await g.goodDer({ signer: g.ctx.keys.rsaExponentOne });
    return invalidCsr("RSA-2048 with e=1, signature verifies", der);
  }),
  category("unsupported-key", 4, BOTH, async (g) => {
    const r = g.rng;
    const k = g.ctx.keys;
    const v = r.int(0, 7);
    if (v <= 1) {
      // The two real, correctly signed ones come from @peculiar/x509's own CSR generator.
      const keys = v === 0 ? k.p521.keys : k.ed25519.keys;
      const csr = await x509.Pkcs10CertificateRequestGenerator.create({
        keys,
        signingAlgorithm: v === 0 ? { name: "ECDSA", hash: "SHA-512" } : { name: "Ed25519" },
        extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: g.identity }])],
      });
      return {
        expected: S.INVALID_ARGUMENT,
        note: `${v === 0 ? "P-521" : "Ed25519"} (peculiar)`,
        csr: csr.toString("pem"),
      };
    }
    if (v <= 3) {
      const der = await g.goodDer({ signer: v === 2 ? k.p521 : k.ed25519 });
      return invalidCsr(`${v === 2 ? "P-521" : "Ed25519"} (hand-made)`, der);
    }
    const point = concat([Uint8Array.of(0x04), r.bytes(64)]);
    const [note, spki] = r.pick<[string, Uint8Array]>([
      ["secp256k1", seq(seq(oid(OID.ecPublicKey), oid(OID.secp256k1)), bitString(point))],
      ["brainpoolP256r1", seq(seq(oid(OID.ecPublicKey), oid(OID.brainpoolP256r1)), bitString(point))],
      ["X25519", seq(seq(oid(OID.x25519)), bitString(r.bytes(32)))],
      ["Ed448", seq(seq(oid(OID.ed448)), bitString(r.bytes(57)))],
      ["DSA", seq(seq(oid(OID.dsa), seq(int(7), int(5), int(3))), bitString(int(9)))],
      ["explicit EC parameters", seq(seq(oid(OID.ecPublicKey), seq(int(1), seq(), seq())), bitString(point))],
      ["P-256 point not on the curve", seq(seq(oid(OID.ecPublicKey), oid(OID.p256)), bitString(point))],
      ["P-256 point at infinity", seq(seq(oid(OID.ecPublicKey), oid(OID.p256)), bitString(Uint8Array.of(0)))],
      ["EC key without curve", seq(seq(oid(OID.ecPublicKey)), bitString(point))],
    ]);
    const der = await g.goodDer({ spki });
    return invalidCsr(note, der);
  }),
  category("absurd-ttl", 6, ["sign"], async (g) => {
    const r = g.rng;
    const ttl = r.pick([
      -1,
      -r.int(2, 2 ** 31),
      -(2 ** 53 - 1),
      MAX_SANE_TTL_SECONDS + 1,
      r.int(MAX_SANE_TTL_SECONDS + 1, 2 ** 40),
      2 ** 31,
      2 ** 32 + 1,
      2 ** 53 - 1,
      100 * 365 * 86400,
    ]);
    const der = await g.goodDer();
    return { expected: S.INVALID_ARGUMENT, note: `ttl ${ttl}`, csr: csrPem(der), ttl };
  }),
  category("ttl-too-long", 2, ["create"], async (g) => {
    const ttl = g.rng.pick([MAX_SANE_TTL_SECONDS + 1, g.rng.int(MAX_SANE_TTL_SECONDS + 1, 2 ** 45), 2 ** 53 - 1]);
    return { expected: S.INVALID_ARGUMENT, note: `validity ${ttl}`, csr: csrPem(await g.goodDer()), ttl };
  }),
  // Valid int64 values a JavaScript number cannot hold: the contract answer is still "invalid TTL".
  category("ttl-beyond-int53", 2, BOTH, async (g) => {
    const r = g.rng;
    const positive = [2n ** 53n + 1n, 2n ** 62n, 2n ** 63n - 1n, 2n ** 53n + BigInt(r.int(2, 2 ** 30))];
    // CreateCertificate maps "0 or less" to the default, so a huge negative validity is not an error there.
    const ttl = r.pick(g.rpc === "sign" ? [...positive, -(2n ** 63n), -(2n ** 53n) - 7n] : positive);
    const csr = csrPem(await g.goodDer());
    const raw = concat([field(1, 2, Buffer.from(csr)), field(g.rpc === "sign" ? 2 : 3, 0, varint(ttl))]);
    return { expected: S.INVALID_ARGUMENT, note: `int64 ttl ${ttl}`, raw };
  }),
  category("malformed-protobuf", 2, BOTH, (g) => {
    const r = g.rng;
    const csr = Buffer.from("-----BEGIN CERTIFICATE REQUEST-----\n");
    const ttlNo = g.rpc === "sign" ? 2 : 3;
    const variants: Array<[string, () => Uint8Array]> = [
      ["length past the end", () => concat([Uint8Array.of(0x0a), varint(BigInt(r.int(100, 1e6))), csr])],
      ["length varint cut short", () => Uint8Array.of(0x0a, 0xff, 0xff)],
      ["wire type 6", () => concat([Uint8Array.of((1 << 3) | 6), r.bytes(8)])],
      ["wire type 7", () => concat([Uint8Array.of((9 << 3) | 7), r.bytes(8)])],
      ["11-byte varint", () => concat([Uint8Array.of(ttlNo << 3), new Uint8Array(10).fill(0xff), Uint8Array.of(0x01)])],
      ["unknown field, length past the end", () => concat([field(1, 2, csr), Uint8Array.of((7 << 3) | 2, 0xff, 0x7f)])],
      ["unterminated groups", () => new Uint8Array(r.int(100, 30_000)).fill((5 << 3) | 3)],
    ];
    if (g.rpc === "create") {
      variants.push([
        "metadata Struct nested past the decoder's limit",
        () => concat([field(1, 2, csr), field(4, 2, nestedStruct(r.int(120, 2000)))]),
      ]);
    }
    const [note, make] = r.pick(variants);
    return Promise.resolve({ expected: S.INVALID_ARGUMENT, note, raw: make() });
  }),
  category("oversized-message", 1, BOTH, (g) => {
    const r = g.rng;
    const n = r.int(g.ctx.maxMessageBytes + 1, 256 * 1024);
    const csr = `-----BEGIN CERTIFICATE REQUEST-----\n${r
      .string(64, B64URL)
      .repeat(Math.ceil(n / 64))
      .slice(0, n)}\n-----END CERTIFICATE REQUEST-----\n`;
    return Promise.resolve({
      expected: S.RESOURCE_EXHAUSTED,
      note: `message of ~${csr.length} B`,
      csr,
      // The size limit applies before any handler runs, so authentication makes no difference.
      authorization: r.chance(0.3) ? null : undefined,
    });
  }),
  category("gzip-bomb", 1, BOTH, (g) => {
    const n = g.rng.int(g.ctx.maxMessageBytes + 1, 4 * 1024 * 1024);
    return Promise.resolve({
      expected: S.RESOURCE_EXHAUSTED,
      note: `${n} B that gzip to a few KiB`,
      csr: "A".repeat(n),
      gzip: true,
      authorization: g.rng.chance(0.3) ? null : undefined,
    });
  }),
  category("auth-missing-or-malformed", 3, ["create"], async (g) => {
    const r = g.rng;
    const t = g.ctx.tokens.valid;
    const header = r.pick<string | null>([
      null,
      "",
      "Bearer",
      "Bearer ",
      `Basic ${Buffer.from("user:pass").toString("base64")}`,
      `Token ${r.string(40, B64URL)}`,
      `Bearer ${r.string(20, B64URL)} ${r.string(20, B64URL)}`,
      `BearerX ${r.string(20, B64URL)}`,
      `Bearer:${r.string(20, B64URL)}`,
      r.string(r.int(1, 200), PRINTABLE).trim() || "x",
      // The valid token, but not as a bearer credential.
      t,
      `Basic ${t}`,
    ]);
    const note =
      header === null
        ? "no authorization header"
        : header.includes(t)
          ? "valid token, wrong scheme"
          : `header ${JSON.stringify(header.slice(0, 30))}`;
    return { expected: S.UNAUTHENTICATED, note, csr: csrPem(await g.goodDer()), authorization: header };
  }),
  category("auth-bad-token", 3, ["create"], async (g) => {
    const r = g.rng;
    const t = g.ctx.tokens;
    const tampered = (): string => {
      // Not the last character of a segment: its low bits may be padding that decodes to the same bytes.
      let at = r.int(0, t.valid.length - 2);
      while (t.valid[at] === "." || t.valid[at + 1] === ".") at--;
      const c = t.valid[at] === "A" ? "g" : "A";
      return t.valid.slice(0, at) + c + t.valid.slice(at + 1);
    };
    const jwtPart = (): string => r.string(r.int(10, 300), B64URL);
    const [note, makeToken] = r.pick<[string, () => string]>([
      ["random token", () => r.string(r.int(1, 3000), B64URL)],
      ["JWT-shaped garbage", () => `eyJ${jwtPart()}.${jwtPart()}.${jwtPart()}`],
      [
        "unsigned JWT",
        () =>
          `${b64url('{"alg":"none"}')}.${b64url(JSON.stringify({ sub: "system:serviceaccount:default:sleep", aud: ["istio-ca"] }))}.`,
      ],
      ["tampered valid token", tampered],
      ["token for another audience", () => t.wrongAudience],
      ["token of a deleted service account", () => t.deletedServiceAccount],
    ]);
    const token = makeToken();
    return { expected: S.UNAUTHENTICATED, note, csr: csrPem(await g.goodDer()), authorization: `Bearer ${token}` };
  }),
];

/**
 * Re-encodings of a correct ECDSA signature (SEQUENCE { INTEGER r, INTEGER s }, short lengths) that BER readers may
 * take but DER forbids.
 */
function nonDerSignatures(sig: Uint8Array, r: Rng): Array<[string, (p: CsrParts) => Uint8Array]> {
  const body = sig.subarray(2);
  const rLen = body[1]!;
  const rInt = body.subarray(0, 2 + rLen);
  const sInt = body.subarray(2 + rLen);
  const padded = concat([Uint8Array.of(0x02, rLen + 1, 0x00), rInt.subarray(2)]);
  return [
    ["BIT STRING with unused bits", (p) => assemble(p, r.int(1, 7))],
    [
      "signature SEQUENCE tagged [16]",
      (p) => assemble({ ...p, signature: concat([Uint8Array.of(0xb0), sig.subarray(1)]) }),
    ],
    ["signature SEQUENCE as SET", (p) => assemble({ ...p, signature: concat([Uint8Array.of(0x31), sig.subarray(1)]) })],
    ["long-form length", (p) => assemble({ ...p, signature: concat([Uint8Array.of(0x30, 0x81, body.length), body]) })],
    [
      "indefinite length",
      (p) => assemble({ ...p, signature: concat([Uint8Array.of(0x30, 0x80), body, Uint8Array.of(0, 0)]) }),
    ],
    ["r with a leading zero byte", (p) => assemble({ ...p, signature: seq(padded, sInt) })],
    ["bytes after the signature", (p) => assemble({ ...p, signature: concat([sig, r.bytes(r.int(1, 8))]) })],
    [
      "outer length too short",
      (p) => assemble({ ...p, signature: concat([Uint8Array.of(0x30, body.length - 1), body]) }),
    ],
  ];
}

const b64url = (s: string): string => Buffer.from(s).toString("base64url");

/** A signed CSR whose PEM is close to `targetLength` characters: many valid URI SANs. */
async function bigCsr(g: Gen, targetLength: number): Promise<string> {
  // Every SAN is a valid workload ID (the caller's identity for CreateCertificate), so size is the only fault.
  let count = Math.max(1, Math.floor((targetLength * 0.74) / (g.identity.length + 3)));
  for (let attempt = 0; ; attempt++) {
    const sans = Array.from({ length: count }, () => uriName(g.identity));
    const pem = csrPem(await g.goodDer({ sans }));
    if (pem.length > g.ctx.maxCsrBytes && pem.length < g.ctx.maxMessageBytes - 64) return pem;
    if (attempt >= 4) throw new Error(`could not size a CSR to ${targetLength} B (got ${pem.length})`);
    count = Math.max(1, Math.floor((count * targetLength) / pem.length));
  }
}

// --- raw protobuf ----------------------------------------------------------------------------------------------------

function varint(v: bigint): Uint8Array {
  let u = BigInt.asUintN(64, v);
  const out: number[] = [];
  do {
    const b = Number(u & 0x7fn);
    u >>= 7n;
    out.push(u > 0n ? b | 0x80 : b);
  } while (u > 0n);
  return Uint8Array.from(out);
}

function field(no: number, wireType: number, payload: Uint8Array): Uint8Array {
  const key = varint(BigInt((no << 3) | wireType));
  return wireType === 2 ? concat([key, varint(BigInt(payload.length)), payload]) : concat([key, payload]);
}

function ttlField(g: Gen, ttl: number): Uint8Array {
  return ttl === 0 ? new Uint8Array(0) : field(g.rpc === "sign" ? 2 : 3, 0, varint(BigInt(ttl)));
}

/** google.protobuf.Struct {fields: {"a": Value{struct_value: ...}}} nested `depth` times. */
function nestedStruct(depth: number): Uint8Array {
  let inner: Uint8Array = new Uint8Array(0);
  for (let i = 0; i < depth; i++) {
    const value = field(5, 2, inner); // Value.struct_value = 5
    const entry = concat([field(1, 2, Buffer.from("a")), field(2, 2, value)]);
    inner = field(1, 2, entry); // Struct.fields = 1 (map entry)
  }
  return inner;
}

function encode(rpc: Rpc, csr: string, ttl: number): Uint8Array {
  return rpc === "sign"
    ? SignCertificateRequest.encode({ csrPem: csr, ttlSeconds: ttl }).finish()
    : IstioCertificateRequest.encode({ csr, validityDuration: ttl }).finish();
}

// --- the generator ---------------------------------------------------------------------------------------------------

export const HOSTILE_CATEGORIES: readonly string[] = CATEGORIES.map((c) => c.name);

const table = (rpc: Rpc) => {
  const cats = CATEGORIES.filter((c) => c.rpcs.includes(rpc));
  return { cats, total: cats.reduce((s, c) => s + c.weight, 0) };
};
const TABLES = { sign: table("sign"), create: table("create") };

/** Case `index` of the run with `ctx.seed`: about 55% SignCertificate, 45% CreateCertificate. */
export async function hostileCase(ctx: HostileContext, index: number): Promise<HostileCase> {
  const rng = new Rng(caseSeed(ctx.seed, index));
  const rpc: Rpc = rng.chance(0.55) ? "sign" : "create";
  const { cats, total } = TABLES[rpc];
  let roll = rng.float() * total;
  let cat = cats[cats.length - 1]!;
  for (const c of cats) {
    if ((roll -= c.weight) < 0) {
      cat = c;
      break;
    }
  }
  const g = new Gen(rng, ctx, rpc);
  const d = await cat.make(g);
  const body = d.raw ?? encode(rpc, d.csr ?? "", d.ttl ?? g.validTtl());
  const authorization =
    rpc === "sign" || d.authorization === null
      ? undefined
      : (d.authorization ?? `${rng.pick(["Bearer", "Bearer", "Bearer", "bearer", "BEARER"])} ${ctx.tokens.valid}`);
  return {
    index,
    rpc,
    category: cat.name,
    note: d.note,
    expected: d.expected,
    body,
    gzip: d.gzip ?? false,
    authorization,
  };
}

/**
 * Well-formed CSRs from the same builder, for the same identity and keys, that the agent must sign: if these were
 * refused, every refusal of a hostile case would prove nothing.
 */
export async function controlCsrs(ctx: HostileContext, rpc: Rpc): Promise<Array<{ note: string; csr: string }>> {
  const g = new Gen(new Rng(ctx.seed), ctx, rpc);
  const k = ctx.keys;
  const out: Array<{ note: string; csr: string }> = [];
  const control = async (note: string, spec: Parameters<typeof signedParts>[0]): Promise<void> => {
    out.push({ note, csr: csrPem(assemble(await signedParts(spec))) });
  };
  for (const signer of [k.p256[0]!, k.p256[3]!, k.p384, k.rsa2048])
    await control(`${signer.label}, empty subject`, { ...g.goodSpec(), signer, subject: seq() });
  await control("P-256, CN subject, critical SAN", {
    signer: k.p256[1]!,
    subject: name("workload"),
    extensions: [sanExt([uriName(g.identity)], true)],
  });
  await control("P-256, SAN + leaf keyUsage + EKU", {
    signer: k.p256[2]!,
    extensions: [
      sanExt([uriName(g.identity)]),
      ext(oid(OID.keyUsage), keyUsage([0, 2])),
      ext(oid(OID.extKeyUsage), seq(oid(OID.serverAuth))),
    ],
  });
  await control("P-256, basicConstraints CA:false", {
    signer: k.p256[0]!,
    extensions: [sanExt([uriName(g.identity)]), ext(oid(OID.basicConstraints), seq(), true)],
  });
  out.push({ note: "CSR just under the size cap", csr: await bigCsrUnder(g, ctx.maxCsrBytes) });
  return out;
}

async function bigCsrUnder(g: Gen, limit: number): Promise<string> {
  // One URI SAN (an X.509-SVID carries exactly one); the size comes from subject RDNs, which the agent never copies.
  const make = async (count: number) =>
    csrPem(
      assemble(
        await signedParts({
          signer: g.ctx.keys.p256[0]!,
          subject: seq(...Array.from({ length: count }, () => set(seq(oid(OID.organizationalUnit), utf8(g.identity))))),
          extensions: [sanExt([uriName(g.identity)])],
        }),
      ),
    );
  let count = Math.floor((limit * 0.7) / (g.identity.length + 3));
  while (count > 1 && (await make(count)).length > limit) count = Math.floor(count * 0.9);
  let best = await make(count);
  for (;;) {
    const next = await make(++count);
    if (next.length > limit) return best;
    best = next;
  }
}

/** The encoded request for a control CSR (a valid TTL). */
export function encodeRequest(rpc: Rpc, csr: string, ttl: number): Uint8Array {
  return encode(rpc, csr, ttl);
}

// --- a process that holds watch streams until it is killed ------------------------------------------------------------

/**
 * Opens `count` WatchSigningBundle streams, each on its own connection, prints "ready" once every stream delivered
 * its first bundle, then waits to be killed: the abrupt way a crashed client drops its streams. (Closing a grpc-js
 * channel does not end its in-flight streams or connection, so it cannot stand in for a client that goes away.)
 */
export function holdWatchStreams(socketPath: string, count: number): void {
  let ready = 0;
  const clients: CertificateAuthorityAgentClient[] = [];
  for (let i = 0; i < count; i++) {
    const client = new CertificateAuthorityAgentClient(`unix://${socketPath}`, grpc.credentials.createInsecure(), {
      "grpc.use_local_subchannel_pool": 1,
    });
    clients.push(client);
    const call = client.watchSigningBundle({});
    call.once("data", () => {
      if (++ready === count) process.stdout.write("ready\n");
    });
    call.on("error", (err: Error) => process.stderr.write(`watch stream ${i}: ${err.message}\n`));
  }
  setInterval(() => undefined, 60_000);
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === "hold-watch-streams") {
  holdWatchStreams(process.argv[3] ?? "", Number(process.argv[4] ?? "1"));
}
