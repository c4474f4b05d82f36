// Relay metrics, registered beside the agent's Vault metrics in one prom-client Registry: NotAfter per Secret (time
// left is `<that> - time()` in PromQL), rotations and failures per Secret, and Secret writes by operation.
import type { Counter, Gauge, Registry } from "prom-client";
import { seriesIn } from "../observability/metrics.js";

export class RelayMetrics {
  readonly notAfter: Gauge<"secret">;
  readonly rotations: Counter<"secret" | "trigger">;
  readonly failures: Counter<"secret" | "reason">;
  readonly writes: Counter<"secret" | "operation">;

  constructor(registry: Registry) {
    const series = seriesIn(registry);
    this.notAfter = series.gauge(
      "relay_secret_not_after_timestamp_seconds",
      "NotAfter of the certificate held in each relay Secret (Unix seconds).",
      ["secret"],
    );
    this.rotations = series.counter(
      "relay_rotations_total",
      "New certificates (or identity token / root copies) written into relay Secrets, by Secret and trigger.",
      ["secret", "trigger"],
    );
    this.failures = series.counter(
      "relay_failures_total",
      "Failed reconciliations of a relay Secret, by Secret and reason.",
      ["secret", "reason"],
    );
    this.writes = series.counter(
      "relay_secret_writes_total",
      "Kubernetes Secret writes by Secret and operation (created, updated, adopted).",
      ["secret", "operation"],
    );
  }

  /** Records the NotAfter of the certificate a Secret now holds. */
  held(secret: string, notAfter: Date): void {
    this.notAfter.set({ secret }, Math.round(notAfter.getTime() / 1000));
  }
}
