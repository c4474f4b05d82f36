// Metrics of the bootstrap issuer and agent, registered in the relay's prom-client Registry.
import type { Counter, Gauge, Registry } from "prom-client";
import { seriesIn } from "../../observability/metrics.js";

export class IssuerMetrics {
  readonly issued: Counter<"method">;
  readonly refused: Counter<"method" | "reason">;
  readonly tokenRotations: Counter;
  readonly previousTokenValidUntil: Gauge;
  readonly registeredClusters: Gauge;

  constructor(registry: Registry) {
    const series = seriesIn(registry);
    this.issued = series.counter(
      "relay_issuer_issued_total",
      "Relay client certificates the issuer signed, by method (bootstrap, renew).",
      ["method"],
    );
    this.refused = series.counter(
      "relay_issuer_refused_total",
      "Issuer requests refused, by method and reason (the rule that failed).",
      ["method", "reason"],
    );
    this.tokenRotations = series.counter(
      "relay_issuer_token_rotations_total",
      "Times the issuer saw the identity token change in Vault KV.",
    );
    this.previousTokenValidUntil = series.gauge(
      "relay_issuer_previous_token_valid_until_timestamp_seconds",
      "When the previous identity token stops being accepted (Unix seconds; 0 when none is).",
    );
    this.registeredClusters = series.gauge(
      "relay_issuer_registered_clusters",
      "Clusters with an identity token in Vault KV (0 with --shared-identity-token).",
    );
  }
}

export class BootstrapAgentMetrics {
  readonly requests: Counter<"method" | "outcome">;

  constructor(registry: Registry) {
    const series = seriesIn(registry);
    this.requests = series.counter(
      "relay_bootstrap_requests_total",
      "Calls the agent made to the issuer, by method (bootstrap, renew) and outcome (ok or a gRPC status).",
      ["method", "outcome"],
    );
  }
}
