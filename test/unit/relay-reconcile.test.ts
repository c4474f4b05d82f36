// The relay's certificate reconcilers on a fake clock: Relay (Vault-backed) and BootstrapAgent (issuer-backed) keep a
// valid stored certificate, renew it at its renewal point, and replace an unusable one (the bootstrap agent falls
// back to its identity token). Kubernetes, Vault and the issuer are scripted stand-ins; no server runs.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { Registry } from "prom-client";
import type { KubeClient } from "../../src/kube/client.js";
import { HttpStatusError } from "../../src/net/http-json.js";
import { createLogger } from "../../src/observability/logger.js";
import { BootstrapAgent } from "../../src/relay/bootstrap/agent.js";
import { IssuerCallError, type IssuerClient } from "../../src/relay/bootstrap/issuer-client.js";
import { BootstrapAgentMetrics } from "../../src/relay/bootstrap/metrics.js";
import { DEFAULT_RELAY_CONFIG, type RelayConfig } from "../../src/relay/config.js";
import { RelayMetrics } from "../../src/relay/metrics.js";
import { Relay } from "../../src/relay/relay.js";
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE, SecretStore, type KubeSecret } from "../../src/kube/secret-store.js";
import type { RelayVault } from "../../src/relay/vault.js";
import { FakeClock, until } from "./fake-clock.js";
import { scriptedCa, type ScriptedCa } from "./scripted-vault.js";

const S = 1_000;
const otherKeyPem = () =>
  generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }) as string;
const TTL_S = 3_000;
const NS = "relay-ns";
const log = createLogger({ level: process.env.IVA_UNIT_LOG_LEVEL ?? "silent" });

/** An apiserver that holds Secrets in memory (GET, POST, PUT with resourceVersion), and nothing else. */
class MemoryKube {
  readonly secrets = new Map<string, KubeSecret>();
  private rv = 1;

  client(): KubeClient {
    return this as unknown as KubeClient;
  }

  put(name: string, data: Record<string, string>, managed = true): void {
    this.secrets.set(name, {
      metadata: {
        name,
        namespace: NS,
        resourceVersion: String(this.rv++),
        labels: managed ? { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE } : {},
      },
      type: "Opaque",
      data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString("base64")])),
    });
  }

  data(name: string): Record<string, string> {
    return SecretStore.decode(this.secrets.get(name));
  }

  request(method: string, path: string, body?: unknown, opts: { acceptStatuses?: readonly number[] } = {}) {
    const name = decodeURIComponent(path.split("/secrets/")[1] ?? "");
    const fail = (status: number) =>
      opts.acceptStatuses?.includes(status)
        ? Promise.resolve({ status, body: undefined })
        : Promise.reject(new HttpStatusError("kubernetes", method, path, status, []));
    if (method === "GET") {
      const s = this.secrets.get(name);
      return s ? Promise.resolve({ status: 200, body: structuredClone(s) }) : fail(404);
    }
    const s = structuredClone(body) as KubeSecret;
    const key = s.metadata.name;
    if (method === "POST" && this.secrets.has(key)) return fail(409);
    if (method === "PUT" && this.secrets.get(key)?.metadata.resourceVersion !== s.metadata.resourceVersion)
      return fail(409);
    s.metadata.resourceVersion = String(this.rv++);
    this.secrets.set(key, s);
    return Promise.resolve({ status: method === "POST" ? 201 : 200, body: s });
  }
}

const config = (): RelayConfig => ({
  ...DEFAULT_RELAY_CONFIG,
  role: "agent",
  cluster: "cluster-1",
  ttlSeconds: TTL_S,
  bootstrap: { ...DEFAULT_RELAY_CONFIG.bootstrap, address: "mgmt:9900" },
});

const CLIENT = "relay-client-tls-secret";

/** Vault's relay PKI mount, signing leaves from a test root with the fake clock's dates. */
function scriptedRelayVault(ca: ScriptedCa, clock: FakeClock) {
  const calls = { signLeaf: 0 };
  const vault = {
    rootPem: () => Promise.resolve(ca.rootPem),
    async signLeaf(_role: string, csr: string, dnsNames: readonly string[], ttlSeconds: number) {
      calls.signLeaf++;
      return { data: await ca.sign(csr, clock.now(), ttlSeconds * S, { dnsNames: [...dnsNames] }), warnings: [] };
    },
  } as unknown as RelayVault;
  return { vault, calls };
}

