// Watches the agent's RootTrustPolicy through the apiserver (list + watch, restarted with backoff after any error),
// hands each new generation to `apply`, and reports the outcome in the object's status and as Events. An invalid
// spec is refused with a status condition and a Warning event while the last good configuration keeps running.
import type { Logger } from "pino";
import { RTP_GROUP } from "../config/root-trust-policy.js";
import { HttpStatusError } from "../net/http-json.js";
import { Backoff } from "../util/backoff.js";
import { sleep, systemClock, type Clock } from "../util/clock.js";
import type { KubeClient } from "./client.js";

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

/** What applying a policy produced: problems (refused) or success. */
export type ApplyResult = { ok: true; message: string } | { ok: false; problems: string[] };

export interface PolicyStatusSnapshot {
  ready: boolean;
  intermediateSerial?: string | undefined;
  intermediateNotAfter?: string | undefined;
  generation?: number | undefined;
  lastError?: string | undefined;
}

export class RootTrustPolicyController {
  private readonly basePath: string;
  private lastAppliedGeneration: number | undefined;
  private current: PolicyObject | undefined;
  private refusal: string | undefined;

  constructor(
    private readonly kube: KubeClient,
    private readonly ref: PolicyRef,
    private readonly apply: (doc: PolicyObject) => Promise<ApplyResult>,
    private readonly snapshot: () => PolicyStatusSnapshot,
    private readonly log: Logger,
    private readonly clock: Clock = systemClock,
  ) {
    this.basePath = `/apis/${RTP_GROUP}/v1alpha1/namespaces/${ref.namespace}/roottrustpolicies`;
  }

  /** Reads the policy once (for start-up); throws with a clear message when it is missing or unreadable. */
  async fetch(): Promise<PolicyObject> {
    try {
      return await this.kube.get<PolicyObject>(`${this.basePath}/${this.ref.name}`);
    } catch (err) {
      if (err instanceof HttpStatusError && err.status === 404) {
        throw new Error(
          `RootTrustPolicy ${this.ref.namespace}/${this.ref.name} not found; create it (see manifests/examples/)`,
          { cause: err },
        );
      }
      throw err;
    }
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

  /** Applies a generation not seen before and reports the result. */
  async handle(obj: PolicyObject): Promise<void> {
    this.current = obj;
    const gen = obj.metadata.generation;
    if (gen !== undefined && gen === this.lastAppliedGeneration) return;
    this.lastAppliedGeneration = gen;
    const result = await this.apply(obj);
    if (result.ok) {
      this.refusal = undefined;
      this.log.info({ generation: gen, policy: `${this.ref.namespace}/${this.ref.name}` }, result.message);
      await this.event("Normal", "Applied", `generation ${gen}: ${result.message}`);
    } else {
      this.refusal = `generation ${gen} refused: ${result.problems.join("; ")}`;
      this.log.error(
        { generation: gen, problems: result.problems },
        "RootTrustPolicy refused; keeping the last good configuration",
      );
      await this.event("Warning", "InvalidSpec", this.refusal);
    }
    await this.writeStatus();
  }

  /** Writes the status subresource from the agent's current state (called on every bundle change too). */
  async writeStatus(): Promise<void> {
    const obj = this.current;
    if (!obj) return;
    const snap = this.snapshot();
    const ready = snap.ready && !this.refusal;
    const status = {
      observedGeneration: obj.metadata.generation,
      generation: snap.generation,
      intermediateSerial: snap.intermediateSerial,
      intermediateNotAfter: snap.intermediateNotAfter,
      lastError: this.refusal ?? snap.lastError ?? "",
      conditions: [
        {
          type: "Ready",
          status: ready ? "True" : "False",
          reason: this.refusal ? "InvalidSpec" : snap.ready ? "IntermediateServed" : "NoIntermediate",
          message:
            this.refusal ?? (snap.ready ? "a valid intermediate is served" : (snap.lastError ?? "no intermediate yet")),
          lastTransitionTime: new Date(this.clock.now()).toISOString().replace(/\.\d{3}Z$/, "Z"),
        },
      ],
    };
    try {
      await this.kube.request(
        "PATCH",
        `${this.basePath}/${this.ref.name}/status`,
        { status },
        { contentType: "application/merge-patch+json" },
      );
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "could not write RootTrustPolicy status");
    }
  }

  private async event(type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    const obj = this.current;
    if (!obj) return;
    const now = new Date(this.clock.now()).toISOString().replace(/\.\d{3}Z$/, "Z");
    try {
      await this.kube.create(`/api/v1/namespaces/${this.ref.namespace}/events`, {
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
        message: message.slice(0, 1000),
        source: { component: "istiod-vault-agent" },
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      });
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "could not record a Kubernetes Event");
    }
  }
}
