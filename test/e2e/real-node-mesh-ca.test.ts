// The mesh-CA mode in real pods (README "Two ways to run with Istio", mode 2): istiod from Istio's chart with the
// project's istiod-values-mesh-ca.yaml (CA server off, the agent as a native sidecar without cacerts or key export),
// and a workload pod running Istio's own agent (pilot-agent, laid out as Istio's grpc-agent injection template lays it
// out: no Envoy, certificates to files) with nothing but what Istio gives a pod: its kubelet-projected istio-ca token
// and the istio-ca-root-cert ConfigMap, here written by the agent. pilot-agent gets and rotates its certificate from
// the agent, and istiod serves it xDS on the agent-issued serving certificate; the intermediate's private key is
// found nowhere outside the agent's memory.
//
// What the node lacks is given explicitly, and only that: there is no DNS and no kube-proxy, so the workload pod's
// /etc/hosts (hostAliases) names istiod's pod for the two Service names Istio's values use, and CA_ADDR goes to the
// agent's container port (15013) instead of the Service port the chart maps to it (15012).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { readFileSync, existsSync } from "node:fs";
import { connect } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { CertificateAuthorityAgentClient } from "../../src/gen/istiodvaultagent/v1/agent.js";
import { isManaged } from "../../src/kube/ownership.js";
import { getBundle, istioCaClient } from "../env/agent-process.js";
import { opensslVerify, subjectAltNames, workloadCsr } from "../env/crypto-check.js";
import { ISTIO_NS } from "../env/fixtures.js";
import { filesUnder, openFiles, privateKeysInFiles, privateKeysInText, spkiHex } from "../env/key-scan.js";
import { waitUntil } from "../env/process.js";
import {
  IstiodOnNode,
  inContainer,
  runningContainerPid,
  startRealNode,
  type Pod,
  type RealNode,
} from "../env/real-node.js";
import { adsThroughPilotAgent, CLUSTER_TYPE } from "../env/xds-client.js";

const MESH_NS = "mesh";
const WORKLOAD = { podName: "sleep", namespace: MESH_NS, serviceAccount: "sleep" };
const WORKLOAD_ID = `spiffe://cluster.local/ns/${MESH_NS}/sa/sleep`;
/** The agent's files in istiod's pod, as istiod-values-mesh-ca.yaml mounts them. */
const ISTIOD_TLS = "/etc/istiod-vault-agent/istiod-tls";
const AGENT_SOCKET = "/var/run/istiod-vault-agent/agent.sock";
/** Where Istio's grpc-agent template has pilot-agent write the workload certificate (OUTPUT_CERTS). */
const WORKLOAD_CERTS = "/var/lib/istio/data";

let rn: RealNode;
let istiod: IstiodOnNode;
let istiodPod: Pod;
let agentClient: CertificateAuthorityAgentClient | undefined;
let vaultRoot: string;
let pilotAgentPid: number;

