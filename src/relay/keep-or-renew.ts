// The life of a certificate Secret, as the Vault-backed relay and the bootstrap agent both run it: decide whether
// the stored certificate is kept or renewed (authority/renewal.ts, fed from the Secret's inspection, its managed-by
// label and its recorded issue time), and after a renewal write certificate, key and root in one update and record
// when the new one is due. Kept and written certificates are logged and their expiry exported.
import type { Logger } from "pino";
import {
  heldAfterIssue,
  jitterFraction,
  keepOrRenew,
  type HeldCertificate,
  type KeepOrRenew,
} from "../authority/renewal.js";
import type { TlsInspection } from "../kube/tls-secret.js";
import type { RelayMetrics } from "./metrics.js";
import { SecretStore, type DesiredSecret, type KubeSecret, type WriteOutcome } from "../kube/secret-store.js";

/** Prefix of the annotations the relay writes on its Secrets. */
export const ANNOTATION_PREFIX = "relay.istiod-vault-agent.io/";
export const ISSUED_AT_ANNOTATION = `${ANNOTATION_PREFIX}issued-at`;

/** One Secret the relay keeps, and what it needs to log and count its writes. */
export interface SecretContext {
  /** The Secret's name (metrics label) and its namespace-qualified name (logs). */
  name: string;
  qualified: string;
  secrets: SecretStore;
  metrics: RelayMetrics;
  log: Logger;
}

/** When certificates are renewed, and the randomness for the jitter. */
export interface RenewalSettings {
  graceRatio: number;
  jitterRatio: number;
  random: () => number;
}

export interface SecretDecisionInput {
  secret: KubeSecret | undefined;
  /** The inspection of the Secret's data; undefined when there is no Secret. */
  stored: TlsInspection | undefined;
  /** A renewal was asked for (SIGHUP). */
  force: boolean;
  mismatch?: string | undefined;
  trigger: string;
  now: number;
  /** What is kept, for the log line ("certificate", "client certificate"). */
  what: string;
}

/** Where a Secret's certificate is remembered between reconciliations; set here when it is kept. */
export interface HeldSlot {
  held?: HeldCertificate | undefined;
}

export function decideForSecret(
  ctx: SecretContext,
  r: RenewalSettings,
  slot: HeldSlot,
  i: SecretDecisionInput,
): KeepOrRenew {
  const decision = keepOrRenew({
    stored: i.stored,
    managed: i.secret !== undefined && SecretStore.isManaged(i.secret),
    forced: i.force ? i.trigger : undefined,
    mismatch: i.mismatch,
    held: slot.held,
    issuedAt: i.secret?.metadata.annotations?.[ISSUED_AT_ANNOTATION],
    now: i.now,
    graceRatio: r.graceRatio,
    jitter: jitterFraction(r.random, r.jitterRatio),
  });
  if (decision.action === "keep") {
    const { held } = decision;
    if (decision.firstSeen)
      ctx.log.info(
        {
          secret: ctx.qualified,
          serial: held.serialHex,
          notAfter: new Date(held.notAfter).toISOString(),
          renewAt: new Date(held.renewAt).toISOString(),
          trigger: i.trigger,
        },
        `keeping the valid ${i.what} already in the Secret`,
      );
    ctx.metrics.held(ctx.name, new Date(held.notAfter));
    slot.held = held;
  }
  return decision;
}

/** Writes `desired` into the Secret (create or full update), counting it; adopting a Secret is logged loudly. */
export async function writeSecret(
  ctx: SecretContext,
  current: KubeSecret | undefined,
  desired: DesiredSecret,
  trigger: string,
): Promise<WriteOutcome> {
  const outcome = await ctx.secrets.write(ctx.name, desired, current);
  ctx.metrics.writes.inc({ secret: ctx.name, operation: outcome });
  ctx.metrics.rotations.inc({ secret: ctx.name, trigger });
  if (outcome === "adopted") {
    ctx.log.warn(
      { secret: ctx.qualified },
      `adopted Secret ${ctx.qualified} (--adopt): it now carries the managed-by label and relay data`,
    );
  }
  return outcome;
}

/** A certificate just issued and checked, with its key, ready to be written. */
export interface IssuedCertificate {
  /** The certificate then its intermediates (not the root), PEM. */
  tlsCrt: string;
  keyPem: string;
  rootPem: string;
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  /** Where it came from (annotation), e.g. the Vault path or the issuer's address. */
  source: string;
}

/** Writes a new certificate, its key and root in one update, and returns when it is due for renewal. */
export async function writeIssued(
  ctx: SecretContext,
  r: RenewalSettings,
  current: KubeSecret | undefined,
  cert: IssuedCertificate,
  trigger: string,
  now: () => number,
): Promise<{ outcome: WriteOutcome; held: HeldCertificate; renewInMs: number }> {
  const outcome = await writeSecret(
    ctx,
    current,
    {
      type: "kubernetes.io/tls",
      data: { "tls.crt": cert.tlsCrt, "tls.key": cert.keyPem, "ca.crt": cert.rootPem },
      annotations: {
        [ISSUED_AT_ANNOTATION]: new Date(now()).toISOString(),
        [`${ANNOTATION_PREFIX}not-after`]: cert.notAfter.toISOString(),
        [`${ANNOTATION_PREFIX}serial`]: cert.serialHex,
        [`${ANNOTATION_PREFIX}source`]: cert.source,
      },
    },
    trigger,
  );
  const { held, renewInMs } = heldAfterIssue(cert, now(), r.graceRatio, jitterFraction(r.random, r.jitterRatio));
  ctx.metrics.held(ctx.name, cert.notAfter);
  return { outcome, held, renewInMs };
}
