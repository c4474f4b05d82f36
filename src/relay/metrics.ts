// Relay metrics, registered beside the agent's Vault metrics in one prom-client Registry: NotAfter per Secret (time
// left is `<that> - time()` in PromQL), rotations and failures per Secret, and Secret writes by operation.
import { seriesClass, type SeriesTable } from "../observability/metrics.js";

const RELAY_SERIES = {
  notAfter: {
    type: "gauge",
    name: "relay_secret_not_after_timestamp_seconds",
    help: "NotAfter of the certificate held in each relay Secret (Unix seconds).",
    labels: ["secret"],
  },
  rotations: {
    type: "counter",
    name: "relay_rotations_total",
    help: "New certificates (or identity token / root copies) written into relay Secrets, by Secret and trigger.",
    labels: ["secret", "trigger"],
  },
  failures: {
    type: "counter",
    name: "relay_failures_total",
    help: "Failed reconciliations of a relay Secret, by Secret and reason.",
    labels: ["secret", "reason"],
  },
  writes: {
    type: "counter",
    name: "relay_secret_writes_total",
    help: "Kubernetes Secret writes by Secret and operation (created, updated, adopted).",
    labels: ["secret", "operation"],
  },
} as const satisfies SeriesTable;

export class RelayMetrics extends seriesClass(RELAY_SERIES) {
  /** Records the NotAfter of the certificate a Secret now holds. */
  held(secret: string, notAfter: Date): void {
    this.notAfter.set({ secret }, Math.round(notAfter.getTime() / 1000));
  }
}