describe("real node: the agent as the mesh's CA, Istio's pilot-agent in a workload pod", { timeout: 1_500_000 }, () => {
  before(async () => {
    // The project chart's mesh-CA values: the agent's CA Service, TokenReview and root-distribution RBAC. (The pods
    // its node authoriser reads are granted to istiod's service account by Istio's chart already.)
    rn = await startRealNode({ meshCa: { enabled: true } });
    istiod = new IstiodOnNode(rn);
    await rn.t.env.createNamespace(MESH_NS);
    await rn.t.env.createServiceAccount(MESH_NS, WORKLOAD.serviceAccount);
    vaultRoot = await istiod.vaultRoot();
    istiod.applyPolicy("istiod", "istiod-agent");
    istiod.install({ release: "istiod", agentMode: "mesh-ca" });
    istiodPod = await istiod.readyPod("istiod");
  });

  after(async () => {
    agentClient?.close();
    await rn?.stop();
  });

  const agentPid = () => istiod.pid(istiodPod, "istiod-vault-agent");

  /** The agent's own gRPC socket in istiod's pod, reached from the node through the container's root. */
  function agent(): CertificateAuthorityAgentClient {
    agentClient ??= new CertificateAuthorityAgentClient(
      `unix://${inContainer(agentPid(), AGENT_SOCKET)}`,
      grpc.credentials.createInsecure(),
    );
    return agentClient;
  }

  it("istiod runs with its CA server off on a serving certificate the agent issued under the Vault root", async () => {
    const log = istiod.logs(istiodPod.metadata.name);
    assert.doesNotMatch(log, /Use self-signed certificate|Using istiod file format for signing ca files/, log);
    const tlsCrt = readFileSync(inContainer(agentPid(), `${ISTIOD_TLS}/tls.crt`), "utf8");
    const [leaf, ...issuers] = tlsCrt.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g) ?? [];
    assert.deepEqual(subjectAltNames(leaf!), ["istiod.istio-system.svc"]);
    assert.match(opensslVerify(leaf!, vaultRoot, issuers.join("")), /OK/);
    // What istiod presents on its xDS port (from the node, over the pod network) is exactly that certificate.
    const presented = await new Promise<X509Certificate>((resolve, reject) => {
      const s = connect(
        {
          host: istiodPod.status!.podIP!,
          port: 15012,
          servername: "istiod.istio-system.svc",
          ca: vaultRoot,
          ALPNProtocols: ["h2"],
        },
        () => {
          const cert = s.getPeerX509Certificate();
          s.end();
          if (cert) resolve(cert);
          else reject(new Error("istiod presented no certificate"));
        },
      );
      s.on("error", reject);
    });
    assert.equal(presented.fingerprint256, new X509Certificate(leaf!).fingerprint256);
  });

  it("the workload namespace's istio-ca-root-cert is written by the agent and holds exactly the Vault root", async () => {
    let cm: { metadata: { labels?: Record<string, string> }; data?: Record<string, string> } | undefined;
    await waitUntil(
      `ConfigMap ${MESH_NS}/istio-ca-root-cert`,
      async () => {
        const res = await rn.t.env.kube.admin.request<typeof cm>(
          "GET",
          `/api/v1/namespaces/${MESH_NS}/configmaps/istio-ca-root-cert`,
          undefined,
          { acceptStatuses: [404] },
        );
        cm = res.status === 200 ? res.body : undefined;
        return !!cm;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    assert.equal(cm!.data?.["root-cert.pem"]?.trim(), vaultRoot.trim());
    assert.ok(isManaged(cm), "labelled as the agent's (src/kube/ownership.ts)");
    assert.equal((await getBundle(agent())).rootCertPem.join("").trim(), vaultRoot.trim());
  });

  it("pilot-agent in a pod gets its workload certificate from the agent: its SPIFFE ID, the Vault root", async () => {
    await startWorkloadPod();
    const chainPath = inContainer(pilotAgentPid, `${WORKLOAD_CERTS}/cert-chain.pem`);
    await waitUntil("pilot-agent wrote cert-chain.pem", () => Promise.resolve(existsSync(chainPath)), {
      timeoutMs: 60_000,
      intervalMs: 300,
    }).catch((err: Error) => {
      throw new Error(`${err.message}\n${rn.node.containerLog(MESH_NS, WORKLOAD.podName, "istio-proxy")}`);
    });
    const certs = certsIn(readFileSync(chainPath, "utf8"));
    assert.ok(certs.length >= 2, "leaf and intermediate");
    assert.deepEqual(subjectAltNames(certs[0]!), [WORKLOAD_ID]);
    assert.match(opensslVerify(certs[0]!, vaultRoot, certs.slice(1).join("")), /OK/);
    const intermediate = new X509Certificate((await getBundle(agent())).signingCertPem);
    assert.ok(new X509Certificate(certs[0]!).checkIssued(intermediate), "signed by the agent's intermediate");
    // The agent's CA listener signed it (istiod's CA server is off): its metrics, from the node over the pod network.
    const metrics = await (await fetch(`http://${istiodPod.status!.podIP}:15300/metrics`)).text();
    const signed = [
      ...metrics.matchAll(/^istiod_vault_agent_signing_leaves_total\{[^}]*listener="istio_ca"[^}]*\} (\d+)/gm),
    ];
    assert.ok(
      signed.reduce((n, m) => n + Number(m[1]), 0) >= 1,
      `no leaf signed by the Istio CA listener:\n${metrics
        .split("\n")
        .filter((l) => l.includes("signing_leaves"))
        .join("\n")}`,
    );
  });

  it("pilot-agent rotates it before expiry: a new certificate from the agent", async () => {
    const chainPath = inContainer(pilotAgentPid, `${WORKLOAD_CERTS}/cert-chain.pem`);
    const first = new X509Certificate(readFileSync(chainPath, "utf8"));
    let next = first;
    await waitUntil(
      "pilot-agent rotated its workload certificate",
      () => {
        next = new X509Certificate(readFileSync(chainPath, "utf8"));
        return Promise.resolve(next.serialNumber !== first.serialNumber);
      },
      { timeoutMs: 90_000, intervalMs: 1000 },
    );
    assert.ok(new Date(next.validTo).getTime() > new Date(first.validTo).getTime());
    assert.equal(next.subjectAltName, `URI:${WORKLOAD_ID}`);
    assert.match(opensslVerify(next.toString(), vaultRoot, (await getBundle(agent())).signingCertPem), /OK/);
  });

  it("istiod serves the workload xDS through pilot-agent, over TLS verified against the Vault root", async () => {
    const uds = inContainer(pilotAgentPid, "/etc/istio/proxy/XDS");
    await waitUntil("pilot-agent's XDS proxy socket", () => Promise.resolve(existsSync(uds)), {
      timeoutMs: 60_000,
      intervalMs: 200,
    });
    const answer = await adsThroughPilotAgent(uds, WORKLOAD);
    assert.equal(answer.typeUrl, CLUSTER_TYPE);
    assert.ok(answer.resources > 0, "istiod sent clusters");
    await waitUntil(
      "istiod logged the workload's ADS connection",
      () =>
        Promise.resolve(
          /ADS: new connection for node:sleep\.mesh/.test(
            rn.node.containerLog(ISTIO_NS, istiodPod.metadata.name, "discovery"),
          ),
        ),
      { timeoutMs: 10_000, intervalMs: 200 },
    );
    // pilot-agent trusted istiod only through the root it was given: no error about the certificate in its log.
    assert.doesNotMatch(
      rn.node.containerLog(MESH_NS, WORKLOAD.podName, "istio-proxy"),
      /certificate signed by unknown authority|x509:/,
    );
  });

  it("a ztunnel pod's kubelet token gets the identity of a pod on its node; nothing else impersonates", async () => {
    // Ambient's node agent: a pod of istio-system/ztunnel (--trusted-node-agents' default) on this node, with the
    // istio-ca token the kubelet projects for it (bound to the pod, and so to the node).
    await rn.t.env.createServiceAccount(ISTIO_NS, "ztunnel");
    const ztunnelPid = await startTokenPod(ISTIO_NS, "ztunnel", "ztunnel");
    const token = (pid: number) => readFileSync(inContainer(pid, "/var/run/secrets/tokens/istio-token"), "utf8");
    const { client, create } = istioCaClient(
      `${istiodPod.status!.podIP}:15013`,
      vaultRoot,
      "istiod-vault-agent.istio-system.svc",
    );
    try {
      const asZtunnel = async (identity: string) =>
        create(await workloadCsr(identity), token(ztunnelPid), 3600, { metadata: { ImpersonatedIdentity: identity } });
      // The sleep pod (pilot-agent's) runs on this node: ztunnel may have its certificate.
      const chain = await asZtunnel(WORKLOAD_ID);
      assert.deepEqual(subjectAltNames(chain[0]!), [WORKLOAD_ID]);
      assert.match(opensslVerify(chain[0]!, vaultRoot, chain.slice(1).join("")), /OK/);
      // No pod of mesh/nobody runs anywhere: refused, naming why.
      await assert.rejects(asZtunnel(`spiffe://cluster.local/ns/${MESH_NS}/sa/nobody`), (err: grpc.ServiceError) => {
        assert.match(err.details, /no pod of service account mesh\/nobody runs on its node/);
        return true;
      });
      // The workload is not a node agent: its own token cannot ask for ztunnel's identity.
      const ztunnelId = "spiffe://cluster.local/ns/istio-system/sa/ztunnel";
      await assert.rejects(
        create(await workloadCsr(ztunnelId), token(pilotAgentPid), 3600, {
          metadata: { ImpersonatedIdentity: ztunnelId },
        }),
        (err: grpc.ServiceError) => {
          assert.match(
            err.details,
            /accepted only from the node agents in --trusted-node-agents \(istio-system\/ztunnel\)/,
          );
          return true;
        },
      );
    } finally {
      client.close();
    }
  });

  it("the intermediate's private key is in no file of istiod's pod, no open file, no log and no API object", async () => {
    const bundle = await getBundle(agent());
    assert.equal(bundle.privateKeyPem, "", "GetSigningBundle returns no key without --key-export");
    const intermediateSpki = spkiHex(bundle.signingCertPem);
    const istiodKeySpki = spkiHex(readFileSync(inContainer(agentPid(), `${ISTIOD_TLS}/tls.crt`), "utf8"));
    assert.notEqual(istiodKeySpki, intermediateSpki);

    // Every volume of the pod (the kubelet mounts memory-backed ones under its pod directory too), the pod's logs,
    // and every regular file the agent and istiod hold open.
    const podDir = `${rn.node.kubeletDir}/pods/${istiodPod.metadata.uid}`;
    const logDir = rn.node.podLogDir(ISTIO_NS, istiodPod.metadata.name);
    assert.ok(logDir, "the kubelet keeps istiod's pod logs");
    const files = [
      ...filesUnder(podDir, logDir),
      ...openFiles(agentPid()),
      ...openFiles(istiod.pid(istiodPod, "discovery")),
    ];
    assert.ok(
      files.some((f) => f.endsWith("/tls.key")),
      `the scan reaches istiod's TLS volume: ${files.join(", ")}`,
    );
    const found = privateKeysInFiles(files);
    for (const f of found) {
      assert.ok(!f.derKey, `${f.file} holds a DER private key`);
      assert.ok(!f.pemKeySpkis.includes(intermediateSpki), `${f.file} holds the intermediate's private key`);
    }
    // The only private key in istiod's pod is istiod's own serving key.
    assert.deepEqual(
      [...new Set(found.map((f) => f.file.split("/").at(-1)))],
      ["tls.key"],
      `private keys found in: ${found.map((f) => f.file).join(", ")}`,
    );
    assert.deepEqual([...new Set(found.flatMap((f) => f.pemKeySpkis))], [istiodKeySpki]);

    // Nor in etcd: no Secret or ConfigMap anywhere holds a private key (the agent writes none in this mode).
    for (const kind of ["secrets", "configmaps"]) {
      const list = await rn.t.env.kube.admin.get<{
        items: { metadata: { namespace: string; name: string }; data?: Record<string, string> }[];
      }>(`/api/v1/${kind}`);
      for (const o of list.items) {
        for (const [k, v] of Object.entries(o.data ?? {})) {
          const text = kind === "secrets" ? Buffer.from(v, "base64").toString("latin1") : v;
          assert.deepEqual(privateKeysInText(text), [], `${kind} ${o.metadata.namespace}/${o.metadata.name} ${k}`);
        }
      }
    }
  });
});

