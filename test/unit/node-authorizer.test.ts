// The pure parts of the Istio CA's node authorisation and cluster selection, with a scripted pod directory and
// scripted Secrets (the real apiservers are in test/integration/istio-ca-node-auth.test.ts).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import pino from "pino";
import {
  NodeAuthorizationError,
  NodeAuthorizer,
  impersonatedIdentityOf,
  parseNodeAccounts,
  parseWorkloadSpiffeId,
  type PodDirectory,
  type PodFacts,
} from "../../src/serve/node-authorizer.js";
import { identityFromTokenReview, type ReviewedIdentity } from "../../src/kube/token-review.js";
import {
  RemoteClusters,
  clustersFromSecrets,
  parseClusterAliases,
  requestedClusterId,
  type SecretObject,
} from "../../src/kube/remote-clusters.js";
import type { KubeClient } from "../../src/kube/client.js";
import { HttpStatusError } from "../../src/net/http-json.js";
import { FakeClock } from "./fake-clock.js";

const TD = "cluster.local";
const ZTUNNEL: ReviewedIdentity = {
  namespace: "istio-system",
  serviceAccount: "ztunnel",
  spiffeId: `spiffe://${TD}/ns/istio-system/sa/ztunnel`,
  podName: "ztunnel-x",
  podUid: "uid-z",
};
const SLEEP = `spiffe://${TD}/ns/default/sa/sleep`;

/** Scripted pods: `pods` by ns/name, `onNode` the (node, ns/sa) pairs with a pod; counts the calls. */
function directory(pods: Record<string, PodFacts>, onNode: string[], fail?: Error): PodDirectory & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    getPod(ns, name) {
      calls.push(`get ${ns}/${name}`);
      return fail ? Promise.reject(fail) : Promise.resolve(pods[`${ns}/${name}`]);
    },
    serviceAccountOnNode(node, ns, sa) {
      calls.push(`list ${node} ${ns}/${sa}`);
      return fail ? Promise.reject(fail) : Promise.resolve(onNode.includes(`${node} ${ns}/${sa}`));
    },
  };
}
const ZTUNNEL_POD = { "istio-system/ztunnel-x": { uid: "uid-z", serviceAccount: "ztunnel", nodeName: "node-a" } };

async function refuses(p: Promise<unknown>, reason: string, code: string, message: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof NodeAuthorizationError, String(err));
    assert.equal(err.reason, reason);
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

describe("parseNodeAccounts (--trusted-node-agents)", () => {
  it("reads ns/sa pairs, drops duplicates and blanks", () => {
    assert.deepEqual(parseNodeAccounts(" istio-system/ztunnel, kube-system/node-agent.v2 ,,istio-system/ztunnel"), [
      { namespace: "istio-system", serviceAccount: "ztunnel" },
      { namespace: "kube-system", serviceAccount: "node-agent.v2" },
    ]);
    assert.deepEqual(parseNodeAccounts(""), []);
  });
  it("refuses anything but namespace/serviceaccount", () => {
    for (const bad of ["ztunnel", "a/b/c", "Istio/ztunnel", "istio-system/", "/ztunnel"])
      assert.throws(() => parseNodeAccounts(bad), /expected e\.g\. istio-system\/ztunnel/, bad);
  });
});

describe("impersonatedIdentityOf and parseWorkloadSpiffeId", () => {
  it('absent or empty means none (istiod\'s GetStringValue() == ""); a non-string is refused', () => {
    assert.equal(impersonatedIdentityOf(undefined), undefined);
    assert.equal(impersonatedIdentityOf({}), undefined);
    assert.equal(impersonatedIdentityOf({ ImpersonatedIdentity: "" }), undefined);
    assert.equal(impersonatedIdentityOf({ ImpersonatedIdentity: SLEEP }), SLEEP);
    assert.throws(() => impersonatedIdentityOf({ ImpersonatedIdentity: 7 }), /is not a string/);
  });
  it("needs spiffe://<our trust domain>/ns/<ns>/sa/<sa>", () => {
    assert.deepEqual(parseWorkloadSpiffeId(SLEEP, TD), { namespace: "default", serviceAccount: "sleep" });
    assert.throws(() => parseWorkloadSpiffeId("spiffe://other/ns/default/sa/sleep", TD), /outside trust domain/);
    for (const bad of [
      "spiffe://cluster.local/ns/default/sa/sleep/x",
      "spiffe://cluster.local/ns/Default/sa/sleep",
      "https://cluster.local/ns/default/sa/sleep",
    ])
      assert.throws(() => parseWorkloadSpiffeId(bad, TD), /not a workload SPIFFE ID/, bad);
  });
});

