// The keep-or-renew decision for a certificate Secret, as the Vault-backed relay and the bootstrap agent both take
// it: authority/renewal.ts decides from the Secret's inspection, its managed-by label and its recorded issue time; a
// kept certificate is logged the first time its serial is seen, and its expiry exported.
import type { Logger } from "pino";
import { jitterFraction, keepOrRenew, type HeldCertificate, type KeepOrRenew } from "../authority/renewal.js";
import type { RelayMetrics } from "./metrics.js";
import { ANNOTATION_PREFIX, SecretStore, type KubeSecret } from "./secrets.js";
import type { TlsInspection } from "./inspect.js";

export const ISSUED_AT_ANNOTATION = `${ANNOTATION_PREFIX}issued-at`;

export interface SecretDecisionInput {
  /** The Secret's name (metrics label) and its namespace-qualified name (logs). */
  name: string;
  qualified: string;
  secret: KubeSecret | undefined;
  /** The inspection of the Secret's data; undefined when there is no Secret. */
  stored: TlsInspection | undefined;
  /** The trigger when a renewal was asked for (SIGHUP). */
  forced: string | undefined;
  mismatch?: string | undefined;
  held: HeldCertificate | undefined;
  trigger: string;
  now: number;
  cfg: { graceRatio: number; jitterRatio: number };
  random: () => number;
  log: Logger;
  metrics: RelayMetrics;
  /** What is kept, for the log line ("certificate", "client certificate"). */
  what: string;
}

export function decideForSecret(i: SecretDecisionInput): KeepOrRenew {
  const decision = keepOrRenew({
    stored: i.stored,
    managed: i.secret !== undefined && SecretStore.isManaged(i.secret),
    forced: i.forced,
    mismatch: i.mismatch,
    held: i.held,
    issuedAt: i.secret?.metadata.annotations?.[ISSUED_AT_ANNOTATION],
    now: i.now,
    graceRatio: i.cfg.graceRatio,
    jitter: jitterFraction(i.random, i.cfg.jitterRatio),
  });
  if (decision.action === "keep") {
    const { held } = decision;
    if (decision.firstSeen)
      i.log.info(
        {
          secret: i.qualified,
          serial: held.serialHex,
          notAfter: new Date(held.notAfter).toISOString(),
          renewAt: new Date(held.renewAt).toISOString(),
          trigger: i.trigger,
        },
        `keeping the valid ${i.what} already in the Secret`,
      );
    i.metrics.held(i.name, new Date(held.notAfter));
  }
  return decision;
}
