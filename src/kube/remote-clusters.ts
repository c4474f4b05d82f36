// Which cluster's apiserver authenticates a CreateCertificate caller (and checks a node agent's pods), by the cluster ID
// the request names.
//
// Facts from istiod this follows (istio.io/istio security/pkg/server/ca/authenticate/kubeauth/kube_jwt.go,
// pkg/kube/multicluster/secretcontroller.go, pkg/kube/util.go, security/pkg/nodeagent/caclient/providers/citadel):
// - The cluster ID travels as gRPC request metadata (a header) "ClusterID" — pilot-agent adds it to every
//   CreateCertificate, gRPC lower-cases it, istiod reads "clusterid" (one value; it ignores a repeated header). It is
//   not a field of the request's `metadata` Struct; we accept a Struct field "ClusterID" too and refuse a request
//   whose header and field disagree, or that repeats the header.
// - Absent, empty, or equal to istiod's own CLUSTER_ID (default "Kubernetes"): the local apiserver reviews the token.
//   Otherwise a remote cluster's client: istiod's secret controller watches Secrets labelled istio/multiCluster=true
//   in its own namespace; each data key is a cluster ID and its value that cluster's kubeconfig. A key equal to the
//   local cluster ID is ignored, and an ID another Secret registered first keeps its first registration. Adding,
//   changing or deleting a Secret takes effect without a restart.
// - An ID that is neither local nor registered fails authentication: "client claims to be in cluster X, but we only
//   know about local cluster Y and remote clusters [...]". We say the same, plus where credentials are expected.
// - Remote kubeconfigs are untrusted input (kube.NewUntrustedRestConfig): see kubeClientFromUntrustedKubeconfig.
// - istiod's node authoriser runs per cluster (multicluster.Component), so a remote caller's pods are looked up in
//   that remote cluster; so do we (ClusterAccess.pods).
// - Cluster aliases (istiod's --clusterAliases alias=clusterID,...; pilot-discovery refuses two aliases for one ID):
//   an ID whose alias target is the local ID is local; otherwise the remote cluster registered under the ID itself,
//   then the one registered under its alias target. We take the same flag syntax and rule (--cluster-aliases), and
//   also refuse an alias that is the local ID (istiod would never reach it) or names itself.
// - Not done: kubeconfig files instead of Secrets.
import { createHash } from "node:crypto";
import type { Logger } from "pino";
import { HttpStatusError } from "../net/http-json.js";
import { Backoff } from "../util/backoff.js";
import { sleep, systemClock, type Clock } from "../util/clock.js";
import type { KubeClient } from "./client.js";

export const MULTICLUSTER_SECRET_LABEL = "istio/multiCluster";
/** pilot-agent's and istiod's default CLUSTER_ID. */
export const DEFAULT_CLUSTER_ID = "Kubernetes";
/** The gRPC metadata key istiod reads, and the request Struct field we accept beside it. */
export const CLUSTER_ID_HEADER = "clusterid";
export const CLUSTER_ID_FIELD = "ClusterID";

/** What one cluster offers the Istio CA: its TokenReview and its pods. `T` is whatever the caller builds per cluster. */
export type ClusterChoice<T> =
  | { ok: true; id: string; local: boolean; access: T }
  | {
      ok: false;
      code: "INVALID_ARGUMENT" | "UNAUTHENTICATED" | "UNAVAILABLE";
      reason: "cluster_id_invalid" | "unknown_cluster" | "cluster_unavailable";
      message: string;
    };

export interface SecretObject {
  metadata?: { name?: string; namespace?: string; creationTimestamp?: string; resourceVersion?: string };
  data?: Record<string, string> | null;
}

export interface DeclaredCluster {
  /** "namespace/name key ID", for messages. */
  source: string;
  kubeconfig: string;
}

/**
 * The remote clusters the Secrets declare (pure). Oldest Secret first (then by name), so an ID two Secrets declare
 * stays with the one that registered it, as in istiod; an ID equal to the local one is ignored. Notes say why.
 */