describe("NodeAuthorizer.identityFor", () => {
  const auth = () => new NodeAuthorizer(parseNodeAccounts("istio-system/ztunnel"), TD, new FakeClock());

  it("without ImpersonatedIdentity: the caller's own identity, no lookups", async () => {
    const pods = directory({}, []);
    assert.equal(await auth().identityFor(ZTUNNEL, undefined, pods, "c1"), ZTUNNEL.spiffeId);
    assert.deepEqual(pods.calls, []);
  });

  it("a trusted node agent gets an identity with a pod on its pod's node", async () => {
    const pods = directory(ZTUNNEL_POD, ["node-a default/sleep"]);
    assert.equal(await auth().identityFor(ZTUNNEL, SLEEP, pods, "c1"), SLEEP);
    assert.deepEqual(pods.calls, ["get istio-system/ztunnel-x", "list node-a default/sleep"]);
  });

  it("the caller's node comes from its pod (cached by UID), never from the request", async () => {
    const a = auth();
    const pods = directory(ZTUNNEL_POD, ["node-a default/sleep"]);
    await a.identityFor(ZTUNNEL, SLEEP, pods, "c1");
    await a.identityFor(ZTUNNEL, SLEEP, pods, "c1");
    assert.equal(pods.calls.filter((c) => c.startsWith("get")).length, 1);
  });

  it("refuses an identity with no pod on the caller's node", async () => {
    await refuses(
      auth().identityFor(ZTUNNEL, SLEEP, directory(ZTUNNEL_POD, ["node-b default/sleep"]), "c1"),
      "impersonation_not_on_node",
      "UNAUTHENTICATED",
      /no pod of service account default\/sleep runs on its node node-a \(cluster c1\)/,
    );
  });

  it("refuses an untrusted caller before any lookup", async () => {
    const pods = directory({}, []);
    const sleep = identityFromTokenReview(
      {
        status: {
          authenticated: true,
          audiences: ["istio-ca"],
          user: { username: "system:serviceaccount:default:sleep", groups: ["system:serviceaccounts"] },
        },
      },
      "istio-ca",
      TD,
    );
    await refuses(
      auth().identityFor(sleep, SLEEP, pods, "c1"),
      "impersonation_not_trusted",
      "UNAUTHENTICATED",
      /default\/sleep may only request its own identity .*--trusted-node-agents \(istio-system\/ztunnel\)/,
    );
    assert.deepEqual(pods.calls, []);
  });

  it("with an empty trusted list nobody impersonates", async () => {
    await refuses(
      new NodeAuthorizer([], TD).identityFor(ZTUNNEL, SLEEP, directory(ZTUNNEL_POD, ["node-a default/sleep"]), "c1"),
      "impersonation_not_trusted",
      "UNAUTHENTICATED",
      /none configured/,
    );
  });

  it("a token bound to no pod proves no node; the node-name extra alone does", async () => {
    const unbound = { ...ZTUNNEL, podName: undefined, podUid: undefined };
    await refuses(
      auth().identityFor(unbound, SLEEP, directory({}, ["node-a default/sleep"]), "c1"),
      "impersonation_unbound_token",
      "UNAUTHENTICATED",
      /not bound to a pod or node/,
    );
    const nodeBound = { ...unbound, nodeName: "node-a" };
    assert.equal(await auth().identityFor(nodeBound, SLEEP, directory({}, ["node-a default/sleep"]), "c1"), SLEEP);
  });

  it("refuses when the caller's pod is gone, was replaced (UID), runs as another account, or is unscheduled", async () => {
    const cases: [Record<string, PodFacts>, RegExp][] = [
      [{}, /does not exist/],
      [
        { "istio-system/ztunnel-x": { uid: "uid-new", serviceAccount: "ztunnel", nodeName: "node-a" } },
        /has UID uid-new/,
      ],
      [
        { "istio-system/ztunnel-x": { uid: "uid-z", serviceAccount: "default", nodeName: "node-a" } },
        /runs as service account default/,
      ],
      [{ "istio-system/ztunnel-x": { uid: "uid-z", serviceAccount: "ztunnel", nodeName: "" } }, /not scheduled/],
    ];
    for (const [pods, message] of cases)
      await refuses(
        auth().identityFor(ZTUNNEL, SLEEP, directory(pods, ["node-a default/sleep"]), "c1"),
        "impersonation_caller_pod",
        "UNAUTHENTICATED",
        message,
      );
  });

  it("refuses when the token's node-name and the pod's node disagree", async () => {
    await refuses(
      auth().identityFor(
        { ...ZTUNNEL, nodeName: "node-b" },
        SLEEP,
        directory(ZTUNNEL_POD, ["node-a default/sleep"]),
        "c1",
      ),
      "impersonation_caller_pod",
      "UNAUTHENTICATED",
      /names node node-b but its pod runs on node-a/,
    );
  });

  it("a lookup error refuses (UNAVAILABLE), never allows; 403 names the RBAC it needs", async () => {
    await refuses(
      auth().identityFor(ZTUNNEL, SLEEP, directory(ZTUNNEL_POD, [], new Error("connect ECONNREFUSED")), "c1"),
      "impersonation_check_failed",
      "UNAVAILABLE",
      /could not read the caller's pod istio-system\/ztunnel-x from cluster c1's apiserver.*ECONNREFUSED; retry/,
    );
    const forbidden = new HttpStatusError("kubernetes", "GET", "/api/v1/namespaces/istio-system/pods/ztunnel-x", 403, [
      "forbidden",
    ]);
    await refuses(
      auth().identityFor(ZTUNNEL, SLEEP, directory(ZTUNNEL_POD, [], forbidden), "c1"),
      "impersonation_check_failed",
      "UNAVAILABLE",
      /pods get\/list/,
    );
  });
});

