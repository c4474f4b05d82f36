// Root distribution in the mesh-CA mode (--root-configmaps) against the real apiserver and OpenBao: the sidecar keeps
// istio-ca-root-cert in every namespace the selector picks and nowhere else, recreates and restores it, leaves
// someone else's alone unless --adopt, follows a root rotation to a multi-root bundle, and with two replicas only the
// holder of Lease istiod-vault-agent-root-cert writes (a graceful stop hands the writing over).
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { agentSuite, getBundle, startIstioCaAgent, type AgentRun } from "../env/agent-process.js";
import { APISERVER_AUDIENCE, ISTIOD_SA, ISTIO_NS, mountPkiRoot } from "../env/fixtures.js";
import { repoRoot } from "../env/harness.js";
import { waitUntil } from "../env/process.js";
import { istiodAgentPolicy } from "../../src/vault/policies.js";
import { HttpStatusError } from "../../src/net/http-json.js";
import { writeTokenKubeconfig } from "../env/kubeconfig-fixture.js";

const CM = "istio-ca-root-cert";
const MANAGED = "app.kubernetes.io/managed-by";
const WRITER = "istiod-vault-agent.io/root-cert-writer";

interface ConfigMap {
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    resourceVersion: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  data?: Record<string, string>;
}

const certs = (pem: string | undefined) =>
  (pem ?? "")
    .match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)
    ?.map((c) => c.replace(/\s/g, "")) ?? [];

