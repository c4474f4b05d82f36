// Root distribution's pure parts (label selectors, the per-namespace decision) and the controller against a scripted
// apiserver stand-in that keeps resourceVersions like the real one (a PUT with an old one is a 409) and can end a
// watch with 410 Gone. The real apiserver runs in test/integration/root-configmaps.test.ts.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import pino from "pino";
import { LabelSelectorError, matchesSelector, parseLabelSelector } from "../../src/kube/label-selector.js";
import {
  ROOT_CONFIGMAP,
  RootConfigMapController,
  planRootConfigMap,
  type KubeConfigMap,
} from "../../src/kube/root-configmaps.js";
import type { KubeClient } from "../../src/kube/client.js";
import { HttpStatusError } from "../../src/net/http-json.js";
import { AgentMetrics } from "../../src/observability/metrics.js";
import { loadConfig, parseFlags } from "../../src/config/load.js";
import { ConfigError } from "../../src/config/config.js";

void describe("label selectors (--root-namespace-selector)", () => {
  const m = (sel: string, labels: Record<string, string>) => matchesSelector(parseLabelSelector(sel), labels);

  it("reads every form kubectl -l takes and matches as the apiserver does", () => {
    assert.ok(m("", {}), "empty selects everything");
    assert.ok(m("  ", { a: "b" }));
    assert.ok(m("env=prod", { env: "prod" }));
    assert.ok(m("env==prod", { env: "prod" }));
    assert.ok(!m("env=prod", { env: "dev" }));
    assert.ok(!m("env=prod", {}));
    assert.ok(m("env!=prod", { env: "dev" }));
    assert.ok(m("env!=prod", {}), "!= also selects objects without the key");
    assert.ok(m("env in (prod, staging)", { env: "staging" }));
    assert.ok(!m("env in (prod,staging)", { env: "dev" }));
    assert.ok(m("env notin (prod)", {}));
    assert.ok(!m("env notin (prod)", { env: "prod" }));
    assert.ok(m("istio-injection", { "istio-injection": "" }));
    assert.ok(!m("istio-injection", {}));
    assert.ok(m("!legacy", {}));
    assert.ok(!m("! legacy", { legacy: "x" }));
    assert.ok(m("example.com/team=mesh,env in (a,b),!old", { "example.com/team": "mesh", env: "b" }));
    assert.ok(!m("example.com/team=mesh,env in (a,b),!old", { "example.com/team": "mesh", env: "b", old: "1" }));
    assert.ok(m("env=", { env: "" }), "an empty value is a value");
    assert.equal(parseLabelSelector(" env=prod ").text, "env=prod");
  });

  it("refuses what is not a selector, saying what is wrong", () => {
    const bad: [string, RegExp][] = [
      ["env=prod,", /empty requirement/],
      ["env in (a,b", /unbalanced/],
      ["env in a,b)", /unbalanced/],
      ["env ~ prod", /not a label requirement/],
      ["env=pr od", /not a label requirement/],
      ["-env=prod", /label key "-env"/],
      ["Bad_Prefix.com/x=1", /prefix must be a DNS subdomain/],
      [`k=${"v".repeat(64)}`, /label value/],
      ["env in (a,-b)", /label value "-b"/],
    ];
    for (const [sel, re] of bad)
      assert.throws(
        () => parseLabelSelector(sel),
        (e: Error) => {
          assert.ok(e instanceof LabelSelectorError, sel);
          assert.match(e.message, re, sel);
          return true;
        },
      );
  });
});

void describe("planRootConfigMap", () => {
  const cm = (labels: Record<string, string> | undefined, root?: string): KubeConfigMap => ({
    metadata: { name: ROOT_CONFIGMAP, namespace: "ns", ...(labels ? { labels } : {}) },
    ...(root !== undefined ? { data: { "root-cert.pem": root } } : {}),
  });
  const ours = { "app.kubernetes.io/managed-by": "istiod-vault-agent" };

  it("creates what is missing, updates ours when the roots differ, and leaves others' alone unless adopting", () => {
    assert.equal(planRootConfigMap(undefined, "R", false), "create");
    assert.equal(planRootConfigMap(cm(ours, "R"), "R", false), "none");
    assert.equal(planRootConfigMap(cm(ours, "OLD"), "R", false), "update");
    assert.equal(planRootConfigMap(cm(ours), "R", false), "update", "ours without the key");
    assert.equal(planRootConfigMap(cm(undefined, "R"), "R", false), "unowned", "even with the same roots");
    assert.equal(planRootConfigMap(cm({ "app.kubernetes.io/managed-by": "Helm" }, "X"), "R", false), "unowned");
    assert.equal(planRootConfigMap(cm(undefined, "X"), "R", true), "adopt");
  });
});