describe("token review extras", () => {
  it("carries the pod and node the apiserver bound the token to", () => {
    const who = identityFromTokenReview(
      {
        status: {
          authenticated: true,
          audiences: ["istio-ca"],
          user: {
            username: "system:serviceaccount:istio-system:ztunnel",
            groups: ["system:serviceaccounts"],
            extra: {
              "authentication.kubernetes.io/pod-name": ["ztunnel-x"],
              "authentication.kubernetes.io/pod-uid": ["uid-z"],
              "authentication.kubernetes.io/node-name": ["node-a"],
              "authentication.kubernetes.io/credential-id": ["JTI=abc"],
            },
          },
        },
      },
      "istio-ca",
      TD,
    );
    assert.deepEqual(
      { podName: who.podName, podUid: who.podUid, nodeName: who.nodeName },
      { podName: "ztunnel-x", podUid: "uid-z", nodeName: "node-a" },
    );
  });
});

describe("requestedClusterId", () => {
  it("reads the clusterid header or the metadata ClusterID; none is the local cluster", () => {
    assert.equal(requestedClusterId([], undefined), "");
    assert.equal(requestedClusterId(["c2"], undefined), "c2");
    assert.equal(requestedClusterId([], { ClusterID: "c2" }), "c2");
    assert.equal(requestedClusterId(["c2"], { ClusterID: "c2" }), "c2");
  });
  it("refuses repeated headers, disagreement and non-strings", () => {
    assert.throws(() => requestedClusterId(["a", "b"], undefined), /2 clusterid headers/);
    assert.throws(() => requestedClusterId(["a"], { ClusterID: "b" }), /disagree/);
    assert.throws(() => requestedClusterId([], { ClusterID: 3 }), /not a string/);
    assert.throws(() => requestedClusterId([Buffer.from("a")], undefined), /binary/);
  });
});

const b64 = (s: string) => Buffer.from(s).toString("base64");
const secret = (name: string, created: string, data: Record<string, string>): SecretObject => ({
  metadata: { name, namespace: "istio-system", creationTimestamp: created },
  data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, b64(v)])),
});

describe("clustersFromSecrets", () => {
  it("each key a cluster; the local ID is ignored; the oldest Secret keeps a duplicated ID", () => {
    const { clusters, notes } = clustersFromSecrets(
      [
        secret("newer", "2026-02-01T00:00:00Z", { c2: "kc-newer", c3: "kc-3" }),
        secret("older", "2026-01-01T00:00:00Z", { c2: "kc-older", Kubernetes: "kc-local" }),
      ],
      "Kubernetes",
    );
    assert.deepEqual(
      [...clusters].map(([id, c]) => [id, c.kubeconfig, c.source]),
      [
        ["c2", "kc-older", "Secret istio-system/older key c2"],
        ["c3", "kc-3", "Secret istio-system/newer key c3"],
      ],
    );
    assert.equal(notes.length, 2);
    assert.match(notes.join("\n"), /older key Kubernetes: ignored, it names the local cluster/);
    assert.match(
      notes.join("\n"),
      /newer key c2: ignored, cluster c2 is already registered by Secret istio-system\/older/,
    );
  });
});

