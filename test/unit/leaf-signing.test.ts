// Leaf signing against an in-test root and intermediate: the happy path (checked by @peculiar/x509 and by openssl)
// and one test per policy rule, asserting the exact code and rule. describe/it return promises that node:test itself
// tracks, hence `void` for no-floating-promises.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  X509Certificate as NodeX509Certificate,
  constants,
  generateKeyPairSync,
  sign as nodeSign,
  type KeyObject,
  type webcrypto,
} from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SigningBundle } from "../../src/authority/bundle.js";
import {
  algorithmParams,
  generateKeyPair,
  generateNodeKeyPairFor,
  signingCryptoKeys,
  toPem,
  type KeyAlgorithmName,
} from "../../src/crypto/keys.js";
import { subtle, x509 } from "../../src/crypto/x509.js";
import {
  CaValidityError,
  DEFAULT_MAX_CSR_BYTES,
  LeafPolicyError,
  checkCsr,
  resolveTtl,
  spiffeTrustDomain,
  type LeafPolicy,
} from "../../src/signing/leaf-policy.js";
import { ipBytes, signLeaf } from "../../src/signing/leaf-signer.js";
import { parseCsrPem } from "../../src/crypto/csr-parse.js";
import {
  MAX_CONSECUTIVE_WORKER_CRASHES,
  SIGNING_WORKER_RESOURCE_LIMITS,
  SigningPool,
} from "../../src/signing/worker-pool.js";
import { AgentSigning, WORKER_START_WITHIN_MS } from "../../src/signing/agent-signing.js";
import { AgentMetrics } from "../../src/observability/metrics.js";
import { createLogger } from "../../src/observability/logger.js";
import { issueServingCertificate } from "../../src/serve/serving-cert.js";
import { mulberry32, randomBytes } from "../env/hostile.js";
import { caCertificate, testSigningBundle } from "../env/ca-certs.js";
import { repoRoot } from "../env/harness.js";
import * as asn1 from "../../src/crypto/der.js";

const OPENSSL = "/usr/bin/openssl";
const IDENTITY = "spiffe://cluster.local/ns/default/sa/web";
const HOUR = 3600;

const policy: LeafPolicy = {
  trustDomain: "cluster.local",
  maxTtlSeconds: 24 * HOUR,
  defaultTtlSeconds: HOUR,
  maxCsrBytes: DEFAULT_MAX_CSR_BYTES,
  minTtlSeconds: 300,
};

interface TestCa {
  bundle: SigningBundle;
  rootPem: string;
  intermediatePem: string;
}

/**
 * Self-signed root (P-256) and an intermediate (pathlen 0) whose non-extractable key goes into the bundle. The
 * intermediate carries a subject key identifier unless `withSki` is false.
 */
async function makeCa(
  keyAlgorithm: KeyAlgorithmName,
  intermediateValidity: { notBefore: Date; notAfter: Date },
  { withSki = true }: { withSki?: boolean } = {},
): Promise<TestCa> {
  const rootKeys = await generateKeyPair("ECDSA_P256", false);
  const root = await caCertificate({
    subject: "CN=Test Root,O=istiod-vault-agent",
    keys: rootKeys,
    notBefore: new Date(Date.now() - 24 * HOUR * 1000),
    notAfter: new Date(Date.now() + 365 * 24 * HOUR * 1000),
  });
  // As the authority holds it: a node:crypto key, with a non-extractable WebCrypto view for @peculiar/x509.
  const intermediateNodeKeys = await generateNodeKeyPairFor(keyAlgorithm);
  const intermediateKeys = signingCryptoKeys(intermediateNodeKeys, keyAlgorithm);
  const intermediate = await caCertificate({
    subject: "CN=Test Intermediate,O=istiod-vault-agent",
    keys: intermediateKeys,
    issuer: { cert: root, privateKey: rootKeys.privateKey },
    ...intermediateValidity,
    pathLength: 0,
    subjectKeyIdentifier: withSki,
  });
  const rootPem = toPem(root.rawData, "CERTIFICATE");
  const intermediatePem = toPem(intermediate.rawData, "CERTIFICATE");
  const bundle = testSigningBundle(
    intermediate,
    rootPem,
    { signingKey: intermediateNodeKeys.privateKey, privateKey: intermediateKeys.privateKey },
    keyAlgorithm,
  );
  return { bundle, rootPem, intermediatePem };
}

function validFor(notBeforeOffsetS: number, notAfterOffsetS: number): { notBefore: Date; notAfter: Date } {
  return {
    notBefore: new Date(Date.now() + notBeforeOffsetS * 1000),
    notAfter: new Date(Date.now() + notAfterOffsetS * 1000),
  };
}

interface CsrSpec {
  sans?: x509.JsonGeneralNames;
  extensions?: x509.Extension[];
  keys?: webcrypto.CryptoKeyPair;
  signingAlgorithm?: webcrypto.Algorithm | webcrypto.EcdsaParams;
}

async function makeCsr(spec: CsrSpec = {}): Promise<string> {
  const keys = spec.keys ?? (await generateKeyPair("ECDSA_P256", true));
  const sans = spec.sans ?? [{ type: "url", value: IDENTITY }];
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: spec.signingAlgorithm ?? algorithmParams("ECDSA_P256").sign,
    extensions: [
      ...(sans.length > 0 ? [new x509.SubjectAlternativeNameExtension(sans)] : []),
      ...(spec.extensions ?? []),
    ],
  });
  return toPem(csr.rawData, "CERTIFICATE REQUEST");
}

/** A node:crypto RSA key pair as WebCrypto keys, for sizes WebCrypto's own generateKey would still make. */
function rsaKeys(modulusLength: number): webcrypto.CryptoKeyPair {
  const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength });
  const alg = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
  return {
    publicKey: publicKey.toCryptoKey(alg, true, ["verify"]),
    privateKey: privateKey.toCryptoKey(alg, false, ["sign"]),
  };
}

/** @peculiar's HashedAlgorithm extends the DOM Algorithm type, which this DOM-less build does not declare. */
function signatureAlgorithm(cert: x509.X509Certificate): { name: string; hash: string } {
  const alg = cert.signatureAlgorithm as unknown as { name: string; hash: { name: string } };
  return { name: alg.name, hash: alg.hash.name };
}

function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, ""), "base64");
}

async function assertRefused(promise: Promise<unknown>, code: LeafPolicyError["code"], rule: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof LeafPolicyError, `expected LeafPolicyError, got ${String(err)}`);
    assert.equal(err.rule, rule, err.message);
    assert.equal(err.code, code, err.message);
    assert.ok(!err.message.includes("-----BEGIN"), "message must not echo PEM");
    return true;
  });
}

