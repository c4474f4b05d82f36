import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { effectiveStart, renewAtMs } from "../../src/authority/renewal.js";
import { inspectTlsSecret, type TlsExpectation } from "../../src/kube/tls-secret.js";
import { makeTestCa, type TestCa } from "../env/pki.js";

const LEAF: TlsExpectation = { kind: "leaf", dnsNames: ["relay.example"], keyAlgorithm: "ECDSA_P256" };

void describe("relay Secret inspection", () => {
  let ca: TestCa;
  let other: TestCa;
  const setup = async () => {
    ca ??= await makeTestCa("relay unit CA");
    other ??= await makeTestCa("another CA");
  };

  const secretOf = async (opts: { dnsNames?: string[]; keyFrom?: "other-leaf" } = {}) => {
    await setup();
    const leaf = await ca.issue({ commonName: "relay", dnsNames: opts.dnsNames ?? ["relay.example"] });
    const otherLeaf = await ca.issue({ commonName: "relay", dnsNames: ["relay.example"] });
    return {
      "tls.crt": leaf.certPem,
      "tls.key": opts.keyFrom === "other-leaf" ? otherLeaf.keyPem : leaf.keyPem,
      "ca.crt": ca.certPem,
    };
  };

  void it("accepts a matching, current pair with the expected names that chains to the trusted root", async () => {
    const data = await secretOf();
    const r = await inspectTlsSecret(data, LEAF, ca.certPem, new Date());
    assert.ok(r.ok, r.ok ? "" : r.reason);
    assert.equal(r.rootPem.trim(), ca.certPem.trim());
  });

  void it("refuses a key that is not the certificate's", async () => {
    const r = await inspectTlsSecret(await secretOf({ keyFrom: "other-leaf" }), LEAF, ca.certPem, new Date());
    assert.deepEqual(r, { ok: false, reason: "tls.key does not match tls.crt" });
  });

  void it("refuses other names, another key algorithm, a CA where a leaf is expected and vice versa", async () => {
    const data = await secretOf({ dnsNames: ["other.example"] });
    const names = await inspectTlsSecret(data, LEAF, ca.certPem, new Date());
    assert.ok(!names.ok && /DNS names \(other.example\) are not relay.example/.test(names.reason));
    const good = await secretOf();
    const alg = await inspectTlsSecret(good, { ...LEAF, keyAlgorithm: "RSA_2048" }, undefined, new Date());
    assert.ok(!alg.ok && /ECDSA_P256, not RSA_2048/.test(alg.reason));
    const notCa = await inspectTlsSecret(good, { kind: "ca", keyAlgorithm: "ECDSA_P256" }, undefined, new Date());
    assert.ok(!notCa.ok && /not a CA/.test(notCa.reason));
    const caAsLeaf = await inspectTlsSecret(
      { "tls.crt": ca.certPem, "tls.key": ca.keyPem, "ca.crt": ca.certPem },
      { kind: "leaf", keyAlgorithm: "ECDSA_P256" },
      undefined,
      new Date(),
    );
    assert.ok(!caAsLeaf.ok && /is a CA/.test(caAsLeaf.reason));
  });

  void it("refuses an expired certificate, a foreign root and missing keys", async () => {
    const data = await secretOf();
    const later = await inspectTlsSecret(data, LEAF, ca.certPem, new Date(Date.now() + 30 * 86400_000));
    assert.ok(!later.ok && /expired/.test(later.reason));
    const foreign = await inspectTlsSecret(data, LEAF, other.certPem, new Date());
    assert.ok(!foreign.ok && /not Vault's current root/.test(foreign.reason));
    const signedElsewhere = await inspectTlsSecret({ ...data, "ca.crt": other.certPem }, LEAF, undefined, new Date());
    assert.ok(!signedElsewhere.ok && /not signed by/.test(signedElsewhere.reason));
    const missing = await inspectTlsSecret({ "tls.crt": data["tls.crt"] }, LEAF, undefined, new Date());
    assert.deepEqual(missing, { ok: false, reason: "missing tls.key, ca.crt" });
    const junk = await inspectTlsSecret({ ...data, "tls.key": "not a key" }, LEAF, undefined, new Date());
    assert.deepEqual(junk, { ok: false, reason: "tls.key is not a parseable private key" });
  });

  void it("never quotes key material in a reason", async () => {
    const data = await secretOf({ keyFrom: "other-leaf" });
    const r = await inspectTlsSecret({ ...data, "tls.key": data["tls.key"].slice(0, 80) }, LEAF, undefined, new Date());
    assert.ok(!r.ok);
    assert.doesNotMatch(r.reason, /PRIVATE KEY|MI[GH]/);
  });
});

void describe("relay renewal point", () => {
  const H = 3600_000;
  void it("renews when the grace fraction of the lifetime (from issuance) remains", () => {
    assert.equal(renewAtMs(new Date(0), new Date(30 * H), 1 / 3, 0), 20 * H);
    assert.equal(renewAtMs(new Date(0), new Date(20_000), 0.5, 0), 10_000);
  });

  void it("measures a kept certificate from its recorded issue time, clamped into [notBefore, now]", () => {
    const notBefore = new Date(1_000_000);
    // Vault backdates notBefore by 30 s; the recorded issue time is what the lifetime is measured from.
    assert.equal(effectiveStart(notBefore, new Date(1_030_000).toISOString(), 2_000_000).getTime(), 1_030_000);
    assert.equal(effectiveStart(notBefore, undefined, 2_000_000), notBefore);
    assert.equal(effectiveStart(notBefore, "garbage", 2_000_000), notBefore);
    assert.equal(effectiveStart(notBefore, new Date(0).toISOString(), 2_000_000).getTime(), 1_000_000);
    assert.equal(effectiveStart(notBefore, new Date(9_000_000).toISOString(), 2_000_000).getTime(), 2_000_000);
  });
});
