// Metrics of the bootstrap issuer and agent, registered in the relay's prom-client Registry.
import { seriesClass, type SeriesTable } from "../../observability/metrics.js";

const ISSUER_SERIES = {
  issued: {
    type: "counter",
    name: "relay_issuer_issued_total",
    help: "Relay client certificates the issuer signed, by method (bootstrap, renew).",
    labels: ["method"],
  },
  refused: {
    type: "counter",
    name: "relay_issuer_refused_total",
    help: "Issuer requests refused, by method and reason (the rule that failed).",
    labels: ["method", "reason"],
  },
  tokenRotations: {
    type: "counter",
    name: "relay_issuer_token_rotations_total",
    help: "Times the issuer saw the identity token change in Vault KV.",
  },
  previousTokenValidUntil: {
    type: "gauge",
    name: "relay_issuer_previous_token_valid_until_timestamp_seconds",
    help: "When the previous identity token stops being accepted (Unix seconds; 0 when none is).",
  },
  registeredClusters: {
    type: "gauge",
    name: "relay_issuer_registered_clusters",
    help: "Clusters with an identity token in Vault KV (0 with --shared-identity-token).",
  },
} as const satisfies SeriesTable;

const BOOTSTRAP_AGENT_SERIES = {
  requests: {
    type: "counter",
    name: "relay_bootstrap_requests_total",
    help: "Calls the agent made to the issuer, by method (bootstrap, renew) and outcome (ok or a gRPC status).",
    labels: ["method", "outcome"],
  },
} as const satisfies SeriesTable;

export class IssuerMetrics extends seriesClass(ISSUER_SERIES) {}

export class BootstrapAgentMetrics extends seriesClass(BOOTSTRAP_AGENT_SERIES) {}
