// Adoption: an agent starting in a pod whose cacerts volume already holds a valid intermediate serves that one instead
// of having Vault sign another. In the shipped layout the init container (`init`) obtains an intermediate and writes
// istiod's cacerts files, then the sidecar starts on the same volume seconds later; without adoption every pod start
// signs two intermediates, and a restarted sidecar container signs one more.
//
// Why this is safe, and what is refused:
// - Where it is read from: the cacerts directory is the pod's own in-memory emptyDir, which only this pod's agent
//   containers (same image, same uid) write, through the sink (src/sinks/cacerts.ts). Only the generation `..data`
//   points to is read, and only if it is exactly what our sink makes (CacertsSink.readOwnGeneration: our uid, our
//   modes, single-link regular files, our links, read through one opened directory). Anything else is refused: files
//   put there by something else are never served. The key read there is the key istiod already signs with; adoption
//   gives it to nobody new.
// - What must hold: the key matches the certificate and is of the configured algorithm; the certificate is a CA
//   (CA:TRUE, keyCertSign), valid now, with the configured common name; cert-chain.pem is that certificate followed by
//   each issuer up to a self-signed root (signatures checked, the one chain validator also used on Vault's answers);
//   root-cert.pem holds exactly the roots this agent would serve (that root plus its trust anchors); and the origin
//   record written beside the files (same generation) names this certificate and carries the same fingerprint of the
//   settings that shape an intermediate as this agent's configuration (AdoptionSettings; no secrets in it). The
//   renewal decision (keepOrRenew, in the authority) must then say keep: an intermediate already in its renewal window
//   is replaced at once, as before.
// - What adoption does not trust: the origin record is a statement by an earlier agent of this pod, not a proof; a
//   process that can write the volume as our uid can also read the key, so it could do no more by forging the record.
//   The checks above are on the certificate and key themselves wherever they can be.
// Anything that fails is logged with its reason, and the agent signs a new intermediate exactly as without adoption.
import { createHash, createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import type { Config } from "../config/config.js";
import { keyAlgorithmOf, signingCryptoKeys, type KeyAlgorithmName, type NodeKeyPair } from "../crypto/keys.js";
import { parsePemBlocks } from "../crypto/pem.js";
import { x509 } from "../crypto/x509.js";
import { validateSignAnswer } from "./chain.js";
import { servedRoots } from "./bundle.js";

/**
 * The settings that decide what intermediate an agent obtains, from where. Two agents with equal settings would ask
 * Vault for the same kind of intermediate; renewal timing (grace ratio, jitter) is the running agent's own decision
 * and auth (mount, role) only decides who may ask, so neither is here. No secrets: addresses, paths, names, numbers and
 * SHA-256 fingerprints of the trust anchors.
 */
export interface AdoptionSettings {
  vaultAddress: string;
  vaultNamespace: string | null;
  caPath: string;
  csrPath: string | null;
  keyAlgorithm: KeyAlgorithmName;
  commonName: string;
  organization: string | null;
  ttlSeconds: number;
  maxPathLength: number;
  trustDomain: string;
  /** sha256 of each extra trust anchor's DER, sorted. */
  trustAnchors: string[];
}

export function adoptionSettings(c: Readonly<Config>): AdoptionSettings {
  const i = c.intermediate;
  return {
    vaultAddress: c.vault.address.replace(/\/+$/, ""),
    vaultNamespace: c.vault.namespace ?? null,
    caPath: i.caPath,
    csrPath: i.csrPath ?? null,
    keyAlgorithm: i.keyAlgorithm,
    commonName: i.commonName,
    organization: i.organization ?? null,
    ttlSeconds: i.ttlSeconds,
    maxPathLength: i.maxPathLength,
    trustDomain: c.leaf.trustDomain,
    trustAnchors: [
      ...new Set(c.trustAnchors.pem.flatMap((p) => parsePemBlocks(p, "trust anchor").map((b) => sha256(b.der)))),
    ].sort(),
  };
}

/** `sha256:<hex>` of the settings in a fixed key order (the fingerprint init writes and a later agent recomputes). */
export function settingsFingerprint(s: AdoptionSettings): string {
  return `sha256:${sha256(Buffer.from(canonicalJson(s)))}`;
}

const ORIGIN_KIND = "istiod-vault-agent/cacerts-origin";

/** What an agent writes beside the cacerts files it publishes (CacertsFiles.originJson). */
export interface OriginRecord {
  kind: typeof ORIGIN_KIND;
  version: 1;
  fingerprint: string;
  settings: AdoptionSettings;
  /** sha256 of the DER of the ca-cert.pem it was written with. */
  certSha256: string;
  /** When the intermediate was obtained: the lifetime is measured from here (Vault backdates notBefore). */
  issuedAt: string;
}

export function originRecordJson(settings: AdoptionSettings, certPem: string, issuedAt: Date): string {
  const record: OriginRecord = {
    kind: ORIGIN_KIND,
    version: 1,
    fingerprint: settingsFingerprint(settings),
    settings,
    certSha256: sha256(firstDer(certPem)),
    issuedAt: issuedAt.toISOString(),
  };
  return `${JSON.stringify(record, null, 2)}\n`;
}

/** The files of one cacerts generation as read back (structurally the sink's CacertsFiles). */
export interface AdoptableFiles {
  caCertPem: string;
  caKeyPem: string;
  certChainPem: string;
  rootCertPem: string;
  originJson?: string | undefined;
}

/** An intermediate that passed every check but the renewal decision (the authority makes that one). */
export interface AdoptionCandidate {
  signingCert: x509.X509Certificate;
  signingCertPem: string;
  chainPem: string[];
  rootsPem: string[];
  nodeKeys: NodeKeyPair;
  keyAlgorithm: KeyAlgorithmName;
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  issuedAt: string;
}

export type AdoptionCheck = { ok: true; candidate: AdoptionCandidate } | { ok: false; reason: string };

/**
 * Whether `files` hold an intermediate this agent, configured with `settings` and serving `extraRootsPem` beside the
 * signing root, may serve as its own (see the comment at the top). Pure but for the crypto; never throws.
 */
export async function checkAdoptable(
  files: AdoptableFiles,
  settings: AdoptionSettings,
  extraRootsPem: readonly string[],
  now: Date,
): Promise<AdoptionCheck> {
  try {
    return await check(files, settings, extraRootsPem, now);
  } catch (err) {
    return { ok: false, reason: `unreadable: ${(err as Error).message}` };
  }
}

async function check(
  files: AdoptableFiles,
  settings: AdoptionSettings,
  extraRootsPem: readonly string[],
  now: Date,
): Promise<AdoptionCheck> {
  const refuse = (reason: string): AdoptionCheck => ({ ok: false, reason });
  const origin = parseOrigin(files.originJson);
  if (typeof origin === "string") return refuse(origin);
  const ours = settingsFingerprint(settings);
  if (origin.fingerprint !== ours || settingsFingerprint(origin.settings) !== ours) {
    const diff = settingsDiff(origin.settings, settings);
    return refuse(`it was obtained with other settings (${diff.length ? diff.join("; ") : "fingerprint differs"})`);
  }
  const certDer = firstDer(files.caCertPem);
  if (parsePemBlocks(files.caCertPem, "ca-cert.pem").length !== 1) return refuse("ca-cert.pem is not one certificate");
  if (sha256(certDer) !== origin.certSha256) return refuse("the origin record names another certificate");

  const keyBlocks = parsePemBlocks(files.caKeyPem, "ca-key.pem");
  if (keyBlocks.length !== 1 || keyBlocks[0]?.label !== "PRIVATE KEY")
    return refuse("ca-key.pem is not one PKCS#8 PRIVATE KEY");
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(files.caKeyPem);
  } catch {
    return refuse("ca-key.pem is not a readable private key");
  }
  const keyAlgorithm = keyAlgorithmOf(privateKey);
  if (keyAlgorithm !== settings.keyAlgorithm)
    return refuse(`ca-key.pem is ${keyAlgorithm ?? "an unsupported key"}, not the configured ${settings.keyAlgorithm}`);
  const publicKey = createPublicKey(privateKey);
  const cert = new x509.X509Certificate(certDer);
  const spki = publicKey.export({ type: "spki", format: "der" });
  if (!Buffer.from(cert.publicKey.rawData).equals(spki))
    return refuse("the key in ca-key.pem does not match the certificate in ca-cert.pem");
  if (!cert.subjectName.getField("CN").includes(settings.commonName))
    return refuse(`the certificate's subject is ${cert.subject}, not CN=${settings.commonName}`);

  const nodeKeys = { privateKey, publicKey };
  let chain;
  try {
    chain = await validateSignAnswer(
      { certificate: files.caCertPem, ca_chain: [files.certChainPem] },
      signingCryptoKeys(nodeKeys, keyAlgorithm).publicKey,
      now,
      { expectCa: true },
    );
  } catch (err) {
    return refuse((err as Error).message.replace(/^Vault's signed intermediate was refused: /, ""));
  }
  const onDiskChain = parsePemBlocks(files.certChainPem, "cert-chain.pem").map((b) => b.derKey);
  const validated = chain.chainPem.map((p) => parsePemBlocks(p)[0]!.derKey);
  if (onDiskChain.join() !== validated.join())
    return refuse("cert-chain.pem is not ca-cert.pem followed by each issuer up to the root");
  const rootsPem = servedRoots(chain.rootPem, extraRootsPem);
  const want = new Set(rootsPem.map((p) => parsePemBlocks(p)[0]!.derKey));
  const have = new Set(parsePemBlocks(files.rootCertPem, "root-cert.pem").map((b) => b.derKey));
  if (want.size !== have.size || [...want].some((k) => !have.has(k)))
    return refuse("root-cert.pem does not hold exactly the chain's root and the configured trust anchors");

  return {
    ok: true,
    candidate: {
      signingCert: chain.cert,
      signingCertPem: chain.certPem,
      chainPem: chain.chainPem,
      rootsPem,
      nodeKeys,
      keyAlgorithm,
      serialHex: chain.cert.serialNumber.toLowerCase(),
      notBefore: chain.cert.notBefore,
      notAfter: chain.cert.notAfter,
      issuedAt: origin.issuedAt,
    },
  };
}

function parseOrigin(json: string | undefined): OriginRecord | string {
  if (json === undefined) return "no origin record beside the files";
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch {
    return "the origin record is not JSON";
  }
  const r = v as Partial<OriginRecord> | null;
  if (
    typeof r !== "object" ||
    r === null ||
    r.kind !== ORIGIN_KIND ||
    r.version !== 1 ||
    typeof r.fingerprint !== "string" ||
    typeof r.certSha256 !== "string" ||
    typeof r.issuedAt !== "string" ||
    !Number.isFinite(Date.parse(r.issuedAt)) ||
    typeof r.settings !== "object" ||
    r.settings === null
  )
    return `the origin record is not a version-1 ${ORIGIN_KIND}`;
  return r as OriginRecord;
}

/** The settings that differ, as `name: before → now` (values are not secrets). */
export function settingsDiff(before: AdoptionSettings, now: AdoptionSettings): string[] {
  const keys = [...new Set([...Object.keys(before), ...Object.keys(now)])].sort();
  const b = before as unknown as Record<string, unknown>;
  const n = now as unknown as Record<string, unknown>;
  return keys
    .filter((k) => canonicalJson(b[k]) !== canonicalJson(n[k]))
    .map((k) => `${k}: ${shown(b[k])} → ${shown(n[k])}`);
}

function shown(v: unknown): string {
  return typeof v === "string" ? v : canonicalJson(v);
}

function canonicalJson(v: unknown): string {
  if (v === undefined) return "null";
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (typeof v === "object" && v !== null)
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  return JSON.stringify(v);
}

function firstDer(pem: string): Buffer {
  const block = parsePemBlocks(pem, "certificate")[0];
  if (!block) throw new Error("no PEM certificate");
  return block.der;
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}
