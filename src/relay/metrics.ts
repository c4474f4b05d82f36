// Relay metrics, registered beside the agent's Vault metrics in one prom-client Registry: time left per Secret,
// rotations and failures per Secret, and Secret writes by operation.
import { Counter, Gauge, type Registry } from "prom-client";

export class RelayMetrics {
  private readonly expiries = new Map<string, number>();

  readonly notAfter: Gauge<"secret">;
  readonly secondsToExpiry: Gauge<"secret">;
  readonly rotations: Counter<"secret" | "trigger">;
  readonly failures: Counter<"secret" | "reason">;
  readonly writes: Counter<"secret" | "operation">;

  constructor(registry: Registry, now: () => number = Date.now) {
    const expiries = this.expiries;
    this.notAfter = new Gauge({
      name: "iva_relay_secret_not_after_seconds",
      help: "NotAfter of the certificate held in each relay Secret (Unix seconds).",
      labelNames: ["secret"] as const,
      registers: [registry],
    });
    this.secondsToExpiry = new Gauge({
      name: "iva_relay_secret_seconds_to_expiry",
      help: "Seconds until the certificate held in each relay Secret expires.",
      labelNames: ["secret"] as const,
      registers: [registry],
      collect() {
        for (const [secret, at] of expiries) this.set({ secret }, Math.round((at - now()) / 1000));
      },
    });
    this.rotations = new Counter({
      name: "iva_relay_rotations_total",
      help: "New certificates (or identity token / root copies) written into relay Secrets, by Secret and trigger.",
      labelNames: ["secret", "trigger"] as const,
      registers: [registry],
    });
    this.failures = new Counter({
      name: "iva_relay_failures_total",
      help: "Failed reconciliations of a relay Secret, by Secret and reason.",
      labelNames: ["secret", "reason"] as const,
      registers: [registry],
    });
    this.writes = new Counter({
      name: "iva_relay_secret_writes_total",
      help: "Kubernetes Secret writes by Secret and operation (created, updated, adopted).",
      labelNames: ["secret", "operation"] as const,
      registers: [registry],
    });
  }

  /** Records the NotAfter of the certificate a Secret now holds. */
  held(secret: string, notAfter: Date): void {
    this.expiries.set(secret, notAfter.getTime());
    this.notAfter.set({ secret }, Math.round(notAfter.getTime() / 1000));
  }
}