function opensslVerify(rootPem: string, intermediatePem: string, leafPem: string): string {
  const dir = mkdtempSync(join(tmpdir(), "leaf-signing-"));
  try {
    const file = (name: string, pem: string): string => {
      const path = join(dir, name);
      writeFileSync(path, pem);
      return path;
    };
    const args = ["verify", "-x509_strict", "-CAfile", file("root.pem", rootPem)];
    args.push("-untrusted", file("intermediate.pem", intermediatePem), file("leaf.pem", leafPem));
    return execFileSync(OPENSSL, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

void describe("signLeaf", () => {
  let ca: TestCa;
  let goodCsr: string;

  before(async () => {
    ca = await makeCa("ECDSA_P384", validFor(-HOUR, 30 * 24 * HOUR));
    goodCsr = await makeCsr();
  });

  void it("keeps the intermediate key non-extractable", () => {
    assert.equal(ca.bundle.privateKey.extractable, false);
  });

  void it("signs a good CSR into a SPIFFE leaf issued by the intermediate", async () => {
    const now = new Date();
    const signed = await signLeaf(ca.bundle, goodCsr, 2 * HOUR, policy, now);
    const leaf = new x509.X509Certificate(signed.certPem);
    const intermediate = ca.bundle.signingCert;

    assert.equal(leaf.issuer, intermediate.subject);
    assert.equal(leaf.subject, "", "identity is carried by the SAN only");
    assert.ok(await leaf.verify({ publicKey: intermediate.publicKey, signatureOnly: true }));

    const san = leaf.getExtension(x509.SubjectAlternativeNameExtension);
    assert.ok(san);
    assert.equal(san.critical, true, "SAN must be critical when the subject is empty");
    assert.deepEqual(san.names.toJSON(), [{ type: "url", value: IDENTITY }]);

    const bc = leaf.getExtension(x509.BasicConstraintsExtension);
    assert.ok(bc);
    assert.equal(bc.ca, false);
    assert.equal(bc.critical, true);
    const ku = leaf.getExtension(x509.KeyUsagesExtension);
    assert.ok(ku?.critical);
    assert.equal(ku.usages, x509.KeyUsageFlags.digitalSignature, "an ECDSA leaf must not assert keyEncipherment");
    const eku = leaf.getExtension(x509.ExtendedKeyUsageExtension);
    // usages is an asn1-schema array subclass; spread it so deepEqual compares plain arrays.
    assert.deepEqual([...(eku?.usages ?? [])], [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]);
    const aki = leaf.getExtension(x509.AuthorityKeyIdentifierExtension);
    assert.equal(aki?.keyId, intermediate.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId);
    assert.ok(leaf.getExtension(x509.SubjectKeyIdentifierExtension));

    assert.equal(leaf.serialNumber.toLowerCase(), signed.serialHex);
    assert.match(signed.serialHex, /^[4-7][0-9a-f]{31}$/);
    assert.equal(leaf.notAfter.getTime(), signed.notAfter.getTime());
    assert.ok(leaf.notAfter.getTime() <= intermediate.notAfter.getTime());
    assert.equal(leaf.notAfter.getTime(), Math.floor(now.getTime() / 1000) * 1000 + 2 * HOUR * 1000);
    assert.equal(leaf.notBefore.getTime(), Math.floor((now.getTime() - 60_000) / 1000) * 1000);
    assert.deepEqual(signatureAlgorithm(leaf), { name: "ECDSA", hash: "SHA-384" });
  });

  void it("returns the chain as leaf, intermediate, root", async () => {
    const signed = await signLeaf(ca.bundle, goodCsr, HOUR, policy, new Date());
    assert.deepEqual(signed.chainPem, [signed.certPem, ca.intermediatePem, ca.rootPem]);
    const [leaf, intermediate, root] = signed.chainPem.map((pem) => new x509.X509Certificate(pem));
    assert.ok(leaf && intermediate && root);
    assert.equal(leaf.issuer, intermediate.subject);
    assert.equal(intermediate.issuer, root.subject);
    assert.equal(root.issuer, root.subject);
  });

  void it("produces a leaf that openssl verify -x509_strict accepts", async () => {
    const signed = await signLeaf(ca.bundle, goodCsr, HOUR, policy, new Date());
    assert.match(opensslVerify(ca.rootPem, ca.intermediatePem, signed.certPem), /: OK\s*$/);
  });

  void it("signs with an RSA_2048 intermediate and accepts an RSA 2048 CSR", async () => {
    const rsaCa = await makeCa("RSA_2048", validFor(-HOUR, 24 * HOUR));
    const csr = await makeCsr({ keys: rsaKeys(2048), signingAlgorithm: algorithmParams("RSA_2048").sign });
    const signed = await signLeaf(rsaCa.bundle, csr, HOUR, policy, new Date());
    const leaf = new x509.X509Certificate(signed.certPem);
    assert.deepEqual(signatureAlgorithm(leaf), { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" });
    // RSA subject keys keep keyEncipherment (TLS 1.2 RSA key transport).
    assert.equal(
      leaf.getExtension(x509.KeyUsagesExtension)?.usages,
      x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
    );
    assert.match(opensslVerify(rsaCa.rootPem, rsaCa.intermediatePem, signed.certPem), /: OK\s*$/);
  });

  void it("does not backdate the leaf before the intermediate's notBefore", async () => {
    const young = await makeCa("ECDSA_P256", validFor(-10, 24 * HOUR));
    const signed = await signLeaf(young.bundle, goodCsr, HOUR, policy, new Date());
    const leaf = new x509.X509Certificate(signed.certPem);
    assert.equal(leaf.notBefore.getTime(), young.bundle.notBefore.getTime());
  });

  void it("accepts a CSR whose SAN is the required identity", async () => {
    const signed = await signLeaf(ca.bundle, goodCsr, HOUR, policy, new Date(), { requiredIdentity: IDENTITY });
    assert.ok(signed.certPem.startsWith("-----BEGIN CERTIFICATE-----\n"));
  });

  void describe("refuses", () => {
    const sign = (csrPem: string, ttl = HOUR, p: LeafPolicy = policy, opts = {}): Promise<unknown> =>
      signLeaf(ca.bundle, csrPem, ttl, p, new Date(), opts);

    void it("a CSR larger than maxCsrBytes, before parsing it", async () => {
      await assertRefused(sign("A".repeat(DEFAULT_MAX_CSR_BYTES + 1)), "INVALID_ARGUMENT", "csr_too_large");
      await assertRefused(sign(goodCsr, HOUR, { ...policy, maxCsrBytes: 200 }), "INVALID_ARGUMENT", "csr_too_large");
    });

    void it("garbage DER, trailing bytes and non-PEM input", async () => {
      const garbage = Buffer.from([0x30, 0x07, 0x02, 0x01, 0x05, 0x04, 0x02, 0xde, 0xad]);
      await assertRefused(sign(toPem(garbage, "CERTIFICATE REQUEST")), "INVALID_ARGUMENT", "csr_malformed");
      const random = Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 7919) % 251));
      await assertRefused(sign(toPem(random, "CERTIFICATE REQUEST")), "INVALID_ARGUMENT", "csr_malformed");
      const trailing = Buffer.concat([pemToDer(goodCsr), Buffer.from([0, 0])]);
      await assertRefused(sign(toPem(trailing, "CERTIFICATE REQUEST")), "INVALID_ARGUMENT", "csr_malformed");
      await assertRefused(
        sign(goodCsr.replaceAll("CERTIFICATE REQUEST", "CERTIFICATE")),
        "INVALID_ARGUMENT",
        "csr_malformed",
      );
      await assertRefused(sign(pemToDer(goodCsr).toString("base64")), "INVALID_ARGUMENT", "csr_malformed");
    });

    void it("a CSR whose self-signature does not verify", async () => {
      const der = pemToDer(goodCsr);
      const at = der.indexOf("sa/web");
      assert.ok(at > 0);
      der[at + 3] = "x".charCodeAt(0); // sa/web -> sa/xeb: still a valid SPIFFE ID, but the signature no longer matches
      await assertRefused(sign(toPem(der, "CERTIFICATE REQUEST")), "INVALID_ARGUMENT", "csr_signature");
      const badSignature = pemToDer(goodCsr);
      badSignature[badSignature.length - 1]! ^= 0x01; // last byte of the ECDSA signature's s
      await assertRefused(sign(toPem(badSignature, "CERTIFICATE REQUEST")), "INVALID_ARGUMENT", "csr_signature");
    });

    void it("an RSA 1024 key", async () => {
      const csr = await makeCsr({ keys: rsaKeys(1024), signingAlgorithm: algorithmParams("RSA_2048").sign });
      await assertRefused(sign(csr), "INVALID_ARGUMENT", "key_too_weak");
    });

    void it("P-521 and Ed25519 keys", async () => {
      const p521 = await subtle.generateKey({ name: "ECDSA", namedCurve: "P-521" }, false, ["sign", "verify"]);
      const p521Csr = await makeCsr({ keys: p521, signingAlgorithm: { name: "ECDSA", hash: "SHA-512" } });
      await assertRefused(sign(p521Csr), "INVALID_ARGUMENT", "key_unsupported");

      const ed = (await subtle.generateKey({ name: "Ed25519" }, false, [
        "sign",
        "verify",
      ])) as unknown as webcrypto.CryptoKeyPair;
      const edCsr = await makeCsr({ keys: ed, signingAlgorithm: { name: "Ed25519" } });
      await assertRefused(sign(edCsr), "INVALID_ARGUMENT", "key_unsupported");
    });

    void it("a non-SPIFFE or malformed SPIFFE URI SAN", async () => {
      for (const uri of ["https://example.com/web", "spiffe://cluster.local", "spiffe://cluster.local/ns/../sa/web"]) {
        const csr = await makeCsr({ sans: [{ type: "url", value: uri }] });
        await assertRefused(sign(csr), "INVALID_ARGUMENT", "san_not_spiffe");
      }
    });

    void it("a SPIFFE ID outside the trust domain, even next to a good one", async () => {
      const other = "spiffe://other/ns/a/sa/b";
      const csr = await makeCsr({ sans: [{ type: "url", value: other }] });
      await assert.rejects(sign(csr), {
        message:
          "san_wrong_trust_domain: URI SAN spiffe://other/ns/a/sa/b is outside trust domain cluster.local; " +
          "expected spiffe://cluster.local/...",
      });
      await assertRefused(sign(csr), "PERMISSION_DENIED", "san_wrong_trust_domain");
    });

    void it("two or more URI SANs, duplicates of the caller's own ID included (an X.509-SVID carries one)", async () => {
      const other = "spiffe://cluster.local/ns/default/sa/other";
      const url = (value: string) => ({ type: "url" as const, value });
      const cases = [[IDENTITY, other], [IDENTITY, IDENTITY], Array.from({ length: 150 }, () => IDENTITY)];
      for (const uris of cases) {
        const csr = await makeCsr({ sans: uris.map(url) });
        await assert.rejects(sign(csr, HOUR, { ...policy, maxCsrBytes: 16384 }, { requiredIdentity: IDENTITY }), {
          message:
            `multiple_identities: CSR has ${uris.length} URI SANs; expected exactly one ` +
            "spiffe://cluster.local/... ID (an X.509-SVID carries one)",
        });
        await assertRefused(
          sign(csr, HOUR, { ...policy, maxCsrBytes: 16384 }),
          "INVALID_ARGUMENT",
          "multiple_identities",
        );
      }
    });

    void it("DNS, IP and email SANs", async () => {
      const forbidden: x509.JsonGeneralNames = [
        { type: "dns", value: "web.default.svc" },
        { type: "ip", value: "10.0.0.1" },
        { type: "email", value: "web@example.com" },
      ];
      for (const name of forbidden) {
        const csr = await makeCsr({ sans: [{ type: "url", value: IDENTITY }, name] });
        await assertRefused(sign(csr), "INVALID_ARGUMENT", "san_forbidden_type");
      }
    });

    void it("a CSR without any URI SAN", async () => {
      await assertRefused(sign(await makeCsr({ sans: [] })), "INVALID_ARGUMENT", "no_identity");
    });

    void it("a CSR requesting CA:true or certificate signing", async () => {
      const caCsr = await makeCsr({ extensions: [new x509.BasicConstraintsExtension(true, undefined, true)] });
      await assertRefused(sign(caCsr), "PERMISSION_DENIED", "ca_requested");
      const certSign = await makeCsr({ extensions: [new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign)] });
      await assertRefused(sign(certSign), "PERMISSION_DENIED", "ca_requested");
    });

    void it("a SAN that is not the caller's identity", async () => {
      const opts = { requiredIdentity: "spiffe://cluster.local/ns/default/sa/other" };
      await assertRefused(sign(goodCsr, HOUR, policy, opts), "PERMISSION_DENIED", "identity_mismatch");
    });

    void it("a negative TTL", async () => {
      await assertRefused(sign(goodCsr, -1), "INVALID_ARGUMENT", "ttl_invalid");
    });
  });
});

void describe("checkCsr", () => {
  void it("returns the CSR's public key and URI SANs", async () => {
    const keys = await generateKeyPair("ECDSA_P256", true);
    const checked = await checkCsr(await makeCsr({ keys }), policy);
    assert.deepEqual(checked.uriSans, [IDENTITY]);
    const spki = new Uint8Array(await subtle.exportKey("spki", keys.publicKey));
    assert.deepEqual(new Uint8Array(checked.spki), spki);
  });
});

void describe("spiffeTrustDomain", () => {
  void it("accepts workload IDs and rejects everything else", () => {
    assert.equal(spiffeTrustDomain(IDENTITY), "cluster.local");
    for (const bad of ["spiffe://", "spiffe:///ns/a", "spiffe://TD/ns/a", "spiffe://td/", "spiffe://td/a//b"]) {
      assert.equal(spiffeTrustDomain(bad), undefined, bad);
    }
    for (const bad of ["SPIFFE://td/a", "spiffe://td/a?x=1", "spiffe://td/a#f", "spiffe://td/./a", "spiffe://td/a/"]) {
      assert.equal(spiffeTrustDomain(bad), undefined, bad);
    }
  });
});

void describe("resolveTtl", () => {
  const now = new Date("2030-01-01T00:00:00Z");
  const inDays = (days: number): Date => new Date(now.getTime() + days * 24 * HOUR * 1000);

  void it("uses the default TTL for 0", () => {
    assert.equal(resolveTtl(0, policy, inDays(30), now), policy.defaultTtlSeconds);
  });

  void it("caps at the policy maximum", () => {
    assert.equal(resolveTtl(10 * 24 * HOUR, policy, inDays(30), now), policy.maxTtlSeconds);
  });

  void it("caps at the intermediate's remaining life", () => {
    const notAfter = new Date(now.getTime() + 2 * HOUR * 1000 + 500);
    assert.equal(resolveTtl(24 * HOUR, policy, notAfter, now), 2 * HOUR);
    assert.equal(resolveTtl(0, { ...policy, defaultTtlSeconds: 3 * HOUR }, notAfter, now), 2 * HOUR);
  });

  void it("refuses negative, fractional, non-finite and absurd TTLs", () => {
    for (const ttl of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 11 * 365 * 24 * HOUR]) {
      assert.throws(
        () => resolveTtl(ttl, policy, inDays(30), now),
        (err: unknown) =>
          err instanceof LeafPolicyError && err.code === "INVALID_ARGUMENT" && err.rule === "ttl_invalid",
        String(ttl),
      );
    }
  });

  void it("refuses when the intermediate has less than a second left", () => {
    for (const notAfter of [new Date(now.getTime() + 999), new Date(now.getTime() - 1000)]) {
      assert.throws(
        () => resolveTtl(HOUR, policy, notAfter, now),
        (err: unknown) => err instanceof CaValidityError && err.rule === "ca_expired",
      );
    }
  });
});

