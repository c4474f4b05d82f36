// The intermediate key as the authority holds it (a node:crypto KeyObject, with a non-extractable WebCrypto view for
// @peculiar/x509) goes through every signing path without a deprecation warning. KeyObject.from() on a non-extractable
// CryptoKey prints DEP0204 (and a future Node will throw), so the paths run in a child Node with --throw-deprecation:
// any deprecation kills it, in the worker threads too (they inherit the flag).
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const moduleUrl = (path: string): string => new URL(`../../src/${path}`, import.meta.url).href;

/** Builds a bundle the way IntermediateAuthority.obtain() does and signs through each path. */
const SCRIPT = `
import { generateKeyPairSync } from "node:crypto";
const { generateNodeKeyPairFor, signingCryptoKeys, algorithmParams, exportNodePrivateKeyPem, toPem } =
  await import(${JSON.stringify(moduleUrl("crypto/keys.js"))});
const { x509 } = await import(${JSON.stringify(moduleUrl("crypto/x509.js"))});
const { createIntermediateCsr } = await import(${JSON.stringify(moduleUrl("authority/csr.js"))});
const { signLeaf } = await import(${JSON.stringify(moduleUrl("signing/leaf-signer.js"))});
const { SigningPool } = await import(${JSON.stringify(moduleUrl("signing/worker-pool.js"))});
const { issueServingCertificate } = await import(${JSON.stringify(moduleUrl("serve/serving-cert.js"))});

const alg = process.argv[2];
const nodeKeys = await generateNodeKeyPairFor(alg);
const keys = signingCryptoKeys(nodeKeys, alg);
if (keys.privateKey.extractable) throw new Error("the WebCrypto view of the CA key must be non-extractable");
await createIntermediateCsr(keys, alg, { commonName: "test" });
const now = Date.now();
const ca = await x509.X509CertificateGenerator.createSelfSigned({
  name: "CN=Test Intermediate", keys, signingAlgorithm: { ...algorithmParams(alg).sign, hash: alg === "ECDSA_P384" ? "SHA-384" : "SHA-256" },
  notBefore: new Date(now - 3600_000), notAfter: new Date(now + 3600_000),
  extensions: [new x509.BasicConstraintsExtension(true, 0, true), await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)],
});
const pem = toPem(ca.rawData, "CERTIFICATE");
const bundle = {
  signingCert: ca, signingCertPem: pem, chainPem: [pem], rootsPem: [pem], signingKey: nodeKeys.privateKey,
  privateKey: keys.privateKey, keyAlgorithm: alg, privateKeyPem: exportNodePrivateKeyPem(nodeKeys.privateKey),
  notBefore: ca.notBefore, notAfter: ca.notAfter, serialHex: ca.serialNumber, generation: 1,
};
const workload = generateKeyPairSync("ec", { namedCurve: "P-256" });
const csalg = { name: "ECDSA", namedCurve: "P-256" };
const csr = await x509.Pkcs10CertificateRequestGenerator.create({
  keys: { privateKey: workload.privateKey.toCryptoKey(csalg, false, ["sign"]), publicKey: workload.publicKey.toCryptoKey(csalg, true, ["verify"]) },
  signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
  extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://cluster.local/ns/a/sa/b" }])],
});
const policy = { trustDomain: "cluster.local", maxTtlSeconds: 3600, defaultTtlSeconds: 600, minTtlSeconds: 300, maxCsrBytes: 8192 };
await signLeaf(bundle, csr.toString("pem"), 600, policy, new Date());
const pool = new SigningPool(1);
await pool.sign(bundle, csr.toString("pem"), 600, policy, new Date());
await pool.close();
await issueServingCertificate(bundle, ["localhost"], Date.now());
console.log("signed on every path");
`;

void describe("intermediate key handling", () => {
  // A file, not --eval: worker threads inherit the parent's execArgv, and --input-type would break them.
  const dir = mkdtempSync(join(tmpdir(), "key-handling-"));
  const script = join(dir, "sign-every-path.mjs");
  writeFileSync(script, SCRIPT);
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const alg of ["ECDSA_P256", "ECDSA_P384", "RSA_2048"]) {
    void it(`${alg}: CSR, leaf (in process and on a worker) and serving certificate without any deprecation`, () => {
      const res = spawnSync(process.execPath, ["--throw-deprecation", script, alg], {
        encoding: "utf8",
        timeout: 60_000,
      });
      assert.doesNotMatch(res.stderr, /DEP0204|DeprecationWarning/, res.stderr);
      assert.equal(res.status, 0, res.stderr);
      assert.match(res.stdout, /signed on every path/);
    });
  }
});
