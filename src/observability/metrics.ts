// Prometheus metrics. One registry per agent instance (tests run several in one process), holding only the series of
// the mode that runs: the sidecar all groups, the relay its Vault calls (and the issuer's intermediate), a bootstrap
// agent none of them (its relay series register beside them). Every mode's own series carry one prefix
// (METRIC_PREFIX) and follow Prometheus naming: instants end in _timestamp_seconds, durations in _seconds, counters in
// _total. Node's process series keep their standard names (process_*, nodejs_*) so stock dashboards find them.
// Each mode declares its series as one table (SeriesTable) rather than a constructor call each; the names, types,
// labels and help texts are checked against test/unit/metrics-catalogue.txt, since dashboards and alerts name them.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { version } from "../cli/command.js";

/** The prefix of every series the project defines, in every mode. */
export const METRIC_PREFIX = "istiod_vault_agent_";

/** Series groups, by name prefix: Vault calls, the served intermediate, and the sidecar's socket/cacerts serving. */
export type MetricGroup = "vault" | "intermediate" | "serve";
export const ALL_METRIC_GROUPS: readonly MetricGroup[] = ["vault", "intermediate", "serve"];

const GROUP_OF: Record<string, MetricGroup | "always"> = {
  build_info: "always",
  intermediate_: "intermediate",
  vault_: "vault",
  leaves_: "serve",
  limit_hits_: "serve",
  token_reviews_: "serve",
  cacerts_: "serve",
  signing_: "serve",
  root_configmaps_: "serve",
  trust_anchors_: "serve",
};

/**
 * One series: its name without METRIC_PREFIX (added when it is registered, so no mode can forget it), help, type and
 * label names (none when left out); a histogram also names its buckets. Everything else is prom-client's default.
 */
export type SeriesSpec =
  | { type: "counter" | "gauge"; name: string; help: string; labels?: readonly string[] }
  | { type: "histogram"; name: string; help: string; labels: readonly string[]; buckets: readonly number[] };

/** Series by the property name the code reads them under. */
export type SeriesTable = Record<string, SeriesSpec>;

type LabelsOf<S> = S extends { labels: readonly (infer L extends string)[] } ? L : string;
type SeriesFor<S extends SeriesSpec> = S extends { type: "counter" }
  ? Counter<LabelsOf<S>>
  : S extends { type: "gauge" }
    ? Gauge<LabelsOf<S>>
    : Histogram<LabelsOf<S>>;
/** The prom-client objects a table makes, typed with each series' label names. */
export type SeriesOf<T extends SeriesTable> = { readonly [K in keyof T]: SeriesFor<T[K]> };

function register(registry: Registry, spec: SeriesSpec): Counter | Gauge | Histogram {
  const common = {
    name: METRIC_PREFIX + spec.name,
    help: spec.help,
    labelNames: spec.labels ?? [],
    registers: [registry],
  };
  switch (spec.type) {
    case "counter":
      return new Counter(common);
    case "gauge":
      return new Gauge(common);
    case "histogram":
      return new Histogram({ ...common, buckets: [...spec.buckets] });
  }
}

/**
 * A base class whose instances hold `table`'s series, registered in the registry given to the constructor (and kept
 * as `registry`), in table order.
 */
export function seriesClass<T extends SeriesTable>(
  table: T,
): new (registry: Registry) => { readonly registry: Registry } & SeriesOf<T> {
  return class {
    constructor(readonly registry: Registry) {
      for (const [key, spec] of Object.entries(table)) Object.assign(this, { [key]: register(registry, spec) });
    }
  } as new (registry: Registry) => { readonly registry: Registry } & SeriesOf<T>;
}