/** The workload pod, as Istio's grpc-agent injection template lays out its istio-proxy container and volumes. */
async function startWorkloadPod(): Promise<void> {
  const istiodIp = istiodPod.status!.podIP!;
  const fieldRef = (fieldPath: string) => ({ valueFrom: { fieldRef: { fieldPath } } });
  const pod = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: WORKLOAD.podName, namespace: MESH_NS, labels: { app: "sleep" } },
    spec: {
      serviceAccountName: WORKLOAD.serviceAccount,
      automountServiceAccountToken: false,
      // No DNS on this node: the two Service names from Istio's values resolve to istiod's pod (see the header).
      hostAliases: [{ ip: istiodIp, hostnames: ["istiod.istio-system.svc", "istiod-vault-agent.istio-system.svc"] }],
      containers: [
        {
          name: "istio-proxy",
          image: rn.images.pilotAgent,
          imagePullPolicy: "Never",
          args: ["proxy", "sidecar", "--domain", `${MESH_NS}.svc.cluster.local`, "--log_output_level=default:info"],
          ports: [{ containerPort: 15020, protocol: "TCP", name: "mesh-metrics" }],
          env: [
            { name: "ISTIO_META_GENERATOR", value: "grpc" },
            { name: "OUTPUT_CERTS", value: WORKLOAD_CERTS },
            { name: "PILOT_CERT_PROVIDER", value: "istiod" },
            // global.caAddress, at the agent's container port (no kube-proxy for the Service's 15012 -> 15013)
            { name: "CA_ADDR", value: "istiod-vault-agent.istio-system.svc:15013" },
            { name: "POD_NAME", ...fieldRef("metadata.name") },
            { name: "POD_NAMESPACE", ...fieldRef("metadata.namespace") },
            { name: "INSTANCE_IP", ...fieldRef("status.podIP") },
            { name: "SERVICE_ACCOUNT", ...fieldRef("spec.serviceAccountName") },
            { name: "PROXY_CONFIG", value: JSON.stringify({ discoveryAddress: "istiod.istio-system.svc:15012" }) },
            { name: "ISTIO_META_CLUSTER_ID", value: "Kubernetes" },
            { name: "ISTIO_META_DNS_CAPTURE", value: "false" },
            { name: "DISABLE_ENVOY", value: "true" },
            // Short leaves, so a rotation shows within the test (pilot-agent renews at half their life).
            { name: "SECRET_TTL", value: "20s" },
          ],
          securityContext: {
            runAsUser: 1337,
            runAsGroup: 1337,
            runAsNonRoot: true,
            readOnlyRootFilesystem: true,
            allowPrivilegeEscalation: false,
            capabilities: { drop: ["ALL"] },
          },
          volumeMounts: [
            { name: "workload-socket", mountPath: "/var/run/secrets/workload-spiffe-uds" },
            { name: "istiod-ca-cert", mountPath: "/var/run/secrets/istio" },
            { name: "istio-data", mountPath: WORKLOAD_CERTS },
            { name: "istio-xds", mountPath: "/etc/istio/proxy" },
            { name: "istio-token", mountPath: "/var/run/secrets/tokens" },
            { name: "istio-podinfo", mountPath: "/etc/istio/pod" },
          ],
        },
      ],
      volumes: [
        { name: "workload-socket", emptyDir: {} },
        { name: "istio-xds", emptyDir: { medium: "Memory" } },
        { name: "istio-data", emptyDir: {} },
        {
          name: "istio-podinfo",
          downwardAPI: {
            items: [
              { path: "labels", fieldRef: { fieldPath: "metadata.labels" } },
              { path: "annotations", fieldRef: { fieldPath: "metadata.annotations" } },
            ],
          },
        },
        {
          name: "istio-token",
          projected: {
            sources: [{ serviceAccountToken: { path: "istio-token", expirationSeconds: 43200, audience: "istio-ca" } }],
          },
        },
        { name: "istiod-ca-cert", configMap: { name: "istio-ca-root-cert" } },
      ],
    },
  };
  await rn.t.env.kube.admin.create(`/api/v1/namespaces/${MESH_NS}/pods`, pod);
  pilotAgentPid = await runningContainerPid(rn.node, MESH_NS, WORKLOAD.podName, "istio-proxy");
}

/** A pod that only holds its kubelet-projected istio-ca token (the sandbox image, sleeping); returns its PID. */
async function startTokenPod(namespace: string, name: string, serviceAccount: string): Promise<number> {
  await rn.t.env.kube.admin.create(`/api/v1/namespaces/${namespace}/pods`, {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace },
    spec: {
      serviceAccountName: serviceAccount,
      automountServiceAccountToken: false,
      containers: [
        {
          name: "holder",
          image: rn.images.pause,
          imagePullPolicy: "Never",
          securityContext: { runAsUser: 1337, runAsNonRoot: true, readOnlyRootFilesystem: true },
          volumeMounts: [{ name: "istio-token", mountPath: "/var/run/secrets/tokens" }],
        },
      ],
      volumes: [
        {
          name: "istio-token",
          projected: {
            sources: [{ serviceAccountToken: { path: "istio-token", expirationSeconds: 3600, audience: "istio-ca" } }],
          },
        },
      ],
    },
  });
  return runningContainerPid(rn.node, namespace, name, "holder");
}

function certsIn(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g) ?? [];
}