/** What both reconcilers take besides their issuer: the Secrets, relay metrics, logger, clock and jitter. */
function reconcilerDeps(kube: MemoryKube, clock: FakeClock, registry = new Registry()) {
  return {
    secrets: new SecretStore(kube.client(), NS, false),
    metrics: new RelayMetrics(registry),
    log,
    clock,
    random: () => 0.5,
  };
}

interface Reconciler {
  start(): Promise<void>;
  stop(): void;
  ready(): boolean;
}

/**
 * Starts `reconciler` on an empty Secret: one certificate is issued and stored, kept until 2/3 of its life, then
 * renewed. `issued` counts the issuer's calls. Returns the first certificate; the reconciler is left running.
 */
async function assertIssuesThenRenews(
  h: { clock: FakeClock; kube: MemoryKube; issued: () => number },
  reconciler: Reconciler,
): Promise<string> {
  await reconciler.start();
  assert.equal(h.issued(), 1);
  const first = h.kube.data(CLIENT)["tls.crt"];
  assert.ok(first);
  assert.ok(reconciler.ready());
  await h.clock.advance(2_000 * S - 1);
  assert.equal(h.issued(), 1, "kept before 2/3 of its life");
  await h.clock.advance(1);
  await until(() => h.issued() === 2 && h.kube.data(CLIENT)["tls.crt"] !== first, "the renewal");
  return first;
}

/** Starts and stops one reconciler, runs `between`, then starts a second one on the same Secrets and returns it. */
async function restarted<R extends Reconciler>(make: () => R, between: () => unknown): Promise<R> {
  const a = make();
  await a.start();
  a.stop();
  await between();
  const b = make();
  await b.start();
  return b;
}

async function relaySetup() {
  const clock = new FakeClock();
  const ca = await scriptedCa(clock.now());
  const kube = new MemoryKube();
  const { vault, calls } = scriptedRelayVault(ca, clock);
  const make = () => new Relay(config(), { vault, ...reconcilerDeps(kube, clock) });
  return { clock, kube, calls, make, issued: () => calls.signLeaf };
}

void describe("Relay certificate reconcile (fake clock)", { timeout: 60_000 }, () => {
  void it("issues a missing certificate, keeps it until the renewal point, then renews it", async () => {
    const h = await relaySetup();
    const relay = h.make();
    await assertIssuesThenRenews(h, relay);
    relay.stop();
  });

  void it("a restarted relay keeps the valid certificate it finds in the Secret", async () => {
    const { clock, kube, calls, make } = await relaySetup();
    const b = await restarted(make, () => clock.advance(1_000 * S));
    const kept = kube.data(CLIENT)["tls.crt"];
    assert.equal(calls.signLeaf, 1, "nothing issued at restart");
    assert.equal(kube.data(CLIENT)["tls.crt"], kept);
    assert.ok(b.ready());
    b.stop();
  });

  void it("replaces a stored certificate that is unusable (key no longer matches)", async () => {
    const { kube, calls, make } = await relaySetup();
    let data: Record<string, string> = {};
    const b = await restarted(make, () => {
      data = kube.data(CLIENT);
      kube.put(CLIENT, { ...data, "tls.key": otherKeyPem() });
    });
    assert.equal(calls.signLeaf, 2, "a new certificate and key replace the broken pair");
    assert.notEqual(kube.data(CLIENT)["tls.crt"], data["tls.crt"]);
    b.stop();
  });

  void it("rotateNow renews a valid certificate at once", async () => {
    const { kube, calls, make } = await relaySetup();
    const relay = make();
    await relay.start();
    const first = kube.data(CLIENT)["tls.crt"];
    relay.rotateNow();
    await until(() => calls.signLeaf === 2 && kube.data(CLIENT)["tls.crt"] !== first, "the forced renewal");
    relay.stop();
  });
});

/** The management relay's issuer, signing from a test root; `up` false makes every call fail UNAVAILABLE. */
function scriptedIssuer(ca: ScriptedCa, clock: FakeClock) {
  const state = {
    up: true,
    calls: [] as { method: "bootstrap" | "renew"; token?: string; certPem?: string }[],
    /** Answer the next renew with this refusal detail (e.g. "bootstrap_too_old: ..."). */
    refuseRenew: undefined as string | undefined,
  };
  const answer = async (csr: string) => {
    const signed = await ca.sign(csr, clock.now(), TTL_S * S, { dnsNames: ["cluster-1"] });
    return { certChainPem: [signed.certificate, ca.rootPem], notAfterUnix: 0 };
  };
  const client = {
    bootstrap(_root: string, csr: string, token: string) {
      state.calls.push({ method: "bootstrap", token });
      if (!state.up) return Promise.reject(new IssuerCallError("bootstrap", 14, "down"));
      return answer(csr);
    },
    renew(_root: string, certPem: string, _key: string, csr: string) {
      state.calls.push({ method: "renew", certPem });
      if (!state.up) return Promise.reject(new IssuerCallError("renew", 14, "down"));
      const refusal = state.refuseRenew;
      state.refuseRenew = undefined;
      if (refusal) return Promise.reject(new IssuerCallError("renew", 7, refusal));
      return answer(csr);
    },
  } as unknown as IssuerClient;
  return { client, state };
}

