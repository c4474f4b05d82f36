// Live reload of --trust-anchors-file (SIGHUP, and a watch of the file's directory). The file's new roots go through
// the agent's one reconfiguration path (Agent.apply, as a RootTrustPolicy edit does), which publishes them with the
// held intermediate to every bundle subscriber. Bad input keeps the roots in force: it is logged and counted, never
// served, so the agent never drops its extra roots to a broken or empty file.
import { watch as fsWatch } from "node:fs";
import { basename, dirname } from "node:path";
import type { Logger } from "pino";
import { readTrustAnchors, type TrustAnchorsRead } from "./trust-anchors.js";
import { systemClock, type Clock, type Timer } from "../util/clock.js";

export type TrustAnchorsTrigger = "signal" | "watch";
export type TrustAnchorsOutcome = "applied" | "unchanged" | "rejected";

export type TrustAnchorsDecision =
  { action: "apply"; pem: string[] } | { action: "unchanged" } | { action: "reject"; problem: string };

/** What to do with a read of the file, given the anchors in force (pure). */
export function decideTrustAnchorsReload(inForce: readonly string[], read: TrustAnchorsRead): TrustAnchorsDecision {
  if (!read.ok) return { action: "reject", problem: read.problem };
  const same = read.pem.length === inForce.length && read.pem.every((p, i) => p === inForce[i]);
  return same ? { action: "unchanged" } : { action: "apply", pem: read.pem };
}

/**
 * Whether a change in the watched directory may concern the file: its own name (replaced by rename, edited), `..data`
 * (the kubelet's ConfigMap/Secret update swaps that symlink; the file is a link through it), or an unnamed event.
 */
export function concernsFile(file: string, changed: string | null | undefined): boolean {
  return !changed || changed === basename(file) || changed === "..data";
}

/** Watches a directory; calls back with the changed entry's name (null when the platform does not say). */
export type DirectoryWatch = (
  dir: string,
  onChange: (name: string | null) => void,
  onError: (err: Error) => void,
) => { close(): void };

const nodeDirectoryWatch: DirectoryWatch = (dir, onChange, onError) => {
  // Not persistent: the watch alone never keeps the agent alive.
  const w = fsWatch(dir, { persistent: false }, (_event, name) => onChange(name === null ? null : String(name)));
  w.on("error", onError);
  return w;
};

export interface TrustAnchorsReloaderOptions {
  file: string;
  /** The extra roots in force (the agent's configuration). */
  inForce: () => readonly string[];
  /**
   * Why a consumer would refuse these new roots (the cacerts sink: istiod accepts only adding or dropping roots at an
   * end of root-cert.pem), or undefined. A refusal rejects them before anything serves them, so the socket, cacerts
   * and the ConfigMaps never disagree.
   */
  refusal?: (pem: string[]) => Promise<string | undefined>;
  /** Puts new roots in force (Agent.apply editing trustAnchors.pem). */
  apply: (pem: string[]) => Promise<unknown>;
  log: Logger;
  /** Counts every reload by trigger and outcome. */
  count: (labels: { trigger: TrustAnchorsTrigger; outcome: TrustAnchorsOutcome }) => void;
  clock?: Clock;
  /** A burst of directory events (the kubelet's swap is several) makes one read this long after the first. */
  debounceMs?: number;
  read?: (file: string) => string;
  watchDirectory?: DirectoryWatch;
}

export const DEFAULT_TRUST_ANCHORS_DEBOUNCE_MS = 500;

export class TrustAnchorsReloader {
  private readonly clock: Clock;
  private pending: Timer | undefined;
  private watcher: { close(): void } | undefined;
  /** Reloads run one after another, each deciding against the roots the previous one left in force. */
  private chain: Promise<unknown> = Promise.resolve();
  private stopped = false;

  constructor(private readonly opts: TrustAnchorsReloaderOptions) {
    this.clock = opts.clock ?? systemClock;
  }

  /** Watches the file's directory (not the file: a symlink swap replaces what the file resolves to, unseen). */
  start(): void {
    const dir = dirname(this.opts.file);
    const watchDirectory = this.opts.watchDirectory ?? nodeDirectoryWatch;
    try {
      this.watcher = watchDirectory(
        dir,
        (name) => this.changed(name),
        (err) =>
          this.opts.log.error(
            { file: this.opts.file, dir, err: err.message },
            "the trust-anchors directory watch failed; changes are picked up on SIGHUP only",
          ),
      );
      this.opts.log.info({ file: this.opts.file, dir }, "watching the trust-anchors file for changes");
    } catch (err) {
      this.opts.log.error(
        { file: this.opts.file, dir, err: (err as Error).message },
        "cannot watch the trust-anchors directory; changes are picked up on SIGHUP only",
      );
    }
  }

  stop(): void {
    this.stopped = true;
    this.pending?.cancel();
    this.pending = undefined;
    this.watcher?.close();
  }

  /** Waits for the reloads queued so far (tests, SIGHUP before rotating). */
  settled(): Promise<unknown> {
    return this.chain;
  }

  private changed(name: string | null): void {
    // Nothing is logged for other entries: the directory may hold the agent's own log file, whose every write is an
    // event here.
    if (this.stopped || this.pending || !concernsFile(this.opts.file, name)) return;
    this.opts.log.debug({ changed: name, file: this.opts.file }, "the trust-anchors file may have changed");
    // Throttled, not reset by each event: a directory that keeps changing still gets read.
    this.pending = this.clock.after(this.opts.debounceMs ?? DEFAULT_TRUST_ANCHORS_DEBOUNCE_MS, () => {
      this.pending = undefined;
      void this.reload("watch");
    });
  }

  /** Reads the file and puts its roots in force if they are good and new; never throws. */
  reload(trigger: TrustAnchorsTrigger): Promise<TrustAnchorsOutcome> {
    const run = this.chain.then(() => this.reloadNow(trigger));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async reloadNow(trigger: TrustAnchorsTrigger): Promise<TrustAnchorsOutcome> {
    const { file, log } = this.opts;
    const read = readTrustAnchors(file, new Date(this.clock.now()), this.opts.read);
    let decision = decideTrustAnchorsReload(this.opts.inForce(), read);
    if (decision.action === "apply") {
      const refused = await this.opts
        .refusal?.(decision.pem)
        .catch((err: Error) => `cannot check them: ${err.message}`);
      if (refused !== undefined)
        decision = {
          action: "reject",
          problem: `--trust-anchors-file ${file}: these roots would be refused (${refused}); expected roots that only add to or only drop from the served ones`,
        };
    }
    let outcome: TrustAnchorsOutcome;
    if (decision.action === "reject") {
      outcome = "rejected";
      log.error(
        { file, trigger, err: decision.problem, servedAnchors: this.opts.inForce().length },
        "could not reload the trust anchors; still serving the last good roots",
      );
    } else if (decision.action === "unchanged") {
      outcome = "unchanged";
      log.debug({ file, trigger }, "trust-anchors file read; the roots are unchanged");
    } else {
      try {
        await this.opts.apply(decision.pem);
        outcome = "applied";
        log.info({ file, trigger, anchors: decision.pem.length }, "reloaded the trust anchors from the file");
      } catch (err) {
        outcome = "rejected";
        log.error(
          { file, trigger, err: (err as Error).message },
          "could not put the reloaded trust anchors in force; still serving the last good roots",
        );
      }
    }
    this.opts.count({ trigger, outcome });
    return outcome;
  }
}
