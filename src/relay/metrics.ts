// Relay metrics, registered beside the agent's Vault metrics in one prom-client Registry: time left per Secret,
// rotations and failures per Secret, and Secret writes by operation.
import type { Counter, Gauge, Registry } from "prom-client";
import { seriesIn } from "../observability/metrics.js";

export class RelayMetrics {
  private readonly expiries = new Map<string, number>();

  readonly notAfter: Gauge<"secret">;
  readonly secondsToExpiry: Gauge<"secret">;
  readonly rotations: Counter<"secret" | "trigger">;
  readonly failures: Counter<"secret" | "reason">;
  readonly writes: Counter<"secret" | "operation">;

  constructor(registry: Registry, now: () => number = Date.now) {
    const series = seriesIn(registry);
    const expiries = this.expiries;
    this.notAfter = series.gauge(
      "iva_relay_secret_not_after_seconds",
      "NotAfter of the certificate held in each relay Secret (Unix seconds).",
      ["secret"],
    );
    this.secondsToExpiry = series.gauge(
      "iva_relay_secret_seconds_to_expiry",
      "Seconds until the certificate held in each relay Secret expires.",
      ["secret"],
      function () {
        for (const [secret, at] of expiries) this.set({ secret }, Math.round((at - now()) / 1000));
      },
    );
    this.rotations = series.counter(
      "iva_relay_rotations_total",
      "New certificates (or identity token / root copies) written into relay Secrets, by Secret and trigger.",
      ["secret", "trigger"],
    );
    this.failures = series.counter(
      "iva_relay_failures_total",
      "Failed reconciliations of a relay Secret, by Secret and reason.",
      ["secret", "reason"],
    );
    this.writes = series.counter(
      "iva_relay_secret_writes_total",
      "Kubernetes Secret writes by Secret and operation (created, updated, adopted).",
      ["secret", "operation"],
    );
  }

  /** Records the NotAfter of the certificate a Secret now holds. */
  held(secret: string, notAfter: Date): void {
    this.expiries.set(secret, notAfter.getTime());
    this.notAfter.set({ secret }, Math.round(notAfter.getTime() / 1000));
  }
}