export function clustersFromSecrets(
  secrets: SecretObject[],
  localClusterId: string,
): { clusters: Map<string, DeclaredCluster>; notes: string[] } {
  const clusters = new Map<string, DeclaredCluster>();
  const notes: string[] = [];
  const sorted = [...secrets].sort(
    (a, b) =>
      (a.metadata?.creationTimestamp ?? "").localeCompare(b.metadata?.creationTimestamp ?? "") ||
      (a.metadata?.name ?? "").localeCompare(b.metadata?.name ?? ""),
  );
  for (const s of sorted) {
    const name = `${s.metadata?.namespace ?? ""}/${s.metadata?.name ?? ""}`;
    for (const [id, b64] of Object.entries(s.data ?? {}).sort(([a], [b]) => a.localeCompare(b))) {
      const source = `Secret ${name} key ${id}`;
      if (id === localClusterId) {
        notes.push(`${source}: ignored, it names the local cluster (--cluster-id ${localClusterId})`);
        continue;
      }
      const prev = clusters.get(id);
      if (prev) {
        notes.push(`${source}: ignored, cluster ${id} is already registered by ${prev.source}`);
        continue;
      }
      clusters.set(id, { source, kubeconfig: Buffer.from(b64, "base64").toString("utf8") });
    }
  }
  return { clusters, notes };
}

/**
 * The cluster ID a request names: the `clusterid` header (one value) and/or the `ClusterID` field of its metadata
 * Struct; "" when neither (pure). Throws a message when they are malformed or disagree.
 */
export function requestedClusterId(headerValues: unknown[], metadata: unknown): string {
  if (headerValues.length > 1)
    throw new Error(`the request carries ${headerValues.length} ${CLUSTER_ID_HEADER} headers; expected at most one`);
  const header = headerValues[0];
  if (header !== undefined && typeof header !== "string")
    throw new Error(`the ${CLUSTER_ID_HEADER} header is binary; expected the cluster ID as text`);
  const field =
    metadata && typeof metadata === "object" ? (metadata as Record<string, unknown>)[CLUSTER_ID_FIELD] : undefined;
  if (field !== undefined && field !== null && typeof field !== "string")
    throw new Error(`metadata.${CLUSTER_ID_FIELD} is not a string; expected the cluster ID`);
  const h = (header ?? "").trim();
  const f = typeof field === "string" ? field.trim() : "";
  if (h && f && h !== f)
    throw new Error(
      `the ${CLUSTER_ID_HEADER} header (${printable(h)}) and metadata.${CLUSTER_ID_FIELD} (${printable(f)}) disagree; expected one cluster ID`,
    );
  return h || f;
}

/**
 * `alias=clusterID,...` as pilot-discovery's --clusterAliases takes it (pure): alias -> cluster ID. Throws a message
 * naming the entry when one is malformed, an alias repeats, or one cluster ID has two aliases (istiod's rule).
 */
export function parseClusterAliases(text: string): Map<string, string> {
  const aliases = new Map<string, string>();
  const aliased = new Map<string, string>();
  for (const raw of text.split(",")) {
    const entry = raw.trim();
    if (!entry) continue;
    const eq = entry.indexOf("=");
    const alias = eq < 0 ? "" : entry.slice(0, eq).trim();
    const id = eq < 0 ? "" : entry.slice(eq + 1).trim();
    if (!alias || !id) throw new Error(`"${printable(entry)}" is not alias=clusterID`);
    if (alias === id) throw new Error(`"${printable(entry)}" names the cluster itself`);
    if (aliases.has(alias)) throw new Error(`alias "${printable(alias)}" is given twice`);
    const other = aliased.get(id);
    if (other !== undefined)
      throw new Error(`cluster "${printable(id)}" has two aliases ("${printable(other)}", "${printable(alias)}")`);
    aliases.set(alias, id);
    aliased.set(id, alias);
  }
  return aliases;
}

interface RemoteEntry<T> {
  source: string;
  sha: string;
  client?: KubeClient;
  access?: T;
  problem?: string;
}

