// When a certificate is renewed, written once for every mode: the intermediate the agent serves, the relay's
// certificate Secrets and the bootstrap agent's client Secret. Pure functions of the certificate's dates, what was
// decided before, and `now`, so they are unit-tested without any server or real clock.

/** Never renew sooner than this after a successful rotation, whatever the certificate's dates say. */
export const MIN_RENEWAL_DELAY_MS = 1_000;

/**
 * How long to wait before renewing: until `graceRatio` of the lifetime remains, shifted by `jitter` (a signed fraction
 * of the lifetime). Vault backdates notBefore (not_before_duration, 30 s by default), so the lifetime is measured from
 * `now` when that is later; otherwise a short TTL would put the renewal point in the past and rotate in a tight loop.
 */
export function renewalDelayMs(
  notBefore: Date,
  notAfter: Date,
  now: number,
  graceRatio: number,
  jitter: number,
): number {
  const start = Math.max(notBefore.getTime(), now);
  const life = notAfter.getTime() - start;
  const renewAt = start + life * (1 - graceRatio + jitter);
  return Math.max(MIN_RENEWAL_DELAY_MS, Math.round(renewAt - now));
}

/** A signed jitter fraction in [-ratio, +ratio] from a uniform random number in [0, 1). */
export function jitterFraction(random: () => number, ratio: number): number {
  return (random() * 2 - 1) * ratio;
}

/**
 * When to renew a certificate whose lifetime is measured from `start` (its issuance; Vault backdates notBefore, so
 * the relay records the issue time): when `graceRatio` of that lifetime remains, shifted by `jitter`.
 */
export function renewAtMs(start: Date, notAfter: Date, graceRatio: number, jitter: number): number {
  return start.getTime() + renewalDelayMs(start, notAfter, start.getTime(), graceRatio, jitter);
}

/**
 * The issue time to measure a kept certificate's lifetime from: the recorded `issuedAt` (annotation) clamped into
 * [notBefore, now], or notBefore when none was recorded.
 */
export function effectiveStart(notBefore: Date, issuedAt: string | undefined, now: number): Date {
  const t = issuedAt ? Date.parse(issuedAt) : Number.NaN;
  if (!Number.isFinite(t)) return notBefore;
  return new Date(Math.min(Math.max(t, notBefore.getTime()), now));
}

/** What was decided about a stored certificate the last time it was kept or written. */
export interface HeldCertificate {
  serialHex: string;
  /** Epoch ms at which it is due for renewal (jitter included, fixed once per serial). */
  renewAt: number;
  notAfter: number;
}

/** The stored certificate as inspected: usable (its identity and issuer checked) with its dates, or why not. */
export type StoredCertificate =
  { ok: true; serialHex: string; notBefore: Date; notAfter: Date } | { ok: false; reason: string };

export interface KeepOrRenewInput {
  /** The inspected certificate; undefined when nothing is stored. */
  stored: StoredCertificate | undefined;
  /** The store carries our managed-by label (otherwise it is only written when adopting). */
  managed: boolean;
  /** A renewal was asked for (the trigger, e.g. "signal"); the stored certificate is replaced whatever its dates. */
  forced?: string | undefined;
  /** A further reason the usable certificate must be replaced (e.g. its key is no longer the configured algorithm). */
  mismatch?: string | undefined;
  /** The previous decision, if any: its renewal point is kept while the serial is the same (jitter drawn once). */
  held: HeldCertificate | undefined;
  /** The recorded issue time (annotation), to measure the lifetime from instead of the backdated notBefore. */
  issuedAt: string | undefined;
  now: number;
  graceRatio: number;
  /** Signed fraction of the lifetime, used only when the serial was not seen before. */
  jitter: number;
}

export type KeepOrRenew =
  | { action: "keep"; held: HeldCertificate; /** first time this serial is kept */ firstSeen: boolean }
  | {
      action: "renew";
      reason: string;
      /** The stored certificate is still valid for its identity and issuer (it may authenticate the renewal). */
      usable: boolean;
    };

/** Keep the stored certificate or renew it, and why (pure). */
export function keepOrRenew(i: KeepOrRenewInput): KeepOrRenew {
  const s = i.stored;
  if (!s) return { action: "renew", reason: "the Secret does not exist", usable: false };
  if (!s.ok) return { action: "renew", reason: s.reason, usable: false };
  const renew = (reason: string): KeepOrRenew => ({ action: "renew", reason, usable: true });
  if (i.forced !== undefined) return renew(`renewal requested (${i.forced})`);
  if (!i.managed) return renew("adopting the Secret (--adopt)");
  if (i.mismatch !== undefined) return renew(i.mismatch);
  const firstSeen = i.held?.serialHex !== s.serialHex;
  const renewAt = firstSeen
    ? renewAtMs(effectiveStart(s.notBefore, i.issuedAt, i.now), s.notAfter, i.graceRatio, i.jitter)
    : i.held!.renewAt;
  if (i.now >= renewAt) return renew("due for renewal");
  return { action: "keep", held: { serialHex: s.serialHex, renewAt, notAfter: s.notAfter.getTime() }, firstSeen };
}

/** The decision recorded right after a new certificate was written: renew it at the grace point (jitter drawn now). */
export function heldAfterIssue(
  cert: { serialHex: string; notBefore: Date; notAfter: Date },
  now: number,
  graceRatio: number,
  jitter: number,
): { held: HeldCertificate; renewInMs: number } {
  const renewInMs = renewalDelayMs(cert.notBefore, cert.notAfter, now, graceRatio, jitter);
  return {
    held: { serialHex: cert.serialHex, renewAt: now + renewInMs, notAfter: cert.notAfter.getTime() },
    renewInMs,
  };
}