void describe("root ConfigMap flags", () => {
  const load = (args: string[]) =>
    loadConfig(parseFlags(["--vault-addr=https://vault.example:8200", ...args]), {}, { needVault: true });

  it("parse into the configuration", () => {
    const c = load(["--root-configmaps", "--root-namespace-selector=mesh in (on)", "--adopt"]);
    assert.equal(c.rootConfigMaps.enabled, true);
    assert.equal(c.rootConfigMaps.adopt, true);
    assert.deepEqual(c.rootConfigMaps.namespaceSelector.requirements, [{ key: "mesh", op: "in", values: ["on"] }]);
    assert.equal(load([]).rootConfigMaps.enabled, false);
  });

  it("refuse a bad selector, a selector or --adopt without --root-configmaps, and --cacerts-dir beside it", () => {
    const refused = (args: string[], re: RegExp) =>
      assert.throws(
        () => load(args),
        (e: ConfigError) => {
          assert.ok(e instanceof ConfigError);
          assert.match(e.problems.join("\n"), re);
          return true;
        },
      );
    refused(["--root-configmaps", "--root-namespace-selector=env in (a"], /--root-namespace-selector: .*unbalanced/);
    refused(["--adopt"], /only act with --root-configmaps/);
    refused(["--root-namespace-selector=a=b"], /only act with --root-configmaps/);
    refused(["--root-configmaps", "--cacerts-dir=/etc/cacerts", "--key-export"], /istiod publishes/);
  });
});

interface Ns {
  metadata: { name: string; labels?: Record<string, string>; resourceVersion: string };
  status?: { phase?: string };
}
type Watcher = { kind: "ns" | "cm"; onEvent: (e: { type: string; object: unknown }) => void; done: () => void };

/** An apiserver stand-in for namespaces and ConfigMaps named istio-ca-root-cert. */
class ScriptedApiserver {
  private rv = 100;
  readonly namespaces = new Map<string, Ns>();
  readonly configMaps = new Map<string, KubeConfigMap>();
  readonly writes: string[] = [];
  lists = { ns: 0, cm: 0 };
  /** The next namespace watch ends at once with 410 Gone. */
  goneOnce = false;
  /** The next PUT answers 409 after someone else changed the object. */
  conflictOnce = false;
  private readonly watchers = new Set<Watcher>();

  private next(): string {
    return String(++this.rv);
  }

  addNamespace(name: string, labels: Record<string, string> = {}, emit = true): void {
    const ns: Ns = { metadata: { name, labels, resourceVersion: this.next() } };
    this.namespaces.set(name, ns);
    if (emit) this.emit("ns", "ADDED", ns);
  }

  putConfigMap(ns: string, cm: KubeConfigMap, emit = true): KubeConfigMap {
    const stored = structuredClone({ ...cm, metadata: { ...cm.metadata, resourceVersion: this.next() } });
    const existed = this.configMaps.has(ns);
    this.configMaps.set(ns, stored);
    if (emit) this.emit("cm", existed ? "MODIFIED" : "ADDED", stored);
    return stored;
  }

  emit(kind: "ns" | "cm", type: string, object: unknown): void {
    for (const w of this.watchers) if (w.kind === kind) w.onEvent({ type, object });
  }

  client(): KubeClient {
    const notFound = (path: string) => new HttpStatusError("kubernetes", "GET", path, 404, ["not found"]);
    const kube = {
      get: (path: string) => {
        if (path.startsWith("/api/v1/namespaces?")) {
          this.lists.ns++;
          return Promise.resolve({
            metadata: { resourceVersion: String(this.rv) },
            items: [...this.namespaces.values()],
          });
        }
        if (path.startsWith("/api/v1/configmaps?")) {
          this.lists.cm++;
          return Promise.resolve({
            metadata: { resourceVersion: String(this.rv) },
            items: [...this.configMaps.values()],
          });
        }
        return Promise.reject(notFound(path));
      },
      request: (method: string, path: string, body?: KubeConfigMap) => {
        const ns = /^\/api\/v1\/namespaces\/([^/]+)\/configmaps/.exec(path)![1]!;
        const have = this.configMaps.get(ns);
        if (method === "GET") return Promise.resolve(have ? { status: 200, body: have } : { status: 404, body: {} });
        if (method === "POST") {
          if (have) return Promise.resolve({ status: 409, body: {} });
          this.writes.push(`create ${ns}`);
          return Promise.resolve({ status: 201, body: this.putConfigMap(ns, body!) });
        }
        if (method === "PUT") {
          if (this.conflictOnce && have) {
            this.conflictOnce = false;
            this.putConfigMap(ns, { ...have, data: { ...have.data, other: "writer" } });
            return Promise.resolve({ status: 409, body: {} });
          }
          if (!have || have.metadata.resourceVersion !== body!.metadata.resourceVersion)
            return Promise.resolve({ status: 409, body: {} });
          this.writes.push(`update ${ns}`);
          return Promise.resolve({ status: 200, body: this.putConfigMap(ns, body!) });
        }
        return Promise.reject(new Error(`unexpected ${method} ${path}`));
      },
      watch: (path: string, onEvent: Watcher["onEvent"], signal: AbortSignal) => {
        const kind = path.startsWith("/api/v1/namespaces") ? "ns" : "cm";
        if (kind === "ns" && this.goneOnce) {
          this.goneOnce = false;
          // As the apiserver does for a too-old resourceVersion: one ERROR event, then the stream ends.
          try {
            onEvent({ type: "ERROR", object: { kind: "Status", code: 410, reason: "Expired" } });
          } catch (err) {
            return Promise.reject(err instanceof Error ? err : new Error(String(err)));
          }
          return Promise.resolve();
        }
        return new Promise<void>((resolve, reject) => {
          const w: Watcher = {
            kind,
            onEvent: (e) => {
              try {
                onEvent(e);
              } catch (err) {
                this.watchers.delete(w);
                reject(err instanceof Error ? err : new Error(String(err)));
              }
            },
            done: () => resolve(),
          };
          this.watchers.add(w);
          signal.addEventListener("abort", () => {
            this.watchers.delete(w);
            reject(new Error("aborted"));
          });
        });
      },
    };
    return kube as unknown as KubeClient;
  }
}

