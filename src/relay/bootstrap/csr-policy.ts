// What a relay agent may ask the issuer for: a leaf (no CA) for exactly one cluster. The CSR must be one strict PEM
// block of DER, its signature must verify with its own key, it must carry exactly one DNS SAN equal to the cluster
// name and no other SAN (URI, IP, email, ...), and a subject CN, if any, must be that name too. Everything here runs on
// attacker-controlled input: cheap checks first, parsing bounded. The issued certificate takes only the public key
// from the CSR; every extension is set by the issuer.
import { x509 } from "../../crypto/x509.js";
import { denied, invalid, printable } from "./refusal.js";

export const MAX_CSR_BYTES = 8192;
const MAX_CLUSTER_NAME = 253;
const DNS_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

// asn1js limits for untrusted input: a CSR is shallow and small, so anything deeper or bigger is hostile.
const PARSE_LIMITS = { berOptions: { maxDepth: 24, maxNodes: 2000, maxContentLength: 64 * 1024 } };

const PEM_RE =
  /^\s*-----BEGIN (NEW )?CERTIFICATE REQUEST-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END (NEW )?CERTIFICATE REQUEST-----\s*$/;

const ALLOWED_HASHES = new Set(["SHA-256", "SHA-384", "SHA-512"]);
const ALLOWED_CURVES = new Set(["P-256", "P-384"]);
const CA_KEY_USAGES = x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign;

export interface CheckedClusterCsr {
  publicKey: x509.PublicKey;
}

/** Checks that `cluster` is a usable cluster name (the DNS SAN of a relay client certificate). */
export function checkClusterName(cluster: unknown): string {
  if (typeof cluster !== "string" || cluster.length === 0)
    throw invalid("cluster_name_missing", "cluster_name is empty; expected the workload cluster's name, e.g. cluster1");
  if (cluster.length > MAX_CLUSTER_NAME || !DNS_NAME.test(cluster))
    throw invalid(
      "cluster_name_invalid",
      `cluster_name "${printable(cluster)}" is not a DNS name; expected lower-case letters, digits, '-' and '.'`,
    );
  return cluster;
}

/** Checks a CSR for the relay client certificate of `cluster`; returns its public key. */
export async function checkClusterCsr(csrPem: unknown, cluster: string): Promise<CheckedClusterCsr> {
  if (typeof csrPem !== "string" || csrPem.length === 0)
    throw invalid("csr_malformed", "csr_pem is empty; expected a PEM CERTIFICATE REQUEST");
  if (csrPem.length > MAX_CSR_BYTES)
    throw invalid("csr_too_large", `the CSR is larger than ${MAX_CSR_BYTES} bytes; expected a single small PEM CSR`);
  const csr = parse(decodePem(csrPem));
  const publicKey = checkKey(csr);
  await checkSignature(csr);
  const extensions = requestedExtensions(csr);
  refuseCa(extensions);
  checkNames(csr, extensions, cluster);
  return { publicKey };
}

function decodePem(pem: string): Uint8Array {
  const body = PEM_RE.exec(pem)?.[2]?.replace(/\r?\n/g, "");
  if (body === undefined || !/^[A-Za-z0-9+/]+={0,2}$/.test(body) || body.length % 4 !== 0)
    throw invalid("csr_malformed", "csr_pem is not one PEM block of type CERTIFICATE REQUEST");
  return new Uint8Array(Buffer.from(body, "base64"));
}

function parse(der: Uint8Array): x509.Pkcs10CertificateRequest {
  // The parser ignores bytes after the outer SEQUENCE: require exactly one, so what is verified is all that was sent.
  if (derSequenceLength(der) !== der.length)
    throw invalid("csr_malformed", "the CSR is not a single DER-encoded SEQUENCE");
  try {
    const csr = new x509.Pkcs10CertificateRequest(der, PARSE_LIMITS);
    void csr.subjectName;
    void csr.signatureAlgorithm;
    return csr;
  } catch {
    throw invalid("csr_malformed", "the CSR could not be parsed as PKCS#10");
  }
}

function derSequenceLength(der: Uint8Array): number {
  if (der.length < 2 || der[0] !== 0x30) return -1;
  const first = der[1]!;
  if (first < 0x80) return 2 + first;
  const n = first & 0x7f;
  if (n === 0 || n > 3 || der.length < 2 + n) return -1;
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + der[2 + i]!;
  return 2 + n + len;
}

