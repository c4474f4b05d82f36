// What the real-node end-to-end files share: the control plane, OpenBao and a kubelet node with the locally built
// images, the project chart applied as an operator would, and the helpers that find, wait for and look inside the
// istiod pods (their containers' processes are on this machine, so their files and mounts are read from /proc).
import { readFileSync, lstatSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";
import { parse as parseYaml } from "yaml";
import { startAgentTestEnv, ISTIO_NS, type AgentTestEnv } from "./fixtures.js";
import { serverBinaries, serverVersions, repoRoot } from "./harness.js";
import {
  buildImages,
  kubectl,
  renderIstiod,
  shippedIstiodValues,
  testOverrides,
  type Images,
  type IstioMode,
} from "./istio-install.js";
import { KubeNode, POD_GATEWAY, type PodStatus } from "./node.js";
import { renderProjectChart } from "./project-chart.js";
import { waitUntil } from "./process.js";

export interface Pod {
  metadata: { name: string; uid: string; labels?: Record<string, string>; creationTimestamp: string };
  spec: { nodeName?: string };
  status?: PodStatus;
}

export interface RealNode {
  t: AgentTestEnv;
  node: KubeNode;
  images: Images;
  stop(): Promise<void>;
}

/**
 * Starts everything and installs the project chart with `chartValues` (its CRD, and the agent's RBAC for the
 * revisions it names), then waits for the CRD. One node harness runs on a machine at a time (it owns the pod bridge).
 */
export async function startRealNode(chartValues: Record<string, unknown>): Promise<RealNode> {
  const images = buildImages();
  // persistent: its TLS certificate is the harness's own, so it can name the pod network's gateway too
  const t = await startAgentTestEnv({}, { podGatewayIp: POD_GATEWAY, vault: "persistent" });
  let node: KubeNode | undefined;
  const stop = async () => {
    await node?.stop();
    await t.env.stop();
  };
  try {
    node = await KubeNode.start(t.env, { sandboxImage: images.pause });
    for (const archive of images.archives) node.importImage(archive);
    console.log(
      `real node: ${JSON.stringify({ ...node.versions, ...serverVersions(serverBinaries(["istiod"])) })}` +
        ` agent image ${(images.agentArchiveBytes / 2 ** 20).toFixed(1)} MiB (${images.agent})`,
    );
    const chart = renderProjectChart(t.env.dir, { includeCrds: true, values: [chartValues] });
    kubectl(t.env, ["apply", "--server-side", "-f", "-"], chart);
    kubectl(t.env, [
      "wait",
      "--for=condition=Established",
      "--timeout=60s",
      "crd/roottrustpolicies.istiod-vault-agent.io",
    ]);
  } catch (err) {
    await stop();
    throw err;
  }
  return { t, node, images, stop };
}

/** The istiod Deployments of one test cluster and what runs in their pods. */
export class IstiodOnNode {
  constructor(private readonly rn: RealNode) {}

  private get t(): AgentTestEnv {
    return this.rn.t;
  }

  /** A RootTrustPolicy for one istiod Deployment (same name), pointing the agent at OpenBao through the pod network. */
  applyPolicy(name: string, role: string): void {
    const policy = parseYaml(readFileSync(join(repoRoot(), "manifests/examples/root-trust-policy.yaml"), "utf8")) as {
      metadata: { name: string };
      spec: {
        config: {
          agentCa: { vault: Record<string, unknown> & { kubernetesAuth: Record<string, unknown> } };
          intermediateCertOptions: Record<string, unknown>;
        };
      };
    };
    policy.metadata.name = name;
    const vault = policy.spec.config.agentCa.vault;
    vault.server = this.rn.node.podUrl(this.t.env.vault.url);
    vault.caBundle = this.t.env.vault.caPem;
    vault.caPath = this.t.setup.signPath;
    vault.kubernetesAuth.role = role;
    // No serviceAccountTokenPath: the istiod values pass --token-path (a pod-layout fact), and the policy is
    // authoritative, so setting both would be refused by the agent.
    policy.spec.config.intermediateCertOptions.ttl = "1h";
    kubectl(this.t.env, ["apply", "-f", "-"], JSON.stringify(policy));
  }

  /** Istio's istiod chart, rendered with the project's values for `agentMode` (none: a plain istiod) and applied. */
  install(opts: { release: string; revision?: string; agentMode?: IstioMode }): string {
    const overrides = testOverrides(this.t.env, this.rn.images, opts.agentMode);
    const values = opts.agentMode ? [shippedIstiodValues(opts.agentMode), overrides] : [overrides];
    const yaml = renderIstiod(this.t.env.dir, { release: opts.release, revision: opts.revision, values });
    kubectl(this.t.env, ["apply", "--server-side", "-f", "-"], yaml);
    return yaml;
  }

  async pods(deployment: string): Promise<Pod[]> {
    const rev = deployment === "istiod" ? "default" : deployment.replace(/^istiod-/, "");
    const list = await this.t.env.kube.admin.get<{ items: Pod[] }>(
      `/api/v1/namespaces/${ISTIO_NS}/pods?labelSelector=${encodeURIComponent(`app=istiod,istio.io/rev=${rev}`)}`,
    );
    return list.items;
  }

  /** A Ready pod of `deployment` other than those named in `not`; on timeout, every pod's status and logs. */
  async readyPod(deployment: string, not: string[] = []): Promise<Pod> {
    let found: Pod | undefined;
    await waitUntil(
      `a Ready pod of ${deployment}`,
      async () => {
        found = (await this.pods(deployment)).find((p) => !not.includes(p.metadata.name) && isReady(p));
        return !!found;
      },
      { timeoutMs: 240_000, intervalMs: 1000 },
    ).catch(async (err: Error) => {
      const pods = await this.pods(deployment);
      const detail = pods
        .map((p) => `${p.metadata.name}: ${JSON.stringify(p.status)}\n` + this.logs(p.metadata.name).slice(-3000))
        .join("\n");
      throw new Error(`${err.message}\n${detail}`);
    });
    return found!;
  }

  /** The agent's and istiod's logs of one pod. */
  logs(pod: string): string {
    return ["istiod-vault-agent", "discovery"]
      .map((c) => `--- ${c}\n${this.rn.node.containerLog(ISTIO_NS, pod, c)}`)
      .join("\n");
  }

  /** The host PID of a container of `pod`. */
  pid(pod: Pod, container: string): number {
    return this.rn.node.containerPid(containerId(pod, container));
  }

  async vaultRoot(): Promise<string> {
    return (await this.t.env.vault.client.read<{ certificate: string }>("pki/cert/ca", undefined)).data.certificate;
  }
}

export function isReady(p: { status?: PodStatus }): boolean {
  return (p.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
}

export function containerId(pod: { metadata: { name: string }; status?: PodStatus }, name: string): string {
  const all = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])];
  const s = all.find((c) => c.name === name) as { containerID?: string } | undefined;
  if (!s?.containerID) throw new Error(`${pod.metadata.name}: no container ${name}`);
  return s.containerID;
}

