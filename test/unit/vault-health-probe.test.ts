// The sys/health probe's meaning of each answer, its gauges, and that it logs changes of state only.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import pino from "pino";
import { Writable } from "node:stream";
import { HttpTransportError } from "../../src/net/http-json.js";
import { AgentMetrics } from "../../src/observability/metrics.js";
import type { VaultClient } from "../../src/vault/client.js";
import { VaultHealthProbe, healthState } from "../../src/vault/health-probe.js";
import { FakeClock } from "./fake-clock.js";

void describe("Vault health probe", () => {
  void it("up for active and standby answers, down for sealed, uninitialised and anything else", () => {
    const unsealed = { initialized: true, sealed: false };
    for (const status of [200, 429, 472, 473]) assert.equal(healthState(status, unsealed).up, true, `HTTP ${status}`);
    assert.deepEqual(healthState(503, { initialized: true, sealed: true }), {
      up: false,
      reason: "Vault is sealed (HTTP 503)",
    });
    assert.equal(healthState(501, { initialized: false, sealed: true }).up, false);
    assert.equal(healthState(500, undefined).up, false);
    assert.equal(healthState(200, { initialized: true, sealed: true }).up, false, "a body saying sealed wins");
  });

  void it("sets vault_up and the duration every interval, and logs only transitions", async () => {
    const clock = new FakeClock(Date.UTC(2026, 0, 1), 0);
    const lines: { msg: string }[] = [];
    const log = pino(
      { level: "debug" },
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          lines.push(JSON.parse(chunk.toString()) as { msg: string });
          cb();
        },
      }),
    );
    let answer: () => Promise<{ status: number; initialized: boolean; sealed: boolean; version: string }> = () =>
      Promise.resolve({ status: 200, initialized: true, sealed: false, version: "2.4.0" });
    let calls = 0;
    const client = {
      health: () => {
        calls++;
        return answer();
      },
    } as unknown as VaultClient;
    const metrics = new AgentMetrics({ processMetrics: false, vaultProbe: true });
    const probe = new VaultHealthProbe({
      intervalMs: 15_000,
      client: () => client,
      up: metrics.vaultUp,
      durationSeconds: metrics.vaultProbeSeconds,
      log,
      clock,
    });
    const up = async () => (await metrics.vaultUp.get()).values[0]!.value;
    probe.start();
    await clock.advance(0);
    assert.equal(calls, 1, "probes at once");
    assert.equal(await up(), 1);
    for (let i = 0; i < 3; i++) await clock.advance(15_000);
    assert.equal(calls, 4, "then every interval");
    answer = () => Promise.reject(new HttpTransportError("vault", "GET", "/v1/sys/health", "ECONNREFUSED", "refused"));
    for (let i = 0; i < 3; i++) await clock.advance(15_000);
    assert.equal(await up(), 0);
    answer = () => Promise.resolve({ status: 503, initialized: true, sealed: true, version: "2.4.0" });
    await clock.advance(15_000);
    assert.equal(await up(), 0);
    answer = () => Promise.resolve({ status: 429, initialized: true, sealed: false, version: "2.4.0" });
    await clock.advance(15_000);
    assert.equal(await up(), 1);
    assert.ok((await metrics.vaultProbeSeconds.get()).values[0]!.value >= 0);
    assert.deepEqual(
      lines.map((l) => l.msg),
      ["Vault is reachable", "Vault became unreachable", "Vault is reachable"],
      "one line per change, none per probe",
    );
    probe.stop();
    const before = calls;
    await clock.advance(60_000);
    assert.equal(calls, before, "no probe after stop");
  });
});
