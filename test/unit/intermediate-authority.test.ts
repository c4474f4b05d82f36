// IntermediateAuthority's renewal, retry and outage behaviour on a fake clock, with a scripted Vault that signs with
// a test root. No server, no sleeping: time moves only when the test advances it.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  IntermediateAuthority,
  type IntermediateAuthorityOptions,
} from "../../src/authority/intermediate-authority.js";
import { splitPemCertificates } from "../../src/crypto/pem.js";
import { HttpStatusError } from "../../src/net/http-json.js";
import { createLogger } from "../../src/observability/logger.js";
import { AgentMetrics } from "../../src/observability/metrics.js";
import type { VaultClient } from "../../src/vault/client.js";
import type { KubernetesAuth } from "../../src/vault/kubernetes-auth.js";
import { FakeClock, until } from "./fake-clock.js";
import { UNIT_TTL_S, scriptedCa, unitAuthorityOptions } from "./scripted-vault.js";

const S = 1_000;
const TTL_S = UNIT_TTL_S;

const options = unitAuthorityOptions;

/** A Vault whose sign-intermediate answers from a test root while `up`, and 503 otherwise. */
async function setup(o: { random?: () => number; opts?: Partial<IntermediateAuthorityOptions> } = {}) {
  const clock = new FakeClock();
  const ca = await scriptedCa(clock.now());
  const state = { up: true, writes: 0, gate: undefined as Promise<void> | undefined };
  const vault = {
    async write(path: string, _token: string, body: { csr: string; ttl: string }) {
      state.writes++;
      await state.gate;
      if (!state.up) throw new HttpStatusError("vault", "POST", path, 503, ["sealed"]);
      return { data: await ca.sign(body.csr, clock.now(), parseInt(body.ttl, 10) * S, { ca: true }) };
    },
  } as unknown as VaultClient;
  const auth = { withToken: <T>(fn: (t: string) => Promise<T>) => fn("unit-token") } as unknown as KubernetesAuth;
  const metrics = new AgentMetrics({ processMetrics: false });
  const authority = new IntermediateAuthority(
    options(o.opts),
    vault,
    auth,
    createLogger({ level: "silent" }),
    metrics,
    clock,
    o.random ?? (() => 0.5),
  );
  return { clock, authority, state, metrics };
}

