// RootTrustPolicy through the real apiserver: the CRD's schema refuses bad specs, a running sidecar reloads a
// changed policy (new intermediate, visible in status) and refuses an invalid one while it keeps serving.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { rmSync } from "node:fs";
import { startAgentTestEnv, ISTIO_NS, type AgentTestEnv } from "../env/fixtures.js";
import { getBundle, startAgent, type AgentRun } from "../env/agent-process.js";
import { repoRoot } from "../env/harness.js";
import { waitUntil } from "../env/process.js";
import { HttpStatusError } from "../../src/net/http-json.js";

const BASE = `/apis/istiod-vault-agent.io/v1alpha1/namespaces/${ISTIO_NS}/roottrustpolicies`;

interface Rtp {
  metadata: { generation: number };
  status?: {
    observedGeneration?: number;
    generation?: number;
    intermediateSerial?: string;
    intermediateNotAfter?: string;
    lastError?: string;
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
}

describe("RootTrustPolicy CRD and live reload", () => {
  let t: AgentTestEnv;
  let run: AgentRun | undefined;

  const policy = (ttl: string, extra: Record<string, unknown> = {}) => ({
    apiVersion: "istiod-vault-agent.io/v1alpha1",
    kind: "RootTrustPolicy",
    metadata: { name: "istiod", namespace: ISTIO_NS },
    spec: {
      config: {
        agentCa: {
          vault: {
            server: t.env.vault.url,
            caPath: "pki/root/sign-intermediate",
            kubernetesAuth: { role: "istiod-agent" },
          },
        },
        intermediateCertOptions: { ttl },
        ...extra,
      },
    },
  });
  const get = () => t.env.kube.admin.get<Rtp>(`${BASE}/istiod`);
  const patchSpec = (config: unknown) =>
    t.env.kube.admin.request(
      "PATCH",
      `${BASE}/istiod`,
      { spec: { config } },
      { contentType: "application/merge-patch+json" },
    );

  before(async () => {
    t = await startAgentTestEnv();
    await t.env.installCrd(join(repoRoot(), "manifests/crd/roottrustpolicies.yaml"));
  });
  after(async () => {
    await run?.stop();
    if (run) rmSync(run.dir, { recursive: true, force: true });
    await t?.env.stop();
  });

  it("the apiserver's schema refuses a bad spec with a readable message", async () => {
    const bad = policy("1h");
    (bad.spec.config.intermediateCertOptions as Record<string, unknown>).keyAlgorithm = "DSA_1024";
    (bad.spec.config.intermediateCertOptions as Record<string, unknown>).ttl = "one hour";
    await assert.rejects(t.env.kube.admin.create(BASE, bad), (err: unknown) => {
      assert.ok(err instanceof HttpStatusError);
      assert.equal(err.status, 422);
      assert.match(err.message, /keyAlgorithm: Unsupported value: "DSA_1024"/);
      assert.match(err.message, /ttl: Invalid value: "one hour"/);
      return true;
    });
  });

  it("a TTL change makes the running sidecar issue a new intermediate, visible in status", async () => {
    await t.env.kube.admin.create(BASE, policy("1h"));
    run = await startAgent(t.env, "sidecar", [
      `--policy-name=istiod`,
      `--policy-namespace=${ISTIO_NS}`,
      `--kubeconfig=${t.env.kube.kubeconfigPath}`,
    ]);
    const first = await getBundle(run.client);
    assert.ok(first.notAfterUnix - Date.now() / 1000 <= 3600 + 60, "the policy's 1h TTL applies at start");
    await waitUntil(
      "status reports the first intermediate",
      async () => (await get()).status?.intermediateSerial === first.serialHex,
      {
        timeoutMs: 15_000,
      },
    );

    await patchSpec({ intermediateCertOptions: { ttl: "3h" } });
    await waitUntil(
      "a new intermediate after the TTL change",
      async () => (await getBundle(run!.client)).generation > first.generation,
      {
        timeoutMs: 20_000,
      },
    );
    const second = await getBundle(run.client);
    assert.ok(second.notAfterUnix - second.notBeforeUnix > 2.5 * 3600, "the new intermediate has the new TTL");
    await waitUntil(
      "status shows the new intermediate",
      async () => {
        const s = (await get()).status;
        return s?.intermediateSerial === second.serialHex && s?.observedGeneration === 2;
      },
      { timeoutMs: 15_000 },
    );
    const cond = (await get()).status?.conditions?.find((c) => c.type === "Ready");
    assert.equal(cond?.status, "True");
  });

  it("an invalid change passes the schema but is refused by the agent: status, Event, last good config keeps serving", async () => {
    const before = await getBundle(run!.client);
    // Valid for the schema, invalid for the agent: default leaf TTL above the max.
    await patchSpec({ workloadCertOptions: { defaultTtl: "48h", maxTtl: "24h" } });
    await waitUntil(
      "Ready=False InvalidSpec",
      async () =>
        (await get()).status?.conditions?.some(
          (c) => c.type === "Ready" && c.status === "False" && c.reason === "InvalidSpec",
        ) ?? false,
      { timeoutMs: 15_000 },
    );
    const status = (await get()).status!;
    assert.match(
      status.lastError ?? "",
      /generation 3 refused: leaf.defaultTtl: 172800s must be between 60s and leaf.maxTtl/,
    );
    const events = await t.env.kube.admin.get<{ items: { reason: string; type: string; message: string }[] }>(
      `/api/v1/namespaces/${ISTIO_NS}/events?fieldSelector=involvedObject.name%3Distiod`,
    );
    assert.ok(
      events.items.some((e) => e.type === "Warning" && e.reason === "InvalidSpec" && /defaultTtl/.test(e.message)),
    );
    const now = await getBundle(run!.client);
    assert.equal(now.generation, before.generation, "no rotation for a refused policy");
    assert.equal(now.serialHex, before.serialHex);
  });
});