void describe("signLeaf with a short-lived intermediate", () => {
  void it("caps the leaf at the intermediate's notAfter", async () => {
    const ca = await makeCa("ECDSA_P256", validFor(-HOUR, 2 * HOUR));
    const signed = await signLeaf(ca.bundle, await makeCsr(), 24 * HOUR, policy, new Date());
    assert.ok(signed.notAfter.getTime() <= ca.bundle.notAfter.getTime());
    assert.ok(ca.bundle.notAfter.getTime() - signed.notAfter.getTime() <= 2000);
    assert.match(opensslVerify(ca.rootPem, ca.intermediatePem, signed.certPem), /: OK\s*$/);
  });
});

// ------------------------------------------------------------------------------------------------------------------
// The fast path (crypto/der.ts, crypto/csr-parse.ts, leaf-signer.ts) against the @peculiar/x509 construction it replaced, and the DER
// reader against malformed and random input.

/** The leaf as the @peculiar/x509 generator built it before the fast path: the oracle for byte-for-byte equivalence. */
async function referenceLeaf(ca: TestCa, leaf: x509.X509Certificate, uriSans: string[]): Promise<Uint8Array> {
  const rsaSubject = (leaf.publicKey.algorithm as { name?: string }).name === "RSASSA-PKCS1-v1_5";
  const intermediate = ca.bundle.signingCert;
  const ski = intermediate.getExtension(x509.SubjectKeyIdentifierExtension);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: leaf.serialNumber,
    issuer: intermediate.subjectName,
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    publicKey: leaf.publicKey,
    signingKey: ca.bundle.privateKey,
    signingAlgorithm: algorithmParams(ca.bundle.keyAlgorithm).sign,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | (rsaSubject ? x509.KeyUsageFlags.keyEncipherment : 0),
        true,
      ),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension(
        uriSans.map((uri) => ({ type: "url" as const, value: uri })),
        true,
      ),
      ski
        ? new x509.AuthorityKeyIdentifierExtension(ski.keyId)
        : await x509.AuthorityKeyIdentifierExtension.create(intermediate.publicKey),
      await x509.SubjectKeyIdentifierExtension.create(leaf.publicKey),
    ],
  });
  return new Uint8Array(cert.rawData);
}

/** The DER of the n-th element (0-based) inside the top-level SEQUENCE of `der`. */
function nthChild(der: Uint8Array, n: number): Uint8Array {
  const top = new asn1.DerReader(der);
  const children = top.children(top.expect(asn1.Tag.SEQUENCE, "top"), "top");
  let el = children.next();
  for (let i = 0; i < n; i++) el = children.next();
  return children.raw(el);
}

/** The subject Name DER of a certificate (tbsCertificate's 6th field, after the asn1.explicit version). */
function subjectDer(certDer: Uint8Array): Uint8Array {
  return nthChild(nthChild(certDer, 0), 5);
}

const IDENTITIES = ["spiffe://cluster.local/ns/default/sa/web-canary"];

