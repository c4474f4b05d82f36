// Pure logic of the socket limits: the rotation gate (with a scripted clock and a scripted rotation), per-connection
// counting and the unread-bytes bound of a Watch stream. The real socket is exercised in
// test/integration/socket-limits.test.ts.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { SigningBundle } from "../../src/authority/bundle.js";
import { RotateGate } from "../../src/serve/rotate-gate.js";
import { ConnectionCounter, WatchBuffer } from "../../src/serve/socket-limits.js";
import type { Clock } from "../../src/util/clock.js";

function manualClock(start = 1_000_000): Clock & { advance(ms: number): void } {
  let now = start;
  return { now: () => now, after: () => ({ cancel: () => undefined }), advance: (ms) => (now += ms) };
}

/** A rotation stand-in: counts calls; each resolves (or rejects) when the test says so. */
function scriptedRotation() {
  const pending: { resolve: (b: SigningBundle) => void; reject: (e: Error) => void }[] = [];
  let generation = 0;
  return {
    calls: () => generation,
    rotate: () =>
      new Promise<SigningBundle>((resolve, reject) => {
        generation++;
        pending.push({ resolve, reject });
      }),
    succeed: () => pending.shift()!.resolve({ generation } as SigningBundle),
    fail: () => pending.shift()!.reject(new Error("vault down")),
  };
}

describe("RotateGate", () => {
  it("shares one rotation among concurrent callers and refuses more within the interval", async () => {
    const clock = manualClock();
    const r = scriptedRotation();
    const gate = new RotateGate(r.rotate, 30_000, clock);
    const burst = Array.from({ length: 50 }, () => gate.request());
    assert.equal(r.calls(), 1, "fifty concurrent callers cause one rotation");
    assert.equal(burst[0]!.kind, "started");
    assert.ok(burst.slice(1).every((d) => d.kind === "joined"));
    r.succeed();
    const results = await Promise.all(burst.map((d) => (d.kind === "limited" ? Promise.resolve(undefined) : d.result)));
    assert.ok(results.every((b) => b?.generation === 1));

    clock.advance(10_000);
    const later = gate.request();
    assert.equal(later.kind, "limited");
    assert.equal(later.kind === "limited" && later.retryAfterMs, 20_000);
    assert.equal(r.calls(), 1);

    clock.advance(20_000);
    assert.equal(gate.request().kind, "started", "allowed again once the interval has passed");
    assert.equal(r.calls(), 2);
  });

  it("does not start the interval on a failed rotation", async () => {
    const clock = manualClock();
    const r = scriptedRotation();
    const gate = new RotateGate(r.rotate, 30_000, clock);
    const first = gate.request();
    r.fail();
    await assert.rejects(first.kind === "limited" ? Promise.resolve() : first.result, /vault down/);
    assert.equal(gate.request().kind, "started");
  });
});

describe("ConnectionCounter", () => {
  it("caps per connection and in total, and frees slots on release (once)", () => {
    const counter = new ConnectionCounter(2, 3);
    const a = {};
    const b = {};
    const a1 = counter.acquire(a);
    const a2 = counter.acquire(a);
    assert.equal(typeof a1, "function");
    assert.equal(typeof a2, "function");
    assert.equal(counter.acquire(a), "per_connection");
    const b1 = counter.acquire(b);
    assert.equal(typeof b1, "function");
    assert.equal(counter.acquire(b), "total");
    (a1 as () => void)();
    (a1 as () => void)();
    assert.equal(counter.open, 2, "a double release frees one slot only");
    assert.equal(typeof counter.acquire(b), "function");
  });
});

describe("WatchBuffer", () => {
  it("refuses a write that would pass the bound while earlier writes are unread, and recovers as they drain", () => {
    const buffer = new WatchBuffer(10_000);
    const callbacks: (() => void)[] = [];
    const write = (done: () => void) => void callbacks.push(done);
    assert.equal(buffer.offer(4_000, write), true);
    assert.equal(buffer.offer(4_000, write), true);
    assert.equal(buffer.offer(4_000, write), false, "the third unread bundle passes 10,000 bytes");
    assert.equal(callbacks.length, 2, "a refused offer writes nothing");
    callbacks[0]!();
    callbacks[0]!();
    assert.equal(buffer.bufferedBytes, 4_000);
    assert.equal(buffer.offer(4_000, write), true);
  });

  it("always lets one message through when nothing is waiting, even one larger than the bound", () => {
    const buffer = new WatchBuffer(4_096);
    assert.equal(
      buffer.offer(9_000, () => undefined),
      true,
    );
    assert.equal(
      buffer.offer(10, () => undefined),
      false,
    );
  });
});