describe("root distribution: istio-ca-root-cert in every selected namespace", () => {
  const suite = agentSuite();
  let rootPem: string;
  let newRoot: string;
  let dir: string;
  const kube = () => suite.env.kube.admin;

  const get = async (ns: string): Promise<ConfigMap | undefined> => {
    try {
      return await kube().get<ConfigMap>(`/api/v1/namespaces/${ns}/configmaps/${CM}`);
    } catch (err) {
      if (err instanceof HttpStatusError && err.status === 404) return undefined;
      throw err;
    }
  };
  const labelNamespace = async (ns: string, labels: Record<string, string | null>) =>
    kube().request(
      "PATCH",
      `/api/v1/namespaces/${ns}`,
      { metadata: { labels } },
      {
        contentType: "application/merge-patch+json",
      },
    );
  const createNamespace = async (ns: string, labels: Record<string, string> = {}) =>
    kube().create("/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name: ns, labels } });
  /** Waits until `ns` holds our ConfigMap with exactly `roots` (and, if given, written by `writer`). */
  const waitFor = async (
    run: AgentRun,
    ns: string,
    roots: string,
    writer?: string,
    more?: (cm: ConfigMap) => boolean,
  ) => {
    let last: ConfigMap | undefined;
    await waitUntil(
      `${ns}/${CM} holds the served roots${writer ? ` written by ${writer}` : ""}`,
      async () => {
        last = await get(ns);
        return (
          last !== undefined &&
          last.metadata.labels?.[MANAGED] === "istiod-vault-agent" &&
          JSON.stringify(certs(last.data?.["root-cert.pem"])) === JSON.stringify(certs(roots)) &&
          (writer === undefined || last.metadata.annotations?.[WRITER] === writer) &&
          (more === undefined || more(last))
        );
      },
      { timeoutMs: 30_000, process: run.process },
    );
    return last!;
  };
  /**
   * A kubeconfig for istiod's service account holding only the shipped RBAC (manifests/base: the agent's Role with the
   * Lease, the TokenReview binding, and root-configmaps/), so the first replica proves those rules are enough.
   */
  const istiodKubeconfig = async (): Promise<string> => {
    for (const f of ["rbac.yaml", "istio-ca-tokenreview.yaml", "root-configmaps/rbac.yaml"]) {
      const res = spawnSync(
        "kubectl",
        [`--kubeconfig=${suite.env.kube.kubeconfigPath}`, "apply", "-f", join(repoRoot(), "manifests/base", f)],
        { encoding: "utf8" },
      );
      assert.equal(res.status, 0, `${f}: ${res.stderr}`);
    }
    const token = await suite.env.requestToken(ISTIO_NS, ISTIOD_SA, APISERVER_AUDIENCE, 3600);
    return writeTokenKubeconfig(suite.env, join(suite.env.dir, "istiod-kubeconfig.json"), token);
  };
  const replica = (name: string, extra: string[] = []) =>
    startIstioCaAgent(
      suite,
      ["--root-configmaps", "--root-namespace-selector=mesh in (on)", "--status-lease-duration=3s", ...extra],
      { cacerts: false, env: { ...process.env, POD_NAME: name, POD_NAMESPACE: "istio-system" } },
    );

  let a: AgentRun;
  /** The replica started with the multi-root bundle (and --adopt); it holds the Lease until the last test stops it. */
  let b: AgentRun;
  before(async () => {
    await createNamespace("mesh-a", { mesh: "on" });
    await createNamespace("mesh-b", { mesh: "on" });
    await createNamespace("plain");
    await createNamespace("claimed", { mesh: "on" });
    // Someone else's ConfigMap of that name (e.g. left by istiod before the switch): no managed-by label.
    await kube().create("/api/v1/namespaces/claimed/configmaps", {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: CM, namespace: "claimed" },
      data: { "root-cert.pem": "someone else's root\n" },
    });
    const ca = await replica("replica-a", [`--kubeconfig=${await istiodKubeconfig()}`]);
    a = ca.run;
    rootPem = ca.rootPem;
    dir = a.dir;
  });

  it("writes it into every matching namespace, a namespace created later too, and not into the others", async () => {
    assert.equal(certs(rootPem).length, 1);
    for (const ns of ["mesh-a", "mesh-b"]) {
      const cm = await waitFor(a, ns, rootPem, "replica-a");
      assert.equal(cm.metadata.labels?.["istio.io/config"], "true");
      assert.equal(cm.data?.["root-cert.pem"], rootPem, "the served bundle, byte for byte");
    }
    await createNamespace("mesh-late", { mesh: "on" });
    await waitFor(a, "mesh-late", rootPem);
    // Namespaces are reconciled in the order they were seen, so "plain" has been decided by now.
    assert.equal(await get("plain"), undefined, "a namespace the selector does not pick gets nothing");
    assert.equal(await get("kube-system"), undefined);
  });

  it("a namespace whose labels start to match gets it", async () => {
    await labelNamespace("plain", { mesh: "on" });
    await waitFor(a, "plain", rootPem);
  });

  it("recreates a deleted ConfigMap and restores an edited one", async () => {
    const original = (await get("mesh-a"))!;
    await kube().request("DELETE", `/api/v1/namespaces/mesh-a/configmaps/${CM}`);
    const recreated = await waitFor(a, "mesh-a", rootPem);
    assert.notEqual(recreated.metadata.uid, original.metadata.uid, "a new object");
    await kube().request("PUT", `/api/v1/namespaces/mesh-a/configmaps/${CM}`, {
      ...recreated,
      data: { "root-cert.pem": "tampered\n", "extra.txt": "kept" },
    });
    const restored = await waitFor(a, "mesh-a", rootPem, undefined, (cm) => cm.data?.["extra.txt"] === "kept");
    assert.equal(restored.data?.["root-cert.pem"], rootPem);
  });

  it("leaves an unlabelled ConfigMap untouched without --adopt, and says so once", async () => {
    await kube().request(
      "PATCH",
      `/api/v1/namespaces/claimed/configmaps/${CM}`,
      { data: { note: "edited" } },
      {
        contentType: "application/merge-patch+json",
      },
    );
    await createNamespace("mesh-sentinel-1", { mesh: "on" });
    await waitFor(a, "mesh-sentinel-1", rootPem);
    const claimed = (await get("claimed"))!;
    assert.equal(claimed.data?.["root-cert.pem"], "someone else's root\n");
    assert.equal(claimed.metadata.labels?.[MANAGED], undefined);
    const warnings = a
      .log()
      .split("\n")
      .filter((l) => l.includes('"namespace":"claimed"') && l.includes("--adopt"));
    assert.equal(warnings.length, 1, `logged once for the namespace, not at every look:\n${warnings.join("\n")}`);
  });

  it("a new intermediate under the same roots rewrites nothing", async () => {
    const rvs = new Map<string, string>();
    for (const ns of ["mesh-a", "mesh-b", "mesh-late", "plain"]) rvs.set(ns, (await get(ns))!.metadata.resourceVersion);
    const generation = (await getBundle(a.client)).generation;
    a.process.signal("SIGHUP");
    await waitUntil("a new intermediate", async () => (await getBundle(a.client)).generation > generation, {
      timeoutMs: 30_000,
      process: a.process,
    });
    // Anything the rotation queued is done before a namespace created after it.
    await createNamespace("mesh-sentinel-2", { mesh: "on" });
    await waitFor(a, "mesh-sentinel-2", rootPem);
    for (const [ns, rv] of rvs) assert.equal((await get(ns))!.metadata.resourceVersion, rv, `${ns} was not rewritten`);
  });

  it("root rotation to a multi-root bundle updates every selected namespace; --adopt takes over the unlabelled one", async () => {
    const v = suite.env.vault.client;
    const token = suite.env.vault.rootToken;
    newRoot = await mountPkiRoot(suite.env, "pki2", "new root CA");
    await v.write("sys/policy/istiod-agent-pki2", token, { policy: istiodAgentPolicy("pki2/root/sign-intermediate") });
    writeFileSync(join(dir, "new-root.pem"), newRoot);
    // mesh-b stops matching before the rotation: it keeps what it has (not deleted, no longer updated).
    await labelNamespace("mesh-b", { mesh: null });
    await a.stop();
    // The README's runbook, step 1: the new root joins as a trust anchor (the signer stays on the old root).
    b = (await replica("replica-b", ["--multi-root", `--trust-anchors-file=${join(dir, "new-root.pem")}`, "--adopt"]))
      .run;
    const both = (await getBundle(b.client)).rootCertPem.join("");
    assert.deepEqual(certs(both), [...certs(rootPem), ...certs(newRoot)], "old root then new root");
    for (const ns of ["mesh-a", "mesh-late", "plain", "mesh-sentinel-1", "mesh-sentinel-2"])
      assert.equal((await waitFor(b, ns, both, "replica-b")).data?.["root-cert.pem"], both);
    const claimed = await waitFor(b, "claimed", both, "replica-b");
    assert.equal(claimed.data?.note, "edited", "the other keys of an adopted ConfigMap are kept");
    await createNamespace("mesh-sentinel-3", { mesh: "on" });
    await waitFor(b, "mesh-sentinel-3", both);
    assert.deepEqual(certs((await get("mesh-b"))!.data?.["root-cert.pem"]), certs(rootPem), "mesh-b left as it was");
  });

  it("with two replicas only the Lease holder writes; a graceful stop hands the writing over", async () => {
    const both = (await getBundle(b.client)).rootCertPem.join("");
    // replica-c serves other roots (the old root alone), so anything it wrote would show, and fight replica-b.
    const c = (await replica("replica-c", ["--adopt"])).run;
    assert.deepEqual(certs((await getBundle(c.client)).rootCertPem.join("")), certs(rootPem));
    await waitUntil(
      "replica-c has listed the ConfigMaps",
      () => Promise.resolve(/"what":"istio-ca-root-cert ConfigMaps".*"listed; watching from here"/.test(c.log())),
      { timeoutMs: 30_000, process: c.process },
    );
    for (const ns of ["mesh-a", "mesh-late"]) {
      await kube().request("DELETE", `/api/v1/namespaces/${ns}/configmaps/${CM}`);
      await waitFor(b, ns, both, "replica-b");
    }
    const lease = await kube().get<{ spec: { holderIdentity?: string } }>(
      "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases/istiod-vault-agent-root-cert",
    );
    assert.equal(lease.spec.holderIdentity, "replica-b");
    assert.doesNotMatch(c.log(), /istio-ca-root-cert (created|updated|adopted)/, "replica-c wrote nothing");
    for (const ns of ["mesh-a", "mesh-late", "plain", "claimed"])
      assert.deepEqual(
        certs((await get(ns))!.data?.["root-cert.pem"]),
        certs(both),
        `${ns} still has replica-b's roots`,
      );
    await b.stop();
    // Takeover resumes reconciliation: replica-c rewrites every selected namespace with the roots it serves.
    for (const ns of ["mesh-a", "mesh-late", "plain", "claimed", "mesh-sentinel-3"])
      await waitFor(c, ns, rootPem, "replica-c");
  });
});