async function bootstrapSetup() {
  const clock = new FakeClock();
  const ca = await scriptedCa(clock.now());
  const kube = new MemoryKube();
  kube.put("relay-root-tls-secret", { "ca.crt": ca.rootPem });
  kube.put("relay-identity-token-secret", { token: "identity-token-1" });
  const { client, state } = scriptedIssuer(ca, clock);
  const make = () => {
    const registry = new Registry();
    return new BootstrapAgent(config(), {
      ...reconcilerDeps(kube, clock, registry),
      client,
      agentMetrics: new BootstrapAgentMetrics(registry),
    });
  };
  return { clock, kube, state, make, issued: () => state.calls.length };
}

void describe("BootstrapAgent reconcile (fake clock)", { timeout: 60_000 }, () => {
  void it("bootstraps with the identity token, then renews over mTLS at the renewal point", async () => {
    const h = await bootstrapSetup();
    const agent = h.make();
    const first = await assertIssuesThenRenews(h, agent);
    assert.deepEqual(h.state.calls[0], { method: "bootstrap", token: "identity-token-1" });
    assert.equal(h.state.calls[1]!.method, "renew", "renewed with the held certificate, not the token");
    assert.equal(h.state.calls[1]!.certPem, first);
    agent.stop();
  });

  void it("a restarted agent keeps the valid certificate in the Secret and calls nobody", async () => {
    const { kube, state, make } = await bootstrapSetup();
    // The token is gone before the restart: it must not be needed.
    const b = await restarted(make, () => kube.put("relay-identity-token-secret", {}));
    assert.equal(state.calls.length, 1);
    assert.ok(b.ready());
    b.stop();
  });

  void it("falls back to bootstrap when the stored certificate expired during an outage", async () => {
    const { clock, state, make } = await bootstrapSetup();
    const agent = make();
    await agent.start();
    state.up = false;
    await clock.advance(TTL_S * S - 1); // renewals fail while the certificate is still valid: mTLS each time
    assert.ok(state.calls.length > 3);
    assert.ok(state.calls.slice(1).every((c) => c.method === "renew"));
    assert.equal(agent.ready(), true);
    state.calls.length = 0;
    await clock.advance(400 * S); // expired: an expired certificate cannot authenticate, the token is used
    assert.equal(agent.ready(), false);
    assert.ok(state.calls.length > 0);
    assert.ok(state.calls.every((c) => c.method === "bootstrap"));
    state.up = true;
    state.calls.length = 0;
    await clock.fireNext();
    await until(() => agent.ready(), "recovery");
    assert.deepEqual(
      state.calls.map((c) => c.method),
      ["bootstrap"],
    );
    agent.stop();
  });

  void it("falls back to bootstrap when the Secret holds a certificate from another root", async () => {
    const { kube, state, make } = await bootstrapSetup();
    const a = make();
    await a.start();
    a.stop();
    const other = await scriptedCa(Date.now());
    kube.put("relay-root-tls-secret", { "ca.crt": other.rootPem }); // the relay root changed
    const b = make();
    await b.runOnce().catch(() => undefined); // the scripted issuer signs from the old root: refused after the call
    assert.deepEqual(
      state.calls.map((c) => c.method),
      ["bootstrap", "bootstrap"],
    );
  });

  void it("uses the token when the issuer asks for a new Bootstrap on renew", async () => {
    const { clock, state, make } = await bootstrapSetup();
    const agent = make();
    await agent.start();
    state.refuseRenew = "bootstrap_too_old: the chain's bootstrap is too old";
    await clock.advance(2_000 * S);
    await until(() => state.calls.length === 3, "renew then bootstrap");
    assert.deepEqual(
      state.calls.map((c) => c.method),
      ["bootstrap", "renew", "bootstrap"],
    );
    assert.ok(agent.ready());
    agent.stop();
  });
});
