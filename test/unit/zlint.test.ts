// zlint on every kind of certificate the agent makes in process: workload leaves (the signer behind both the socket's
// SignCertificate and the Istio CA's CreateCertificate) for each intermediate and workload key kind, the Istio CA
// serving certificate, and the relay issuer's client certificates (the same leaf signer). Zero errors and zero
// warnings, with every lint on except the CA/Browser Forum rules for public TLS certificates listed with their reasons
// in test/env/zlint.ts (EXCLUDED_LINTS). zlint cannot lint CSRs, so the intermediate CSR the agent sends Vault is not
// covered here. The same lints run on leaves from the real agent in test/integration/leaf-policy.test.ts.
import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import type { SigningBundle } from "../../src/authority/bundle.js";
import {
  algorithmParams,
  generateNodeKeyPairFor,
  signingCryptoKeys,
  toPem,
  type KeyAlgorithmName,
} from "../../src/crypto/keys.js";
import { x509 } from "../../src/crypto/x509.js";
import { signLeaf } from "../../src/signing/leaf-signer.js";
import { DEFAULT_MAX_CSR_BYTES, type LeafPolicy } from "../../src/signing/leaf-policy.js";
import { issueServingCertificate } from "../../src/serve/serving-cert.js";
import { bootstrapTimeAttribute } from "../../src/relay/bootstrap/bootstrap-time.js";
import { signClientCertificate } from "../../src/relay/bootstrap/client-signer.js";
import { checkClusterCsr } from "../../src/relay/bootstrap/csr-policy.js";
import { EXCLUDED_LINTS, zlint, zlintBinary } from "../env/zlint.js";

const policy: LeafPolicy = {
  trustDomain: "cluster.local",
  maxTtlSeconds: 24 * 3600,
  defaultTtlSeconds: 3600,
  maxCsrBytes: DEFAULT_MAX_CSR_BYTES,
  minTtlSeconds: 300,
};

/** An intermediate shaped like Vault's (CA:true pathlen 0, keyCertSign|cRLSign, SKI), with the key as the agent holds it. */
async function makeBundle(keyAlgorithm: KeyAlgorithmName): Promise<SigningBundle> {
  const nodeKeys = await generateNodeKeyPairFor(keyAlgorithm);
  const keys = signingCryptoKeys(nodeKeys, keyAlgorithm);
  const now = Date.now();
  const hash = keyAlgorithm === "ECDSA_P384" ? "SHA-384" : "SHA-256";
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: "CN=zlint test intermediate,O=istiod-vault-agent",
    keys,
    signingAlgorithm: { ...algorithmParams(keyAlgorithm).sign, hash },
    notBefore: new Date(now - 3600_000),
    notAfter: new Date(now + 30 * 24 * 3600_000),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pem = toPem(cert.rawData, "CERTIFICATE");
  return {
    signingCert: cert,
    signingCertPem: pem,
    chainPem: [pem],
    rootsPem: [pem],
    signingKey: nodeKeys.privateKey,
    privateKey: keys.privateKey,
    keyAlgorithm,
    privateKeyPem: undefined,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    serialHex: cert.serialNumber.toLowerCase(),
    generation: 1,
  };
}

/** A workload CSR as istio-agent makes it: one SPIFFE URI SAN, empty subject (or another single SAN). */
async function workloadCsr(
  kind: "P-256" | "P-384" | "RSA-2048" | "RSA-3072",
  san: { type: "url" | "dns"; value: string } = { type: "url", value: "spiffe://cluster.local/ns/a/sa/b" },
): Promise<string> {
  const rsa = kind.startsWith("RSA");
  const pair = rsa
    ? generateKeyPairSync("rsa", { modulusLength: Number(kind.slice(4)) })
    : generateKeyPairSync("ec", { namedCurve: kind });
  const alg = rsa ? { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" } : { name: "ECDSA", namedCurve: kind };
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: {
      privateKey: pair.privateKey.toCryptoKey(alg, false, ["sign"]),
      publicKey: pair.publicKey.toCryptoKey(alg, true, ["verify"]),
    },
    signingAlgorithm: rsa
      ? { name: "RSASSA-PKCS1-v1_5" }
      : { name: "ECDSA", hash: kind === "P-384" ? "SHA-384" : "SHA-256" },
    extensions: [new x509.SubjectAlternativeNameExtension([san])],
  });
  return csr.toString("pem");
}

function assertLintClean(certPem: string, what: string): void {
  const report = zlint(certPem, EXCLUDED_LINTS);
  // Some 60 RFC 5280 and Community lints apply to a leaf; fewer would mean zlint did not really check it.
  assert.ok(report.applied >= 40, `${what}: only ${report.applied} lints applied`);
  assert.deepEqual(report.findings, [], `${what}: zlint findings`);
}

void describe("zlint on the certificates the agent makes", () => {
  before(() => void zlintBinary());

  for (const keyAlgorithm of ["ECDSA_P256", "ECDSA_P384", "RSA_2048"] as const) {
    void it(`${keyAlgorithm} intermediate: leaves for P-256, P-384, RSA-2048 and RSA-3072 workload keys`, async () => {
      const bundle = await makeBundle(keyAlgorithm);
      for (const kind of ["P-256", "P-384", "RSA-2048", "RSA-3072"] as const) {
        const leaf = await signLeaf(bundle, await workloadCsr(kind), 3600, policy, new Date());
        assertLintClean(leaf.certPem, `${keyAlgorithm} leaf for a ${kind} key`);
      }
    });

    void it(`${keyAlgorithm} intermediate: the Istio CA serving certificate`, async () => {
      const bundle = await makeBundle(keyAlgorithm);
      const names = ["istiod-vault-agent.istio-system.svc", "10.0.0.7", "fd00::7"];
      const serving = await issueServingCertificate(bundle, names, Date.now());
      assertLintClean(serving.certPem, `${keyAlgorithm} serving certificate`);
    });

    void it(`${keyAlgorithm} intermediate: relay client certificates for P-256 and RSA-2048 keys`, async () => {
      const bundle = await makeBundle(keyAlgorithm);
      for (const kind of ["P-256", "RSA-2048"] as const) {
        const key = await checkClusterCsr(await workloadCsr(kind, { type: "dns", value: "cluster1" }), "cluster1");
        const client = signClientCertificate(bundle, key, "cluster1", 3600, new Date(), {
          subjectAttributes: [bootstrapTimeAttribute(new Date())],
        });
        assertLintClean(client.chainPem[0]!, `${keyAlgorithm} relay client certificate for a ${kind} key`);
      }
    });
  }
});
