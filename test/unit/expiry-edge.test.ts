// No useless leaves near the intermediate's expiry: the minimum leaf lifetime refuses (UNAVAILABLE) instead of
// clipping a leaf to nothing, readiness turns false a margin before expiry, the refusal after expiry says so, and both
// settings come from flags and the RootTrustPolicy like their siblings.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { SigningBundle } from "../../src/authority/bundle.js";
import { isReady, unavailableReason } from "../../src/authority/intermediate-authority.js";
import { ConfigError } from "../../src/config/config.js";
import { loadConfig, parseFlags } from "../../src/config/load.js";
import { CaValidityError, DEFAULT_MAX_CSR_BYTES, resolveTtl, type LeafPolicy } from "../../src/signing/leaf-policy.js";

const env = { VAULT_ADDR: "https://vault.example:8200" };
const now = new Date("2030-01-01T00:00:00Z");
const policy: LeafPolicy = {
  trustDomain: "cluster.local",
  maxTtlSeconds: 24 * 3600,
  defaultTtlSeconds: 3600,
  minTtlSeconds: 300,
  maxCsrBytes: DEFAULT_MAX_CSR_BYTES,
};
const inSeconds = (s: number): Date => new Date(now.getTime() + s * 1000);

/** Only the fields the readiness and reason helpers read. */
const held = (notAfter: Date): SigningBundle => ({ notAfter, generation: 3 }) as unknown as SigningBundle;

void describe("minimum leaf lifetime", () => {
  void it("refuses with UNAVAILABLE and says why when the intermediate has less than the minimum left", () => {
    assert.throws(
      () => resolveTtl(0, policy, inSeconds(299), now),
      (err: unknown) => {
        assert.ok(err instanceof CaValidityError);
        assert.equal(err.code, "UNAVAILABLE");
        assert.equal(err.rule, "ca_expiring");
        assert.equal(
          err.message,
          "ca_expiring: intermediate expires at 2030-01-01T00:04:59.000Z, in 299s, less than the minimum leaf " +
            "lifetime (300s); it is being renewed, retry later",
        );
        return true;
      },
    );
  });

  void it("still clips to the remaining life at or above the minimum", () => {
    assert.equal(resolveTtl(0, policy, inSeconds(300), now), 300);
    assert.equal(resolveTtl(3600, policy, inSeconds(1800), now), 1800);
  });

  void it("gives a caller that asks for less than the minimum what it asked for while that fits", () => {
    assert.equal(resolveTtl(60, policy, inSeconds(120), now), 60);
    assert.throws(() => resolveTtl(60, policy, inSeconds(59), now), CaValidityError);
  });
});

void describe("readiness and the refusal after expiry", () => {
  void it("is ready only with more than the margin left", () => {
    const t = now.getTime();
    assert.equal(isReady(undefined, t, 0), false);
    assert.equal(isReady(held(inSeconds(601)), t, 600_000), true);
    assert.equal(isReady(held(inSeconds(600)), t, 600_000), false, "unready at the margin, before expiry");
    assert.equal(isReady(held(inSeconds(-1)), t, 0), false);
  });

  void it("says the intermediate expired (not that none is held yet) once it has", () => {
    assert.equal(
      unavailableReason(held(inSeconds(-5)), now.getTime(), "Vault unreachable"),
      "the intermediate (generation 3) expired at 2029-12-31T23:59:55.000Z and could not be renewed yet " +
        "(last error: Vault unreachable)",
    );
    assert.equal(unavailableReason(undefined, now.getTime(), undefined), "no valid intermediate is held yet");
  });
});

void describe("--min-leaf-ttl and --unready-before-expiry", () => {
  void it("default to 5m and 10m for a normal intermediate", () => {
    const c = loadConfig({}, env);
    assert.equal(c.leaf.minTtlSeconds, 300);
    assert.equal(c.serve.unreadyBeforeExpirySeconds, 600);
  });

  void it("scale their defaults down with a short grace period (ttl × grace ratio), staying inside it", () => {
    const short = loadConfig(parseFlags(["--ttl=1h", "--grace-ratio=0.1"]), env); // grace period 360 s
    assert.equal(short.leaf.minTtlSeconds, 54);
    assert.equal(short.serve.unreadyBeforeExpirySeconds, 108);
    const tiny = loadConfig(parseFlags(["--ttl=10s"]), env); // grace period 3 s, as short-TTL tests run
    assert.equal(tiny.leaf.minTtlSeconds, 1);
    assert.equal(tiny.serve.unreadyBeforeExpirySeconds, 0);
  });

  void it("take explicit values from flags and the minimum from the RootTrustPolicy", () => {
    const c = loadConfig(parseFlags(["--min-leaf-ttl=2m", "--unready-before-expiry=1h"]), env);
    assert.equal(c.leaf.minTtlSeconds, 120);
    assert.equal(c.serve.unreadyBeforeExpirySeconds, 3600);
    const policyDoc = {
      apiVersion: "istiod-vault-agent.io/v1alpha1",
      kind: "RootTrustPolicy",
      spec: { config: { workloadCertOptions: { minTtl: "15m" } } },
    };
    assert.equal(loadConfig({}, env, { needVault: true, policyDoc }).leaf.minTtlSeconds, 900);
  });

  void it("refuse values that would refuse leaves or turn unready before renewal even starts", () => {
    assert.throws(
      () => loadConfig(parseFlags(["--ttl=1h", "--min-leaf-ttl=30m", "--unready-before-expiry=20m"]), env),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.deepEqual(err.problems, [
          "leaf.minTtl: 1800s must be at least 1s, at most leaf.maxTtl (7776000s) and below the renewal grace period (1200s = ttl × grace ratio)",
          "serve.unreadyBeforeExpiry: 1200s must be at least 0s and below the renewal grace period (1200s = ttl × grace ratio)",
        ]);
        return true;
      },
    );
    assert.throws(() => loadConfig(parseFlags(["--min-leaf-ttl=soon"]), env), {
      message: /--min-leaf-ttl: "soon" is invalid; expected a duration such as 5m/,
    });
  });
});