/**
 * Waits until `container` of pod `namespace/pod` runs and returns its host PID; on timeout, the pod's status says why
 * (e.g. CreateContainerConfigError).
 */
export async function runningContainerPid(
  node: KubeNode,
  namespace: string,
  pod: string,
  container: string,
): Promise<number> {
  let status: PodStatus | undefined;
  await waitUntil(
    `container ${container} of pod ${namespace}/${pod} running`,
    async () => {
      status = await node.podStatus(namespace, pod);
      return !!status?.containerStatuses?.some((c) => c.name === container && c.state?.running);
    },
    { timeoutMs: 120_000, intervalMs: 500 },
  ).catch((err: Error) => {
    throw new Error(`${err.message}: ${JSON.stringify(status)}`);
  });
  return node.containerPid(containerId({ metadata: { name: pod }, status }, container));
}

/** A path inside a container, read from the host. /var/run is a symlink to /run in Debian-based images (the
 * agent's has no /var of its own: runc makes the mount point's directories), and an absolute symlink under
 * /proc/PID/root would resolve against the host's root, so it is resolved here when there is one. */
export function inContainer(pid: number, path: string): string {
  const root = `/proc/${pid}/root`;
  const varRunIsLink = lstatSync(`${root}/var/run`, { throwIfNoEntry: false })?.isSymbolicLink() ?? false;
  return `${root}${varRunIsLink ? path.replace(/^\/var\/run\//, "/run/") : path}`;
}

export function pidStatus(pid: number): Record<string, string> {
  return Object.fromEntries(
    readFileSync(`/proc/${pid}/status`, "utf8")
      .split("\n")
      .map((l) => l.split(":\t") as [string, string]),
  );
}

export interface Mount {
  path: string;
  options: string[];
  fstype: string;
}

/** Every mount the process sees (from its mountinfo), with its options and filesystem type. */
export function mountsOf(pid: number): Mount[] {
  return readFileSync(`/proc/${pid}/mountinfo`, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      const [left, right] = l.split(" - ") as [string, string];
      const f = left.split(" ");
      return { path: f[4]!, options: f[5]!.split(","), fstype: right.split(" ")[0]! };
    });
}

/** The mount at exactly `path` as the process sees it. */
export function mountOf(pid: number, path: string): Mount {
  const m = mountsOf(pid).find((x) => x.path === path);
  assert.ok(m, `${path} is not a mount point in pid ${pid}`);
  return m;
}

/** The JSON claims of a JWT (for asserting who a projected token names; the token itself is never printed). */
export function jwtClaims<T>(token: string): T {
  return JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString()) as T;
}
