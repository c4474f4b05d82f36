// Watches the agent's RootTrustPolicy through the apiserver (list + watch, restarted with backoff after any error),
// hands each new generation to `apply`, and reports the outcome in the object's status and as Events. An invalid
// spec, or one a flag shadows, is refused with a status condition and a Warning Event while the last good
// configuration keeps running. With several replicas only the one holding the status Lease (leader-elector.ts)
// writes the status, so it describes one pod's intermediate at a time; every replica records Events about its own.
import type { Logger } from "pino";
import { RTP_GROUP } from "../config/root-trust-policy.js";
import { HttpStatusError } from "../net/http-json.js";
import { Backoff } from "../util/backoff.js";
import { sleep, systemClock, type Clock } from "../util/clock.js";
import type { KubeClient } from "./client.js";
import { kubeTime, nextCondition, readiness, type RefusalReason } from "./policy-status.js";

export interface PolicyRef {
  namespace: string;
  name: string;
}

export interface PolicyObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace: string; uid?: string; generation?: number; resourceVersion?: string };
  spec?: unknown;
  status?: Record<string, unknown>;
}

/** What applying a policy produced: success, or problems (refused, with the reason the condition carries). */
export type ApplyResult =
  { ok: true; message: string } | { ok: false; problems: string[]; reason?: RefusalReason | undefined };

export interface PolicyStatusSnapshot {
  /** An unexpired intermediate is served. */
  ready: boolean;
  intermediateSerial?: string | undefined;
  intermediateNotAfter?: string | undefined;
  generation?: number | undefined;
  /** The last attempt to obtain an intermediate failed with this (cleared by the next success). */
  lastError?: string | undefined;
}

export interface RootTrustPolicyControllerOptions {
  kube: KubeClient;
  ref: PolicyRef;
  apply: (doc: PolicyObject) => Promise<ApplyResult>;
  snapshot: () => PolicyStatusSnapshot;
  /** This replica (the pod name): the status's writer and the Events' reporting instance. */
  identity: string;
  log: Logger;
  clock?: Clock;
  /** Repeats of an identical Event within this window update the first one (count, lastTimestamp). Default 10 min. */
  eventAggregationMs?: number;
}

/** Reads the policy once; a missing one fails with a message that says what to create. */
export async function fetchPolicy(kube: KubeClient, ref: PolicyRef): Promise<PolicyObject> {
  try {
    return await kube.get<PolicyObject>(`${policiesPath(ref.namespace)}/${ref.name}`);
  } catch (err) {
    if (err instanceof HttpStatusError && err.status === 404) {
      throw new Error(`RootTrustPolicy ${ref.namespace}/${ref.name} not found; create it (see manifests/examples/)`, {
        cause: err,
      });
    }
    throw err;
  }
}

function policiesPath(namespace: string): string {
  return `/apis/${RTP_GROUP}/v1alpha1/namespaces/${namespace}/roottrustpolicies`;
}

interface RecordedEvent {
  name: string;
  count: number;
  firstMs: number;
}

export class RootTrustPolicyController {
  private readonly basePath: string;
  private readonly kube: KubeClient;
  private readonly ref: PolicyRef;
  private readonly log: Logger;
  private readonly clock: Clock;
  private lastAppliedGeneration: number | undefined;
  private current: PolicyObject | undefined;
  private refusal: { reason: RefusalReason; message: string } | undefined;
  private isWriter = false;
  /** Status writes run one after another, each from the newest state. */
  private writing: Promise<void> = Promise.resolve();
  private readonly events = new Map<string, RecordedEvent>();

  constructor(private readonly opts: RootTrustPolicyControllerOptions) {
    this.kube = opts.kube;
    this.ref = opts.ref;
    this.log = opts.log;
    this.clock = opts.clock ?? systemClock;
    this.basePath = policiesPath(opts.ref.namespace);
  }

  /** Reads the policy once; throws with a clear message when it is missing or unreadable. */
  fetch(): Promise<PolicyObject> {
    return fetchPolicy(this.kube, this.ref);
  }

  /** Runs until `signal` aborts: list, apply, watch; any failure restarts the cycle after a backoff. */
  async run(signal: AbortSignal): Promise<void> {
    const backoff = new Backoff({ initialMs: 1_000, maxMs: 60_000 });
    while (!signal.aborted) {
      try {
        const obj = await this.fetch();
        await this.handle(obj);
        backoff.reset();
        await this.kube.watch(
          `${this.basePath}?watch=1&fieldSelector=metadata.name%3D${encodeURIComponent(this.ref.name)}&resourceVersion=${obj.metadata.resourceVersion ?? ""}&allowWatchBookmarks=true`,
          (event) => {
            if (event.type === "ADDED" || event.type === "MODIFIED") void this.handle(event.object as PolicyObject);
            else if (event.type === "ERROR")
              throw new Error(`watch error: ${JSON.stringify(event.object).slice(0, 200)}`);
          },
          signal,
        );
      } catch (err) {
        if (signal.aborted) return;
        const delay = backoff.next();
        this.log.warn(
          { err: (err as Error).message, retryInMs: delay },
          "RootTrustPolicy watch interrupted; restarting",
        );
        await sleep(this.clock, delay, signal).catch(() => undefined);
      }
    }
  }

  /** Records `obj` as applied (the agent started with it), so the first watch event does not apply it again. */
  markApplied(obj: PolicyObject): void {
    this.current = obj;
    this.lastAppliedGeneration = obj.metadata.generation;
  }