describe("RemoteClusters.select", () => {
  const log = pino({ level: "silent" });
  const closed: string[] = [];
  const fakeClient = (name: string) =>
    ({ close: () => Promise.resolve(void closed.push(name)) }) as unknown as KubeClient;
  const make = (aliases?: Map<string, string>) => {
    const rc = new RemoteClusters<string>({
      kube: fakeClient("local"),
      namespace: "istio-system",
      localClusterId: "c1",
      aliases,
      local: "local-access",
      makeAccess: (id) => `access-${id}`,
      log,
      buildClient: (kubeconfig) =>
        kubeconfig === "bad"
          ? Promise.reject(new Error("kubeconfig: exec not allowed"))
          : Promise.resolve(fakeClient(kubeconfig)),
    });
    // The watch loop's state, set directly here instead of through an apiserver.
    return rc as unknown as {
      select: RemoteClusters<string>["select"];
      reconcile: RemoteClusters<string>["reconcile"];
      secrets: Map<string, SecretObject>;
      synced: boolean;
    };
  };

  it("local for none or the local ID; unknown before and after the Secrets are read; remote once declared", async () => {
    const rc = make();
    assert.deepEqual(rc.select(""), { ok: true, id: "c1", local: true, access: "local-access" });
    assert.deepEqual(rc.select("c1"), { ok: true, id: "c1", local: true, access: "local-access" });
    const early = rc.select("c2");
    assert.ok(!early.ok && early.code === "UNAVAILABLE" && /not known yet/.test(early.message));
    rc.synced = true;
    const unknown = rc.select("c2");
    assert.ok(!unknown.ok);
    assert.equal(unknown.code, "UNAUTHENTICATED");
    assert.match(
      unknown.message,
      /cluster "c2", but this agent knows only its own cluster "c1" \(--cluster-id\) and remote clusters \[\]; .*istio\/multiCluster=true in namespace istio-system, each data key a cluster ID/,
    );
    rc.secrets.set("s", secret("s", "2026-01-01T00:00:00Z", { c2: "kc2", c3: "bad" }));
    await rc.reconcile();
    assert.deepEqual(rc.select("c2"), { ok: true, id: "c2", local: false, access: "access-c2" });
    const broken = rc.select("c3");
    assert.ok(!broken.ok && broken.code === "UNAVAILABLE");
    assert.match(broken.message, /cluster "c3" \(Secret istio-system\/s key c3\) cannot be used: .*exec not allowed/);
    // Removing the Secret removes the clusters and closes their clients.
    rc.secrets.clear();
    await rc.reconcile();
    assert.equal(rc.select("c2").ok, false);
    assert.ok(closed.includes("kc2"));
  });
});

describe("cluster aliases (--cluster-aliases, istiod's --clusterAliases)", () => {
  const log = pino({ level: "silent" });
  const client = (name: string) => ({ close: () => Promise.resolve(void name) }) as unknown as KubeClient;
  const make = (aliases: string) => {
    const rc = new RemoteClusters<string>({
      kube: client("local"),
      namespace: "istio-system",
      localClusterId: "c1",
      aliases: parseClusterAliases(aliases),
      local: "local-access",
      makeAccess: (id) => `access-${id}`,
      log,
      buildClient: (kubeconfig) => Promise.resolve(client(kubeconfig)),
    });
    return rc as unknown as {
      select: RemoteClusters<string>["select"];
      reconcile: RemoteClusters<string>["reconcile"];
      secrets: Map<string, SecretObject>;
      synced: boolean;
    };
  };

  it("parses alias=clusterID pairs and refuses what istiod refuses, naming the entry", () => {
    assert.deepEqual(
      [...parseClusterAliases(" old=c1, east = c2 ,")],
      [
        ["old", "c1"],
        ["east", "c2"],
      ],
    );
    assert.deepEqual([...parseClusterAliases("")], []);
    assert.throws(() => parseClusterAliases("old"), /"old" is not alias=clusterID/);
    assert.throws(() => parseClusterAliases("=c1"), /"=c1" is not alias=clusterID/);
    assert.throws(() => parseClusterAliases("c1=c1"), /names the cluster itself/);
    assert.throws(() => parseClusterAliases("a=c1,a=c2"), /alias "a" is given twice/);
    assert.throws(() => parseClusterAliases("a=c1,b=c1"), /cluster "c1" has two aliases \("a", "b"\)/);
  });

  it("an alias of the local ID is local; another alias is its target's remote cluster, after the ID itself", async () => {
    const rc = make("old-name=c1,east=c2,west=c3");
    assert.deepEqual(rc.select("old-name"), { ok: true, id: "c1", local: true, access: "local-access" });
    rc.synced = true;
    const missing = rc.select("east");
    assert.ok(!missing.ok && missing.code === "UNAUTHENTICATED");
    assert.match(missing.message, /names cluster "east" \(alias of "c2", --cluster-aliases\), but/);
    rc.secrets.set("s", secret("s", "2026-01-01T00:00:00Z", { c2: "kc2", west: "kc-west", c3: "kc3" }));
    await rc.reconcile();
    assert.deepEqual(rc.select("east"), { ok: true, id: "c2", local: false, access: "access-c2" });
    // A cluster registered under the requested ID itself wins over the alias target (istiod's order).
    assert.deepEqual(rc.select("west"), { ok: true, id: "west", local: false, access: "access-west" });
    // An unaliased unknown ID is still refused.
    assert.equal(rc.select("c9").ok, false);
  });

  it("config: an alias that is the agent's own --cluster-id is refused at start", async () => {
    const { loadConfig } = await import("../../src/config/load.js");
    assert.throws(
      () => loadConfig({ "cluster-id": "c1", "cluster-aliases": "c1=c2" }, {}, { needVault: false }),
      /"c1=c2" makes this cluster's own ID \(--cluster-id c1\) an alias/,
    );
    assert.throws(
      () => loadConfig({ "cluster-aliases": "a=b,c=b" }, {}, { needVault: false }),
      /--cluster-aliases.*alias=clusterID pairs.*cluster "b" has two aliases/,
    );
  });
});

