// A cheap, unauthenticated reachability probe of Vault (GET sys/health every interval) so "Vault is unreachable"
// shows within one interval on /metrics, instead of at the next renewal hours later. It uses the agent's own Vault
// client (same address, TLS settings, timeouts and connection pool). Only changes of state are logged.
import type { Logger } from "pino";
import type { Gauge } from "prom-client";
import { systemClock, type Clock, type Timer } from "../util/clock.js";
import type { VaultClient } from "./client.js";

export interface VaultProbeState {
  up: boolean;
  /** Why Vault is not usable, for the log (no secrets: sys/health carries none). */
  reason: string;
}

/**
 * What a sys/health answer means for this agent: up when initialised and unsealed, whether active (200) or a standby
 * that forwards requests (429 standby, 473 performance standby, 472 DR secondary). 501 (not initialised), 503 (sealed)
 * and anything else are down.
 */
export function healthState(
  status: number,
  body: { initialized?: unknown; sealed?: unknown } | undefined,
): VaultProbeState {
  if (status === 501) return { up: false, reason: "Vault is not initialised (HTTP 501)" };
  if (status === 503) return { up: false, reason: "Vault is sealed (HTTP 503)" };
  if (![200, 429, 472, 473].includes(status)) return { up: false, reason: `sys/health answered HTTP ${status}` };
  if (body?.sealed === true) return { up: false, reason: `Vault is sealed (HTTP ${status})` };
  if (body?.initialized === false) return { up: false, reason: `Vault is not initialised (HTTP ${status})` };
  return { up: true, reason: status === 200 ? "active" : `standby (HTTP ${status})` };
}

export interface VaultProbeOptions {
  intervalMs: number;
  /** The client in use now (the agent replaces it when the Vault settings change). */
  client: () => VaultClient;
  up: Gauge;
  durationSeconds: Gauge;
  log: Logger;
  clock?: Clock;
}

export class VaultHealthProbe {
  private timer: Timer | undefined;
  private stopped = false;
  private last: boolean | undefined;
  private readonly clock: Clock;

  constructor(private readonly opts: VaultProbeOptions) {
    this.clock = opts.clock ?? systemClock;
  }

  /** Probes now, then every interval (each probe starts after the previous one ended: never two at once). */
  start(): void {
    if (this.opts.intervalMs <= 0) return;
    void this.tick();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
  }

  /** One probe: sets the gauges, logs a change of state, and returns the state. */
  async probe(): Promise<VaultProbeState> {
    const client = this.opts.client();
    const started = performance.now();
    let state: VaultProbeState;
    try {
      const h = await client.health();
      state = healthState(h.status, h);
    } catch (err) {
      state = { up: false, reason: (err as Error).message };
    }
    // A probe through a client replaced meanwhile (closed under it) says nothing about the Vault in use.
    if (client !== this.opts.client() || this.stopped) return state;
    this.opts.durationSeconds.set((performance.now() - started) / 1000);
    this.opts.up.set(state.up ? 1 : 0);
    if (state.up !== this.last) {
      if (state.up) this.opts.log.info({ vault: state.reason }, "Vault is reachable");
      else if (this.last === undefined) this.opts.log.warn({ err: state.reason }, "Vault is not reachable");
      else this.opts.log.warn({ err: state.reason }, "Vault became unreachable");
      this.last = state.up;
    }
    return state;
  }

  private async tick(): Promise<void> {
    await this.probe();
    if (!this.stopped) this.timer = this.clock.after(this.opts.intervalMs, () => void this.tick());
  }
}
