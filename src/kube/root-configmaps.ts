// Root distribution for the mesh-CA mode (istiod runs with its CA server off, so it no longer publishes the root):
// keeps the ConfigMap istio-ca-root-cert (data key root-cert.pem = the root bundle the agent serves, every root of a
// multi-root bundle) in every namespace the label selector picks, as istiod's namespace controller would. Workloads'
// pilot-agents mount it to verify their CA.
//
// Two watches (namespaces; ConfigMaps of that name in all namespaces) keep a local picture, listed first and then
// watched from the list's resourceVersion, re-listed on 410 Gone or any other interruption. Every namespace that may
// need a write goes into one queue, drained one namespace at a time, so writes never race each other here. A write
// is decided by planRootConfigMap (pure) and done through ownership.ts (resourceVersion on every update; someone
// else's unlabelled ConfigMap is left alone unless --adopt). Only the holder of the Lease writes (setLeading); the
// watches run on every replica so a takeover starts from a warm picture and reconciles every namespace at once.
//
// A namespace whose labels stop matching keeps its ConfigMap (no delete: pods there may still mount it, and nothing
// here deletes an object); it is simply no longer updated. A namespace being deleted is skipped.
import type { Logger } from "pino";
import type { Counter, Gauge } from "prom-client";
import { HttpStatusError } from "../net/http-json.js";
import { Backoff } from "../util/backoff.js";
import { sleep, systemClock, type Clock } from "../util/clock.js";
import type { KubeClient } from "./client.js";
import { matchesSelector, type LabelSelector } from "./label-selector.js";
import { UnmanagedObjectError, isManaged, writeOwned, type KubeObject, type WriteOutcome } from "./ownership.js";

export const ROOT_CONFIGMAP = "istio-ca-root-cert";
export const ROOT_CERT_KEY = "root-cert.pem";
/** The Lease electing the one writer, in the agent's namespace, shared by every revision. */
export const ROOT_CONFIGMAP_LEASE = "istiod-vault-agent-root-cert";
/** Which replica last wrote the ConfigMap (the Lease holder at that time). */
export const WRITER_ANNOTATION = "istiod-vault-agent.io/root-cert-writer";
/** istiod labels its copy so; kept, so tooling that looks for Istio's ConfigMaps finds ours the same way. */
const ISTIO_CONFIG_LABEL = "istio.io/config";

export interface KubeConfigMap extends KubeObject {
  data?: Record<string, string>;
}

interface KubeNamespace {
  metadata: { name: string; labels?: Record<string, string>; resourceVersion?: string };
  status?: { phase?: string };
}

interface KubeList<T> {
  metadata: { resourceVersion: string };
  items: T[];
}

export type RootConfigMapAction = "create" | "update" | "adopt" | "none" | "unowned";

/** What to do with one namespace's ConfigMap (pure): `current` as last seen, `rootPem` the served bundle. */
export function planRootConfigMap(
  current: KubeConfigMap | undefined,
  rootPem: string,
  adopt: boolean,
): RootConfigMapAction {
  if (!current) return "create";
  if (!isManaged(current)) return adopt ? "adopt" : "unowned";
  return current.data?.[ROOT_CERT_KEY] === rootPem ? "none" : "update";
}

export interface RootConfigMapMetrics {
  written: Counter<"outcome">;
  unowned: Gauge;
}

export interface RootConfigMapOptions {
  kube: KubeClient;
  selector: LabelSelector;
  adopt: boolean;
  /** This replica (the pod name), written in WRITER_ANNOTATION. */
  identity: string;
  log: Logger;
  metrics: RootConfigMapMetrics;
  clock?: Clock;
  /** First and longest wait before a failed write or an interrupted watch is retried. */
  backoff?: { initialMs: number; maxMs: number };
}

/** A watch's ERROR event with status 410: the resourceVersion is too old, list again. */
class WatchGone extends Error {}

export class RootConfigMapController {
  private readonly clock: Clock;
  private readonly namespaces = new Map<string, KubeNamespace>();
  private readonly configMaps = new Map<string, KubeConfigMap>();
  private rootPem: string | undefined;
  private leading = false;
  /** Namespaces waiting for a reconcile; drained by one loop. */
  private readonly queue = new Set<string>();
  private draining: Promise<void> | undefined;
  /** Namespaces whose ConfigMap is someone else's and left alone (logged once each). */
  private readonly unowned = new Set<string>();
  private readonly failed = new Set<string>();
  private readonly retryBackoff: Backoff;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;

  constructor(private readonly opts: RootConfigMapOptions) {
    this.clock = opts.clock ?? systemClock;
    this.retryBackoff = new Backoff(opts.backoff ?? { initialMs: 1_000, maxMs: 60_000 });
  }

  /** The served root bundle (every root, in the cacerts sink's order); a change rewrites every selected ConfigMap. */
  setRoots(rootPem: string): void {
    if (rootPem === this.rootPem) return; // a new intermediate under the same roots changes nothing here
    const first = this.rootPem === undefined;
    this.rootPem = rootPem;
    if (!first) this.opts.log.info("the served roots changed: updating every istio-ca-root-cert");
    this.enqueueAll();
  }