  /** Applies a generation not seen before and reports the result; any other change only refreshes the object. */
  async handle(obj: PolicyObject): Promise<void> {
    this.observe(obj);
    const gen = obj.metadata.generation;
    if (gen !== undefined && gen === this.lastAppliedGeneration) return;
    this.lastAppliedGeneration = gen;
    const result = await this.opts.apply(obj);
    if (result.ok) {
      this.refusal = undefined;
      this.log.info({ generation: gen, policy: `${this.ref.namespace}/${this.ref.name}` }, result.message);
      await this.event("Normal", "Applied", `generation ${gen}: ${result.message}`);
    } else {
      const reason = result.reason ?? "InvalidSpec";
      this.refusal = { reason, message: `generation ${gen} refused: ${result.problems.join("; ")}` };
      this.log.error(
        { generation: gen, reason, problems: result.problems },
        "RootTrustPolicy refused; keeping the last good configuration",
      );
      await this.event("Warning", reason, this.refusal.message);
    }
    await this.writeStatus();
  }

  /** This replica became (true) or stopped being (false) the status writer; a new writer writes at once. */
  setWriter(writer: boolean): void {
    this.isWriter = writer;
    if (writer) void this.writeStatus();
  }

  get writer(): boolean {
    return this.isWriter;
  }

  /** A new intermediate is served: a Normal Event from this replica, and the status. */
  async rotated(b: { serialHex: string; notAfter: Date; generation: number }): Promise<void> {
    await this.event(
      "Normal",
      "IntermediateRotated",
      `${this.opts.identity}: serving intermediate serial ${b.serialHex} (generation ${b.generation}), notAfter ${b.notAfter.toISOString()}`,
    );
    await this.writeStatus();
  }

  /** Obtaining an intermediate failed: a Warning Event from this replica, and the status. */
  async rotationFailed(message: string): Promise<void> {
    await this.event("Warning", "RotationFailed", `${this.opts.identity}: ${message}`);
    await this.writeStatus();
  }

  /** Writes the status subresource from the agent's current state, if this replica is the writer. */
  writeStatus(): Promise<void> {
    const run = this.writing.then(() => (this.isWriter ? this.write() : undefined));
    this.writing = run.catch(() => undefined);
    return run;
  }

  /** Keeps the newest version of the object seen (watch events and status write answers can arrive out of order). */
  private observe(obj: PolicyObject): void {
    const seen = Number(this.current?.metadata.resourceVersion);
    const got = Number(obj.metadata.resourceVersion);
    if (this.current && Number.isFinite(seen) && Number.isFinite(got) && got < seen) return;
    this.current = obj;
  }

  private async write(): Promise<void> {
    const obj = this.current;
    if (!obj) return;
    const snap = this.opts.snapshot();
    const ready = readiness({ served: snap.ready, lastError: snap.lastError, refusal: this.refusal });
    const previous = Array.isArray(obj.status?.conditions) ? (obj.status.conditions as unknown[]) : undefined;
    const status = {
      observedGeneration: obj.metadata.generation,
      generation: snap.generation,
      intermediateSerial: snap.intermediateSerial,
      intermediateNotAfter: snap.intermediateNotAfter,
      lastError: this.refusal?.message ?? snap.lastError ?? "",
      writer: this.opts.identity,
      conditions: [nextCondition(previous, { type: "Ready", ...ready }, this.clock.now())],
    };
    try {
      const res = await this.kube.request<PolicyObject>(
        "PATCH",
        `${this.basePath}/${this.ref.name}/status`,
        { status },
        { contentType: "application/merge-patch+json" },
      );
      if (res.body?.metadata) this.observe(res.body);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "could not write RootTrustPolicy status");
    }
  }

  /**
   * Records an Event about the policy. A repeat of the same type, reason and message within the aggregation window
   * updates the Event already recorded (count and lastTimestamp) instead of adding another, as kubelet's recorder
   * does, so a renewal failing every few seconds does not flood the namespace.
   */
  private async event(type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    const obj = this.current;
    if (!obj) return;
    const nowMs = this.clock.now();
    const now = kubeTime(nowMs);
    const text = message.slice(0, 1000);
    const key = `${type}\0${reason}\0${text}`;
    const windowMs = this.opts.eventAggregationMs ?? 10 * 60_000;
    const seen = this.events.get(key);
    const ns = `/api/v1/namespaces/${this.ref.namespace}/events`;
    try {
      if (seen && nowMs - seen.firstMs < windowMs) {
        seen.count++;
        try {
          await this.kube.request(
            "PATCH",
            `${ns}/${seen.name}`,
            { count: seen.count, lastTimestamp: now },
            { contentType: "application/merge-patch+json" },
          );
          return;
        } catch (err) {
          // Expired (Events have a TTL) or deleted: record it afresh below.
          if (!(err instanceof HttpStatusError && err.status === 404)) throw err;
        }
      }
      const created = await this.kube.create<{ metadata: { name: string } }>(ns, {
        apiVersion: "v1",
        kind: "Event",
        metadata: { generateName: `${this.ref.name}.`, namespace: this.ref.namespace },
        involvedObject: {
          apiVersion: `${RTP_GROUP}/v1alpha1`,
          kind: "RootTrustPolicy",
          name: obj.metadata.name,
          namespace: obj.metadata.namespace,
          uid: obj.metadata.uid,
          resourceVersion: obj.metadata.resourceVersion,
        },
        type,
        reason,
        message: text,
        source: { component: "istiod-vault-agent", host: this.opts.identity },
        reportingComponent: "istiod-vault-agent",
        reportingInstance: this.opts.identity,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      });
      this.events.delete(key);
      this.events.set(key, { name: created.metadata.name, count: 1, firstMs: nowMs });
      // Bounded memory: the oldest entries go first (Map keeps insertion order).
      while (this.events.size > 64) this.events.delete(this.events.keys().next().value!);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "could not record a Kubernetes Event");
    }
  }
}
