// Limits for the Istio CA listener, which is reachable from the network: every unauthenticated CreateCertificate
// would otherwise cost a TokenReview on the apiserver and a log line, without bound.
import { systemClock, type Clock } from "../util/clock.js";

/**
 * A token bucket of failed authentications per peer address. A peer starts with `burst` allowed failures and regains
 * `perMinute` a minute; with none left its requests are refused before any TokenReview is made.
 */
export class PeerFailureLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  /** Bounds memory when many addresses fail: past this many tracked peers, refilled buckets are forgotten. */
  private static readonly MAX_PEERS = 10_000;

  constructor(
    private readonly burst: number,
    private readonly perMinute: number,
    private readonly clock: Clock = systemClock,
  ) {}

  /** Milliseconds until `peer` may try again; 0 when it may now. */
  waitMs(peer: string): number {
    const tokens = this.tokens(peer);
    return tokens >= 1 ? 0 : Math.ceil(((1 - tokens) * 60_000) / this.perMinute);
  }

  /** Records one failed authentication by `peer`. */
  fail(peer: string): void {
    const now = this.clock.now();
    this.buckets.set(peer, { tokens: Math.max(0, this.tokens(peer) - 1), at: now });
    if (this.buckets.size > PeerFailureLimiter.MAX_PEERS) this.forgetRefilled(now);
  }

  private tokens(peer: string): number {
    const b = this.buckets.get(peer);
    if (!b) return this.burst;
    return Math.min(this.burst, b.tokens + ((this.clock.now() - b.at) * this.perMinute) / 60_000);
  }

  private forgetRefilled(now: number): void {
    for (const [peer, b] of this.buckets) {
      if (b.tokens + ((now - b.at) * this.perMinute) / 60_000 >= this.burst) this.buckets.delete(peer);
    }
    // Still too many (a flood from many addresses): start over rather than grow; the limit briefly resets.
    if (this.buckets.size > PeerFailureLimiter.MAX_PEERS) this.buckets.clear();
  }
}

/** The address part of a grpc-js peer string ("10.1.2.3:5678", "::1:5678", "unknown"): the port is dropped. */
export function peerAddress(peer: string): string {
  const colon = peer.lastIndexOf(":");
  return colon > 0 && /^\d+$/.test(peer.slice(colon + 1)) ? peer.slice(0, colon) : peer;
}

/**
 * Log sampling per reason: the first `perInterval` events of a reason in each interval are logged; the rest are
 * counted and reported as one summary when the next event of that reason arrives after the interval.
 */
export class LogSampler {
  private readonly windows = new Map<string, { start: number; logged: number; suppressed: number }>();

  constructor(
    private readonly perInterval: number,
    private readonly intervalMs: number,
    private readonly clock: Clock = systemClock,
  ) {}

  /**
   * Whether to log this event of `reason`; `suppressedBefore` is how many were left out in the interval that just
   * ended (report it when > 0).
   */
  sample(reason: string): { log: boolean; suppressedBefore: number } {
    const now = this.clock.now();
    let w = this.windows.get(reason);
    let suppressedBefore = 0;
    if (!w || now - w.start >= this.intervalMs) {
      suppressedBefore = w?.suppressed ?? 0;
      w = { start: now, logged: 0, suppressed: 0 };
      this.windows.set(reason, w);
    }
    if (w.logged < this.perInterval) {
      w.logged++;
      return { log: true, suppressedBefore };
    }
    w.suppressed++;
    return { log: false, suppressedBefore };
  }
}
