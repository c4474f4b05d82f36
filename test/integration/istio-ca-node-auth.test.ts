// The drop-in Istio CA's node authorisation (ambient/ztunnel, ImpersonatedIdentity) and cluster selection (clusterid),
// against real kube-apiservers: Pods with spec.nodeName set (no kubelet: they stay Pending, which is all the check
// reads), service-account tokens bound to those Pods by TokenRequest (so TokenReview's extra names the pod), and a
// second apiserver whose kubeconfig is handed over in a Secret labelled istio/multiCluster=true, as istiod takes it.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { agentSuite, startIstioCaAgent, type IstioCaAgent } from "../env/agent-process.js";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { TestEnv, repoRoot } from "../env/harness.js";
import { APISERVER_AUDIENCE, ISTIO_NS, ISTIOD_SA } from "../env/fixtures.js";
import { waitUntil } from "../env/process.js";
import { workloadCsr, subjectAltNames } from "../env/crypto-check.js";
import { writeTokenKubeconfig } from "../env/kubeconfig-fixture.js";

const TD = "cluster.local";
const id = (ns: string, sa: string) => `spiffe://${TD}/ns/${ns}/sa/${sa}`;
const SLEEP = id("default", "sleep");
const OTHER = id("default", "other");
const NOPOD = id("default", "nopod");

/** A Pod of `sa` already "scheduled" to `node` (nobody runs it); returns its UID for a bound token. */
async function createPod(env: TestEnv, ns: string, name: string, sa: string, node: string): Promise<string> {
  const pod = await env.kube.admin.create<{ metadata: { uid: string } }>(`/api/v1/namespaces/${ns}/pods`, {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: ns },
    spec: {
      serviceAccountName: sa,
      automountServiceAccountToken: false,
      nodeName: node,
      containers: [{ name: "app", image: "registry.invalid/app:1" }],
    },
  });
  return pod.metadata.uid;
}

/** An istio-ca token of `sa` bound to pod `name` (what the kubelet's projected token is). */
async function podToken(env: TestEnv, ns: string, sa: string, pod: string, uid: string): Promise<string> {
  const res = await env.kube.admin.create<{ status?: { token?: string } }>(
    `/api/v1/namespaces/${ns}/serviceaccounts/${sa}/token`,
    {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenRequest",
      spec: {
        audiences: ["istio-ca"],
        expirationSeconds: 3600,
        boundObjectRef: { apiVersion: "v1", kind: "Pod", name: pod, uid },
      },
    },
  );
  assert.ok(res.status?.token, "TokenRequest returned a token");
  return res.status.token;
}

const refused = async (p: Promise<unknown>, code: grpc.status, pattern: RegExp) => {
  await assert.rejects(p, (e: grpc.ServiceError) => {
    assert.equal(e.code, code, e.details);
    assert.match(e.details, pattern);
    return true;
  });
};