  /** This replica holds the Lease (true) or lost it (false); a new holder reconciles every namespace. */
  setLeading(leading: boolean): void {
    if (leading === this.leading) return;
    this.leading = leading;
    this.opts.log.info(
      { identity: this.opts.identity },
      leading ? "now writing the istio-ca-root-cert ConfigMaps" : "no longer writing the istio-ca-root-cert ConfigMaps",
    );
    if (leading) this.enqueueAll();
  }

  /** Runs both watches until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    signal.addEventListener("abort", () => this.stop(), { once: true });
    await Promise.all([
      this.watchLoop<KubeNamespace>("namespaces", "/api/v1/namespaces", "", signal, {
        reset: (items) => {
          this.namespaces.clear();
          for (const ns of items) this.namespaces.set(ns.metadata.name, ns);
          this.enqueueAll();
        },
        event: (type, ns) => {
          if (type === "DELETED") {
            this.namespaces.delete(ns.metadata.name);
            this.forget(ns.metadata.name);
          } else {
            this.namespaces.set(ns.metadata.name, ns);
            this.enqueue(ns.metadata.name);
          }
        },
      }),
      this.watchLoop<KubeConfigMap>(
        "istio-ca-root-cert ConfigMaps",
        "/api/v1/configmaps",
        `fieldSelector=${encodeURIComponent(`metadata.name=${ROOT_CONFIGMAP}`)}`,
        signal,
        {
          reset: (items) => {
            this.configMaps.clear();
            for (const cm of items) this.configMaps.set(cm.metadata.namespace!, cm);
            this.enqueueAll();
          },
          event: (type, cm) => {
            const ns = cm.metadata.namespace!;
            if (type === "DELETED") this.configMaps.delete(ns);
            else this.remember(cm);
            this.enqueue(ns);
          },
        },
      ),
    ]);
  }

  private stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }

  /** Resolves once every queued namespace has been reconciled (tests, and a graceful stop). */
  async idle(): Promise<void> {
    while (this.draining) await this.draining;
  }

  /** Whether `ns` should carry the ConfigMap now. */
  selected(ns: string): boolean {
    const n = this.namespaces.get(ns);
    if (!n || n.status?.phase === "Terminating") return false;
    return matchesSelector(this.opts.selector, n.metadata.labels);
  }

  private enqueueAll(): void {
    for (const ns of this.namespaces.keys()) this.queue.add(ns);
    this.kick();
  }

  private enqueue(ns: string): void {
    this.queue.add(ns);
    this.kick();
  }

  private forget(ns: string): void {
    this.configMaps.delete(ns);
    this.failed.delete(ns);
    this.setUnowned(ns, false);
  }

  /** Keeps the newer of two copies (an event and a write's answer can arrive out of order). */
  private remember(cm: KubeConfigMap): void {
    const ns = cm.metadata.namespace!;
    const seen = Number(this.configMaps.get(ns)?.metadata.resourceVersion);
    const got = Number(cm.metadata.resourceVersion);
    if (Number.isFinite(seen) && Number.isFinite(got) && got < seen) return;
    this.configMaps.set(ns, cm);
  }

