// Metrics of the bootstrap issuer and agent, registered in the relay's prom-client Registry.
import { Counter, Gauge, type Registry } from "prom-client";

export class IssuerMetrics {
  readonly issued: Counter<"method">;
  readonly refused: Counter<"method" | "reason">;
  readonly tokenRotations: Counter;
  readonly previousTokenValidUntil: Gauge;
  readonly registeredClusters: Gauge;

  constructor(registry: Registry) {
    this.issued = new Counter({
      name: "iva_relay_issuer_issued_total",
      help: "Relay client certificates the issuer signed, by method (bootstrap, renew).",
      labelNames: ["method"] as const,
      registers: [registry],
    });
    this.refused = new Counter({
      name: "iva_relay_issuer_refused_total",
      help: "Issuer requests refused, by method and reason (the rule that failed).",
      labelNames: ["method", "reason"] as const,
      registers: [registry],
    });
    this.tokenRotations = new Counter({
      name: "iva_relay_issuer_token_rotations_total",
      help: "Times the issuer saw the identity token change in Vault KV.",
      registers: [registry],
    });
    this.previousTokenValidUntil = new Gauge({
      name: "iva_relay_issuer_previous_token_valid_until_seconds",
      help: "When the previous identity token stops being accepted (Unix seconds; 0 when none is).",
      registers: [registry],
    });
    this.registeredClusters = new Gauge({
      name: "iva_relay_issuer_registered_clusters",
      help: "Clusters with an identity token in Vault KV (0 with --shared-identity-token).",
      registers: [registry],
    });
  }
}

export class BootstrapAgentMetrics {
  readonly requests: Counter<"method" | "outcome">;

  constructor(registry: Registry) {
    this.requests = new Counter({
      name: "iva_relay_bootstrap_requests_total",
      help: "Calls the agent made to the issuer, by method (bootstrap, renew) and outcome (ok or a gRPC status).",
      labelNames: ["method", "outcome"] as const,
      registers: [registry],
    });
  }
}