const ROOT_A = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
const ROOT_B = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n";

function setup(opts: { selector?: string; adopt?: boolean } = {}) {
  const api = new ScriptedApiserver();
  const lines: string[] = [];
  const log = pino({ level: "debug" }, { write: (s: string) => void lines.push(s) });
  const metrics = new AgentMetrics({ processMetrics: false });
  const ctrl = new RootConfigMapController({
    kube: api.client(),
    selector: parseLabelSelector(opts.selector ?? ""),
    adopt: opts.adopt ?? false,
    identity: "pod-1",
    log,
    metrics: { written: metrics.rootConfigMapsWritten, unowned: metrics.rootConfigMapsUnowned },
    backoff: { initialMs: 10, maxMs: 20 },
  });
  const stop = new AbortController();
  let running: Promise<void> | undefined;
  const start = () => void (running = ctrl.run(stop.signal));
  const settle = async () => {
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setImmediate(r));
      await ctrl.idle();
    }
  };
  const value = async (name: string, labels: Record<string, string> = {}) => {
    const m = (await metrics.registry.getSingleMetric(name)!.get()).values.find((v) =>
      Object.entries(labels).every(([k, x]) => v.labels[k] === x),
    );
    return m?.value ?? 0;
  };
  return {
    api,
    ctrl,
    lines,
    /** Starts the watches: the first lists see what the test put in the stand-in so far. */
    start,
    /** Starts, serves ROOT_A as the Lease holder, and settles: where most cases begin. */
    async leadWithRootA() {
      start();
      ctrl.setRoots(ROOT_A);
      ctrl.setLeading(true);
      await settle();
    },
    settle,
    value,
    async close() {
      stop.abort();
      await running;
    },
  };
}

