// The agent in real pods: a kubelet node (containerd + runc) on this machine, the agent image built from the project's
// Dockerfile, the CRD and RBAC from the project's chart, istiod from Istio's own Helm chart with the project's values,
// OpenBao as the root CA, and a workload pod that obtains its certificate from istiod the way Istio's agent does (its
// kubelet-projected istio-ca token and the istio-ca-root-cert ConfigMap istiod publishes).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync, readlinkSync, statSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { setupVault } from "../../src/vault/setup.js";
import { opensslVerify, publicKeyId } from "../env/crypto-check.js";
import { ISTIO_NS, type AgentTestEnv } from "../env/fixtures.js";
import { repoRoot } from "../env/harness.js";
import {
  kubectl,
  renderIstiod,
  renderedDeployments,
  shippedIstiodValues,
  testOverrides,
  type Images,
} from "../env/istio-install.js";
import { type KubeNode, type PodStatus } from "../env/node.js";
import { waitUntil } from "../env/process.js";
import { readImageArchive } from "../env/image-archive.js";
import {
  IstiodOnNode,
  inContainer,
  isReady,
  jwtClaims,
  mountOf,
  pidStatus,
  startRealNode,
  type Pod,
  type RealNode,
} from "../env/real-node.js";

const CACERTS = "/etc/istiod-vault-agent/cacerts";
const APP_NS = "app";

let rn: RealNode;
let t: AgentTestEnv;
let node: KubeNode;
let images: Images;
let istiod: IstiodOnNode;