describe("kubeClientFromUntrustedKubeconfig (a remote cluster's Secret)", () => {
  const doc = (user: Record<string, unknown>, cluster: Record<string, unknown> = {}) =>
    JSON.stringify({
      clusters: [
        { name: "c", cluster: { server: "https://10.0.0.1:6443", "certificate-authority-data": b64("x"), ...cluster } },
      ],
      users: [{ name: "u", user }],
      contexts: [{ name: "ctx", context: { cluster: "c", user: "u" } }],
      "current-context": "ctx",
    });
  it("accepts inline credentials", async () => {
    const { kubeClientFromUntrustedKubeconfig } = await import("../../src/kube/kubeconfig.js");
    const client = await kubeClientFromUntrustedKubeconfig(doc({ token: "t" }), "Secret istio-system/s key c2");
    await client.close();
  });
  it("refuses what reads the agent's files, runs programs, or skips TLS verification (istiod's rules, and ours)", async () => {
    const { kubeClientFromUntrustedKubeconfig } = await import("../../src/kube/kubeconfig.js");
    const cases: [string, RegExp][] = [
      [doc({ tokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token" }), /tokenFile/],
      [doc({ exec: { command: "sh", apiVersion: "client.authentication.k8s.io/v1" } }), /exec/],
      [doc({ "client-certificate": "/etc/a.crt", "client-key": "/etc/a.key" }), /client-certificate, client-key/],
      [doc({ "auth-provider": { name: "gcp" } }), /auth-provider gcp/],
      [doc({ token: "t" }, { "insecure-skip-tls-verify": true }), /insecure-skip-tls-verify/],
      [doc({ token: "t" }, { "certificate-authority": "/etc/ca.crt" }), /certificate-authority \(a file\)/],
    ];
    for (const [text, message] of cases)
      await assert.rejects(kubeClientFromUntrustedKubeconfig(text, "Secret istio-system/s key c2"), (err: Error) => {
        assert.match(err.message, /^Secret istio-system\/s key c2: .*not allowed in a remote cluster's kubeconfig/);
        assert.match(err.message, message);
        return true;
      });
  });
});

describe("--trusted-node-agents and --cluster-id", () => {
  const env = { VAULT_ADDR: "https://vault.example:8200" };
  it("default to Istio's ztunnel account and cluster ID; an empty list trusts nobody; a bad entry is a config error", async () => {
    const { loadConfig, parseFlags } = await import("../../src/config/load.js");
    const d = loadConfig({}, env);
    assert.deepEqual(d.istioCa.trustedNodeAgents, ["istio-system/ztunnel"]);
    assert.equal(d.istioCa.clusterId, "Kubernetes");
    const c = loadConfig(parseFlags(["--trusted-node-agents=", "--cluster-id=east"]), env);
    assert.deepEqual(c.istioCa.trustedNodeAgents, []);
    assert.equal(c.istioCa.clusterId, "east");
    assert.throws(
      () => loadConfig(parseFlags(["--trusted-node-agents=istio-system/ztunnel,ztunnel"]), env),
      /--trusted-node-agents: .*"ztunnel" is not namespace\/serviceaccount/,
    );
  });
});