void describe("RootConfigMapController", () => {
  it("writes nothing until it holds the Lease and has roots; then every selected namespace, and only those", async () => {
    const t = setup({ selector: "mesh=on" });
    t.api.addNamespace("a", { mesh: "on" }, false);
    t.api.addNamespace("b", {}, false);
    t.start();
    await t.settle();
    t.ctrl.setRoots(ROOT_A);
    await t.settle();
    assert.deepEqual(t.api.writes, [], "not the Lease holder: no writes");
    t.ctrl.setLeading(true);
    await t.settle();
    assert.deepEqual(t.api.writes, ["create a"]);
    assert.equal(t.api.configMaps.get("a")!.data!["root-cert.pem"], ROOT_A);
    assert.equal(t.api.configMaps.get("a")!.metadata.annotations!["istiod-vault-agent.io/root-cert-writer"], "pod-1");
    t.api.addNamespace("c", { mesh: "on" });
    await t.settle();
    assert.deepEqual(t.api.writes, ["create a", "create c"]);
    assert.equal(await t.value("istiod_vault_agent_root_configmaps_written_total", { outcome: "created" }), 2);
    t.ctrl.setLeading(false);
    t.api.configMaps.delete("a");
    t.api.emit("cm", "DELETED", { metadata: { name: ROOT_CONFIGMAP, namespace: "a" } });
    await t.settle();
    assert.equal(t.api.configMaps.has("a"), false, "after losing the Lease it does nothing");
    t.ctrl.setLeading(true);
    await t.settle();
    assert.equal(t.api.configMaps.has("a"), true, "a new holder reconciles every namespace");
    await t.close();
  });

  it("rewrites on a change of roots only, and restores an edited ConfigMap", async () => {
    const t = setup();
    t.api.addNamespace("a", {}, false);
    await t.leadWithRootA();
    t.ctrl.setRoots(ROOT_A);
    await t.settle();
    assert.deepEqual(t.api.writes, ["create a"], "the same roots again: nothing written");
    t.ctrl.setRoots(ROOT_A + ROOT_B);
    await t.settle();
    assert.deepEqual(t.api.writes, ["create a", "update a"]);
    assert.equal(t.api.configMaps.get("a")!.data!["root-cert.pem"], ROOT_A + ROOT_B);
    const cur = t.api.configMaps.get("a")!;
    t.api.putConfigMap("a", { ...cur, data: { "root-cert.pem": "tampered" } });
    await t.settle();
    assert.equal(t.api.configMaps.get("a")!.data!["root-cert.pem"], ROOT_A + ROOT_B, "restored");
    await t.close();
  });

  it("retries a write that met a concurrent change with the fresh resourceVersion", async () => {
    const t = setup();
    t.api.addNamespace("a", {}, false);
    await t.leadWithRootA();
    t.api.conflictOnce = true;
    t.ctrl.setRoots(ROOT_B);
    await t.settle();
    const cm = t.api.configMaps.get("a")!;
    assert.equal(cm.data!["root-cert.pem"], ROOT_B);
    assert.equal(cm.data!.other, "writer", "the other writer's change is kept, not overwritten blindly");
    assert.equal(
      await t.value("istiod_vault_agent_root_configmaps_written_total", { outcome: "updated" }),
      1,
      "the conflict was retried inside the write (read again, written once), not counted as a write",
    );
    await t.close();
  });

  it("leaves someone else's ConfigMap alone, says so once, and counts it; --adopt takes it over", async () => {
    for (const adopt of [false, true]) {
      const t = setup({ adopt });
      t.api.addNamespace("x", {}, false);
      t.api.putConfigMap(
        "x",
        { metadata: { name: ROOT_CONFIGMAP, namespace: "x" }, data: { "root-cert.pem": "theirs" } },
        false,
      );
      await t.leadWithRootA();
      t.ctrl.setRoots(ROOT_B);
      await t.settle();
      const cm = t.api.configMaps.get("x")!;
      const warnings = t.lines.filter((l) => l.includes('"namespace":"x"') && l.includes("--adopt"));
      if (!adopt) {
        assert.equal(cm.data!["root-cert.pem"], "theirs");
        assert.equal(warnings.length, 1, "logged once per namespace");
        assert.equal(await t.value("istiod_vault_agent_root_configmaps_unowned"), 1);
      } else {
        assert.equal(cm.data!["root-cert.pem"], ROOT_B);
        assert.equal(cm.metadata.labels!["app.kubernetes.io/managed-by"], "istiod-vault-agent");
        assert.equal(await t.value("istiod_vault_agent_root_configmaps_written_total", { outcome: "adopted" }), 1);
        assert.equal(await t.value("istiod_vault_agent_root_configmaps_unowned"), 0);
      }
      await t.close();
    }
  });

  it("lists again after 410 Gone and picks up what changed meanwhile", async () => {
    const t = setup();
    t.api.goneOnce = true;
    t.api.addNamespace("a", {}, false);
    t.start();
    t.ctrl.setRoots(ROOT_A);
    t.ctrl.setLeading(true);
    // Created while the first watch was expiring: only a new list shows it.
    t.api.addNamespace("late", {}, false);
    await t.settle();
    assert.ok(t.api.lists.ns >= 2, `listed again (${t.api.lists.ns} lists)`);
    assert.ok(t.api.configMaps.has("late"));
    await t.close();
  });

  it("keeps the ConfigMap of a namespace that stops matching, and skips a terminating one", async () => {
    const t = setup({ selector: "mesh=on" });
    t.api.addNamespace("a", { mesh: "on" }, false);
    await t.leadWithRootA();
    const ns = t.api.namespaces.get("a")!;
    t.api.emit("ns", "MODIFIED", { ...ns, metadata: { ...ns.metadata, labels: {}, resourceVersion: "999" } });
    t.ctrl.setRoots(ROOT_B);
    await t.settle();
    assert.equal(t.api.configMaps.get("a")!.data!["root-cert.pem"], ROOT_A, "kept, not deleted, not updated");
    t.api.emit("ns", "ADDED", { metadata: { name: "gone", labels: { mesh: "on" } }, status: { phase: "Terminating" } });
    await t.settle();
    assert.equal(t.api.configMaps.has("gone"), false);
    await t.close();
  });
});
