// Token buckets per key (a SHA-256 digest of the identity token, or a cluster name): `ratePerSecond` refill, `burst`
// capacity. The map is bounded: buckets that have refilled completely carry no state and are dropped first, then the
// least recently used.
export interface RateLimitOptions {
  ratePerSecond: number;
  burst: number;
  /** Most buckets held at once (default 10 000). */
  maxKeys?: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class TokenBucketLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly maxKeys: number;

  constructor(
    private readonly opts: RateLimitOptions,
    private readonly now: () => number = Date.now,
  ) {
    this.maxKeys = opts.maxKeys ?? 10_000;
  }

  /** Takes one token from `key`'s bucket; false when it is empty. */
  take(key: string): boolean {
    const now = this.now();
    const b = this.buckets.get(key);
    let tokens = this.opts.burst;
    if (b) {
      tokens = Math.min(this.opts.burst, b.tokens + ((now - b.at) / 1000) * this.opts.ratePerSecond);
      this.buckets.delete(key); // re-inserted below: Map order is then least recently used first
    }
    const allowed = tokens >= 1;
    if (allowed) tokens -= 1;
    this.buckets.set(key, { tokens, at: now });
    if (this.buckets.size > this.maxKeys) this.evict(now);
    return allowed;
  }

  get size(): number {
    return this.buckets.size;
  }

  private evict(now: number): void {
    for (const [k, b] of this.buckets) {
      if (b.tokens + ((now - b.at) / 1000) * this.opts.ratePerSecond >= this.opts.burst) this.buckets.delete(k);
    }
    while (this.buckets.size > this.maxKeys) {
      const oldest = this.buckets.keys().next().value;
      if (oldest === undefined) break;
      this.buckets.delete(oldest);
    }
  }
}
