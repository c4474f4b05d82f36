// Shared bench fixtures: a local test CA (P-256 root, intermediate of the chosen key type) and pre-generated workload
// CSRs, written to a directory so the Node and Go benchmarks sign exactly the same inputs. Bench code only.
import { createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { SigningBundle } from "../src/authority/bundle.js";
import {
  algorithmParams,
  exportPrivateKeyPem,
  generateKeyPair,
  signingCryptoKeys,
  toPem,
  type KeyAlgorithmName,
} from "../src/crypto/keys.js";
import { x509 } from "../src/crypto/x509.js";
import { caCertificate, testSigningBundle } from "../test/env/ca-certs.js";
import { DEFAULT_MAX_CSR_BYTES, type LeafPolicy } from "../src/signing/leaf-policy.js";

export const TRUST_DOMAIN = "cluster.local";
const DAY = 24 * 3600 * 1000;

export const benchPolicy: LeafPolicy = {
  trustDomain: TRUST_DOMAIN,
  maxTtlSeconds: 24 * 3600,
  defaultTtlSeconds: 24 * 3600,
  maxCsrBytes: DEFAULT_MAX_CSR_BYTES,
  minTtlSeconds: 300,
};

/** The identity of CSR number i: one service account per CSR, like a mesh full of workloads. */
export function identity(i: number): string {
  return `spiffe://${TRUST_DOMAIN}/ns/bench/sa/workload-${i}`;
}

/** Writes root, intermediate (+ PKCS#8 key) and `csrCount` P-256 CSRs with one SPIFFE URI SAN each into `dir`. */
export async function prepareFixtures(dir: string, csrCount: number, keyAlgorithm: KeyAlgorithmName = "ECDSA_P256") {
  mkdirSync(dir, { recursive: true });
  const rootKeys = await generateKeyPair("ECDSA_P256", false);
  const root = await caCertificate({
    subject: "CN=Bench Root,O=istiod-vault-agent",
    keys: rootKeys,
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + 365 * DAY),
  });
  // Extractable only so the key can be written for the Go benchmark; the Node side re-imports it non-extractable.
  const intermediateKeys = await generateKeyPair(keyAlgorithm, true);
  const intermediate = await caCertificate({
    subject: "CN=Bench Intermediate,O=istiod-vault-agent",
    keys: intermediateKeys,
    issuer: { cert: root, privateKey: rootKeys.privateKey },
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + 30 * DAY),
    pathLength: 0,
  });
  writeFileSync(join(dir, "root-cert.pem"), toPem(root.rawData, "CERTIFICATE"));
  writeFileSync(join(dir, "ca-cert.pem"), toPem(intermediate.rawData, "CERTIFICATE"));
  writeFileSync(join(dir, "ca-key.pem"), await exportPrivateKeyPem(intermediateKeys.privateKey), { mode: 0o600 });
  writeFileSync(join(dir, "key-algorithm"), keyAlgorithm);

  const csrs: string[] = [];
  for (let i = 0; i < csrCount; i++) {
    // Workload keys as istio-agent makes them: P-256, CSR signed with ECDSA-SHA256, one URI SAN, empty subject.
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const alg = { name: "ECDSA", namedCurve: "P-256" };
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      keys: {
        privateKey: privateKey.toCryptoKey(alg, false, ["sign"]),
        publicKey: publicKey.toCryptoKey(alg, true, ["verify"]),
      },
      signingAlgorithm: algorithmParams("ECDSA_P256").sign,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: identity(i) }])],
    });
    csrs.push(toPem(csr.rawData, "CERTIFICATE REQUEST"));
  }
  writeFileSync(join(dir, "csrs.pem"), csrs.join(""));
}

export interface Fixtures {
  bundle: SigningBundle;
  csrs: string[];
  rootPem: string;
}

/** Reads what prepareFixtures wrote; the intermediate key is imported non-extractable, as the sidecar holds it. */
export function loadFixtures(dir: string): Promise<Fixtures> {
  const read = (name: string): string => readFileSync(join(dir, name), "utf8");
  const keyAlgorithm = read("key-algorithm").trim() as KeyAlgorithmName;
  const rootPem = read("root-cert.pem");
  const intermediatePem = read("ca-cert.pem");
  // As the authority holds it: a node:crypto KeyObject, with a non-extractable WebCrypto view for @peculiar/x509.
  const signingKey = createPrivateKey(read("ca-key.pem"));
  const { privateKey } = signingCryptoKeys(
    { privateKey: signingKey, publicKey: createPublicKey(signingKey) },
    keyAlgorithm,
  );
  const intermediate = new x509.X509Certificate(intermediatePem);
  const csrs = read("csrs.pem")
    .split(/(?<=-----END CERTIFICATE REQUEST-----\n)/)
    .filter((s) => s.includes("BEGIN"));
  const bundle = testSigningBundle(intermediate, rootPem, { signingKey, privateKey }, keyAlgorithm);
  return Promise.resolve({ bundle, csrs, rootPem });
}