describe("real node: istiod with the agent as a native sidecar", { timeout: 1_500_000 }, () => {
  before(async () => {
    // The install an operator runs first: the project chart (its CRD, and the agent's RBAC for both revisions used
    // below), rendered by helm and applied as is.
    rn = await startRealNode({ revisions: ["default", "canary"] });
    ({ t, node, images } = rn);
    istiod = new IstiodOnNode(rn);
    await t.env.createNamespace(APP_NS);
    await t.env.createServiceAccount(APP_NS, "app");
  });

  after(async () => {
    await rn?.stop();
  });

  /** A Vault Kubernetes-auth role `role` (setup-vault's policy) for istiod's service account `serviceAccount`. */
  async function vaultRoleFor(role: string, serviceAccount: string): Promise<void> {
    await setupVault(t.env.vault.client, t.env.vault.rootToken, {
      ...t.setup,
      role: { ...t.setup.role, name: role, serviceAccounts: [serviceAccount] },
    });
  }

  /** A workload pod asks istiod (at its pod IP) for a certificate; returns the chain it got. */
  async function workloadCertificate(istiodPod: Pod, serviceName: string): Promise<string[]> {
    const name = `client-${Date.now()}`;
    // istiod publishes the mesh root into every namespace; it must be Vault's (a plain istiod would publish its own)
    const root = (await istiod.vaultRoot()).trim();
    await waitUntil(
      "istio-ca-root-cert in the workload namespace holds the Vault root",
      async () => {
        const cm = await t.env.kube.admin.request<{ data?: Record<string, string> }>(
          "GET",
          `/api/v1/namespaces/${APP_NS}/configmaps/istio-ca-root-cert`,
          undefined,
          { acceptStatuses: [404] },
        );
        return (cm.body.data?.["root-cert.pem"] ?? "").includes(root);
      },
      { timeoutMs: 60_000, intervalMs: 1000 },
    );
    const script = join(t.env.dir, `${name}.mjs`);
    await bundleWorkloadClient(script);
    kubectl(t.env, ["-n", APP_NS, "create", "configmap", name, `--from-file=client.mjs=${script}`]);
    const pod = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, namespace: APP_NS },
      spec: {
        serviceAccountName: "app",
        restartPolicy: "Never",
        automountServiceAccountToken: false,
        securityContext: { runAsNonRoot: true, runAsUser: 1337, runAsGroup: 1337 },
        containers: [
          {
            name: "client",
            image: images.agent,
            imagePullPolicy: "Never",
            command: ["node", "/client/client.mjs"],
            env: [
              { name: "CA_ADDR", value: `${istiodPod.status!.podIP}:15012` },
              { name: "CA_NAME", value: `${serviceName}.${ISTIO_NS}.svc` },
              { name: "SPIFFE_ID", value: `spiffe://cluster.local/ns/${APP_NS}/sa/app` },
            ],
            securityContext: { readOnlyRootFilesystem: true, allowPrivilegeEscalation: false },
            volumeMounts: [
              { name: "client", mountPath: "/client" },
              { name: "istio-token", mountPath: "/var/run/secrets/tokens" },
              { name: "istiod-ca-cert", mountPath: "/var/run/secrets/istio" },
            ],
          },
        ],
        volumes: [
          { name: "client", configMap: { name } },
          {
            name: "istio-token",
            projected: {
              sources: [
                { serviceAccountToken: { audience: "istio-ca", expirationSeconds: 3600, path: "istio-token" } },
              ],
            },
          },
          { name: "istiod-ca-cert", configMap: { name: "istio-ca-root-cert" } },
        ],
      },
    };
    await t.env.kube.admin.create(`/api/v1/namespaces/${APP_NS}/pods`, pod);
    let phase = "";
    await waitUntil(
      `workload pod ${name} finished`,
      async () => {
        phase = (await node.podStatus(APP_NS, name))?.phase ?? "";
        return phase === "Succeeded" || phase === "Failed";
      },
      { timeoutMs: 120_000, intervalMs: 1000 },
    );
    const log = node.containerLog(APP_NS, name, "client");
    assert.equal(phase, "Succeeded", `workload client failed:\n${log}`);
    const line = log.split("\n").find((l) => l.includes('{"certChain"'));
    assert.ok(line, `no certificate in the client's output:\n${log}`);
    return (JSON.parse(line.slice(line.indexOf("{"))) as { certChain: string[] }).certChain;
  }

  let defaultPod: Pod;
  let firstIntermediate: string;

  it("the project's values render a native sidecar into Istio's chart, and the pod waits for the agent", async () => {
    const rendered = renderIstiod(t.env.dir, {
      release: "istiod",
      values: [shippedIstiodValues(), testOverrides(t.env, images, "cacerts")],
    });
    const [dep] = renderedDeployments(rendered);
    const spec = dep!.spec as {
      template: { spec: { initContainers: { name: string; restartPolicy?: string; startupProbe?: unknown }[] } };
    };
    const sidecar = spec.template.spec.initContainers.find((c) => c.name === "istiod-vault-agent");
    assert.equal(sidecar?.restartPolicy, "Always", "the agent must be a native sidecar");
    assert.ok(sidecar?.startupProbe, "the agent's startupProbe holds discovery back until cacerts is written");

    // The policy names a Vault role that does not exist yet: the agent cannot log in, so neither it nor istiod may
    // become ready and discovery must not start (it would otherwise create a self-signed CA of its own).
    istiod.applyPolicy("istiod", "istiod-agent-not-yet");
    istiod.install({ release: "istiod", agentMode: "cacerts" });
    let pod: Pod | undefined;
    await waitUntil("istiod pod created", async () => !!(pod = (await istiod.pods("istiod"))[0]), {
      timeoutMs: 60_000,
    });
    await waitUntil(
      "the agent tried to log in",
      () =>
        Promise.resolve(
          /login|permission denied|403/i.test(node.containerLog(ISTIO_NS, pod!.metadata.name, "istiod-vault-agent")),
        ),
      { timeoutMs: 120_000, intervalMs: 1000 },
    );
    const early = (await node.podStatus(ISTIO_NS, pod!.metadata.name))!;
    const discovery = early.containerStatuses?.find((c) => c.name === "discovery");
    assert.ok(!discovery?.state?.running, `discovery started before the agent was ready: ${JSON.stringify(early)}`);
    assert.ok(!isReady({ status: early }));

    // Now the real role: the agent logs in at its next retry, writes cacerts, and only then does discovery start.
    istiod.applyPolicy("istiod", "istiod-agent");
    kubectl(t.env, ["-n", ISTIO_NS, "delete", "pod", pod!.metadata.name, "--wait=false"]);
    defaultPod = await istiod.readyPod("istiod", [pod!.metadata.name]);
    const istiodLog = node.containerLog(ISTIO_NS, defaultPod.metadata.name, "discovery");
    assert.match(istiodLog, /Using istiod file format for signing ca files/, "istiod did not load the plugged-in CA");
    assert.doesNotMatch(istiodLog, /Use self-signed certificate as the CA certificate/);
  });

  it("cacerts is a memory-backed volume written by the agent's uid, readable by istiod's group, not by others", () => {
    const agentPid = istiod.pid(defaultPod, "istiod-vault-agent");
    const istiodPid = istiod.pid(defaultPod, "discovery");
    assert.equal(mountOf(agentPid, CACERTS).fstype, "tmpfs");
    const dir = `/proc/${agentPid}/root${CACERTS}`;
    for (const f of ["ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"]) {
      const st = statSync(join(dir, f));
      assert.equal(st.uid, 65532, `${f} owner`);
      assert.equal(st.gid, 1337, `${f} group`);
      assert.equal(st.mode & 0o777, 0o640, `${f} mode`);
    }
    const discovery = pidStatus(istiodPid);
    assert.equal(discovery.Uid!.split("\t")[0], "1337", "istiod runs as 1337");
    assert.ok(`${discovery.Gid} ${discovery.Groups}`.split(/\s+/).includes("1337"), "istiod is in group 1337");
    // istiod can read what it needs: it loaded the CA (previous test); the key is not readable by other users.
    firstIntermediate = readFileSync(join(dir, "ca-cert.pem"), "utf8");
    assert.ok(readlinkSync(join(dir, "..data")), "files are published through the ..data swap");
  });

  it("the agent runs non-root on a read-only root filesystem with the kubelet-projected vault token", () => {
    const agentPid = istiod.pid(defaultPod, "istiod-vault-agent");
    const st = pidStatus(agentPid);
    assert.equal(st.Uid!.split("\t")[0], "65532");
    assert.equal(st.Gid!.split("\t")[0], "1337");
    assert.equal(st.CapEff, "0000000000000000", "no effective capabilities");
    assert.ok(mountOf(agentPid, "/").options.includes("ro"), "root filesystem is read-only");
    const token = readFileSync(inContainer(agentPid, "/var/run/secrets/vault/vault-token"), "utf8");
    const claims = jwtClaims<{
      aud: string[];
      sub: string;
      "kubernetes.io"?: { pod?: { name: string } };
    }>(token);
    assert.deepEqual(claims.aud, ["vault"]);
    assert.equal(claims.sub, "system:serviceaccount:istio-system:istiod");
    assert.equal(claims["kubernetes.io"]?.pod?.name, defaultPod.metadata.name, "a pod-bound token from the kubelet");
    const agentLog = node.containerLog(ISTIO_NS, defaultPod.metadata.name, "istiod-vault-agent");
    assert.doesNotMatch(agentLog, /eyJ[\w-]+\.[\w-]+\./, "no JWT in the agent's log");
  });

  it("a workload pod gets a certificate from istiod that chains to the Vault root through the agent's intermediate", async () => {
    const chain = await workloadCertificate(defaultPod, "istiod");
    assert.ok(chain.length >= 2, "leaf and issuer chain");
    const root = await istiod.vaultRoot();
    assert.equal(publicKeyId(chain[1]!), publicKeyId(firstIntermediate), "leaf issued by the agent's intermediate");
    opensslVerify(chain[0]!, root, chain.slice(1).join("\n"));
  });

  it("deleting the istiod pod gives a new pod with a new key and intermediate, and it issues", async () => {
    kubectl(t.env, ["-n", ISTIO_NS, "delete", "pod", defaultPod.metadata.name, "--wait=false"]);
    const next = await istiod.readyPod("istiod", [defaultPod.metadata.name]);
    const agentPid = istiod.pid(next, "istiod-vault-agent");
    const second = readFileSync(`/proc/${agentPid}/root${CACERTS}/ca-cert.pem`, "utf8");
    assert.notEqual(publicKeyId(second), publicKeyId(firstIntermediate), "a new pod generates a new key");
    const chain = await workloadCertificate(next, "istiod");
    assert.equal(publicKeyId(chain[1]!), publicKeyId(second));
    opensslVerify(chain[0]!, await istiod.vaultRoot(), chain.slice(1).join("\n"));
    defaultPod = next;
  });

  it("a rolling restart keeps a ready istiod throughout and the new pod issues", async () => {
    const before = defaultPod.metadata.name;
    kubectl(t.env, ["-n", ISTIO_NS, "rollout", "restart", "deployment/istiod"]);
    let gaps = 0;
    let next: Pod | undefined;
    await waitUntil(
      "rollout to a new Ready pod and the old one gone",
      async () => {
        const pods = await istiod.pods("istiod");
        const ready = pods.filter(isReady);
        if (ready.length === 0) gaps++;
        next = ready.find((p) => p.metadata.name !== before);
        return !!next && !pods.some((p) => p.metadata.name === before);
      },
      { timeoutMs: 240_000, intervalMs: 500 },
    );
    assert.equal(gaps, 0, "no moment without a ready istiod during the rollout");
    const chain = await workloadCertificate(next!, "istiod");
    opensslVerify(chain[0]!, await istiod.vaultRoot(), chain.slice(1).join("\n"));
    defaultPod = next!;
  });

  it("a canary revision gets its own agent, policy and Vault role binding (istiod-canary) and issues", async () => {
    // The canary's RBAC came with the project chart (revisions: default, canary).
    await vaultRoleFor("istiod-canary-agent", "istiod-canary");
    istiod.applyPolicy("istiod-canary", "istiod-canary-agent");
    istiod.install({ release: "istiod-canary", revision: "canary", agentMode: "cacerts" });
    const canary = await istiod.readyPod("istiod-canary");
    const agentPid = istiod.pid(canary, "istiod-vault-agent");
    const token = readFileSync(inContainer(agentPid, "/var/run/secrets/vault/vault-token"), "utf8");
    const claims = jwtClaims<{ sub: string }>(token);
    assert.equal(claims.sub, "system:serviceaccount:istio-system:istiod-canary");
    const intermediate = readFileSync(`/proc/${agentPid}/root${CACERTS}/ca-cert.pem`, "utf8");
    const chain = await workloadCertificate(canary, "istiod-canary");
    assert.equal(publicKeyId(chain[1]!), publicKeyId(intermediate), "the canary's own intermediate signed it");
    opensslVerify(chain[0]!, await istiod.vaultRoot(), chain.slice(1).join("\n"));
  });

  it("the agent image holds Node, its libraries and the bundle of exactly the SBOM's packages: no shell, no npm", () => {
    const image = readImageArchive(images.agentArchive);
    const pkg = JSON.parse(readFileSync(join(repoRoot(), "package.json"), "utf8")) as { version: string };
    assert.equal(image.config.User, "65532:1337");
    const dockerfile = readFileSync(join(repoRoot(), "Dockerfile"), "utf8");
    const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)![1]!) as string[];
    assert.deepEqual(image.config.Entrypoint, entrypoint);
    assert.equal(entrypoint.at(-1), "/app/dist/bundle/main.js");
    assert.deepEqual(image.config.Cmd, ["sidecar"]);
    assert.ok(!image.config.Env?.some((e) => e.startsWith("NODE_OPTIONS=")), "Node's flags are the ENTRYPOINT's");
    const labels = image.config.Labels ?? {};
    assert.equal(labels["org.opencontainers.image.version"], pkg.version);
    assert.equal(labels["org.opencontainers.image.revision"], images.agentRevision);
    assert.equal(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert.ok(labels["org.opencontainers.image.source"] && labels["org.opencontainers.image.title"]);

    // Outside /app, only what Node needs to start and the agent to name users and trust the public roots.
    const allowedOutsideApp = [
      /^usr\/local\/bin\/node$/,
      /^lib64\/ld-linux-x86-64\.so\.2$/,
      /^lib\/x86_64-linux-gnu\/lib(c|dl|m|pthread|gcc_s|stdc\+\+)\.so\.\d+$/,
      /^etc\/(passwd|group|nsswitch\.conf)$/,
      /^etc\/ssl\/certs\/ca-certificates\.crt$/,
    ];
    const files = [...image.files];
    for (const f of files.filter((f) => !f.startsWith("app/"))) {
      assert.ok(
        allowedOutsideApp.some((r) => r.test(f)),
        `unexpected file in the image: /${f}`,
      );
    }
    for (const absent of [
      "bin/sh",
      "bin/bash",
      "bin/busybox",
      "usr/bin/env",
      "usr/local/bin/npm",
      "usr/bin/apt",
      "usr/bin/dpkg",
    ]) {
      assert.ok(!image.paths.has(absent), `/${absent} is in the image`);
    }
    assert.ok(
      !files.some((f) => /(^|\/)node_modules\/(npm|corepack|typescript|eslint)\//.test(f)),
      "no npm or dev tool",
    );
    for (const f of [
      "app/dist/bundle/main.js",
      "app/dist/bundle/main.js.map",
      "app/dist/bundle/signing-worker.js",
      "app/compile-cache",
      "app/package.json",
      "app/build-info.json",
      "app/vault-policies/istiod-agent.hcl",
    ]) {
      assert.ok(image.paths.has(f), `/${f} is missing`);
    }
    assert.ok(!files.some((f) => f.startsWith("app/dist/test/") || f.startsWith("app/src/")), "no tests or sources");
    assert.ok(!files.some((f) => f.includes("node_modules/")), "no node_modules: the packages are in the bundle");
    assert.ok(!files.some((f) => f.startsWith("app/dist/src/")), "no tsc output");

    // The image's bundle is the one `npm run bundle` makes here from the same inputs (file for file, byte for byte),
    // so this checkout's metafile (dist/bundle/meta.json) says which packages the image carries; the SBOM the release
    // script writes from it lists exactly those (each bundled input file's package.json on disk names it).
    const local = join(repoRoot(), "dist/bundle");
    const shippedJs = files.filter((f) => f.startsWith("app/dist/bundle/") && f.endsWith(".js"));
    assert.deepEqual(
      shippedJs.map((f) => f.slice("app/dist/bundle/".length)).sort(),
      readdirSync(local)
        .filter((f) => f.endsWith(".js"))
        .sort(),
      "the image holds the same bundle files",
    );
    for (const f of shippedJs) {
      assert.ok(image.read(f).equals(readFileSync(join(local, f.slice("app/dist/bundle/".length)))), `${f} differs`);
    }
    const meta = JSON.parse(readFileSync(join(local, "meta.json"), "utf8")) as {
      outputs: Record<string, { inputs: Record<string, { bytesInOutput: number }> }>;
    };
    const bundled = new Set<string>();
    for (const o of Object.values(meta.outputs)) {
      for (const [input, { bytesInOutput }] of Object.entries(o.inputs)) {
        if (!input.includes("node_modules/") || bytesInOutput === 0) continue;
        for (let d = dirname(join(repoRoot(), input)); d.includes("/node_modules/"); d = dirname(d)) {
          if (!existsSync(join(d, "package.json"))) continue;
          const p = JSON.parse(readFileSync(join(d, "package.json"), "utf8")) as { name?: string; version?: string };
          if (!p.name || !p.version) continue;
          bundled.add(`${p.name}@${p.version}`);
          break;
        }
      }
    }
    const sbomFile = join(t.env.dir, "sbom.json");
    execFileSync("bash", [join(repoRoot(), "scripts/sbom.sh"), sbomFile], { stdio: ["ignore", "ignore", "pipe"] });
    const sbom = JSON.parse(readFileSync(sbomFile, "utf8")) as {
      components: { name: string; group?: string; version: string }[];
    };
    const listed = sbom.components.map((c) => `${c.group ? `${c.group}/` : ""}${c.name}@${c.version}`).sort();
    assert.deepEqual(
      [...bundled].sort(),
      [...new Set(listed)],
      "the image's bundled packages are the SBOM's components",
    );
  });

  it("on the kubelet the image runs as its own 65532:1337, answers --version with its build, and has no sh or npm", async () => {
    const name = `image-${Date.now()}`;
    const pod = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, namespace: APP_NS },
      spec: {
        restartPolicy: "Never",
        automountServiceAccountToken: false,
        // no runAsUser/runAsGroup: the image's USER decides, and the kubelet refuses it were it root
        securityContext: { runAsNonRoot: true },
        containers: [
          { name: "version", args: ["--version"] },
          // The image's compile cache (made in its build stage) is one V8 accepts on this node's Node.
          {
            name: "compile-cache",
            args: ["status", "--help"],
            env: [{ name: "NODE_DEBUG_NATIVE", value: "COMPILE_CACHE" }],
          },
          {
            name: "whoami",
            command: ["node", "-e", "console.log(JSON.stringify({ uid: process.getuid(), gid: process.getgid() }))"],
          },
          { name: "shell", command: ["/bin/sh", "-c", "echo a shell ran"] },
          { name: "npm", command: ["npm", "--version"] },
        ].map((c) => ({
          ...c,
          image: images.agent,
          imagePullPolicy: "Never",
          securityContext: { readOnlyRootFilesystem: true, allowPrivilegeEscalation: false },
        })),
      },
    };
    await t.env.kube.admin.create(`/api/v1/namespaces/${APP_NS}/pods`, pod);
    let status: PodStatus | undefined;
    await waitUntil(
      `pod ${name}: every container ended`,
      async () => {
        status = await node.podStatus(APP_NS, name);
        const all = status?.containerStatuses ?? [];
        return all.length === 5 && all.every((c) => c.state?.terminated);
      },
      { timeoutMs: 120_000, intervalMs: 1000 },
    );
    const ended = (c: string) => status!.containerStatuses!.find((s) => s.name === c)!.state!.terminated!;
    const log = (c: string) =>
      node
        .containerLog(APP_NS, name, c)
        .split("\n")
        .filter(Boolean)
        .map((l) => l.split(" ").slice(3).join(" ")); // CRI log lines: time stream tag message
    const pkg = JSON.parse(readFileSync(join(repoRoot(), "package.json"), "utf8")) as {
      version: string;
      devDependencies: { node: string };
    };
    assert.equal(ended("version").exitCode, 0);
    assert.deepEqual(log("version"), [
      `istiod-vault-agent ${pkg.version} (commit ${images.agentRevision}, node v${pkg.devDependencies.node}, linux/x64)`,
    ]);
    assert.equal(ended("compile-cache").exitCode, 0);
    const cacheLog = log("compile-cache").join("\n");
    assert.match(cacheLog, /V8 code cache for ESM file:\/\/\/app\/dist\/bundle\/main\.js was accepted/, cacheLog);
    assert.doesNotMatch(cacheLog, /rejected|mismatch/i, cacheLog);
    assert.equal(ended("whoami").exitCode, 0);
    assert.deepEqual(
      log("whoami").map((l) => JSON.parse(l) as unknown),
      [{ uid: 65532, gid: 1337 }],
    );
    for (const c of ["shell", "npm"]) {
      assert.notEqual(ended(c).exitCode, 0, `${c} must not start`);
      assert.equal(ended(c).reason, "StartError", `${c}: ${JSON.stringify(ended(c))}`);
      assert.deepEqual(log(c), [], `${c} printed something`);
    }
  });

  it("inject on a plainly installed istiod makes pods that serve; inject --remove returns to a working istiod", async () => {
    // A plain install of another revision, without the project's values.
    istiod.install({ release: "istiod-plain", revision: "plain" });
    const plain = await istiod.readyPod("istiod-plain");
    assert.match(node.containerLog(ISTIO_NS, plain.metadata.name, "discovery"), /Use self-signed certificate/);
    await vaultRoleFor("istiod-plain-agent", "istiod-plain");
    kubectl(t.env, [
      "-n",
      ISTIO_NS,
      "create",
      "configmap",
      "istiod-vault-agent-vault-ca",
      `--from-literal=ca.crt=${t.env.vault.caPem}`,
    ]);
    const main = join(repoRoot(), "dist/src/main.js");
    const injectArgs = [
      main,
      "inject",
      `--kubeconfig=${t.env.kube.kubeconfigPath}`,
      "--name=istiod-plain",
      `--image=${images.agent}`,
      `--vault-addr=${node.podUrl(t.env.vault.url)}`,
      "--vault-ca-configmap=istiod-vault-agent-vault-ca",
      "--auth-role=istiod-plain-agent",
      `--ca-path=${t.setup.signPath}`,
    ];
    execFileSync(process.execPath, injectArgs, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    const injected = await istiod.readyPod("istiod-plain", [plain.metadata.name]);
    assert.ok(
      [...(injected.status?.initContainerStatuses ?? []), ...(injected.status?.containerStatuses ?? [])].some((c) =>
        c.name.startsWith("istiod-vault-agent"),
      ),
      "the injected pod runs the agent",
    );
    const chain = await workloadCertificate(injected, "istiod-plain");
    opensslVerify(chain[0]!, await istiod.vaultRoot(), chain.slice(1).join("\n"));

    execFileSync(
      process.execPath,
      [main, "inject", "--remove", `--kubeconfig=${t.env.kube.kubeconfigPath}`, "--name=istiod-plain"],
      {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const restored = await istiod.readyPod("istiod-plain", [plain.metadata.name, injected.metadata.name]);
    assert.ok(
      ![...(restored.status?.initContainerStatuses ?? []), ...(restored.status?.containerStatuses ?? [])].some((c) =>
        c.name.startsWith("istiod-vault-agent"),
      ),
      "the agent is gone after --remove",
    );
    assert.ok(existsSync(node.podLogsDir));
  });
});

/**
 * test/e2e/workload-client.mjs as one script for a pod of the agent image (which has no node_modules): the client, the
 * project's X.509 and generated gRPC modules and @grpc/grpc-js, minified to fit a ConfigMap (1 MiB).
 */
async function bundleWorkloadClient(out: string): Promise<void> {
  const { build } = await import("esbuild");
  await build({
    absWorkingDir: repoRoot(),
    entryPoints: ["test/e2e/workload-client.mjs"],
    outfile: out,
    bundle: true,
    minify: true,
    format: "esm",
    platform: "node",
    target: "node24",
    logLevel: "error",
    // CommonJS inside (grpc-js) require()s Node's built-in modules; an ES module has no require of its own.
    banner: { js: 'import { createRequire } from "node:module"; const require = createRequire(import.meta.url);' },
  });
}