  private kick(): void {
    if (this.draining || this.stopped) return;
    this.draining = this.drain().finally(() => {
      this.draining = undefined;
      if (this.queue.size && this.leading && this.rootPem !== undefined && !this.stopped) this.kick();
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.size && !this.stopped) {
      // Nothing to write yet (no roots) or not ours to write: keep the queue for when that changes.
      if (!this.leading || this.rootPem === undefined) return;
      const ns = this.queue.values().next().value!;
      this.queue.delete(ns);
      await this.reconcile(ns, this.rootPem);
    }
  }

  private async reconcile(ns: string, rootPem: string): Promise<void> {
    if (!this.selected(ns)) {
      this.setUnowned(ns, false);
      return;
    }
    const current = this.configMaps.get(ns);
    const action = planRootConfigMap(current, rootPem, this.opts.adopt);
    if (action === "none") return void this.setUnowned(ns, false);
    if (action === "unowned") return void this.setUnowned(ns, true);
    const collection = `/api/v1/namespaces/${encodeURIComponent(ns)}/configmaps`;
    try {
      const outcome = await writeOwned<KubeConfigMap>({
        kube: this.opts.kube,
        kind: "ConfigMap",
        namespace: ns,
        name: ROOT_CONFIGMAP,
        collection,
        adopt: this.opts.adopt,
        current,
        get: () => this.read(collection),
        assertWritable: (cur) => {
          if (cur && !isManaged(cur) && !this.opts.adopt)
            throw new UnmanagedObjectError("ConfigMap", ns, ROOT_CONFIGMAP, "the agent");
        },
        upToDate: (cur) => cur.data?.[ROOT_CERT_KEY] === rootPem,
        who: "the agent",
        createBody: () => ({
          apiVersion: "v1",
          kind: "ConfigMap",
          metadata: {
            name: ROOT_CONFIGMAP,
            namespace: ns,
            labels: { [ISTIO_CONFIG_LABEL]: "true" },
            annotations: { [WRITER_ANNOTATION]: this.opts.identity },
          },
          data: { [ROOT_CERT_KEY]: rootPem },
        }),
        updateBody: (cur) => ({
          ...cur,
          apiVersion: "v1",
          kind: "ConfigMap",
          metadata: {
            ...cur.metadata,
            labels: { ...(cur.metadata.labels ?? {}), [ISTIO_CONFIG_LABEL]: "true" },
            annotations: { ...(cur.metadata.annotations ?? {}), [WRITER_ANNOTATION]: this.opts.identity },
          },
          // Other keys someone added are kept, as istiod keeps them.
          data: { ...(cur.data ?? {}), [ROOT_CERT_KEY]: rootPem },
        }),
      });
      if (outcome === "unchanged") return void this.setUnowned(ns, false);
      this.written(ns, outcome);
    } catch (err) {
      if (err instanceof UnmanagedObjectError) return void this.setUnowned(ns, true);
      // Deleted namespace (404), one being terminated (403 "is being terminated"): the namespace watch settles it.
      if (err instanceof HttpStatusError && err.status === 404 && !this.namespaces.has(ns)) return;
      this.opts.metrics.written.inc({ outcome: "failed" });
      this.opts.log.warn(
        { namespace: ns, err: (err as Error).message },
        "could not write istio-ca-root-cert; retrying with backoff",
      );
      this.retryLater(ns);
    }
  }

  private written(ns: string, outcome: WriteOutcome): void {
    this.opts.metrics.written.inc({ outcome });
    this.setUnowned(ns, false);
    this.failed.delete(ns);
    if (this.failed.size === 0) this.retryBackoff.reset();
    const level = outcome === "adopted" ? "warn" : "info";
    this.opts.log[level]({ namespace: ns, outcome }, `istio-ca-root-cert ${outcome}`);
  }

  private async read(collection: string): Promise<KubeConfigMap | undefined> {
    const res = await this.opts.kube.request<KubeConfigMap>("GET", `${collection}/${ROOT_CONFIGMAP}`, undefined, {
      acceptStatuses: [404],
    });
    if (res.status === 404) return undefined;
    this.remember(res.body);
    return res.body;
  }

  private setUnowned(ns: string, unowned: boolean): void {
    if (unowned && !this.unowned.has(ns)) {
      this.unowned.add(ns);
      this.opts.log.warn(
        { namespace: ns },
        `ConfigMap ${ns}/${ROOT_CONFIGMAP} exists without the label app.kubernetes.io/managed-by=istiod-vault-agent, ` +
          "so the agent leaves it alone and workloads there may trust another root; delete it, add that label, or " +
          "run the sidecar with --adopt to let the agent take it over",
      );
    } else if (!unowned) this.unowned.delete(ns);
    this.opts.metrics.unowned.set(this.unowned.size);
  }

  private retryLater(ns: string): void {
    this.failed.add(ns);
    if (this.retryTimer || this.stopped) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      const again = [...this.failed];
      this.failed.clear();
      for (const n of again) this.queue.add(n);
      this.kick();
    }, this.retryBackoff.next());
    this.retryTimer.unref?.();
  }

  /** List, then watch from the list's resourceVersion; 410 Gone or any interruption lists again (with backoff). */
  private async watchLoop<T extends { metadata: { resourceVersion?: string } }>(
    what: string,
    path: string,
    query: string,
    signal: AbortSignal,
    on: { reset: (items: T[]) => void; event: (type: string, obj: T) => void },
  ): Promise<void> {
    const backoff = new Backoff(this.opts.backoff ?? { initialMs: 1_000, maxMs: 60_000 });
    const q = query ? `${query}&` : "";
    while (!signal.aborted) {
      try {
        const list = await this.opts.kube.get<KubeList<T>>(`${path}?${query}`);
        on.reset(list.items);
        let rv = list.metadata.resourceVersion;
        this.opts.log.debug({ what, items: list.items.length, resourceVersion: rv }, "listed; watching from here");
        backoff.reset();
        // The server ends a watch after its timeout; carry on from the last resourceVersion seen.
        while (!signal.aborted) {
          await this.opts.kube.watch(
            `${path}?${q}watch=1&allowWatchBookmarks=true&resourceVersion=${encodeURIComponent(rv)}`,
            (event) => {
              const obj = event.object as T & { code?: number };
              if (event.type === "ERROR") {
                if (obj.code === 410) throw new WatchGone("resourceVersion too old");
                throw new Error(`watch error: ${JSON.stringify(event.object).slice(0, 200)}`);
              }
              if (obj.metadata?.resourceVersion) rv = obj.metadata.resourceVersion;
              if (event.type === "BOOKMARK") return;
              on.event(event.type, obj);
            },
            signal,
          );
        }
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof WatchGone || (err instanceof HttpStatusError && err.status === 410)) {
          this.opts.log.debug({ what }, "watch expired (410 Gone); listing again");
          continue;
        }
        const delay = backoff.next();
        this.opts.log.warn({ what, err: (err as Error).message, retryInMs: delay }, "watch interrupted; listing again");
        await sleep(this.clock, delay, signal).catch(() => undefined);
      }
    }
  }
}