export interface RemoteClustersOptions<T> {
  /** The local cluster's client: reads the Secrets, and is the local cluster. */
  kube: KubeClient;
  /** Where the Secrets are (the agent's namespace). */
  namespace: string;
  localClusterId: string;
  /** alias -> cluster ID (--cluster-aliases, parseClusterAliases). */
  aliases?: ReadonlyMap<string, string>;
  local: T;
  /** Builds what a remote cluster offers from its client. */
  makeAccess: (id: string, client: KubeClient) => T;
  log: Logger;
  clock?: Clock;
  /** A client from a Secret's kubeconfig; default kubeClientFromUntrustedKubeconfig (imported on first use). */
  buildClient?: (kubeconfig: string, where: string) => Promise<KubeClient>;
}

/** Watches the remote-cluster Secrets and resolves request cluster IDs to the local or a remote cluster. */
export class RemoteClusters<T> {
  private readonly secrets = new Map<string, SecretObject>();
  private readonly remotes = new Map<string, RemoteEntry<T>>();
  private synced = false;
  private lastError: string | undefined;
  private reconciling: Promise<void> = Promise.resolve();
  private readonly clock: Clock;

  constructor(private readonly opts: RemoteClustersOptions<T>) {
    this.clock = opts.clock ?? systemClock;
  }

  /** Picks the cluster for a request's cluster ID ("" = local), through its alias as istiod does. */
  select(requested: string): ClusterChoice<T> {
    const o = this.opts;
    const aliasOf = o.aliases?.get(requested);
    if (requested === "" || requested === o.localClusterId || aliasOf === o.localClusterId)
      return { ok: true, id: o.localClusterId, local: true, access: o.local };
    // The ID itself first, then its alias target (istiod's order).
    const id = this.remotes.has(requested) || aliasOf === undefined ? requested : aliasOf;
    const where = `Secrets labelled ${MULTICLUSTER_SECRET_LABEL}=true in namespace ${o.namespace}`;
    const named =
      `cluster "${printable(requested)}"` +
      (aliasOf === undefined ? "" : ` (alias of "${printable(aliasOf)}", --cluster-aliases)`);
    const entry = this.remotes.get(id);
    if (entry?.access) return { ok: true, id, local: false, access: entry.access };
    if (entry)
      return {
        ok: false,
        code: "UNAVAILABLE",
        reason: "cluster_unavailable",
        message: `${named} (${entry.source}) cannot be used: ${entry.problem ?? "its kubeconfig is still being loaded; retry"}`,
      };
    if (!this.synced)
      return {
        ok: false,
        code: "UNAVAILABLE",
        reason: "cluster_unavailable",
        message:
          `${named} is not known yet: the ${where} have not been read` +
          (this.lastError ? ` (${this.lastError})` : "") +
          "; retry",
      };
    const known = [...this.remotes.keys()].sort();
    return {
      ok: false,
      code: "UNAUTHENTICATED",
      reason: "unknown_cluster",
      message:
        `the request names ${named}, but this agent knows only its own cluster "${o.localClusterId}" ` +
        `(--cluster-id) and remote clusters [${known.join(", ")}]; a remote cluster's credentials are expected in ` +
        `${where}, each data key a cluster ID and its value that cluster's kubeconfig`,
    };
  }

  /** The remote cluster IDs currently usable. */
  ready(): string[] {
    return [...this.remotes].filter(([, e]) => e.access).map(([id]) => id);
  }

