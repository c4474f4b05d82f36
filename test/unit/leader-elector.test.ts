// The status writer's Lease election on a fake clock, with an in-memory Lease that keeps resourceVersions the way the
// apiserver does (a write carrying an old resourceVersion is a conflict).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import pino from "pino";
import {
  LeaderElector,
  LeaseConflict,
  type LeaseSpec,
  type LeaseStore,
  type StoredLease,
} from "../../src/kube/leader-elector.js";
import { FakeClock } from "./fake-clock.js";

class MemoryLease {
  lease: { spec: LeaseSpec; rv: number } | undefined;
  private rv = 100;
  writes = 0;

  /** A view of the Lease for one replica; `down` makes its calls fail as if the apiserver were unreachable. */
  view(): LeaseStore & { down: boolean } {
    const view = {
      down: false,
      get: (): Promise<StoredLease | undefined> =>
        this.call(view, () =>
          this.lease ? { spec: { ...this.lease.spec }, resourceVersion: String(this.lease.rv) } : undefined,
        ),
      create: (spec: LeaseSpec): Promise<string> =>
        this.call(view, () => {
          if (this.lease) throw new LeaseConflict("exists");
          return this.write(spec);
        }),
      update: (spec: LeaseSpec, rv: string): Promise<string> =>
        this.call(view, () => {
          if (!this.lease || String(this.lease.rv) !== rv) throw new LeaseConflict("changed");
          return this.write(spec);
        }),
    };
    return view;
  }

  private write(spec: LeaseSpec): string {
    this.writes++;
    this.lease = { spec: { ...spec }, rv: ++this.rv };
    return String(this.lease.rv);
  }

  /** Answers asynchronously, as the apiserver does, so concurrent attempts interleave. */
  private async call<T>(view: { down: boolean }, fn: () => T): Promise<T> {
    await Promise.resolve();
    if (view.down) throw new Error("connection refused");
    return fn();
  }
}

const log = pino({ level: "silent" });
const LEASE_MS = 15_000; // renew deadline 10 s, retry period 2 s

function replica(mem: MemoryLease, clock: FakeClock, identity: string) {
  const store = mem.view();
  const changes: boolean[] = [];
  const elector = new LeaderElector({
    store,
    identity,
    leaseDurationMs: LEASE_MS,
    clock,
    log,
    onChange: (l) => changes.push(l),
  });
  return { elector, store, changes };
}

void describe("status Lease election", () => {
  void it("one replica takes a free Lease; the other stays a candidate while it is renewed", async () => {
    const clock = new FakeClock(Date.UTC(2026, 10, 29), 0);
    const mem = new MemoryLease();
    const a = replica(mem, clock, "istiod-a");
    const b = replica(mem, clock, "istiod-b");
    assert.equal(await a.elector.tryOnce(), true);
    assert.deepEqual(a.changes, [true]);
    assert.equal(mem.lease?.spec.holderIdentity, "istiod-a");
    assert.equal(mem.lease?.spec.leaseDurationSeconds, 15);
    assert.match(mem.lease.spec.renewTime!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, "MicroTime");
    // Many lease durations pass; a renews every retry period, so b never takes over.
    for (let i = 0; i < 40; i++) {
      await clock.advance(2_000);
      assert.equal(await a.elector.tryOnce(), true);
      assert.equal(await b.elector.tryOnce(), false);
    }
    assert.deepEqual(b.changes, []);
    assert.equal(mem.lease?.spec.holderIdentity, "istiod-a");
    assert.equal(mem.lease?.spec.leaseTransitions, 0);
  });

  void it("a holder that stops renewing is replaced only after a full lease duration as seen by the candidate", async () => {
    const clock = new FakeClock(Date.UTC(2026, 10, 29), 0);
    const mem = new MemoryLease();
    const a = replica(mem, clock, "istiod-a");
    const b = replica(mem, clock, "istiod-b");
    await a.elector.tryOnce();
    await clock.advance(1_000);
    await b.elector.tryOnce(); // b first observes a's Lease now
    // a dies (no release). Until 15 s after b's observation, b must not take over.
    await clock.advance(LEASE_MS - 1);
    assert.equal(await b.elector.tryOnce(), false);
    await clock.advance(1);
    assert.equal(await b.elector.tryOnce(), true);
    assert.equal(mem.lease?.spec.holderIdentity, "istiod-b");
    assert.equal(mem.lease?.spec.leaseTransitions, 1);
    assert.deepEqual(b.changes, [true]);
  });

  void it("the holder gives up at the renew deadline when it cannot renew, before anyone may take over", async () => {
    const clock = new FakeClock(Date.UTC(2026, 10, 29), 0);
    const mem = new MemoryLease();
    const a = replica(mem, clock, "istiod-a");
    await a.elector.tryOnce();
    a.store.down = true;
    await clock.advance(8_000);
    assert.equal(await a.elector.tryOnce(), true, "still within the renew deadline");
    await clock.advance(2_000);
    assert.equal(await a.elector.tryOnce(), false, "10 s without a renewal: stops writing");
    assert.deepEqual(a.changes, [true, false]);
  });

  void it("two candidates writing from the same read: the resourceVersion lets only one win", async () => {
    const clock = new FakeClock(Date.UTC(2026, 10, 29), 0);
    const mem = new MemoryLease();
    const a = replica(mem, clock, "istiod-a");
    const b = replica(mem, clock, "istiod-b");
    const results = await Promise.all([a.elector.tryOnce(), b.elector.tryOnce()]);
    assert.deepEqual(results.filter(Boolean).length, 1);
    assert.equal(mem.writes, 1);
    // The holder dies; two candidates first see its Lease now, wait a full duration, then both try at once.
    const holder = results[0] ? a : b;
    const other = results[0] ? b : a;
    holder.store.down = true;
    const c = replica(mem, clock, "istiod-c");
    assert.equal(await other.elector.tryOnce(), false);
    assert.equal(await c.elector.tryOnce(), false);
    await clock.advance(LEASE_MS);
    const again = await Promise.all([other.elector.tryOnce(), c.elector.tryOnce()]);
    assert.equal(again.filter(Boolean).length, 1);
    assert.equal(mem.lease?.spec.holderIdentity, again[0] ? (holder === a ? "istiod-b" : "istiod-a") : "istiod-c");
  });

  void it("a graceful stop releases the Lease, so the next candidate takes it at once", async () => {
    const clock = new FakeClock(Date.UTC(2026, 10, 29), 0);
    const mem = new MemoryLease();
    const a = replica(mem, clock, "istiod-a");
    const b = replica(mem, clock, "istiod-b");
    const stop = new AbortController();
    const running = a.elector.run(stop.signal);
    await clock.advance(0);
    assert.equal(a.elector.leading, true);
    await b.elector.tryOnce();
    stop.abort();
    await running;
    assert.deepEqual(a.changes, [true, false]);
    assert.equal(mem.lease?.spec.holderIdentity, "");
    await clock.advance(2_000);
    assert.equal(await b.elector.tryOnce(), true, "taken well within a lease duration");
  });

  void it("refuses timings that would let two replicas lead at once", () => {
    assert.throws(
      () =>
        new LeaderElector({
          store: new MemoryLease().view(),
          identity: "x",
          leaseDurationMs: 10_000,
          renewDeadlineMs: 10_000,
          onChange: () => undefined,
          log,
        }),
      /retry period < renew deadline < lease duration/,
    );
  });
});
