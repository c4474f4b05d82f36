// Coalesces and rate-limits rotations asked for over the socket (the Rotate RPC). Callers that arrive while a
// rotation runs share it; after a successful one, further requests within the interval are refused, so a burst of
// any size costs Vault at most one signing per interval. A failed rotation does not start the interval: the caller
// saw no new intermediate, and the authority's own retry backoff already paces calls to a failing Vault.
import type { SigningBundle } from "../authority/bundle.js";
import { systemClock, type Clock } from "../util/clock.js";

export type RotateDecision =
  | { kind: "started" | "joined"; result: Promise<SigningBundle> }
  | { kind: "limited"; retryAfterMs: number; lastGeneration: number | undefined };

export class RotateGate {
  private inflight: Promise<SigningBundle> | undefined;
  /** Start time of the last successful gated rotation. */
  private lastSuccessStartedAt = Number.NEGATIVE_INFINITY;
  private lastGeneration: number | undefined;

  constructor(
    private readonly rotateNow: () => Promise<SigningBundle>,
    private readonly minIntervalMs: number,
    private readonly clock: Clock = systemClock,
  ) {}

  request(): RotateDecision {
    if (this.inflight) return { kind: "joined", result: this.inflight };
    const now = this.clock.now();
    const wait = this.lastSuccessStartedAt + this.minIntervalMs - now;
    if (wait > 0) return { kind: "limited", retryAfterMs: wait, lastGeneration: this.lastGeneration };
    const run = this.rotateNow().then((bundle) => {
      this.lastSuccessStartedAt = now;
      this.lastGeneration = bundle.generation;
      return bundle;
    });
    this.inflight = run.finally(() => (this.inflight = undefined));
    // The caller of this request observes `run`'s rejection; the stored copy must not become an unhandled one.
    this.inflight.catch(() => undefined);
    return { kind: "started", result: run };
  }
}
