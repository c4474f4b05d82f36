// A Clock for unit tests: time moves only when the test advances it, and timers fire in due order as it passes them.
import type { Clock, Timer } from "../../src/util/clock.js";

interface Pending {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private timers: Pending[] = [];

  /**
   * `rescheduleWaitMs`: after firing a timer, wait (in real time, at most this long) for the work it started to
   * schedule its next timer before time moves on. The state machines under test reschedule after every run; their
   * work (key generation, signing) runs on the thread pool, so a fixed pause would be too short on a busy machine and
   * the next step would be scheduled from a clock that already moved on. 0: only let promise chains settle.
   */
  constructor(
    start = Date.UTC(2026, 0, 1),
    private readonly rescheduleWaitMs = 5_000,
  ) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  after(ms: number, fn: () => void): Timer {
    const p: Pending = { at: this.t + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    this.timers.push(p);
    return { cancel: () => void (p.cancelled = true) };
  }

  /** Delays (from now) of the timers still pending, soonest first. */
  pending(): number[] {
    return this.live().map((p) => p.at - this.t);
  }

  /** Moves time forward by `ms`, firing every timer due on the way (each after the work it started settles). */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (let sameInstant = 0; ; sameInstant++) {
      if (sameInstant > 50) throw new Error(`timers keep firing at ${new Date(this.t).toISOString()} (a loop?)`);
      const next = this.live()[0];
      if (!next || next.at > end) break;
      this.timers = this.timers.filter((p) => p !== next);
      if (next.at > this.t) sameInstant = 0;
      this.t = next.at;
      const scheduled = this.seq;
      next.fn();
      const deadline = Date.now() + this.rescheduleWaitMs;
      while (this.seq === scheduled && Date.now() < deadline) await new Promise((r) => setTimeout(r, 1));
      await settle();
    }
    this.t = end;
    await settle();
  }

  /** Advances to the next pending timer and fires it; returns the delay it had. */
  async fireNext(): Promise<number> {
    const next = this.live()[0];
    if (!next) throw new Error("no timer is pending");
    const delay = next.at - this.t;
    await this.advance(delay);
    return delay;
  }

  private live(): Pending[] {
    this.timers = this.timers.filter((p) => !p.cancelled);
    return [...this.timers].sort((a, b) => a.at - b.at || a.seq - b.seq);
  }
}

/**
 * Lets promise chains started by a timer run to their end. Key generation and signing use the thread pool, so this
 * yields to real I/O for a few milliseconds (never to the fake clock's timers).
 */
export async function settle(ms = 20): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, ms / 3));
  }
}

/** Waits (in real time, briefly) until `cond` holds; fails the test after `limitMs`. */
export async function until(cond: () => boolean, what: string, limitMs = 5_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
