// Randomized exponential backoff ("full jitter" on the upper half): attempt n waits between half and all of
// min(max, initial * 2^n), so a fleet of agents restarted together does not hammer Vault in step.
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 1_000, maxMs: 300_000 };

export class Backoff {
  private attempt = 0;

  constructor(
    private readonly opts: BackoffOptions = DEFAULT_BACKOFF,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next retry; each call doubles the ceiling up to maxMs. */
  next(): number {
    const ceiling = Math.min(this.opts.maxMs, this.opts.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.round(ceiling / 2 + (this.random() * ceiling) / 2);
  }

  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}

/**
 * When a reconciler runs again after a success: at the point its work is next due, or after the resync period when
 * that comes first (the state is then re-checked even if nothing is due).
 */
export function nextRunAfterSuccess(
  dueInMs: number,
  resyncMs: number,
): { delayMs: number; trigger: "schedule" | "resync" } {
  return dueInMs <= resyncMs ? { delayMs: dueInMs, trigger: "schedule" } : { delayMs: resyncMs, trigger: "resync" };
}
