import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { renewalDelayMs } from "../../src/authority/intermediate-authority.js";
import { heldAfterIssue, keepOrRenew, type KeepOrRenewInput } from "../../src/authority/renewal.js";
import { Backoff, nextRunAfterSuccess } from "../../src/util/backoff.js";

const H = 3600_000;

describe("renewal schedule", () => {
  it("renews when the grace fraction of the lifetime remains", () => {
    const now = Date.UTC(2026, 0, 1);
    const delay = renewalDelayMs(new Date(now), new Date(now + 30 * H), now, 1 / 3, 0);
    assert.equal(Math.round(delay), 20 * H);
  });

  it("applies jitter as a fraction of the lifetime, both ways", () => {
    const now = 0;
    const early = renewalDelayMs(new Date(0), new Date(100 * H), now, 0.5, -0.05);
    const late = renewalDelayMs(new Date(0), new Date(100 * H), now, 0.5, 0.05);
    assert.equal(early, 45 * H);
    assert.equal(late, 55 * H);
  });

  it("measures a backdated certificate from now, so short TTLs never rotate in a tight loop", () => {
    const now = 1_000_000;
    // Vault backdates notBefore by 30 s: a 20 s TTL looks like a 50 s certificate that is 60% used.
    const delay = renewalDelayMs(new Date(now - 30_000), new Date(now + 20_000), now, 0.5, 0);
    assert.equal(delay, 10_000);
  });

  it("never schedules sooner than one second, even for an almost expired certificate", () => {
    assert.equal(renewalDelayMs(new Date(0), new Date(500), 400, 0.5, 0), 1_000);
  });
});

describe("backoff", () => {
  it("doubles up to the cap, between half and all of the ceiling", () => {
    const low = new Backoff({ initialMs: 1_000, maxMs: 300_000 }, () => 0);
    const high = new Backoff({ initialMs: 1_000, maxMs: 300_000 }, () => 1);
    const lows = Array.from({ length: 12 }, () => low.next());
    const highs = Array.from({ length: 12 }, () => high.next());
    assert.deepEqual(highs.slice(0, 5), [1_000, 2_000, 4_000, 8_000, 16_000]);
    assert.deepEqual(lows.slice(0, 3), [500, 1_000, 2_000]);
    assert.equal(highs.at(-1), 300_000);
    assert.equal(lows.at(-1), 150_000);
  });

  it("after a success, runs at the due point or at the resync period, whichever comes first", () => {
    assert.deepEqual(nextRunAfterSuccess(5_000, 60_000), { delayMs: 5_000, trigger: "schedule" });
    assert.deepEqual(nextRunAfterSuccess(Number.POSITIVE_INFINITY, 60_000), { delayMs: 60_000, trigger: "resync" });
  });

  it("reset starts over", () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1_000 }, () => 1);
    b.next();
    b.next();
    b.reset();
    assert.equal(b.next(), 100);
  });
});

describe("keep or renew (one decision for the relay, the bootstrap agent and the intermediate's schedule)", () => {
  const t0 = Date.UTC(2026, 0, 1);
  const valid = {
    ok: true as const,
    serialHex: "0a",
    notBefore: new Date(t0 - 30_000),
    notAfter: new Date(t0 + 30 * H),
  };
  const input = (o: Partial<KeepOrRenewInput> = {}): KeepOrRenewInput => ({
    stored: valid,
    managed: true,
    held: undefined,
    issuedAt: new Date(t0).toISOString(),
    now: t0 + H,
    graceRatio: 1 / 3,
    jitter: 0,
    ...o,
  });

  it("keeps a valid certificate until a third of its life remains, measured from the recorded issue time", () => {
    const d = keepOrRenew(input());
    assert.deepEqual(d, {
      action: "keep",
      firstSeen: true,
      held: { serialHex: "0a", renewAt: t0 + 20 * H, notAfter: t0 + 30 * H },
    });
    assert.deepEqual(keepOrRenew(input({ now: t0 + 20 * H })), {
      action: "renew",
      reason: "due for renewal",
      usable: true,
    });
  });

  it("keeps the renewal point of a serial it has seen (jitter is drawn once per certificate)", () => {
    const held = { serialHex: "0a", renewAt: t0 + 2 * H, notAfter: t0 + 30 * H };
    const d = keepOrRenew(input({ held, jitter: 0.05 }));
    assert.deepEqual(d, { action: "keep", firstSeen: false, held });
    assert.equal(keepOrRenew(input({ held, now: t0 + 2 * H })).action, "renew");
    const other = keepOrRenew(input({ held: { ...held, serialHex: "0b" }, jitter: 0.05 }));
    assert.equal(other.action === "keep" && other.held.renewAt, t0 + 21.5 * H, "a new serial gets its own point");
  });

  it("renews what it cannot use, and says whether the stored certificate may authenticate the renewal", () => {
    assert.deepEqual(keepOrRenew(input({ stored: undefined })), {
      action: "renew",
      reason: "the Secret does not exist",
      usable: false,
    });
    assert.deepEqual(keepOrRenew(input({ stored: { ok: false, reason: "ca.crt is not Vault's current root" } })), {
      action: "renew",
      reason: "ca.crt is not Vault's current root",
      usable: false,
    });
    assert.deepEqual(keepOrRenew(input({ forced: "signal" })), {
      action: "renew",
      reason: "renewal requested (signal)",
      usable: true,
    });
    assert.deepEqual(keepOrRenew(input({ managed: false })), {
      action: "renew",
      reason: "adopting the Secret (--adopt)",
      usable: true,
    });
    assert.deepEqual(keepOrRenew(input({ mismatch: "the key is not ECDSA_P384" })), {
      action: "renew",
      reason: "the key is not ECDSA_P384",
      usable: true,
    });
  });

  it("after issuing, the renewal point is the grace point from now (Vault's backdating ignored)", () => {
    const { held, renewInMs } = heldAfterIssue(valid, t0, 1 / 3, 0);
    assert.equal(renewInMs, 20 * H);
    assert.deepEqual(held, { serialHex: "0a", renewAt: t0 + 20 * H, notAfter: t0 + 30 * H });
  });
});