void describe("IntermediateAuthority (fake clock)", { timeout: 60_000 }, () => {
  void it("renews when a third of the lifetime remains, and not a moment before", async () => {
    const { clock, authority, state } = await setup();
    const first = await authority.rotate("start");
    assert.deepEqual(clock.pending(), [2_000 * S], "renewal at 2/3 of 3000 s (jitter 0)");
    await clock.advance(2_000 * S - 1);
    assert.equal(state.writes, 1, "no renewal before the point");
    await clock.advance(1);
    await until(() => authority.current()?.generation === 2, "the scheduled renewal");
    assert.notEqual(authority.current()!.serialHex, first.serialHex);
    assert.deepEqual(clock.pending(), [2_000 * S], "the next renewal is scheduled from the new certificate");
    authority.stop();
  });

  void it("jitters the renewal point by at most ±5% of the lifetime, both ways", async () => {
    const points: number[] = [];
    for (const r of [0, 0.999999, 0.25]) {
      const { clock, authority } = await setup({ random: () => r });
      await authority.rotate("start");
      points.push(clock.pending()[0]!);
      authority.stop();
    }
    const [early, late, between] = points as [number, number, number];
    const life = TTL_S * S;
    assert.equal(early, Math.round(life * (2 / 3 - 0.05)));
    assert.ok(Math.abs(late - life * (2 / 3 + 0.05)) <= 1, `late ${late}`);
    assert.ok(between > early && between < late);
  });

  void it("retries a failed renewal with backoff growing from 1 s to the 5 min cap", async () => {
    const { clock, authority, state } = await setup({ random: () => 0.999999 });
    await authority.rotate("start");
    state.up = false;
    await clock.fireNext(); // the scheduled renewal fails
    const delays: number[] = [];
    for (let i = 0; i < 12; i++) delays.push(await clock.fireNext());
    const expected = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300].map((s) => s * S);
    delays.forEach((d, i) => assert.ok(Math.abs(d - expected[i]!) <= 1, `retry ${i}: ${d} ms, want ${expected[i]}`));
    state.up = true;
    await clock.fireNext();
    await until(() => authority.current()?.generation === 2, "renewal once Vault is back");
    assert.equal(clock.pending().length, 1);
    assert.ok(clock.pending()[0]! > 1_900 * S, "back on the renewal schedule, backoff reset");
    authority.stop();
  });

  void it("shares one attempt between concurrent callers", async () => {
    const { authority, state } = await setup();
    let open!: () => void;
    state.gate = new Promise<void>((r) => (open = r));
    const calls = [authority.rotate("rpc"), authority.rotate("signal"), authority.rotate("config")];
    assert.equal(calls[0], calls[1]);
    assert.equal(calls[1], calls[2]);
    open();
    const bundles = await Promise.all(calls);
    assert.equal(state.writes, 1, "one Vault call for three callers");
    assert.equal(new Set(bundles.map((b) => b.generation)).size, 1);
    state.gate = undefined;
    await authority.rotate("rpc");
    assert.equal(state.writes, 2, "a later call makes a new attempt");
    authority.stop();
  });

  void it("keeps serving the current intermediate through an outage until it expires, then is not ready", async () => {
    const { clock, authority, state } = await setup();
    const first = await authority.rotate("start");
    state.up = false;
    await clock.advance(2_000 * S); // renewal fails
    assert.match(authority.lastError ?? "", /503/);
    await clock.advance(900 * S); // still failing, 100 s before expiry
    assert.equal(authority.current()?.serialHex, first.serialHex, "still served");
    assert.equal(authority.ready(), true);
    assert.equal(authority.ready(200 * S), false, "unready within the margin before expiry");
    await clock.advance(100 * S); // expiry
    assert.equal(authority.current(), undefined);
    assert.equal(authority.ready(), false);
    assert.match(authority.unavailableReason(), /expired at .* could not be renewed yet \(last error: .*503/);
    state.up = true;
    await clock.fireNext();
    await until(() => authority.ready(), "recovery after the outage");
    authority.stop();
  });

  void it("start() retries the first intermediate with backoff until Vault answers", async () => {
    const { clock, authority, state } = await setup({ random: () => 0.999999 });
    state.up = false;
    const started = authority.start();
    await until(() => clock.pending().length === 1, "first retry");
    assert.ok(Math.abs(clock.pending()[0]! - 1 * S) <= 1);
    await clock.fireNext();
    await until(() => clock.pending().length === 1 && state.writes === 2, "second retry");
    assert.ok(Math.abs(clock.pending()[0]! - 2 * S) <= 1);
    state.up = true;
    await clock.fireNext();
    assert.equal((await started).generation, 1);
    authority.stop();
  });

  void it("exports NotAfter, the last rotation and the renewal point, which failed retries leave in the past", async () => {
    const { clock, authority, state, metrics } = await setup();
    const gauge = async (name: string) =>
      (await metrics.registry.getSingleMetric(`istiod_vault_agent_intermediate_${name}_timestamp_seconds`)!.get())
        .values[0]!.value;
    const startedAt = clock.now();
    const first = await authority.rotate("start");
    assert.equal(await gauge("not_after"), first.notAfter.getTime() / 1000);
    assert.equal(await gauge("last_rotation"), startedAt / 1000);
    const renewAt = (startedAt + clock.pending()[0]!) / 1000;
    assert.equal(await gauge("next_renewal"), renewAt, "the scheduled renewal point");

    state.up = false;
    await clock.advance(2_000 * S + 10 * S);
    assert.ok(state.writes > 2, "renewal was attempted and retried");
    assert.equal(await gauge("next_renewal"), renewAt, "retries do not move the point: it is now overdue");
    assert.ok((await gauge("next_renewal")) < clock.now() / 1000);
    assert.equal(await gauge("last_rotation"), startedAt / 1000);

    state.up = true;
    await clock.advance(300 * S);
    await until(() => authority.current()?.generation === 2, "renewal once Vault is back");
    assert.ok((await gauge("next_renewal")) > clock.now() / 1000, "a new point in the future");
    assert.ok((await gauge("last_rotation")) > startedAt / 1000);
    authority.stop();
  });

  void it("republishRoots serves new extra roots with the same intermediate, as a new generation to subscribers", async () => {
    const { authority, state, metrics } = await setup();
    const first = await authority.rotate("start");
    const seen: { generation: number; roots: number; serial: string }[] = [];
    authority.subscribe((b) => seen.push({ generation: b.generation, roots: b.rootsPem.length, serial: b.serialHex }));
    const extra = (await scriptedCa(Date.now())).rootPem;
    authority.reconfigure(options({ extraRootsPem: [extra] }));
    const next = (await authority.republishRoots())!;
    assert.equal(state.writes, 1, "no Vault signing");
    assert.equal(next.serialHex, first.serialHex, "the same intermediate");
    assert.equal(next.generation, first.generation + 1);
    assert.deepEqual(next.rootsPem, [first.rootsPem[0], ...splitPemCertificates(extra)]);
    assert.deepEqual(seen.slice(1), [{ generation: 2, roots: 2, serial: first.serialHex }]);
    assert.equal(await authority.republishRoots(), next, "unchanged roots publish nothing");
    authority.reconfigure(options({ extraRootsPem: [] }));
    assert.deepEqual((await authority.republishRoots())!.rootsPem, first.rootsPem, "the signing root always stays");
    assert.equal(seen.length, 3);
    assert.match(await metrics.registry.metrics(), /intermediate_generation 3/);
    authority.stop();
  });
});
