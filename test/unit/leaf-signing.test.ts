// Leaf signing against an in-test root and intermediate: the happy path (checked by @peculiar/x509 and by openssl)
// and one test per policy rule, asserting the exact code and rule. describe/it return promises that node:test itself
// tracks, hence `void` for no-floating-promises.
import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { generateKeyPairSync, type webcrypto } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SigningBundle } from "../../src/authority/bundle.js";
import { algorithmParams, generateKeyPair, toPem, type KeyAlgorithmName } from "../../src/crypto/keys.js";
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
import { signLeaf } from "../../src/signing/leaf-signer.js";

const OPENSSL = "/usr/bin/openssl";
const IDENTITY = "spiffe://cluster.local/ns/default/sa/web";
const HOUR = 3600;

const policy: LeafPolicy = {
  trustDomain: "cluster.local",
  maxTtlSeconds: 24 * HOUR,
  defaultTtlSeconds: HOUR,
  maxCsrBytes: DEFAULT_MAX_CSR_BYTES,
};

interface TestCa {
  bundle: SigningBundle;
  rootPem: string;
  intermediatePem: string;
}

/** Self-signed root (P-256) and an intermediate (pathlen 0) whose non-extractable key goes into the bundle. */
async function makeCa(
  keyAlgorithm: KeyAlgorithmName,
  intermediateValidity: { notBefore: Date; notAfter: Date },
): Promise<TestCa> {
  const rootKeys = await generateKeyPair("ECDSA_P256", false);
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    name: "CN=Test Root,O=istiod-vault-agent",
    keys: rootKeys,
    signingAlgorithm: algorithmParams("ECDSA_P256").sign,
    notBefore: new Date(Date.now() - 24 * HOUR * 1000),
    notAfter: new Date(Date.now() + 365 * 24 * HOUR * 1000),
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  });
  const intermediateKeys = await generateKeyPair(keyAlgorithm, false);
  const intermediate = await x509.X509CertificateGenerator.create({
    subject: "CN=Test Intermediate,O=istiod-vault-agent",
    issuer: root.subjectName,
    publicKey: intermediateKeys.publicKey,
    signingKey: rootKeys.privateKey,
    signingAlgorithm: algorithmParams("ECDSA_P256").sign,
    ...intermediateValidity,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(intermediateKeys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(root.publicKey),
    ],
  });
  const rootPem = toPem(root.rawData, "CERTIFICATE");
  const intermediatePem = toPem(intermediate.rawData, "CERTIFICATE");
  const bundle: SigningBundle = {
    signingCert: intermediate,
    signingCertPem: intermediatePem,
    chainPem: [intermediatePem, rootPem],
    rootsPem: [rootPem],
    privateKey: intermediateKeys.privateKey,
    keyAlgorithm,
    privateKeyPem: undefined,
    notBefore: intermediate.notBefore,
    notAfter: intermediate.notAfter,
    serialHex: intermediate.serialNumber.toLowerCase(),
    generation: 1,
  };
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
    assert.equal(ku.usages, x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment);
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
      const mixed = await makeCsr({
        sans: [
          { type: "url", value: IDENTITY },
          { type: "url", value: other },
        ],
      });
      await assertRefused(sign(mixed), "PERMISSION_DENIED", "san_wrong_trust_domain");
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
    assert.deepEqual(new Uint8Array(checked.publicKey.rawData), spki);
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
