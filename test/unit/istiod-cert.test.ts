// istiod's serving certificate in the mesh-CA mode (src/serve/istiod-cert.ts): the pure parts (names, files, renewal
// point) and the publisher on a fake clock writing a real temporary directory.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SigningBundle } from "../../src/authority/bundle.js";
import { generateKeyPair, generateNodeKeyPairFor, signingCryptoKeys, toPem } from "../../src/crypto/keys.js";
import { x509 } from "../../src/crypto/x509.js";
import { createLogger } from "../../src/observability/logger.js";
import {
  IstiodCertPublisher,
  IstiodTlsDirError,
  defaultIstiodDnsNames,
  istiodTlsFiles,
  renewalDelayMs,
} from "../../src/serve/istiod-cert.js";
import { issueServingCertificate } from "../../src/serve/serving-cert.js";
import { caCertificate, testSigningBundle } from "../env/ca-certs.js";
import { FakeClock } from "./fake-clock.js";

const HOUR = 3600_000;
const log = createLogger({ level: "error" });

async function makeBundle(nowMs: number, generation = 1): Promise<SigningBundle> {
  const rootKeys = await generateKeyPair("ECDSA_P256", false);
  const root = await caCertificate({
    subject: "CN=Test Root",
    keys: rootKeys,
    notBefore: new Date(nowMs - 24 * HOUR),
    notAfter: new Date(nowMs + 365 * 24 * HOUR),
  });
  const nodeKeys = await generateNodeKeyPairFor("ECDSA_P256");
  const keys = signingCryptoKeys(nodeKeys, "ECDSA_P256");
  const intermediate = await caCertificate({
    subject: "CN=Test Intermediate",
    keys,
    issuer: { cert: root, privateKey: rootKeys.privateKey },
    notBefore: new Date(nowMs - HOUR),
    notAfter: new Date(nowMs + 30 * 24 * HOUR),
    pathLength: 0,
  });
  const bundle = testSigningBundle(
    intermediate,
    toPem(root.rawData, "CERTIFICATE"),
    { signingKey: nodeKeys.privateKey, privateKey: keys.privateKey },
    "ECDSA_P256",
  );
  return { ...bundle, generation };
}

/** A stand-in authority: current() and subscribe() over bundles the test pushes. */
class Source {
  private listeners = new Set<(b: SigningBundle) => void>();
  constructor(public bundle: SigningBundle) {}
  current(): SigningBundle {
    return this.bundle;
  }
  subscribe(fn: (b: SigningBundle) => void): () => void {
    this.listeners.add(fn);
    fn(this.bundle);
    return () => this.listeners.delete(fn);
  }
  push(b: SigningBundle): void {
    this.bundle = b;
    for (const l of this.listeners) l(b);
  }
}

function readTls(dir: string) {
  const crt = readFileSync(join(dir, "tls.crt"), "utf8");
  return {
    crt,
    key: readFileSync(join(dir, "tls.key"), "utf8"),
    ca: readFileSync(join(dir, "ca.crt"), "utf8"),
    leaf: new X509Certificate(crt),
  };
}

