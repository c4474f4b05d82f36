// Strict reading of TokenReview answers (scripted answers: the real apiserver cannot be made to send most of these),
// and the Istio CA listener's per-peer failure bucket and log sampling. The refusal of a real wrong-audience token
// by the real apiserver is in test/integration/socket-limits.test.ts.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { AuthenticationError, identityFromTokenReview } from "../../src/kube/token-review.js";
import { LogSampler, PeerFailureLimiter, peerAddress } from "../../src/serve/refusal-limits.js";
import type { Clock } from "../../src/util/clock.js";

const AUD = "istio-ca";
const TD = "cluster.local";

/** What kube-apiserver answers for a valid service-account token reviewed with audience istio-ca. */
function goodAnswer(): { status: Record<string, unknown> } {
  return {
    status: {
      authenticated: true,
      audiences: [AUD],
      user: {
        username: "system:serviceaccount:default:sleep",
        uid: "7d1f",
        groups: ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"],
      },
    },
  };
}

function refusedWith(answer: unknown, reason: string, message: RegExp): void {
  assert.throws(
    () => identityFromTokenReview(answer, AUD, TD),
    (err: unknown) => {
      assert.ok(err instanceof AuthenticationError, String(err));
      assert.equal(err.reason, reason);
      assert.match(err.message, message);
      return true;
    },
  );
}

describe("identityFromTokenReview", () => {
  it("accepts an authenticated service account with the audience and the service-accounts group", () => {
    assert.deepEqual(identityFromTokenReview(goodAnswer(), AUD, TD), {
      namespace: "default",
      serviceAccount: "sleep",
      spiffeId: "spiffe://cluster.local/ns/default/sa/sleep",
    });
  });

  it("refuses an answer that carries status.error, even if it says authenticated", () => {
    const a = goodAnswer();
    a.status.error = "token lookup failed\n\u0000";
    refusedWith(
      a,
      "review_error",
      /rejected by TokenReview \(token lookup failed\?\?\); expected .* audience istio-ca/,
    );
  });

  it("refuses an answer without audiences, or whose audiences lack the required one", () => {
    const none = goodAnswer();
    delete none.status.audiences;
    refusedWith(none, "no_audiences", /did not confirm the token's audiences; expected it to list istio-ca/);
    const other = goodAnswer();
    other.status.audiences = ["vault"];
    refusedWith(other, "wrong_audience", /audience vault, not istio-ca/);
  });

  it("refuses a user outside the system:serviceaccounts group", () => {
    const a = goodAnswer();
    (a.status.user as { groups: string[] }).groups = ["system:authenticated"];
    refusedWith(a, "not_service_account_group", /not in group system:serviceaccounts/);
    const b = goodAnswer();
    delete (b.status.user as { groups?: string[] }).groups;
    refusedWith(b, "not_service_account_group", /not in group system:serviceaccounts/);
  });

  it("refuses usernames that are not a well-formed system:serviceaccount:NS:NAME", () => {
    for (const username of [
      "alice",
      "system:serviceaccount:default",
      "system:serviceaccount:default:sleep:extra",
      "system:serviceaccount:Default:sleep",
      "system:serviceaccount::sleep",
      "system:serviceaccount:default:",
      "system:serviceaccount:de/fault:sleep",
      `system:serviceaccount:${"a".repeat(64)}:sleep`,
    ]) {
      const a = goodAnswer();
      (a.status.user as { username: string }).username = username;
      refusedWith(a, "not_service_account", /expected user system:serviceaccount:<namespace>:<name>/);
    }
  });

  it("refuses answers that are not authenticated or have no status", () => {
    const a = goodAnswer();
    a.status.authenticated = "true";
    refusedWith(a, "not_authenticated", /rejected by TokenReview/);
    refusedWith({}, "no_status", /no status/);
    refusedWith(null, "no_status", /no status/);
  });
});

function manualClock(): Clock & { advance(ms: number): void } {
  let now = 5_000_000;
  return { now: () => now, after: () => ({ cancel: () => undefined }), advance: (ms) => (now += ms) };
}

describe("PeerFailureLimiter", () => {
  it("allows a burst of failures per address, then refuses until the bucket refills", () => {
    const clock = manualClock();
    const limiter = new PeerFailureLimiter(3, 30, clock);
    for (let i = 0; i < 3; i++) {
      assert.equal(limiter.waitMs("10.0.0.1"), 0);
      limiter.fail("10.0.0.1");
    }
    assert.equal(limiter.waitMs("10.0.0.1"), 2_000, "30 a minute: one more every two seconds");
    assert.equal(limiter.waitMs("10.0.0.2"), 0, "other addresses are not affected");
    clock.advance(2_000);
    assert.equal(limiter.waitMs("10.0.0.1"), 0);
  });

  it("drops the port from grpc-js peer strings", () => {
    assert.equal(peerAddress("127.0.0.1:43122"), "127.0.0.1");
    assert.equal(peerAddress("::1:43122"), "::1");
    assert.equal(peerAddress("unknown"), "unknown");
  });
});

describe("LogSampler", () => {
  it("logs the first N per reason and interval, then reports how many it left out", () => {
    const clock = manualClock();
    const sampler = new LogSampler(2, 60_000, clock);
    const logged = Array.from({ length: 5 }, () => sampler.sample("wrong_audience").log);
    assert.deepEqual(logged, [true, true, false, false, false]);
    assert.equal(sampler.sample("no_token").log, true, "reasons are sampled separately");
    clock.advance(60_000);
    assert.deepEqual(sampler.sample("wrong_audience"), { log: true, suppressedBefore: 3 });
  });
});
