// Agent reconfiguration: the plan is a pure function of two configurations (compared field by field), and apply()
// carries it out on frozen snapshots, replacing the leaf policy rather than mutating the one the servers hold.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Agent } from "../../src/agent.js";
import { planApply, planSummary, sameValue } from "../../src/agent-plan.js";
import { DEFAULT_CONFIG, type Config } from "../../src/config/config.js";
import { createLogger } from "../../src/observability/logger.js";
import { FakeClock } from "./fake-clock.js";

const base = (): Config => ({
  ...structuredClone(DEFAULT_CONFIG),
  vault: { ...DEFAULT_CONFIG.vault, address: "https://vault.invalid:8200" },
  auth: { ...DEFAULT_CONFIG.auth, tokenPath: "/nonexistent/iva-unit-token" },
});
const edit = (f: (c: Config) => void): Config => {
  const c = base();
  f(c);
  return c;
};

void describe("planApply (pure)", () => {
  void it("an identical configuration (built separately, keys in another order) changes nothing", () => {
    const a = base();
    const b = JSON.parse(JSON.stringify({ ...base(), leaf: { ...base().leaf } })) as Config;
    b.vault = {
      proxy: { noProxy: undefined, httpProxy: undefined, httpsProxy: undefined },
      tlsServerName: undefined,
      clientKeyFile: undefined,
      clientCertFile: undefined,
      caDir: undefined,
      insecureSkipVerify: false,
      namespace: undefined,
      caFile: undefined,
      caPem: undefined,
      address: a.vault.address,
    };
    const p = planApply(a, b);
    assert.deepEqual(p, {
      newVaultBackend: false,
      newAuthorityOptions: false,
      newIntermediate: false,
      newRoots: false,
      newLeafPolicy: false,
      needsRestart: [],
    });
    assert.deepEqual(planSummary(p), []);
  });

  void it("a Vault or auth change needs a new backend and a new intermediate", () => {
    for (const next of [
      edit((c) => (c.vault.namespace = "team-a")),
      edit((c) => (c.vault.caPem = "-----BEGIN CERTIFICATE-----x")),
      edit((c) => (c.auth.role = "other")),
    ]) {
      const p = planApply(base(), next);
      assert.equal(p.newVaultBackend, true);
      assert.equal(p.newIntermediate, true);
      assert.equal(p.newAuthorityOptions, false);
      assert.deepEqual(planSummary(p), ["vault"]);
    }
  });

  void it("intermediate options, roots and backoff make a new intermediate without a new backend", () => {
    for (const next of [
      edit((c) => (c.intermediate.ttlSeconds = 3600)),
      edit((c) => (c.intermediate.keyAlgorithm = "ECDSA_P384")),
      edit((c) => (c.backoff.maxMs = 1_000)),
      edit((c) => (c.cacerts.dir = "/etc/cacerts")), // turns key export on
    ]) {
      const p = planApply(base(), next);
      assert.equal(p.newVaultBackend, false);
      assert.equal(p.newAuthorityOptions, true);
      assert.equal(p.newIntermediate, true);
    }
  });

  void it("new trust anchors alone are republished with the held intermediate, without a new one", () => {
    const p = planApply(
      base(),
      edit((c) => (c.trustAnchors.pem = ["-----BEGIN CERTIFICATE-----y"])),
    );
    assert.equal(p.newAuthorityOptions, true, "the authority gets the roots for later intermediates");
    assert.equal(p.newIntermediate, false);
    assert.equal(p.newRoots, true);
    assert.deepEqual(planSummary(p), ["trust anchors"]);
    const both = planApply(
      base(),
      edit((c) => {
        c.trustAnchors.pem = ["-----BEGIN CERTIFICATE-----y"];
        c.intermediate.ttlSeconds = 3600;
      }),
    );
    assert.equal(both.newIntermediate, true, "a new intermediate carries the new roots");
    assert.equal(both.newRoots, false);
  });

  void it("a leaf change replaces the policy only; start-only settings are reported as needing a restart", () => {
    const p = planApply(
      base(),
      edit((c) => {
        c.leaf.maxTtlSeconds = 3600;
        c.serve.httpAddress = "127.0.0.1:1";
        c.istioCa.servingNames = ["a.svc", "b.svc"];
        c.kube.kubeconfig = "/k";
      }),
    );
    assert.equal(p.newLeafPolicy, true);
    assert.equal(p.newIntermediate, false);
    assert.deepEqual(p.needsRestart, ["serve", "istioCa", "kube"]);
    assert.deepEqual(planSummary(p), ["leaf policy"]);
  });

  void it("compares field by field: array order matters, undefined equals absent, NaN equals NaN", () => {
    assert.equal(sameValue({ a: [1, 2] }, { a: [2, 1] }), false);
    assert.equal(sameValue({ a: 1, b: undefined }, { a: 1 }), true);
    assert.equal(sameValue({ a: Number.NaN }, { a: Number.NaN }), true);
    assert.equal(sameValue({ a: [] }, { a: {} }), false);
    assert.equal(sameValue({ a: null }, { a: {} }), false);
    assert.equal(sameValue({ a: { b: { c: "x" } } }, { a: { b: { c: "y" } } }), false);
  });
});

void describe("Agent.apply", () => {
  const agent = (c = base()) => new Agent(c, createLogger({ level: "silent" }), new FakeClock());

  void it("holds a frozen snapshot that the caller's object cannot change", async () => {
    const c = base();
    const a = agent(c);
    c.leaf.maxTtlSeconds = 1;
    assert.notEqual(a.config.leaf.maxTtlSeconds, 1);
    assert.ok(Object.isFrozen(a.config) && Object.isFrozen(a.config.leaf) && Object.isFrozen(a.config.serve.limits));
    assert.ok(Object.isFrozen(a.leafPolicy));
    await a.stop();
  });

  void it("replaces the leaf policy with a new object instead of mutating the one handed out", async () => {
    const a = agent();
    const before = a.leafPolicy;
    const plan = await a.apply(edit((c) => (c.leaf.maxTtlSeconds = 3600)));
    assert.equal(plan.newLeafPolicy, true);
    assert.equal(plan.newIntermediate, false);
    assert.notEqual(a.leafPolicy, before);
    assert.equal(a.leafPolicy.maxTtlSeconds, 3600);
    assert.equal(before.maxTtlSeconds, DEFAULT_CONFIG.leaf.maxTtlSeconds, "the old policy is untouched");
    assert.equal(a.config.leaf.maxTtlSeconds, 3600);
    assert.deepEqual(await a.reconfigure(edit((c) => (c.leaf.maxTtlSeconds = 3600))), [], "applying it again");
    await a.stop();
  });

  void it("a new Vault backend puts the new configuration in force and rotates; a failed rotation is thrown", async () => {
    const a = agent();
    await assert.rejects(
      a.apply(edit((c) => (c.vault.address = "https://vault-2.invalid:8200"))),
      /service-account token file/,
    );
    assert.equal(a.config.vault.address, "https://vault-2.invalid:8200");
    assert.match(a.authority.lastError ?? "", /token file/);
    await a.stop();
  });
});