const AGENT_SERIES = {
  buildInfo: {
    type: "gauge",
    name: "build_info",
    help: "Always 1; the labels say which build runs (version as --version prints it, and the Node.js version).",
    labels: ["version", "node_version"],
  },
  intermediateNotAfter: {
    type: "gauge",
    name: "intermediate_not_after_timestamp_seconds",
    help: "NotAfter of the served intermediate CA certificate (Unix seconds).",
  },
  intermediateLastRotation: {
    type: "gauge",
    name: "intermediate_last_rotation_timestamp_seconds",
    help: "When the served intermediate was obtained (Unix seconds).",
  },
  intermediateNextRenewal: {
    type: "gauge",
    name: "intermediate_next_renewal_timestamp_seconds",
    help:
      "When the served intermediate is due for renewal (Unix seconds; the process start while none is held). " +
      "Stays put while renewal attempts fail, so a value in the past means an overdue renewal.",
  },
  intermediateGeneration: {
    type: "gauge",
    name: "intermediate_generation",
    help: "Generation of the served intermediate (1 after start, +1 per rotation).",
  },
  rotations: {
    type: "counter",
    name: "intermediate_rotations_total",
    help: "Attempts to obtain a new intermediate, by outcome.",
    labels: ["outcome", "trigger"],
  },
  vaultRequests: {
    type: "counter",
    name: "vault_requests_total",
    help: "Vault calls by operation and outcome.",
    labels: ["operation", "outcome"],
  },
  vaultRequestSeconds: {
    type: "histogram",
    name: "vault_request_duration_seconds",
    help: "Vault call durations by operation.",
    labels: ["operation"],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15],
  },
  vaultLogins: {
    type: "counter",
    name: "vault_logins_total",
    help: "Vault logins (any auth method) by outcome.",
    labels: ["outcome"],
  },
  vaultTokenRenewals: {
    type: "counter",
    name: "vault_token_renewals_total",
    help: "Vault token self-renewals by outcome.",
    labels: ["outcome"],
  },
  vaultTokenRevocations: {
    type: "counter",
    name: "vault_token_revocations_total",
    help: "Vault token revoke-self calls at shutdown, by outcome.",
    labels: ["outcome"],
  },
  vaultKeyDeletions: {
    type: "counter",
    name: "vault_key_deletions_total",
    help: "Deletions of the Vault-stored copy of a --csr-path key after import, by outcome.",
    labels: ["outcome"],
  },
  vaultUp: {
    type: "gauge",
    name: "vault_up",
    help: "1 when the last sys/health probe found Vault reachable, initialised and unsealed (active or standby), else 0.",
  },
  vaultProbeSeconds: {
    type: "gauge",
    name: "vault_probe_duration_seconds",
    help: "Duration of the last sys/health probe, failed ones included.",
  },
  leavesSigned: { type: "counter", name: "leaves_signed_total", help: "Leaf certificates signed over the socket." },
  leavesRefused: {
    type: "counter",
    name: "leaves_refused_total",
    help: "Leaf signing requests refused, by the policy rule that refused them.",
    labels: ["reason"],
  },
  limitHits: {
    type: "counter",
    name: "limit_hits_total",
    help: "Requests or streams refused or dropped because a resource limit was reached, by limit.",
    labels: ["reason"],
  },
  tokenReviews: {
    type: "counter",
    name: "token_reviews_total",
    help: "TokenReview calls made to the apiserver for the Istio CA listener, by outcome.",
    labels: ["outcome"],
  },
  signingWorkers: {
    type: "gauge",
    name: "signing_workers",
    help:
      "Signing worker threads running now: at most --signing-workers, started when leaves are asked for, stopped " +
      "after a quiet period (0: leaves are signed on the main thread).",
  },
  signingLeaves: {
    type: "counter",
    name: "signing_leaves_total",
    help: "Workload leaves signed, by listener (socket, istio_ca) and thread (worker, or main: no workers, or a worker died).",
    labels: ["listener", "thread"],
  },
  signingWorkerRestarts: {
    type: "counter",
    name: "signing_worker_restarts_total",
    help: "Signing workers that died (and were replaced unless they kept dying).",
  },
  sinkWrites: {
    type: "counter",
    name: "cacerts_writes_total",
    help: "Writes of the cacerts directory, by outcome.",
    labels: ["outcome"],
  },
  rootConfigMapsWritten: {
    type: "counter",
    name: "root_configmaps_written_total",
    help:
      "Writes of istio-ca-root-cert ConfigMaps (--root-configmaps) by this replica, by outcome: created, updated, " +
      "adopted, failed.",
    labels: ["outcome"],
  },
  trustAnchorsReloads: {
    type: "counter",
    name: "trust_anchors_reloads_total",
    help:
      "Reloads of --trust-anchors-file (trigger: signal = SIGHUP, watch = the file changed), by outcome: applied, " +
      "unchanged, rejected (bad file; the last good roots stay served).",
    labels: ["trigger", "outcome"],
  },
  rootConfigMapsUnowned: {
    type: "gauge",
    name: "root_configmaps_unowned",
    help: "Selected namespaces whose istio-ca-root-cert is not ours (no managed-by label) and is left alone; see --adopt.",
  },
} as const satisfies SeriesTable;

export class AgentMetrics extends seriesClass(AGENT_SERIES) {
  /**
   * `groups`: the series this mode exports (default all); the others still count but are not in the registry.
   * `processMetrics`: Node's process series (off for one-shot runs).
   * `vaultProbe`: the sys/health probe runs, so vault_up means something (off: the probe's series are left out
   * rather than exported as a constant 0 an alert would fire on).
   */
  constructor(opts: { processMetrics?: boolean; groups?: readonly MetricGroup[]; vaultProbe?: boolean } = {}) {
    super(new Registry());
    const groups = opts.groups ?? ALL_METRIC_GROUPS;
    for (const metric of this.registry.getMetricsAsArray()) {
      const name = metric.name.slice(METRIC_PREFIX.length);
      const prefix = Object.keys(GROUP_OF).find((p) => name.startsWith(p));
      if (prefix === undefined) throw new Error(`metric ${metric.name} belongs to no group`);
      const group = GROUP_OF[prefix]!;
      if (group !== "always" && !groups.includes(group)) this.registry.removeSingleMetric(metric.name);
    }
    if (!opts.vaultProbe)
      for (const m of [this.vaultUp, this.vaultProbeSeconds]) this.registry.removeSingleMetric(metricName(m));
    // Until the first intermediate is held, one is due: from the start (an agent that never gets one alerts too).
    this.intermediateNextRenewal.set(Date.now() / 1000);
    this.buildInfo.set({ version: version(), node_version: process.version }, 1);
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** Times an async Vault operation and counts its outcome. */
  async timeVault<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    const end = this.vaultRequestSeconds.startTimer({ operation });
    try {
      const out = await fn();
      this.vaultRequests.inc({ operation, outcome: "success" });
      return out;
    } catch (err) {
      this.vaultRequests.inc({ operation, outcome: outcomeOf(err) });
      throw err;
    } finally {
      end();
    }
  }
}

function outcomeOf(err: unknown): string {
  const status = (err as { status?: unknown }).status;
  if (typeof status === "number") return `http_${status}`;
  const name = (err as { name?: unknown }).name;
  return name === "HttpTransportError" ? "transport_error" : "error";
}

function metricName(m: Gauge): string {
  return (m as unknown as { name: string }).name;
}
