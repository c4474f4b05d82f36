// Prometheus metrics. One registry per agent instance (tests run several in one process), holding only the series of
// the mode that runs: the sidecar all groups, the relay its Vault calls (and the issuer's intermediate), a bootstrap
// agent none of them (its relay series register beside them).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** Series groups, by name prefix: Vault calls, the served intermediate, and the sidecar's socket/cacerts serving. */
export type MetricGroup = "vault" | "intermediate" | "serve";
export const ALL_METRIC_GROUPS: readonly MetricGroup[] = ["vault", "intermediate", "serve"];

const GROUP_OF: Record<string, MetricGroup> = {
  iva_intermediate_: "intermediate",
  iva_vault_: "vault",
  iva_leaves_: "serve",
  iva_limit_hits_: "serve",
  iva_token_reviews_: "serve",
  iva_cacerts_: "serve",
};

/** Makes series in `registry` from a name, help and label names; everything else is prom-client's default. */
export function seriesIn(registry: Registry) {
  return {
    counter: <L extends string = string>(name: string, help: string, labelNames: readonly L[] = []) =>
      new Counter<L>({ name, help, labelNames, registers: [registry] }),
    gauge: <L extends string = string>(
      name: string,
      help: string,
      labelNames: readonly L[] = [],
      collect?: (this: Gauge<L>) => void,
    ) => new Gauge<L>({ name, help, labelNames, registers: [registry], ...(collect && { collect }) }),
  };
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly series = seriesIn(this.registry);

  readonly intermediateNotAfter = this.series.gauge(
    "iva_intermediate_not_after_seconds",
    "NotAfter of the served intermediate CA certificate (Unix seconds).",
  );
  readonly intermediateSecondsToExpiry = this.series.gauge(
    "iva_intermediate_seconds_to_expiry",
    "Seconds until the served intermediate CA certificate expires.",
  );
  readonly intermediateGeneration = this.series.gauge(
    "iva_intermediate_generation",
    "Generation of the served intermediate (1 after start, +1 per rotation).",
  );
  readonly rotations = this.series.counter(
    "iva_intermediate_rotations_total",
    "Attempts to obtain a new intermediate, by outcome.",
    ["outcome", "trigger"],
  );
  readonly vaultRequests = this.series.counter("iva_vault_requests_total", "Vault calls by operation and outcome.", [
    "operation",
    "outcome",
  ]);
  readonly vaultRequestSeconds = new Histogram({
    name: "iva_vault_request_duration_seconds",
    help: "Vault call durations by operation.",
    labelNames: ["operation"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15],
    registers: [this.registry],
  });
  readonly vaultLogins = this.series.counter("iva_vault_logins_total", "Kubernetes-auth logins by outcome.", [
    "outcome",
  ]);
  readonly vaultTokenRenewals = this.series.counter(
    "iva_vault_token_renewals_total",
    "Vault token self-renewals by outcome.",
    ["outcome"],
  );
  readonly vaultTokenRevocations = this.series.counter(
    "iva_vault_token_revocations_total",
    "Vault token revoke-self calls at shutdown, by outcome.",
    ["outcome"],
  );
  readonly vaultKeyDeletions = this.series.counter(
    "iva_vault_key_deletions_total",
    "Deletions of the Vault-stored copy of a --csr-path key after import, by outcome.",
    ["outcome"],
  );
  readonly leavesSigned = this.series.counter("iva_leaves_signed_total", "Leaf certificates signed over the socket.");
  readonly leavesRefused = this.series.counter(
    "iva_leaves_refused_total",
    "Leaf signing requests refused, by the policy rule that refused them.",
    ["reason"],
  );
  readonly limitHits = this.series.counter(
    "iva_limit_hits_total",
    "Requests or streams refused or dropped because a resource limit was reached, by limit.",
    ["reason"],
  );
  readonly tokenReviews = this.series.counter(
    "iva_token_reviews_total",
    "TokenReview calls made to the apiserver for the Istio CA listener, by outcome.",
    ["outcome"],
  );
  readonly sinkWrites = this.series.counter(
    "iva_cacerts_writes_total",
    "Writes of the cacerts directory, by outcome.",
    ["outcome"],
  );

  /**
   * `groups`: the series this mode exports (default all); the others still count but are not in the registry.
   * `processMetrics`: Node's process series (off for one-shot runs).
   */
  constructor(opts: { processMetrics?: boolean; groups?: readonly MetricGroup[] } = {}) {
    const groups = opts.groups ?? ALL_METRIC_GROUPS;
    for (const metric of this.registry.getMetricsAsArray()) {
      const name = metric.name;
      const prefix = Object.keys(GROUP_OF).find((p) => name.startsWith(p));
      if (prefix === undefined) throw new Error(`metric ${name} belongs to no group`);
      if (!groups.includes(GROUP_OF[prefix]!)) this.registry.removeSingleMetric(name);
    }
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: "iva_" });
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