function checkKey(csr: x509.Pkcs10CertificateRequest): x509.PublicKey {
  let key: x509.PublicKey;
  try {
    key = csr.publicKey;
  } catch {
    throw invalid("csr_malformed", "the CSR's public key could not be parsed");
  }
  const alg = key.algorithm as { name: string; namedCurve?: string; modulusLength?: number };
  if (alg.name === "RSASSA-PKCS1-v1_5") {
    const bits = alg.modulusLength ?? 0;
    if (bits < 2048 || bits > 8192)
      throw invalid("key_unsupported", `RSA key of ${bits} bits; expected 2048 to 8192 bits, or ECDSA P-256/P-384`);
    return key;
  }
  if (alg.name === "ECDSA" && alg.namedCurve !== undefined && ALLOWED_CURVES.has(alg.namedCurve)) return key;
  throw invalid(
    "key_unsupported",
    `key type ${alg.name} ${alg.namedCurve ?? ""} is not supported; expected ECDSA P-256/P-384 or RSA`,
  );
}

async function checkSignature(csr: x509.Pkcs10CertificateRequest): Promise<void> {
  const hash = (csr.signatureAlgorithm as { hash?: { name?: string } }).hash?.name;
  if (hash === undefined || !ALLOWED_HASHES.has(hash))
    throw invalid("csr_signature", "the CSR's signature algorithm is not supported; expected SHA-256/384/512");
  const ok = await csr.verify().catch(() => false);
  if (!ok) throw invalid("csr_signature", "the CSR's signature does not verify with the CSR's own public key");
}

function requestedExtensions(csr: x509.Pkcs10CertificateRequest): x509.Extension[] {
  let extensions: x509.Extension[];
  try {
    extensions = csr.extensions;
  } catch {
    throw invalid("csr_malformed", "the CSR's requested extensions could not be parsed (or use unsupported SAN types)");
  }
  const seen = new Set<string>();
  for (const ext of extensions) {
    if (seen.has(ext.type)) throw invalid("csr_malformed", `the CSR requests extension ${ext.type} more than once`);
    seen.add(ext.type);
  }
  return extensions;
}

function refuseCa(extensions: x509.Extension[]): void {
  for (const ext of extensions) {
    if (ext instanceof x509.BasicConstraintsExtension && ext.ca)
      throw denied("ca_requested", "the CSR requests basicConstraints CA:true; relay client certificates are leaves");
    if (ext instanceof x509.KeyUsagesExtension && (ext.usages & CA_KEY_USAGES) !== 0)
      throw denied(
        "ca_requested",
        "the CSR requests keyCertSign/cRLSign key usage; relay client certificates are leaves",
      );
  }
}

function checkNames(csr: x509.Pkcs10CertificateRequest, extensions: x509.Extension[], cluster: string): void {
  const names = extensions.flatMap((e) => (e instanceof x509.SubjectAlternativeNameExtension ? e.names.items : []));
  const other = names.find((n) => n.type !== "dns");
  if (other)
    throw denied(
      "csr_extra_san",
      `the CSR has a ${other.type} SAN; expected exactly one DNS SAN, the cluster name ${cluster}, and nothing else`,
    );
  const dns = names.map((n) => n.value.toLowerCase());
  if (dns.length === 0) throw invalid("csr_no_cluster_name", `the CSR has no DNS SAN; expected one: ${cluster}`);
  const foreign = dns.find((d) => d !== cluster);
  if (foreign !== undefined)
    throw denied(
      "csr_other_cluster",
      `the CSR names "${printable(foreign)}", not this cluster; expected exactly one DNS SAN: ${cluster}`,
    );
  if (dns.length > 1)
    throw denied("csr_other_cluster", `the CSR repeats the DNS SAN; expected exactly one DNS SAN: ${cluster}`);
  for (const cn of csr.subjectName.getField("CN")) {
    if (cn.toLowerCase() !== cluster)
      throw denied(
        "csr_other_cluster",
        `the CSR's subject CN "${printable(cn)}" is not this cluster; expected CN=${cluster} or no CN`,
      );
  }
}