  /** List and watch the Secrets until `signal` aborts; any failure restarts the cycle after a backoff. */
  async run(signal: AbortSignal): Promise<void> {
    const o = this.opts;
    const base = `/api/v1/namespaces/${encodeURIComponent(o.namespace)}/secrets?labelSelector=${encodeURIComponent(`${MULTICLUSTER_SECRET_LABEL}=true`)}`;
    const backoff = new Backoff({ initialMs: 1_000, maxMs: 60_000 });
    while (!signal.aborted) {
      try {
        const list = await o.kube.get<{ items?: SecretObject[]; metadata?: { resourceVersion?: string } }>(base);
        this.secrets.clear();
        for (const s of list.items ?? []) this.secrets.set(s.metadata?.name ?? "", s);
        await this.reconcile();
        this.synced = true;
        this.lastError = undefined;
        backoff.reset();
        await o.kube.watch(
          `${base}&watch=1&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion=${encodeURIComponent(list.metadata?.resourceVersion ?? "")}`,
          (event) => {
            const s = event.object as SecretObject;
            if (event.type === "ADDED" || event.type === "MODIFIED") this.secrets.set(s.metadata?.name ?? "", s);
            else if (event.type === "DELETED") this.secrets.delete(s.metadata?.name ?? "");
            else if (event.type === "ERROR")
              throw new Error(`watch error: ${JSON.stringify(event.object).slice(0, 200)}`);
            else return;
            void this.reconcile();
          },
          signal,
        );
      } catch (err) {
        if (signal.aborted) return;
        this.lastError =
          `reading them failed: ${((err as Error).message || String(err)).split("\n")[0]!.slice(0, 300)}` +
          (err instanceof HttpStatusError && err.status === 403
            ? `; the agent needs secrets get/list/watch in namespace ${o.namespace} (manifests/base/istio-ca-tokenreview.yaml, chart rbac.remoteClusterSecrets)`
            : "");
        const delay = backoff.next();
        o.log.warn(
          { err: this.lastError, namespace: o.namespace, retryInMs: delay },
          "remote-cluster Secrets: list/watch interrupted; restarting",
        );
        await sleep(this.clock, delay, signal).catch(() => undefined);
      }
    }
  }

  /** Brings the remote clients in line with the Secrets; runs one at a time, each from the newest Secrets. */
  reconcile(): Promise<void> {
    this.reconciling = this.reconciling.then(() => this.reconcileNow()).catch(() => undefined);
    return this.reconciling;
  }

  private async reconcileNow(): Promise<void> {
    const o = this.opts;
    const { clusters, notes } = clustersFromSecrets([...this.secrets.values()], o.localClusterId);
    for (const n of notes) o.log.warn({ namespace: o.namespace }, `remote-cluster Secrets: ${n}`);
    for (const [id, entry] of this.remotes) {
      const want = clusters.get(id);
      if (want && sha(want.kubeconfig) === entry.sha && want.source === entry.source) continue;
      if (!want) {
        this.remotes.delete(id);
        o.log.info({ cluster: id, source: entry.source }, "remote cluster removed");
        await entry.client?.close().catch(() => undefined);
      }
    }
    for (const [id, want] of clusters) {
      const hash = sha(want.kubeconfig);
      const prev = this.remotes.get(id);
      if (prev && prev.sha === hash && prev.source === want.source) continue;
      const next: RemoteEntry<T> = { source: want.source, sha: hash };
      try {
        const build =
          o.buildClient ??
          (async (text: string, where: string) =>
            (await import("./kubeconfig.js")).kubeClientFromUntrustedKubeconfig(text, where));
        next.client = await build(want.kubeconfig, want.source);
        next.access = o.makeAccess(id, next.client);
        o.log.info({ cluster: id, source: want.source }, prev ? "remote cluster updated" : "remote cluster added");
      } catch (err) {
        next.problem = ((err as Error).message || String(err)).split("\n")[0]!.slice(0, 500);
        o.log.error({ cluster: id, err: next.problem }, "remote cluster's kubeconfig is not usable");
      }
      // The new client serves from now on; the old one is closed (its in-flight calls finish or fail and are retried).
      this.remotes.set(id, next);
      await prev?.client?.close().catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    await this.reconciling;
    for (const e of this.remotes.values()) await e.client?.close().catch(() => undefined);
    this.remotes.clear();
  }
}

function sha(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

function printable(text: string): string {
  const clean = text.replace(/[^\x20-\x7e]/g, "?");
  return clean.length > 100 ? `${clean.slice(0, 100)}…` : clean;
}
