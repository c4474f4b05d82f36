// The retry and logging flags every long-running mode shares (sidecar, relay): the same names, parsers, bounds and
// help; each mode's defaults object supplies its defaults.
import { fieldFlags, type FlagTable } from "./flags.js";
import { durationMs, logLevel } from "./validate.js";

export interface RetryLogSection {
  backoff: { initialMs: number; maxMs: number };
  logLevel: string;
}

/** The flags of the section, in help order. */
export function retryLogFlags<C extends RetryLogSection>(): FlagTable<C> {
  const { millis, option } = fieldFlags<C>();
  return {
    "backoff-initial": millis(
      "first retry delay after a failure",
      durationMs("1s", 0.01, 3600),
      (c) => c.backoff.initialMs,
    ),
    "backoff-max": millis("longest retry delay", durationMs("5m", 0.01, 86400), (c) => c.backoff.maxMs),
    "log-level": option("error, warn, info or debug", logLevel, (c) => c.logLevel),
  };
}

/** The section's check across flags: the longest delay is not below the first. */
export function backoffProblem(c: RetryLogSection): string | undefined {
  if (c.backoff.maxMs < c.backoff.initialMs)
    return `--backoff-max: ${c.backoff.maxMs}ms is below --backoff-initial; expected max ≥ initial`;
  return undefined;
}
