// Validity-window constants shared by every certificate this project signs or checks.

/**
 * Clock skew tolerated between this process and its peers: a new certificate's notBefore is backdated by this much
 * (peers whose clocks run a little behind still accept it), and a peer's certificate may start this far in the future.
 */
export const CLOCK_SKEW_MS = 60_000;

/** How far in the future Vault's (or a stored) certificate may start before it is refused as a clock problem. */
export const MAX_FUTURE_NOT_BEFORE_MS = 5 * 60_000;

/** Certificates carry whole seconds: truncating makes a computed time exactly the encoded one. */
export function floorToSecond(ms: number): number {
  return Math.floor(ms / 1000) * 1000;
}