void describe("fast leaf path: equivalence with the @peculiar/x509 construction", () => {
  for (const keyAlgorithm of ["ECDSA_P256", "ECDSA_P384", "RSA_2048"] as const) {
    void it(`${keyAlgorithm} intermediate: same TBSCertificate bytes, same fields, verifies, openssl -x509_strict OK`, async () => {
      const ca = await makeCa(keyAlgorithm, validFor(-HOUR, 30 * 24 * HOUR));
      const now = new Date();
      const csr = await makeCsr({ sans: IDENTITIES.map((value) => ({ type: "url" as const, value })) });
      const signed = await signLeaf(ca.bundle, csr, 6 * HOUR, policy, now);
      const leaf = new x509.X509Certificate(signed.certPem);
      const intermediate = ca.bundle.signingCert;
      const der = new Uint8Array(leaf.rawData);

      // Byte for byte what the generator made, but for the signature (ECDSA signatures are randomised).
      const reference = await referenceLeaf(ca, leaf, IDENTITIES);
      assert.deepEqual(nthChild(der, 0), nthChild(reference, 0), "TBSCertificate differs from the reference");
      assert.deepEqual(nthChild(der, 1), nthChild(reference, 1), "signatureAlgorithm differs from the reference");

      // Field by field, as a consumer reads them.
      assert.deepEqual(nthChild(nthChild(der, 0), 3), subjectDer(new Uint8Array(intermediate.rawData)), "issuer");
      assert.equal(leaf.issuer, intermediate.subject);
      assert.equal(leaf.subject, "");
      assert.equal(leaf.notBefore.getTime(), Math.floor((now.getTime() - 60_000) / 1000) * 1000);
      assert.equal(leaf.notAfter.getTime(), Math.floor(now.getTime() / 1000) * 1000 + 6 * HOUR * 1000);
      assert.equal(leaf.notAfter.getTime(), signed.notAfter.getTime());
      assert.equal(leaf.serialNumber.toLowerCase(), signed.serialHex);
      assert.match(signed.serialHex, /^[4-7][0-9a-f]{31}$/);
      const san = leaf.getExtension(x509.SubjectAlternativeNameExtension);
      assert.equal(san?.critical, true);
      assert.deepEqual(
        san.names.toJSON(),
        IDENTITIES.map((value) => ({ type: "url", value })),
      );
      const bc = leaf.getExtension(x509.BasicConstraintsExtension);
      assert.equal(bc?.ca, false);
      assert.equal(bc.critical, true);
      const ku = leaf.getExtension(x509.KeyUsagesExtension);
      assert.equal(ku?.critical, true);
      assert.equal(ku.usages, x509.KeyUsageFlags.digitalSignature);
      const eku = leaf.getExtension(x509.ExtendedKeyUsageExtension);
      assert.deepEqual([...(eku?.usages ?? [])], [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]);
      assert.equal(eku?.critical, false);
      const aki = leaf.getExtension(x509.AuthorityKeyIdentifierExtension);
      assert.equal(aki?.keyId, intermediate.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId);
      const ski = leaf.getExtension(x509.SubjectKeyIdentifierExtension);
      assert.equal(ski?.keyId, (await x509.SubjectKeyIdentifierExtension.create(leaf.publicKey)).keyId);
      assert.deepEqual(
        [...leaf.extensions].map((e) => e.type),
        ["2.5.29.19", "2.5.29.15", "2.5.29.37", "2.5.29.17", "2.5.29.35", "2.5.29.14"],
      );
      assert.deepEqual(
        signatureAlgorithm(leaf),
        keyAlgorithm === "RSA_2048"
          ? { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }
          : { name: "ECDSA", hash: keyAlgorithm === "ECDSA_P256" ? "SHA-256" : "SHA-384" },
      );
      assert.ok(await leaf.verify({ publicKey: intermediate.publicKey, signatureOnly: true }));
      assert.match(opensslVerify(ca.rootPem, ca.intermediatePem, signed.certPem), /: OK\s*$/);
      assert.deepEqual(signed.chainPem, [signed.certPem, ca.intermediatePem, ca.rootPem]);
    });
  }

  void it("derives the AKI from the intermediate's key when it has no SKI, as before", async () => {
    const ca = await makeCa("ECDSA_P256", validFor(-HOUR, 24 * HOUR), { withSki: false });
    assert.equal(ca.bundle.signingCert.getExtension(x509.SubjectKeyIdentifierExtension), null);
    const signed = await signLeaf(ca.bundle, await makeCsr(), HOUR, policy, new Date());
    const leaf = new x509.X509Certificate(signed.certPem);
    const reference = await referenceLeaf(ca, leaf, [IDENTITY]);
    assert.deepEqual(nthChild(new Uint8Array(leaf.rawData), 0), nthChild(reference, 0));
    const expected = await x509.AuthorityKeyIdentifierExtension.create(ca.bundle.signingCert.publicKey);
    assert.equal(leaf.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId, expected.keyId);
  });

  void it("copies the CSR's subjectPublicKeyInfo verbatim (RSA and P-384 workload keys)", async () => {
    const ca = await makeCa("ECDSA_P256", validFor(-HOUR, 24 * HOUR));
    const p384 = await generateKeyPair("ECDSA_P384", true);
    const cases = [
      { keys: rsaKeys(3072), signingAlgorithm: algorithmParams("RSA_2048").sign },
      { keys: p384, signingAlgorithm: { name: "ECDSA", hash: "SHA-384" } },
    ];
    for (const spec of cases) {
      const csr = await makeCsr(spec);
      const signed = await signLeaf(ca.bundle, csr, HOUR, policy, new Date());
      const spkiInLeaf = nthChild(nthChild(pemToDer(signed.certPem), 0), 6);
      assert.deepEqual(spkiInLeaf, nthChild(nthChild(pemToDer(csr), 0), 2));
      assert.match(opensslVerify(ca.rootPem, ca.intermediatePem, signed.certPem), /: OK\s*$/);
    }
  });

  void it("caches per bundle: a new bundle (rotation) signs with its own key and issuer", async () => {
    const a = await makeCa("ECDSA_P256", validFor(-HOUR, 24 * HOUR));
    const b = await makeCa("ECDSA_P384", validFor(-HOUR, 24 * HOUR));
    const csr = await makeCsr();
    for (const ca of [a, b, a, b]) {
      const leaf = new x509.X509Certificate((await signLeaf(ca.bundle, csr, HOUR, policy, new Date())).certPem);
      assert.equal(leaf.issuer, ca.bundle.signingCert.subject);
      assert.ok(await leaf.verify({ publicKey: ca.bundle.signingCert.publicKey, signatureOnly: true }));
    }
  });
});

/** Deterministic PRNG (the hostile-input harness's mulberry32) so a failing fuzz case can be replayed. */
const prng = mulberry32;

interface BuiltCsr {
  pem: string;
  info: Buffer;
}

/**
 * A CSR assembled with the DER writer and signed with node:crypto, so tests can put anything into the signed part:
 * extensions, other attributes, odd OIDs, RSA-PSS parameters.
 */
function buildCsr(
  spec: {
    extensions?: Buffer[];
    attributes?: Buffer[];
    subject?: Buffer;
    key?: { privateKey: KeyObject; publicKey: KeyObject };
    /** subjectPublicKeyInfo DER to put in place of the key's own (the signature still comes from `key`). */
    spki?: Buffer;
    signatureAlgorithm?: Buffer;
    sign?: (info: Buffer, key: KeyObject) => Buffer;
  } = {},
): BuiltCsr {
  const { privateKey, publicKey } = spec.key ?? generateKeyPairSync("ec", { namedCurve: "P-256" });
  const extensions = spec.extensions ?? [
    asn1.sequence(
      asn1.oid("2.5.29.17"),
      asn1.octetString(asn1.sequence(asn1.contextPrimitive(6, Buffer.from(IDENTITY)))),
    ),
  ];
  const attributes = spec.attributes ?? [
    asn1.sequence(asn1.oid("1.2.840.113549.1.9.14"), asn1.set(asn1.sequence(...extensions))),
  ];
  const info = asn1.sequence(
    asn1.smallInteger(0),
    spec.subject ?? asn1.sequence(),
    spec.spki ?? publicKey.export({ type: "spki", format: "der" }),
    asn1.contextConstructed(0, ...attributes),
  );
  const signature = spec.sign ? spec.sign(info, privateKey) : nodeSign("sha256", info, privateKey);
  const der = asn1.sequence(
    info,
    spec.signatureAlgorithm ?? asn1.sequence(asn1.oid("1.2.840.10045.4.3.2")),
    asn1.bitString(signature),
  );
  return { pem: toPem(der, "CERTIFICATE REQUEST"), info };
}

const ext = (id: string, value: Buffer, critical = false): Buffer =>
  critical
    ? asn1.sequence(asn1.oid(id), asn1.boolean(true), asn1.octetString(value))
    : asn1.sequence(asn1.oid(id), asn1.octetString(value));
const sanExt = (...names: Buffer[]): Buffer => ext("2.5.29.17", asn1.sequence(...names));
const uriName = (uri: string): Buffer => asn1.contextPrimitive(6, Buffer.from(uri, "latin1"));