describe("drop-in Istio CA: node authorisation and cluster selection", () => {
  const suite = agentSuite();
  let ca: IstioCaAgent;
  let remote: TestEnv | undefined;
  const tokens: Record<string, string> = {};

  before(async () => {
    const env = suite.env;
    for (const [ns, sa] of [
      ["istio-system", "ztunnel"],
      ["istio-system", "evil-agent"],
      ["default", "sleep"],
      ["default", "other"],
      ["default", "nopod"],
    ] as const)
      await env.createServiceAccount(ns, sa);
    const pods: [string, string, string, string][] = [
      ["istio-system", "ztunnel-a", "ztunnel", "node-a"],
      ["istio-system", "evil-a", "evil-agent", "node-a"],
      ["default", "sleep-a", "sleep", "node-a"],
      ["default", "other-b", "other", "node-b"],
    ];
    for (const [ns, name, sa, node] of pods)
      tokens[name] = await podToken(env, ns, sa, name, await createPod(env, ns, name, sa, node));
    // A pod of `other` on node-a that has failed does not count (istiod's index skips phase Failed).
    const failedUid = await createPod(env, "default", "other-failed-a", "other", "node-a");
    await env.kube.admin.request(
      "PATCH",
      `/api/v1/namespaces/default/pods/other-failed-a/status`,
      { status: { phase: "Failed" } },
      { contentType: "application/merge-patch+json" },
    );
    assert.ok(failedUid);
    // The agent runs as istio-system/istiod with only what manifests/base/istio-ca-tokenreview.yaml grants it, so the
    // shipped RBAC is shown to be enough (TokenReview, pods cluster-wide, Secrets in its namespace).
    await env.createServiceAccount(ISTIO_NS, ISTIOD_SA);
    for (const doc of parseAllDocuments(
      readFileSync(join(repoRoot(), "manifests/base/istio-ca-tokenreview.yaml"), "utf8"),
    )) {
      const obj = doc.toJSON() as { kind: string; metadata: { namespace?: string } };
      const plural = `${obj.kind.toLowerCase()}s`;
      const path = obj.metadata.namespace
        ? `/apis/rbac.authorization.k8s.io/v1/namespaces/${obj.metadata.namespace}/${plural}`
        : `/apis/rbac.authorization.k8s.io/v1/${plural}`;
      await env.kube.admin.request("POST", path, obj);
    }
    const kubeconfig = writeTokenKubeconfig(
      env,
      join(suite.env.dir, "istiod-kubeconfig"),
      await env.requestToken(ISTIO_NS, ISTIOD_SA, APISERVER_AUDIENCE, 3600),
    );
    ca = await startIstioCaAgent(suite, [
      "--cluster-id=cluster1",
      // istiod's --clusterAliases: another name for each cluster
      "--cluster-aliases=primary=cluster1,east=cluster2",
      `--kubeconfig=${kubeconfig}`,
    ]);
  });
  after(async () => {
    await remote?.stop();
  });

  const as = (who: string, identity: string, impersonate?: string, headers?: Record<string, string>) =>
    workloadCsr(identity).then((csr) =>
      ca.create(csr, tokens[who], 3600, {
        ...(impersonate ? { metadata: { ImpersonatedIdentity: impersonate } } : {}),
        ...(headers ? { headers } : {}),
      }),
    );

  it("a ztunnel caller gets the identity of a pod on its own node", async () => {
    const chain = await as("ztunnel-a", SLEEP, SLEEP);
    assert.deepEqual(subjectAltNames(chain[0]!), [SLEEP]);
  });

  it("a ztunnel caller is refused an identity whose pods run only on another node (or only failed there)", async () => {
    await refused(
      as("ztunnel-a", OTHER, OTHER),
      grpc.status.UNAUTHENTICATED,
      /no pod of service account default\/other runs on its node node-a/,
    );
  });

  it("a ztunnel caller is refused an identity with no pod at all", async () => {
    await refused(
      as("ztunnel-a", NOPOD, NOPOD),
      grpc.status.UNAUTHENTICATED,
      /no pod of service account default\/nopod runs on its node node-a/,
    );
  });

  it("a ztunnel token not bound to a pod cannot prove a node", async () => {
    const unbound = await suite.env.requestToken("istio-system", "ztunnel", "istio-ca", 600);
    await refused(
      ca.create(await workloadCsr(SLEEP), unbound, 3600, { metadata: { ImpersonatedIdentity: SLEEP } }),
      grpc.status.UNAUTHENTICATED,
      /not bound to a pod or node/,
    );
  });

  it("a workload gets its own identity and is refused any ImpersonatedIdentity", async () => {
    const chain = await as("sleep-a", SLEEP);
    assert.deepEqual(subjectAltNames(chain[0]!), [SLEEP]);
    await refused(
      as("sleep-a", OTHER, OTHER),
      grpc.status.UNAUTHENTICATED,
      /default\/sleep may only request its own identity.*--trusted-node-agents \(istio-system\/ztunnel\)/,
    );
  });

  it("a node-local caller not in --trusted-node-agents is refused impersonation", async () => {
    await refused(
      as("evil-a", SLEEP, SLEEP),
      grpc.status.UNAUTHENTICATED,
      /istio-system\/evil-agent may only request its own identity/,
    );
  });

  it("a malformed ImpersonatedIdentity is refused as bad input", async () => {
    await refused(
      as("ztunnel-a", SLEEP, "spiffe://other.domain/ns/default/sa/sleep"),
      grpc.status.INVALID_ARGUMENT,
      /outside trust domain cluster\.local/,
    );
  });

  describe("ClusterID selects the cluster that reviews the token", () => {
    let remoteToken: string;
    let remoteZtunnel: string;
    const secretPath = "/api/v1/namespaces/istio-system/secrets";

    before(async () => {
      remote = await TestEnv.start({ vault: false });
      await remote.createServiceAccount("default", "sleep");
      remoteToken = await remote.requestToken("default", "sleep", "istio-ca", 600);
      // A ztunnel in cluster 2 on a node named like cluster 1's node-a, where cluster 1 (only) runs a sleep pod.
      await remote.createServiceAccount("istio-system", "ztunnel");
      const uid = await createPod(remote, "istio-system", "ztunnel-r", "ztunnel", "node-a");
      remoteZtunnel = await podToken(remote, "istio-system", "ztunnel", "ztunnel-r", uid);
      // Created after the agent started: the agent's watch must pick it up.
      await suite.env.kube.admin.create(secretPath, {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: "istio-remote-secret-cluster2", labels: { "istio/multiCluster": "true" } },
        data: { cluster2: Buffer.from(readFileSync(remote.kube.kubeconfigPath)).toString("base64") },
      });
    });

    const remoteCall = async (extra: { metadata?: Record<string, unknown>; headers?: Record<string, string> }) =>
      ca.create(await workloadCsr(SLEEP), remoteToken, 3600, extra);

    it("a cluster-2 token with clusterid cluster2 is reviewed by cluster 2's apiserver", async () => {
      let chain: string[] = [];
      await waitUntil(
        "the agent serves cluster2 from the new Secret",
        async () => {
          chain = await remoteCall({ headers: { clusterid: "cluster2" } }).catch((e: grpc.ServiceError) => {
            // Until the watch delivers the Secret the cluster is unknown; any other refusal is a failure.
            if (!/cluster "cluster2"/.test(e.details)) throw e;
            return [];
          });
          return chain.length > 0;
        },
        { timeoutMs: 30_000, process: ca.run.process },
      );
      assert.deepEqual(subjectAltNames(chain[0]!), [SLEEP]);
      // The metadata Struct's ClusterID field selects the same way.
      const viaField = await remoteCall({ metadata: { ClusterID: "cluster2" } });
      assert.deepEqual(subjectAltNames(viaField[0]!), [SLEEP]);
      // So does cluster 2's alias (--cluster-aliases east=cluster2).
      const viaAlias = await remoteCall({ headers: { clusterid: "east" } });
      assert.deepEqual(subjectAltNames(viaAlias[0]!), [SLEEP]);
    });

    it("a cluster-2 node agent is checked against cluster 2's pods, not the local cluster's", async () => {
      const ask = async () =>
        ca.create(await workloadCsr(SLEEP), remoteZtunnel, 3600, {
          headers: { clusterid: "cluster2" },
          metadata: { ImpersonatedIdentity: SLEEP },
        });
      await refused(
        ask(),
        grpc.status.UNAUTHENTICATED,
        /no pod of service account default\/sleep runs on its node node-a \(cluster cluster2\)/,
      );
      await createPod(remote!, "default", "sleep-r", "sleep", "node-a");
      assert.deepEqual(subjectAltNames((await ask())[0]!), [SLEEP]);
    });

    it("the same token without a cluster ID (or with the local one) is refused by the local apiserver", async () => {
      await refused(remoteCall({}), grpc.status.UNAUTHENTICATED, /rejected by TokenReview/);
      await refused(remoteCall({ headers: { clusterid: "cluster1" } }), grpc.status.UNAUTHENTICATED, /TokenReview/);
      // The local cluster's alias is the local cluster.
      await refused(remoteCall({ headers: { clusterid: "primary" } }), grpc.status.UNAUTHENTICATED, /TokenReview/);
    });

    it("an unknown cluster ID is refused, naming it and where credentials are expected", async () => {
      await refused(
        remoteCall({ headers: { clusterid: "cluster3" } }),
        grpc.status.UNAUTHENTICATED,
        /cluster "cluster3".*own cluster "cluster1".*\[cluster2\].*istio\/multiCluster=true in namespace istio-system/,
      );
      await refused(
        remoteCall({ headers: { clusterid: "cluster2" }, metadata: { ClusterID: "cluster3" } }),
        grpc.status.INVALID_ARGUMENT,
        /disagree/,
      );
    });

    it("deleting the Secret removes the cluster", async () => {
      await suite.env.kube.admin.request("DELETE", `${secretPath}/istio-remote-secret-cluster2`);
      await waitUntil(
        "cluster2 is unknown again",
        async () =>
          remoteCall({ headers: { clusterid: "cluster2" } }).then(
            () => false,
            (e: grpc.ServiceError) => e.code === grpc.status.UNAUTHENTICATED && /cluster "cluster2"/.test(e.details),
          ),
        { timeoutMs: 30_000, process: ca.run.process },
      );
    });
  });
});
