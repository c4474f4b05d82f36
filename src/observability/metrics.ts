// Prometheus metrics. One registry per agent instance (tests run several in one process), holding only the series of
// the mode that runs: the sidecar all groups, the relay its Vault calls (and the issuer's intermediate), a bootstrap
// agent none of them (its relay series register beside them). Every mode's own series carry one prefix
// (METRIC_PREFIX) and follow Prometheus naming: instants end in _timestamp_seconds, durations in _seconds, counters in
// _total. Node's process series keep their standard names (process_*, nodejs_*) so stock dashboards find them.
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
};

/**
 * Makes series in `registry` from a name (without METRIC_PREFIX, which is added here so no mode can forget it), help
 * and label names; everything else is prom-client's default.
 */
export function seriesIn(registry: Registry) {
  return {
    counter: <L extends string = string>(name: string, help: string, labelNames: readonly L[] = []) =>
      new Counter<L>({ name: METRIC_PREFIX + name, help, labelNames, registers: [registry] }),
    gauge: <L extends string = string>(
      name: string,
      help: string,
      labelNames: readonly L[] = [],
      collect?: (this: Gauge<L>) => void,
    ) =>
      new Gauge<L>({
        name: METRIC_PREFIX + name,
        help,
        labelNames,
        registers: [registry],
        ...(collect && { collect }),
      }),
    histogram: <L extends string = string>(name: string, help: string, labelNames: readonly L[], buckets: number[]) =>
      new Histogram<L>({ name: METRIC_PREFIX + name, help, labelNames, buckets, registers: [registry] }),
  };
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly series = seriesIn(this.registry);

  readonly buildInfo = this.series.gauge(
    "build_info",
    "Always 1; the labels say which build runs (version as --version prints it, and the Node.js version).",
    ["version", "node_version"],
  );
  readonly intermediateNotAfter = this.series.gauge(
    "intermediate_not_after_timestamp_seconds",
    "NotAfter of the served intermediate CA certificate (Unix seconds).",
  );
  readonly intermediateLastRotation = this.series.gauge(
    "intermediate_last_rotation_timestamp_seconds",
    "When the served intermediate was obtained (Unix seconds).",
  );
  readonly intermediateNextRenewal = this.series.gauge(
    "intermediate_next_renewal_timestamp_seconds",
    "When the served intermediate is due for renewal (Unix seconds; the process start while none is held). " +
      "Stays put while renewal attempts fail, so a value in the past means an overdue renewal.",
  );
  readonly intermediateGeneration = this.series.gauge(
    "intermediate_generation",
    "Generation of the served intermediate (1 after start, +1 per rotation).",
  );
  readonly rotations = this.series.counter(
    "intermediate_rotations_total",
    "Attempts to obtain a new intermediate, by outcome.",
    ["outcome", "trigger"],
  );
  readonly vaultRequests = this.series.counter("vault_requests_total", "Vault calls by operation and outcome.", [
    "operation",
    "outcome",
  ]);
  readonly vaultRequestSeconds = this.series.histogram(
    "vault_request_duration_seconds",
    "Vault call durations by operation.",
    ["operation"],
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15],
  );
  readonly vaultLogins = this.series.counter("vault_logins_total", "Vault logins (any auth method) by outcome.", [
    "outcome",
  ]);
  readonly vaultTokenRenewals = this.series.counter(
    "vault_token_renewals_total",
    "Vault token self-renewals by outcome.",
    ["outcome"],
  );
  readonly vaultTokenRevocations = this.series.counter(
    "vault_token_revocations_total",
    "Vault token revoke-self calls at shutdown, by outcome.",
    ["outcome"],
  );
  readonly vaultKeyDeletions = this.series.counter(
    "vault_key_deletions_total",
    "Deletions of the Vault-stored copy of a --csr-path key after import, by outcome.",
    ["outcome"],
  );
  readonly vaultUp = this.series.gauge(
    "vault_up",
    "1 when the last sys/health probe found Vault reachable, initialised and unsealed (active or standby), else 0.",
  );
  readonly vaultProbeSeconds = this.series.gauge(
    "vault_probe_duration_seconds",
    "Duration of the last sys/health probe, failed ones included.",
  );
  readonly leavesSigned = this.series.counter("leaves_signed_total", "Leaf certificates signed over the socket.");
  readonly leavesRefused = this.series.counter(
    "leaves_refused_total",
    "Leaf signing requests refused, by the policy rule that refused them.",
    ["reason"],
  );
  readonly limitHits = this.series.counter(
    "limit_hits_total",
    "Requests or streams refused or dropped because a resource limit was reached, by limit.",
    ["reason"],
  );
  readonly tokenReviews = this.series.counter(
    "token_reviews_total",
    "TokenReview calls made to the apiserver for the Istio CA listener, by outcome.",
    ["outcome"],
  );
  readonly signingWorkers = this.series.gauge(
    "signing_workers",
    "Signing worker threads running now: at most --signing-workers, started when leaves are asked for, stopped " +
      "after a quiet period (0: leaves are signed on the main thread).",
  );
  readonly signingLeaves = this.series.counter(
    "signing_leaves_total",
    "Workload leaves signed, by listener (socket, istio_ca) and thread (worker, or main: no workers, or a worker died).",
    ["listener", "thread"],
  );
  readonly signingWorkerRestarts = this.series.counter(
    "signing_worker_restarts_total",
    "Signing workers that died (and were replaced unless they kept dying).",
  );
  readonly sinkWrites = this.series.counter("cacerts_writes_total", "Writes of the cacerts directory, by outcome.", [
    "outcome",
  ]);
  readonly rootConfigMapsWritten = this.series.counter(
    "root_configmaps_written_total",
    "Writes of istio-ca-root-cert ConfigMaps (--root-configmaps) by this replica, by outcome: created, updated, " +
      "adopted, failed.",
    ["outcome"],
  );
  readonly rootConfigMapsUnowned = this.series.gauge(
    "root_configmaps_unowned",
    "Selected namespaces whose istio-ca-root-cert is not ours (no managed-by label) and is left alone; see --adopt.",
  );

  /**
   * `groups`: the series this mode exports (default all); the others still count but are not in the registry.
   * `processMetrics`: Node's process series (off for one-shot runs).
   * `vaultProbe`: the sys/health probe runs, so vault_up means something (off: the probe's series are left out
   * rather than exported as a constant 0 an alert would fire on).
   */
  constructor(opts: { processMetrics?: boolean; groups?: readonly MetricGroup[]; vaultProbe?: boolean } = {}) {
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