void describe("istiod's serving certificate", () => {
  void it("defaults to istiod's Service name, per revision", () => {
    assert.deepEqual(defaultIstiodDnsNames("istio-system", undefined), ["istiod.istio-system.svc"]);
    assert.deepEqual(defaultIstiodDnsNames("istio-system", "default"), ["istiod.istio-system.svc"]);
    assert.deepEqual(defaultIstiodDnsNames("mesh", "canary"), ["istiod-canary.mesh.svc"]);
  });

  void it("renews at the grace ratio of the leaf's life", () => {
    assert.equal(renewalDelayMs(0, 24 * HOUR, 1 / 3), 16 * HOUR);
    assert.equal(renewalDelayMs(1000, 1000, 0.5), 1000, "never sooner than a second");
  });

  void it("tls.crt is leaf + intermediate without the root, tls.key is a fresh key, ca.crt the roots", async () => {
    const now = Date.now();
    const bundle = await makeBundle(now);
    const serving = await issueServingCertificate(bundle, ["istiod.istio-system.svc"], now, 2 * HOUR);
    const files = Object.fromEntries(istiodTlsFiles(bundle, serving).map((f) => [f.name, f.content]));
    assert.deepEqual(Object.keys(files).sort(), ["ca.crt", "tls.crt", "tls.key"]);
    const certs = files["tls.crt"]!.match(/-----BEGIN CERTIFICATE-----/g) ?? [];
    assert.equal(certs.length, 2, "leaf and intermediate, no root");
    assert.ok(files["tls.crt"]!.includes(bundle.signingCertPem.trim()));
    assert.ok(!files["tls.crt"]!.includes(bundle.rootsPem[0]!.trim()));
    assert.equal(files["ca.crt"]!.trim(), bundle.rootsPem[0]!.trim());
    const leaf = new X509Certificate(files["tls.crt"]!);
    assert.equal(leaf.subjectAltName, "DNS:istiod.istio-system.svc");
    assert.ok(leaf.checkIssued(new X509Certificate(bundle.signingCertPem)));
    assert.ok(leaf.checkPrivateKey(createPrivateKey(files["tls.key"]!)), "tls.key is the leaf's key");
    const eku = new x509.X509Certificate(files["tls.crt"]!).getExtension(x509.ExtendedKeyUsageExtension);
    assert.deepEqual([...(eku?.usages ?? [])], ["1.3.6.1.5.5.7.3.1"], "serverAuth only");
    assert.ok(Math.abs(new Date(leaf.validTo).getTime() - (now + 2 * HOUR)) < 2000, "--istiod-cert-ttl");
    const intermediateKey = bundle.signingCert.publicKey.rawData;
    const servingKey = new x509.X509Certificate(files["tls.crt"]!).publicKey.rawData;
    assert.notDeepEqual(Buffer.from(servingKey), Buffer.from(intermediateKey), "istiod's own key");
  });

  void it("publishes atomically at start, re-issues on a new intermediate and before expiry", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "iva-istiod-tls-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const clock = new FakeClock(Date.now(), 2_000);
    const source = new Source(await makeBundle(clock.now()));
    const pub = new IstiodCertPublisher(
      { dir, dnsNames: ["istiod.istio-system.svc"], ttlMs: 3 * HOUR, graceRatio: 1 / 3, group: process.getegid!() },
      source,
      log,
      clock,
    );
    await pub.start();
    t.after(() => pub.stop());
    assert.equal(readlinkSync(join(dir, "tls.crt")), "..data/tls.crt", "published through the ..data swap");
    const first = readTls(dir);
    assert.ok(first.leaf.checkIssued(new X509Certificate(source.bundle.signingCertPem)));

    // A new intermediate: a new leaf from it, with a new key, at once.
    source.push(await makeBundle(clock.now(), 2));
    await pub.settled();
    const second = readTls(dir);
    assert.ok(second.leaf.checkIssued(new X509Certificate(source.bundle.signingCertPem)));
    assert.notEqual(second.key, first.key);
    assert.equal(second.ca.trim(), source.bundle.rootsPem[0]!.trim());

    // Renewal: due at 2/3 of the 3 h life (notAfter is whole seconds, so up to a second sooner).
    const pending = clock.pending();
    assert.equal(pending.length, 1);
    assert.ok(pending[0]! <= 2 * HOUR && pending[0]! > 2 * HOUR - 1000, `renewal in ${pending[0]} ms`);
    await clock.advance(2 * HOUR);
    await pub.settled();
    const third = readTls(dir);
    assert.notEqual(third.leaf.serialNumber, second.leaf.serialNumber);
    assert.notEqual(third.key, second.key);
  });

  void it("a missing directory fails at preflight, naming it", async () => {
    const clock = new FakeClock();
    const dir = join(tmpdir(), "iva-no-such-istiod-tls-dir");
    const pub = new IstiodCertPublisher(
      { dir, dnsNames: ["istiod.istio-system.svc"], ttlMs: HOUR, graceRatio: 0.5, group: 1337 },
      new Source(await makeBundle(clock.now())),
      log,
      clock,
    );
    await assert.rejects(pub.preflight(), (err: unknown) => {
      assert.ok(err instanceof IstiodTlsDirError);
      assert.match(err.message, /istiod TLS directory .* does not exist/);
      return true;
    });
  });
});