void describe("fast CSR parser", () => {
  const check = (pem: string, opts = {}): Promise<unknown> => checkCsr(pem, policy, opts);

  void it("accepts a hand-built CSR that openssl also accepts", async () => {
    const { pem } = buildCsr({
      subject: asn1.sequence(asn1.set(asn1.sequence(asn1.oid("2.5.4.3"), asn1.tlv(0x0c, Buffer.from("web"))))),
      attributes: [
        asn1.sequence(asn1.oid("1.2.840.113549.1.9.7"), asn1.set(asn1.tlv(0x0c, Buffer.from("challenge")))),
        asn1.sequence(
          asn1.oid("1.2.840.113549.1.9.14"),
          asn1.set(
            asn1.sequence(sanExt(uriName(IDENTITY)), ext("2.5.29.37", asn1.sequence(asn1.oid("1.3.6.1.5.5.7.3.2")))),
          ),
        ),
      ],
    });
    const dir = mkdtempSync(join(tmpdir(), "fast-csr-"));
    try {
      writeFileSync(join(dir, "csr.pem"), pem);
      execFileSync(OPENSSL, ["req", "-verify", "-noout", "-in", join(dir, "csr.pem")], { stdio: "pipe" });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const checked = (await check(pem)) as { uriSans: string[] };
    assert.deepEqual(checked.uriSans, [IDENTITY]);
    const parsed = parseCsrPem(pem);
    assert.deepEqual(parsed.extensionOids, ["2.5.29.17", "2.5.29.37"]);
    assert.deepEqual(parsed.publicKey, { type: "EC", curve: "P-256", point: "uncompressed" });
    assert.deepEqual(parsed.signatureAlgorithm, { name: "ECDSA", hash: "SHA-256" });
  });

  void it("accepts a CSR without the attributes field", async () => {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const info = asn1.sequence(
      asn1.smallInteger(0),
      asn1.sequence(),
      publicKey.export({ type: "spki", format: "der" }),
    );
    const der = asn1.sequence(
      info,
      asn1.sequence(asn1.oid("1.2.840.10045.4.3.2")),
      asn1.bitString(nodeSign("sha256", info, privateKey)),
    );
    await assertRefused(check(toPem(der, "CERTIFICATE REQUEST")), "INVALID_ARGUMENT", "no_identity");
  });

  void it("verifies RSA-PSS signatures (as the @peculiar path did) and refuses mismatched MGF1 hashes", async () => {
    const key = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const sha256 = asn1.sequence(asn1.oid("2.16.840.1.101.3.4.2.1"), asn1.nullValue());
    const sha384 = asn1.sequence(asn1.oid("2.16.840.1.101.3.4.2.2"), asn1.nullValue());
    const pssAlg = (mgfHash: Buffer): Buffer =>
      asn1.sequence(
        asn1.oid("1.2.840.113549.1.1.10"),
        asn1.sequence(
          asn1.explicit(0, sha256),
          asn1.explicit(1, asn1.sequence(asn1.oid("1.2.840.113549.1.1.8"), mgfHash)),
          asn1.explicit(2, asn1.smallInteger(32)),
        ),
      );
    const pssSign = (info: Buffer, k: KeyObject): Buffer =>
      nodeSign("sha256", info, { key: k, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
    const good = buildCsr({ key: key, signatureAlgorithm: pssAlg(sha256), sign: pssSign });
    assert.deepEqual(((await check(good.pem)) as { uriSans: string[] }).uriSans, [IDENTITY]);
    const mismatched = buildCsr({ key: key, signatureAlgorithm: pssAlg(sha384), sign: pssSign });
    await assertRefused(check(mismatched.pem), "INVALID_ARGUMENT", "csr_signature");
    const defaultSha1 = buildCsr({
      key,
      signatureAlgorithm: asn1.sequence(asn1.oid("1.2.840.113549.1.1.10"), asn1.sequence()),
      sign: pssSign,
    });
    await assertRefused(check(defaultSha1.pem), "INVALID_ARGUMENT", "csr_signature");
  });

  void it("refuses non-canonical public keys: RSA without NULL parameters, compressed or hybrid EC points", async () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const rsaPublicKey = rsa.publicKey.export({ type: "pkcs1", format: "der" });
    const rsaNoParams = asn1.sequence(asn1.sequence(asn1.oid("1.2.840.113549.1.1.1")), asn1.bitString(rsaPublicKey));
    const rsaSign = (info: Buffer, k: KeyObject): Buffer => nodeSign("sha256", info, k);
    const rsaAlg = asn1.sequence(asn1.oid("1.2.840.113549.1.1.11"), asn1.nullValue());
    await assert.rejects(
      check(buildCsr({ key: rsa, spki: rsaNoParams, signatureAlgorithm: rsaAlg, sign: rsaSign }).pem),
      {
        message:
          "key_not_canonical: RSA key's rsaEncryption algorithm has no parameters; expected NULL parameters (RFC 3279)",
      },
    );
    // The same key with NULL parameters (what every encoder writes) is accepted.
    const rsaCanonical = asn1.sequence(
      asn1.sequence(asn1.oid("1.2.840.113549.1.1.1"), asn1.nullValue()),
      asn1.bitString(rsaPublicKey),
    );
    const accepted = buildCsr({ key: rsa, spki: rsaCanonical, signatureAlgorithm: rsaAlg, sign: rsaSign });
    assert.deepEqual(((await check(accepted.pem)) as { uriSans: string[] }).uriSans, [IDENTITY]);

    for (const curve of ["P-256", "P-384"] as const) {
      const key = generateKeyPairSync("ec", { namedCurve: curve });
      const jwk = key.publicKey.export({ format: "jwk" });
      const x = Buffer.from(jwk.x!, "base64url");
      const y = Buffer.from(jwk.y!, "base64url");
      const odd = y[y.length - 1]! & 1;
      const ecSpki = (point: Buffer): Buffer =>
        asn1.sequence(
          asn1.sequence(
            asn1.oid("1.2.840.10045.2.1"),
            asn1.oid(curve === "P-256" ? "1.2.840.10045.3.1.7" : "1.3.132.0.34"),
          ),
          asn1.bitString(point),
        );
      const alg = asn1.sequence(asn1.oid(curve === "P-256" ? "1.2.840.10045.4.3.2" : "1.2.840.10045.4.3.3"));
      const hash = curve === "P-256" ? "sha256" : "sha384";
      const build = (point: Buffer): string =>
        buildCsr({ key, spki: ecSpki(point), signatureAlgorithm: alg, sign: (i, k) => nodeSign(hash, i, k) }).pem;
      const cases: [Buffer, string][] = [
        [Buffer.concat([Uint8Array.of(0x02 + odd), x]), "a compressed point"],
        [Buffer.concat([Uint8Array.of(0x06 + odd), x, y]), "a hybrid point"],
        [Buffer.concat([Uint8Array.of(0x04), x, y, Uint8Array.of(0)]), "an uncompressed point of the wrong length"],
      ];
      for (const [point, form] of cases) {
        await assert.rejects(check(build(point)), {
          message: `key_not_canonical: EC public key is ${form}; expected an uncompressed point on ${curve} (RFC 5480)`,
        });
      }
      const uncompressed = build(Buffer.concat([Uint8Array.of(0x04), x, y]));
      assert.deepEqual(((await check(uncompressed)) as { uriSans: string[] }).uriSans, [IDENTITY]);
    }
  });

  void it("refuses an ECDSA signature algorithm on an RSA key and SHA-1", async () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
    await assertRefused(check(buildCsr({ key: rsa }).pem), "INVALID_ARGUMENT", "csr_signature");
    const sha1 = buildCsr({
      signatureAlgorithm: asn1.sequence(asn1.oid("1.2.840.10045.4.1")),
      sign: (info, k) => nodeSign("sha1", info, k),
    });
    await assertRefused(check(sha1.pem), "INVALID_ARGUMENT", "csr_signature");
  });

  void it("names SAN types as before and refuses otherName, directoryName and registeredID SANs", async () => {
    const upn = asn1.contextConstructed(
      0,
      asn1.oid("1.3.6.1.4.1.311.20.2.3"),
      asn1.explicit(0, asn1.tlv(0x0c, Buffer.from("a@b"))),
    );
    const other = asn1.contextConstructed(0, asn1.oid("1.2.3.4"), asn1.explicit(0, asn1.tlv(0x0c, Buffer.from("x"))));
    const dn = asn1.contextConstructed(
      4,
      asn1.sequence(asn1.set(asn1.sequence(asn1.oid("2.5.4.3"), asn1.tlv(0x0c, Buffer.from("x"))))),
    );
    const cases: [Buffer, string][] = [
      [upn, "upn"],
      [other, "otherName"],
      [dn, "dn"],
      [asn1.contextPrimitive(8, asn1.oid("1.2.3").subarray(2)), "id"],
      [asn1.contextPrimitive(7, Uint8Array.of(10, 0, 0, 1)), "ip"],
    ];
    for (const [name, type] of cases) {
      const { pem } = buildCsr({ extensions: [sanExt(uriName(IDENTITY), name)] });
      await assert.rejects(check(pem), {
        message: `san_forbidden_type: CSR has a ${type} SAN; expected only URI SANs (SPIFFE IDs)`,
      });
    }
  });

  void it("refuses duplicate extensions and a second extensionRequest attribute as malformed", async () => {
    const dup = buildCsr({ extensions: [sanExt(uriName(IDENTITY)), sanExt(uriName(IDENTITY))] });
    await assert.rejects(check(dup.pem), {
      message: /^csr_malformed: CSR requests extension 2\.5\.29\.17 more than once$/,
    });
    const extReq = asn1.sequence(asn1.oid("1.2.840.113549.1.9.14"), asn1.set(asn1.sequence(sanExt(uriName(IDENTITY)))));
    await assertRefused(check(buildCsr({ attributes: [extReq, extReq] }).pem), "INVALID_ARGUMENT", "csr_malformed");
  });

  void it("refuses requested CA:true (also with pathLen) and keyCertSign/cRLSign, but not other usages", async () => {
    const bc = (body: Buffer): Buffer => ext("2.5.29.19", body, true);
    const ku = (byte: number, unused: number): Buffer =>
      ext("2.5.29.15", asn1.bitString(Uint8Array.of(byte), unused), true);
    const refused = [
      bc(asn1.sequence(asn1.boolean(true))),
      bc(asn1.sequence(asn1.boolean(true), asn1.smallInteger(0))),
      ku(0x04, 2),
      ku(0x02, 1),
    ];
    for (const e of refused) {
      await assertRefused(
        check(buildCsr({ extensions: [sanExt(uriName(IDENTITY)), e] }).pem),
        "PERMISSION_DENIED",
        "ca_requested",
      );
    }
    for (const e of [bc(asn1.sequence()), bc(asn1.sequence(asn1.boolean(false))), ku(0xa0, 5), ku(0x88, 3)]) {
      await check(buildCsr({ extensions: [sanExt(uriName(IDENTITY)), e] }).pem);
    }
  });

  void it("refuses long and oversized OIDs anywhere in a correctly signed CSR as malformed", async () => {
    const longOid = asn1.tlv(
      asn1.Tag.OID,
      Buffer.concat([Buffer.from([0x2a]), Buffer.alloc(200, 0x81), Buffer.from([0x01])]),
    );
    const hugeArc = asn1.tlv(asn1.Tag.OID, Uint8Array.of(0x2a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f));
    for (const id of [longOid, hugeArc]) {
      const inExtension = buildCsr({
        extensions: [sanExt(uriName(IDENTITY)), asn1.sequence(id, asn1.octetString(asn1.sequence()))],
      });
      await assertRefused(check(inExtension.pem), "INVALID_ARGUMENT", "csr_malformed");
      const inSubject = buildCsr({
        subject: asn1.sequence(asn1.set(asn1.sequence(id, asn1.tlv(0x0c, Buffer.from("x"))))),
      });
      await assertRefused(check(inSubject.pem), "INVALID_ARGUMENT", "csr_malformed");
      const inSignatureAlgorithm = buildCsr({ signatureAlgorithm: asn1.sequence(id) });
      await assertRefused(check(inSignatureAlgorithm.pem), "INVALID_ARGUMENT", "csr_malformed");
    }
  });

  void it("refuses deep nesting inside the signed part as malformed", async () => {
    let deep: Buffer = asn1.sequence();
    for (let i = 0; i < 1000; i++) deep = asn1.sequence(deep);
    const { pem } = buildCsr({ extensions: [ext("2.5.29.17", deep)] });
    assert.ok(pem.length < DEFAULT_MAX_CSR_BYTES);
    await assertRefused(check(pem), "INVALID_ARGUMENT", "csr_malformed");
    await assertRefused(check(toPem(deep, "CERTIFICATE REQUEST")), "INVALID_ARGUMENT", "csr_malformed");
  });
});

void describe("fast CSR parser fuzz (every refusal is a LeafPolicyError)", () => {
  let good: Buffer;
  const asPem = (der: Uint8Array): string => toPem(der, "CERTIFICATE REQUEST");
  const malformed = async (der: Uint8Array, label: string): Promise<void> => {
    await assert.rejects(checkCsr(asPem(der), policy), (err: unknown) => {
      assert.ok(err instanceof LeafPolicyError, `${label}: expected LeafPolicyError, got ${String(err)}`);
      assert.equal(err.rule, "csr_malformed", `${label}: ${err.message}`);
      return true;
    });
  };

  before(async () => {
    good = pemToDer(await makeCsr({ sans: [{ type: "url", value: IDENTITY }] }));
    await checkCsr(asPem(good), policy);
  });

  void it("every truncation of a valid CSR", async () => {
    for (let n = 1; n < good.length; n++) await malformed(good.subarray(0, n), `truncated to ${n}`);
  });

  void it("every element's length off by one either way, and huge or indefinite outer lengths", async () => {
    const headers: { at: number; lengthByte: number }[] = [];
    const collect = (reader: asn1.DerReader): void => {
      while (!reader.atEnd) {
        const el = reader.next();
        headers.push({ at: el.headerStart, lengthByte: el.headerStart + 1 });
        // Only constructed universal types: OCTET/BIT STRING contents are opaque to the structure.
        if (el.tag === asn1.Tag.SEQUENCE || el.tag === asn1.Tag.SET || el.tag === 0xa0)
          collect(reader.children(el, "c"));
      }
    };
    collect(new asn1.DerReader(good));
    assert.ok(headers.length > 10);
    for (const { at, lengthByte } of headers) {
      const b = good[lengthByte]!;
      // Short-form lengths only (long forms change width): +1 and -1 keep the byte a short form.
      if (b >= 0x80) continue;
      for (const delta of [1, -1]) {
        if (b + delta < 0 || b + delta >= 0x80) continue;
        const mutated = Buffer.from(good);
        mutated[lengthByte] = b + delta;
        await malformed(mutated, `element at ${at} length ${b}${delta > 0 ? "+1" : "-1"}`);
      }
    }
    const body = good.subarray(good[1]! >= 0x80 ? 2 + (good[1]! & 0x7f) : 2);
    for (const header of [
      [0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
      [0x30, 0x80],
      [0x30, 0x83, 0x10, 0x00, 0x00],
    ]) {
      await malformed(
        Buffer.concat([Buffer.from(header), body]),
        `outer header ${Buffer.from(header).toString("hex")}`,
      );
    }
  });

  void it("2,000 seeded random inputs, half of them inside a well-formed outer SEQUENCE", async () => {
    const next = prng(20240601);
    for (let i = 0; i < 2000; i++) {
      const body = randomBytes(next, 1 + Math.floor(next() * 700));
      await malformed(i % 2 === 0 ? body : asn1.sequence(body), `random input ${i}`);
    }
  });

  void it("2,000 seeded random byte mutations of a valid CSR: always a LeafPolicyError", async () => {
    const next = prng(77);
    const rules = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const mutated = Buffer.from(good);
      const flips = 1 + Math.floor(next() * 3);
      for (let f = 0; f < flips; f++) mutated[Math.floor(next() * mutated.length)] = Math.floor(next() * 256);
      try {
        await checkCsr(asPem(mutated), policy);
      } catch (err) {
        assert.ok(err instanceof LeafPolicyError, `mutation ${i}: expected LeafPolicyError, got ${String(err)}`);
        rules.add(err.rule);
      }
    }
    assert.ok(rules.has("csr_malformed") && rules.has("csr_signature"), [...rules].join(","));
  });
});

void describe("fast CSR parser agrees with @peculiar/x509", () => {
  void it("on the key, SANs, basicConstraints and keyUsage of generated CSRs", async () => {
    const cases: CsrSpec[] = [
      {},
      {
        sans: [
          { type: "url", value: IDENTITY },
          { type: "dns", value: "web.default.svc" },
        ],
      },
      {
        sans: [
          { type: "ip", value: "10.0.0.1" },
          { type: "email", value: "a@example.com" },
          { type: "url", value: IDENTITY },
        ],
      },
      {
        keys: rsaKeys(2048),
        signingAlgorithm: algorithmParams("RSA_2048").sign,
        extensions: [
          new x509.BasicConstraintsExtension(true, 2, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature),
        ],
      },
      { keys: await generateKeyPair("ECDSA_P384", true), signingAlgorithm: { name: "ECDSA", hash: "SHA-384" } },
    ];
    for (const spec of cases) {
      const pem = await makeCsr(spec);
      const fast = parseCsrPem(pem);
      const slow = new x509.Pkcs10CertificateRequest(pem);
      const alg = slow.publicKey.algorithm as { name: string; namedCurve?: string; modulusLength?: number };
      assert.deepEqual(
        fast.publicKey,
        alg.name === "ECDSA"
          ? { type: "EC", curve: alg.namedCurve, point: "uncompressed" }
          : { type: "RSA", modulusBits: alg.modulusLength, nullParameters: true },
      );
      assert.deepEqual(new Uint8Array(fast.spki), new Uint8Array(slow.publicKey.rawData));
      const slowNames = slow.extensions.flatMap((e) =>
        e instanceof x509.SubjectAlternativeNameExtension ? e.names.items : [],
      );
      assert.deepEqual(
        fast.subjectAltNames.map((n) => n.type),
        [...slowNames].map((n) => n.type),
      );
      assert.deepEqual(
        fast.subjectAltNames.filter((n) => n.type === "url").map((n) => n.value),
        [...slowNames].filter((n) => n.type === "url").map((n) => n.value),
      );
      assert.equal(
        fast.requestsCa,
        slow.extensions.find((e) => e instanceof x509.BasicConstraintsExtension)?.ca ?? false,
      );
      assert.equal(fast.keyUsage, slow.extensions.find((e) => e instanceof x509.KeyUsagesExtension)?.usages ?? 0);
      assert.deepEqual(
        fast.extensionOids,
        [...slow.extensions].map((e) => e.type),
      );
      assert.equal(fast.signatureAlgorithm.hash, (slow.signatureAlgorithm as { hash?: { name?: string } }).hash?.name);
      assert.ok(await slow.verify());
    }
  });
});

void describe("SigningPool (leaf signing on worker threads)", () => {
  let pool: SigningPool;
  let ca: TestCa;

  before(async () => {
    pool = new SigningPool(2);
    ca = await makeCa("ECDSA_P256", validFor(-HOUR, 30 * 24 * HOUR));
  });
  after(() => pool.close());

  void it("signs the same leaves signLeaf does, on any worker, for every bundle it is given", async () => {
    const other = await makeCa("RSA_2048", validFor(-HOUR, 30 * 24 * HOUR));
    const csr = await makeCsr();
    const now = new Date();
    const leaves = await Promise.all(
      Array.from({ length: 8 }, (_, i) => pool.sign(i % 2 ? other.bundle : ca.bundle, csr, 2 * HOUR, policy, now)),
    );
    for (const [i, signed] of leaves.entries()) {
      const issuer = i % 2 ? other : ca;
      assert.deepEqual(signed.chainPem, [signed.certPem, issuer.intermediatePem, issuer.rootPem]);
      const leaf = new x509.X509Certificate(signed.certPem);
      assert.equal(leaf.serialNumber.toLowerCase(), signed.serialHex);
      assert.equal(leaf.notAfter.getTime(), signed.notAfter.getTime());
      assert.equal(signed.notAfter.getTime(), Math.floor(now.getTime() / 1000) * 1000 + 2 * HOUR * 1000);
      const reference = await referenceLeaf(issuer, leaf, [IDENTITY]);
      assert.deepEqual(nthChild(new Uint8Array(leaf.rawData), 0), nthChild(reference, 0));
      assert.ok(await leaf.verify({ publicKey: issuer.bundle.signingCert.publicKey, signatureOnly: true }));
    }
    assert.match(opensslVerify(ca.rootPem, ca.intermediatePem, leaves[0]!.certPem), /: OK\s*$/);
    assert.equal(new Set(leaves.map((l) => l.serialHex)).size, leaves.length);
  });

  void it("in the bundle (dist/bundle), starts its workers from signing-worker.js beside it and signs alike", async () => {
    // The chunk that holds the pool, from the bundle's metafile (its name carries a content hash).
    const meta = JSON.parse(readFileSync(join(repoRoot(), "dist/bundle/meta.json"), "utf8")) as {
      outputs: Record<string, { inputs: Record<string, unknown>; exports: string[] }>;
    };
    const [chunk] = Object.entries(meta.outputs).filter(
      ([f, o]) => f.endsWith(".js") && o.inputs["src/signing/worker-pool.ts"] && o.exports.includes("SigningPool"),
    );
    assert.ok(chunk, "npm run bundle first: no bundled SigningPool");
    const bundled = (await import(pathToFileURL(join(repoRoot(), chunk[0])).href)) as {
      SigningPool: typeof SigningPool;
    };
    assert.notEqual(bundled.SigningPool, SigningPool, "the bundle's own copy");
    const bundledPool = new bundled.SigningPool(1);
    try {
      const signed = await bundledPool.sign(ca.bundle, await makeCsr(), HOUR, policy, new Date());
      assert.match(opensslVerify(ca.rootPem, ca.intermediatePem, signed.certPem), /: OK\s*$/);
      await assert.rejects(
        bundledPool.sign(ca.bundle, await makeCsr({ sans: [] }), HOUR, policy, new Date()),
        (err: Error) => err.constructor.name === "LeafPolicyError",
      );
    } finally {
      await bundledPool.close();
    }
  });

  void it("refuses with the same error classes, codes, rules and messages as signLeaf", async () => {
    const bad = [
      await makeCsr({ sans: [{ type: "url", value: "spiffe://other/ns/a/sa/b" }] }),
      await makeCsr({ sans: [] }),
      "not a CSR",
    ];
    for (const csr of bad) {
      const direct = await signLeaf(ca.bundle, csr, HOUR, policy, new Date()).then(
        () => assert.fail("signLeaf accepted"),
        (err: unknown) => err as LeafPolicyError,
      );
      await assert.rejects(pool.sign(ca.bundle, csr, HOUR, policy, new Date()), (err: unknown) => {
        assert.ok(err instanceof LeafPolicyError);
        assert.deepEqual([err.code, err.rule, err.message], [direct.code, direct.rule, direct.message]);
        return true;
      });
    }
    const opts = { requiredIdentity: "spiffe://cluster.local/ns/default/sa/other" };
    await assertRefused(
      pool.sign(ca.bundle, await makeCsr(), HOUR, policy, new Date(), opts),
      "PERMISSION_DENIED",
      "identity_mismatch",
    );
    const expired = new Date(ca.bundle.notAfter.getTime() + 1000);
    await assert.rejects(pool.sign(ca.bundle, await makeCsr(), HOUR, policy, expired), (err: unknown) => {
      assert.ok(err instanceof CaValidityError);
      assert.equal(err.rule, "ca_expired");
      assert.match(err.message, /^ca_expired: intermediate expired at /);
      return true;
    });
  });

  void it("follows rotation: each leaf is signed by the bundle it was asked for, across more bundles than a worker keeps", async () => {
    // One worker keeps at most two issuers: A, B, C, then A again must be re-sent, never answered with another key.
    const single = new SigningPool(1);
    try {
      const cas = [ca, await makeCa("ECDSA_P256", validFor(-HOUR, 30 * 24 * HOUR))];
      cas.push(await makeCa("ECDSA_P384", validFor(-HOUR, 30 * 24 * HOUR)));
      const order = [0, 0, 1, 1, 2, 0, 2, 1, 0];
      const csr = await makeCsr();
      const leaves = await Promise.all(order.map((i) => single.sign(cas[i]!.bundle, csr, HOUR, policy, new Date())));
      for (const [n, signed] of leaves.entries()) {
        const issuer = cas[order[n]!]!;
        assert.equal(signed.chainPem[1], issuer.intermediatePem);
        const leaf = new x509.X509Certificate(signed.certPem);
        assert.ok(
          await leaf.verify({ publicKey: issuer.bundle.signingCert.publicKey, signatureOnly: true }),
          `leaf ${n} is signed by intermediate ${order[n]}`,
        );
        assert.match(opensslVerify(issuer.rootPem, issuer.intermediatePem, signed.certPem), /: OK\s*$/);
      }
    } finally {
      await single.close();
    }
  });

  void it("replaces a dead worker: only its requests fail (WorkerCrashedError), the next ones are signed", async () => {
    const exits: boolean[] = [];
    const crashing = new SigningPool(1, { onWorkerExit: (_err, replaced) => exits.push(replaced) });
    try {
      const csr = await makeCsr();
      await crashing.sign(ca.bundle, csr, HOUR, policy, new Date());
      const inFlight = crashing.sign(ca.bundle, csr, HOUR, policy, new Date()).then(
        () => "signed",
        (err: unknown) => (err as Error).name,
      );
      await crashing.crashWorkerForTest();
      assert.ok(["signed", "WorkerCrashedError"].includes(await inFlight));
      await waitFor(() => exits.length === 1);
      assert.deepEqual(exits, [true]);
      assert.ok(crashing.working);
      const after = await crashing.sign(ca.bundle, csr, HOUR, policy, new Date());
      assert.equal(after.chainPem[1], ca.intermediatePem, "the new worker was sent the issuer");
    } finally {
      await crashing.close();
    }
  });

  void it(`stops replacing workers after ${MAX_CONSECUTIVE_WORKER_CRASHES} deaths without an answer`, async () => {
    const exits: boolean[] = [];
    const crashing = new SigningPool(1, { onWorkerExit: (_err, replaced) => exits.push(replaced) });
    try {
      await crashing.warm();
      for (let i = 1; i <= MAX_CONSECUTIVE_WORKER_CRASHES; i++) {
        await crashing.crashWorkerForTest();
        await waitFor(() => exits.length === i);
      }
      assert.deepEqual(exits, [true, true, false]);
      assert.equal(crashing.working, false);
      await assert.rejects(crashing.sign(ca.bundle, await makeCsr(), HOUR, policy, new Date()), {
        name: "WorkerCrashedError",
      });
    } finally {
      await crashing.close();
    }
  });

  void it("rejects requests after close", async () => {
    const closing = new SigningPool(1);
    await closing.close();
    await assert.rejects(closing.sign(ca.bundle, await makeCsr(), HOUR, policy, new Date()), /closed/);
  });

  void it("starts no worker until asked, one for the first request, a second only while the first is busy", async () => {
    const running: number[] = [];
    const lazy = new SigningPool(2, { onRunningChange: (n) => running.push(n) });
    try {
      assert.equal(lazy.running, 0);
      const csr = await makeCsr();
      for (let i = 0; i < 3; i++) await lazy.sign(ca.bundle, csr, HOUR, policy, new Date());
      assert.equal(lazy.running, 1, "one request at a time keeps one worker");
      assert.deepEqual(running, [1]);
      const leaves = await Promise.all(
        Array.from({ length: 8 }, () => lazy.sign(ca.bundle, csr, HOUR, policy, new Date())),
      );
      for (const l of leaves) assert.equal(l.chainPem[1], ca.intermediatePem);
      assert.equal(lazy.running, 2, "concurrent requests start the second");
      assert.deepEqual(running, [1, 2]);
    } finally {
      await lazy.close();
    }
  });

  void it("stops a worker idle for idleExitMs (not a crash) and starts one again for the next request", async () => {
    const running: number[] = [];
    const exits: boolean[] = [];
    const idle = new SigningPool(1, {
      idleExitMs: 50,
      onRunningChange: (n) => running.push(n),
      onWorkerExit: (_err, replaced) => exits.push(replaced),
    });
    try {
      const csr = await makeCsr();
      await idle.sign(ca.bundle, csr, HOUR, policy, new Date());
      await waitFor(() => idle.running === 0, "the idle worker to exit");
      assert.deepEqual(running, [1, 0]);
      const again = await idle.sign(ca.bundle, csr, HOUR, policy, new Date());
      assert.equal(again.chainPem[1], ca.intermediatePem, "the new worker was sent the issuer");
      assert.ok(idle.working);
      assert.deepEqual(exits, [], "an idle exit is not a crash");
      assert.deepEqual(running.slice(0, 3), [1, 0, 1]);
    } finally {
      await idle.close();
    }
  });

  void it("keeps a busy worker past idleExitMs", async () => {
    const busy = new SigningPool(1, { idleExitMs: 50 });
    try {
      const csr = await makeCsr();
      const until = Date.now() + 300;
      while (Date.now() < until) await busy.sign(ca.bundle, csr, HOUR, policy, new Date());
      assert.equal(busy.running, 1);
    } finally {
      await busy.close();
    }
  });

  void it("runs each worker under the signing resource limits, or those given", async () => {
    const limited = new SigningPool(1);
    const custom = new SigningPool(1, { resourceLimits: { maxOldGenerationSizeMb: 48, codeRangeSizeMb: 8 } });
    try {
      await Promise.all([limited.warm(), custom.warm()]);
      assert.equal(
        limited.resourceLimitsForTest()?.maxOldGenerationSizeMb,
        SIGNING_WORKER_RESOURCE_LIMITS.maxOldGenerationSizeMb,
      );
      assert.equal(limited.resourceLimitsForTest()?.codeRangeSizeMb, SIGNING_WORKER_RESOURCE_LIMITS.codeRangeSizeMb);
      assert.equal(custom.resourceLimitsForTest()?.maxOldGenerationSizeMb, 48);
      assert.equal(custom.resourceLimitsForTest()?.codeRangeSizeMb, 8);
      const signed = await limited.sign(ca.bundle, await makeCsr(), HOUR, policy, new Date());
      assert.equal(signed.chainPem[1], ca.intermediatePem);
    } finally {
      await Promise.all([limited.close(), custom.close()]);
    }
  });
});

/** Resolves once `cond` holds; fails (rather than hangs the suite) if it never does. */
async function waitFor(cond: () => boolean, what = "the pool to report the worker's exit"): Promise<void> {
  const giveUp = Date.now() + 60_000;
  while (!cond()) {
    if (Date.now() > giveUp) assert.fail(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** signing_leaves_total by "listener/thread". */
async function leafCounts(metrics: AgentMetrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await metrics.signingLeaves.get()).values)
    out[`${String(v.labels.listener)}/${String(v.labels.thread)}`] = v.value;
  return out;
}

void describe("AgentSigning (one pool per agent, shared by the socket and the Istio CA listener)", () => {
  let ca: TestCa;
  const log = createLogger({ level: "silent" });
  before(async () => {
    ca = await makeCa("ECDSA_P256", validFor(-HOUR, 30 * 24 * HOUR));
  });

  void it("signs both listeners' leaves on its workers and counts them per listener", async () => {
    const metrics = new AgentMetrics({ processMetrics: false });
    const signing = new AgentSigning(2, log, metrics);
    try {
      await signing.warm();
      const csr = await makeCsr();
      const socket = signing.signer("socket");
      const istioCa = signing.signer("istio_ca");
      const leaves = await Promise.all([
        socket(ca.bundle, csr, HOUR, policy, new Date()),
        socket(ca.bundle, csr, HOUR, policy, new Date()),
        istioCa(ca.bundle, csr, HOUR, policy, new Date(), { requiredIdentity: IDENTITY }),
      ]);
      for (const l of leaves) assert.deepEqual(l.chainPem.slice(1), [ca.intermediatePem, ca.rootPem]);
      assert.deepEqual(await leafCounts(metrics), { "socket/worker": 2, "istio_ca/worker": 1 });
      assert.equal((await metrics.signingWorkers.get()).values[0]?.value, 2);
      // A refusal is the caller's error, not a reason to sign on the main thread.
      await assert.rejects(
        istioCa(ca.bundle, csr, HOUR, policy, new Date(), { requiredIdentity: "spiffe://cluster.local/ns/x/sa/y" }),
        LeafPolicyError,
      );
      assert.deepEqual(await leafCounts(metrics), { "socket/worker": 2, "istio_ca/worker": 1 });
    } finally {
      await signing.close();
    }
  });

  void it("signs a lone leaf on the main thread; a second within WORKER_START_WITHIN_MS starts a worker", async () => {
    const metrics = new AgentMetrics({ processMetrics: false });
    const signing = new AgentSigning(1, log, metrics, { idleExitMs: 50 });
    const gauge = async () => (await metrics.signingWorkers.get()).values[0]?.value;
    try {
      const csr = await makeCsr();
      const socket = signing.signer("socket");
      assert.equal(await gauge(), 0, "no worker before any request");
      await socket(ca.bundle, csr, HOUR, policy, new Date());
      assert.deepEqual(await leafCounts(metrics), { "socket/main": 1 });
      assert.equal(await gauge(), 0, "a lone request starts no worker");
      await socket(ca.bundle, csr, HOUR, policy, new Date());
      assert.deepEqual(await leafCounts(metrics), { "socket/main": 2 }, "signed here while the worker starts");
      assert.equal(await gauge(), 1, `a second request within ${WORKER_START_WITHIN_MS} ms starts one`);
      await signing.warm();
      await socket(ca.bundle, csr, HOUR, policy, new Date());
      assert.deepEqual(await leafCounts(metrics), { "socket/main": 2, "socket/worker": 1 });
      let running = 1;
      const poll = setInterval(() => void gauge().then((n) => (running = n ?? -1)), 5);
      await waitFor(() => running === 0, "the idle worker to exit").finally(() => clearInterval(poll));
    } finally {
      await signing.close();
    }
  });

  void it("0 workers: signs on the main thread", async () => {
    const metrics = new AgentMetrics({ processMetrics: false });
    const signing = new AgentSigning(0, log, metrics);
    await signing.signer("istio_ca")(ca.bundle, await makeCsr(), HOUR, policy, new Date());
    assert.deepEqual(await leafCounts(metrics), { "istio_ca/main": 1 });
    assert.equal((await metrics.signingWorkers.get()).values[0]?.value, 0);
    await signing.close();
  });

  void it("a worker crash fails no call: its requests are signed again on the main thread", async () => {
    const metrics = new AgentMetrics({ processMetrics: false });
    const signing = new AgentSigning(1, log, metrics);
    try {
      await signing.warm();
      const csr = await makeCsr();
      const socket = signing.signer("socket");
      const calls = Array.from({ length: 40 }, () => socket(ca.bundle, csr, HOUR, policy, new Date()));
      await signing.crashWorkerForTest();
      const leaves = await Promise.all(calls);
      for (const l of leaves) assert.equal(l.chainPem[1], ca.intermediatePem);
      const restarts = async () => (await metrics.signingWorkerRestarts.get()).values[0]?.value ?? 0;
      let restarted = 0;
      const poll = setInterval(() => void restarts().then((n) => (restarted = n)), 5);
      await waitFor(() => restarted >= 1).finally(() => clearInterval(poll));
      const before = await leafCounts(metrics);
      assert.equal((before["socket/worker"] ?? 0) + (before["socket/main"] ?? 0), 40);
      await signing.warm();
      await socket(ca.bundle, csr, HOUR, policy, new Date());
      const after = await leafCounts(metrics);
      assert.equal(after["socket/worker"], (before["socket/worker"] ?? 0) + 1, "the replacement worker signs");
      assert.equal(await restarts(), 1);
    } finally {
      await signing.close();
    }
  });
});

void describe("Istio CA serving certificate", () => {
  void it("asserts digitalSignature only (ECDSA key), carries an SKI of its key and the intermediate's SKI as AKI", async () => {
    const ca = await makeCa("ECDSA_P256", validFor(-HOUR, 24 * HOUR));
    const names = ["istiod-vault-agent.istio-system.svc", "127.0.0.1"];
    const serving = await issueServingCertificate(ca.bundle, names, Date.now());
    const cert = new x509.X509Certificate(serving.certPem);
    assert.equal(cert.getExtension(x509.KeyUsagesExtension)?.usages, x509.KeyUsageFlags.digitalSignature);
    const ski = cert.getExtension(x509.SubjectKeyIdentifierExtension);
    assert.ok(ski, "the serving certificate must carry a subject key identifier");
    assert.equal(ski.keyId, (await x509.SubjectKeyIdentifierExtension.create(cert.publicKey)).keyId);
    const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension);
    assert.equal(aki?.keyId, ca.bundle.signingCert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId);
    assert.deepEqual(cert.getExtension(x509.SubjectAlternativeNameExtension)?.names.toJSON(), [
      { type: "dns", value: names[0] },
      { type: "ip", value: names[1] },
    ]);
    assert.match(opensslVerify(ca.rootPem, ca.intermediatePem, serving.certPem), /: OK\s*$/);
  });

  void it("encodes IPv4 and IPv6 serving names as 4 and 16 address bytes", async () => {
    const hex = (ip: string) => ipBytes(ip).toString("hex");
    assert.equal(hex("127.0.0.1"), "7f000001");
    assert.equal(hex("::1"), "00000000000000000000000000000001");
    assert.equal(hex("fe80::1:2"), "fe800000000000000000000000010002");
    assert.equal(hex("2001:db8::"), "20010db8000000000000000000000000");
    assert.equal(hex("::ffff:10.1.2.3"), "00000000000000000000ffff0a010203");
    assert.equal(hex("1:2:3:4:5:6:7:8"), "00010002000300040005000600070008");
    assert.throws(() => ipBytes("istiod.example"), /not an IP address/);
    const ca = await makeCa("ECDSA_P256", validFor(-HOUR, 24 * HOUR));
    const serving = await issueServingCertificate(ca.bundle, ["::1", "10.0.0.7"], Date.now());
    assert.equal(
      new NodeX509Certificate(serving.certPem).subjectAltName,
      "IP Address:0:0:0:0:0:0:0:1, IP Address:10.0.0.7",
    );
  });
});
