// A real Kubernetes node beside the test control plane: Debian's containerd and runc, and kubelet,
// kube-controller-manager and kube-scheduler built from the same k8s.io/kubernetes module as the apiserver
// (test/env/build.sh). Everything listens on loopback or on a bridge the node creates for its pods; every process is
// stopped by PID, and stop() removes the pods' containers, mounts and network.
//
// What these machines need (FACTS.md §8): cgroup v1 kubelet settings, `restrict_oom_score_adj` in containerd (root
// here lacks CAP_SYS_RESOURCE), images imported as archives (there is no registry) and used with imagePullPolicy
// Never. Pods get addresses on the bridge `iva-pods0` (POD_SUBNET, no default route, so they reach nothing beyond
// it); the node forwards POD_GATEWAY:port to the apiserver and OpenBao on 127.0.0.1 (there is no kube-proxy, so pods
// that talk to the apiserver are given KUBERNETES_SERVICE_HOST/PORT explicitly).
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { ManagedProcess, waitUntil } from "./process.js";
import { freePort, serverBinaries, type TestEnv } from "./harness.js";

export const POD_GATEWAY = "10.213.0.1";
const POD_SUBNET = "10.213.0.0/24";
const BRIDGE = "iva-pods0";
export const NODE_NAME = "iva-node";

export interface PodStatus {
  phase?: string;
  podIP?: string;
  conditions?: { type: string; status: string }[];
  initContainerStatuses?: ContainerStatus[];
  containerStatuses?: ContainerStatus[];
}
export interface ContainerStatus {
  name: string;
  ready: boolean;
  started?: boolean;
  restartCount: number;
  state?: { running?: { startedAt: string }; terminated?: { exitCode: number; reason?: string } };
}

export class KubeNode {
  private readonly processes: ManagedProcess[] = [];
  private readonly forwarders: Server[] = [];
  private readonly forwardedSockets = new Set<Socket>();
  /** Network namespaces that existed before the node: every other cni-* one is a pod's, removed at stop. */
  private readonly netnsBefore = new Set(listNetns());
  readonly dir: string;
  readonly containerdSocket: string;
  readonly podLogsDir: string;
  /** The kubelet's --root-dir: pods/<uid>/volumes holds every volume of a pod (memory-backed ones mounted there). */
  readonly kubeletDir: string;
  versions: Record<string, string> = {};

  private constructor(private readonly env: TestEnv) {
    this.dir = join(env.dir, "node");
    this.containerdSocket = join(this.dir, "containerd", "containerd.sock");
    this.podLogsDir = join(this.dir, "pod-logs");
    this.kubeletDir = join(this.dir, "kubelet");
  }

  /** Starts containerd, the control-plane controllers and the kubelet; resolves when the node is Ready. */
  static async start(env: TestEnv, opts: { sandboxImage: string }): Promise<KubeNode> {
    const node = new KubeNode(env);
    try {
      await node.startAll(opts.sandboxImage);
    } catch (err) {
      await node.stop();
      throw err;
    }
    return node;
  }

  private async startAll(sandboxImage: string): Promise<void> {
    const bins = serverBinaries(["kubelet", "kube-controller-manager", "kube-scheduler"]);
    mkdirSync(this.dir, { recursive: true });
    mkdirSync(this.podLogsDir, { recursive: true });
    this.createBridge();
    await this.forward(this.env.kube.url);
    if (this.env.vault) await this.forward(this.env.vault.url);
    await this.startContainerd(sandboxImage);
    this.startControllerManager(bins["kube-controller-manager"]);
    this.startScheduler(bins["kube-scheduler"]);
    await this.startKubelet(bins.kubelet);
    this.versions = {
      kubelet: first(bins.kubelet, ["--version"]),
      containerd: first("containerd", ["--version"]),
      runc: first("runc", ["--version"]),
    };
  }

  /** The URL at which pods reach a server the harness runs on 127.0.0.1. */
  podUrl(loopbackUrl: string): string {
    const u = new URL(loopbackUrl);
    u.hostname = POD_GATEWAY;
    return u.toString().replace(/\/$/, "");
  }

  // --- network ------------------------------------------------------------------------------------------------------

  private createBridge(): void {
    ipQuiet(["link", "del", BRIDGE]); // left over by a killed run
    execFileSync("ip", ["link", "add", BRIDGE, "type", "bridge"]);
    execFileSync("ip", ["addr", "add", `${POD_GATEWAY}/24`, "dev", BRIDGE]);
    execFileSync("ip", ["link", "set", BRIDGE, "up"]);
    const cniDir = join(this.dir, "cni");
    mkdirSync(cniDir, { recursive: true });
    writeFileSync(
      join(cniDir, "10-iva-pods.conflist"),
      JSON.stringify({
        cniVersion: "1.0.0",
        name: "iva-pods",
        plugins: [
          {
            type: "bridge",
            bridge: BRIDGE,
            isGateway: true,
            isDefaultGateway: false, // pods reach the bridge's subnet and nothing else
            ipMasq: false,
            hairpinMode: true,
            ipam: {
              type: "host-local",
              ranges: [[{ subnet: POD_SUBNET, gateway: POD_GATEWAY }]],
              dataDir: join(this.dir, "cni-ipam"),
            },
          },
        ],
      }),
    );
  }

  /** Listens on POD_GATEWAY at the same port as the loopback server and pipes bytes through (TLS stays end to end). */
  private async forward(loopbackUrl: string): Promise<void> {
    const port = Number(new URL(loopbackUrl).port);
    const server = createServer((client) => {
      const upstream = connect(port, "127.0.0.1");
      client.pipe(upstream).pipe(client);
      const close = () => {
        client.destroy();
        upstream.destroy();
        this.forwardedSockets.delete(client);
        this.forwardedSockets.delete(upstream);
      };
      for (const s of [client, upstream]) {
        this.forwardedSockets.add(s);
        s.on("error", close);
        s.on("close", close);
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, POD_GATEWAY, resolve);
    });
    this.forwarders.push(server);
  }

  // --- containerd ---------------------------------------------------------------------------------------------------

  private async startContainerd(sandboxImage: string): Promise<void> {
    const root = join(this.dir, "containerd");
    mkdirSync(root, { recursive: true });
    const config = join(root, "config.toml");
    writeFileSync(
      config,
      [
        "version = 2",
        `root = "${join(root, "root")}"`,
        `state = "${join(root, "state")}"`,
        "[grpc]",
        `  address = "${this.containerdSocket}"`,
        "[ttrpc]",
        `  address = "${join(root, "containerd.sock.ttrpc")}"`,
        '[plugins."io.containerd.grpc.v1.cri"]',
        `  sandbox_image = "${sandboxImage}"`,
        // root here lacks CAP_SYS_RESOURCE: runc could not lower oom_score_adj otherwise
        "  restrict_oom_score_adj = true",
        '  stream_server_address = "127.0.0.1"',
        '  [plugins."io.containerd.grpc.v1.cri".containerd]',
        '    snapshotter = "overlayfs"',
        '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
        '      runtime_type = "io.containerd.runc.v2"',
        '      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
        "        SystemdCgroup = false",
        '  [plugins."io.containerd.grpc.v1.cri".cni]',
        '    bin_dir = "/usr/lib/cni"',
        `    conf_dir = "${join(this.dir, "cni")}"`,
      ].join("\n"),
    );
    const proc = this.spawn("containerd", "containerd", ["--config", config]);
    await waitUntil("containerd socket", () => Promise.resolve(existsSync(this.containerdSocket)), {
      timeoutMs: 30_000,
      process: proc,
    });
  }

  /** Imports a docker-archive image into the CRI namespace (there is no registry to pull from). */
  importImage(archive: string): void {
    this.ctr(["images", "import", "--no-unpack=false", archive]);
  }

  private ctr(args: string[]): string {
    return execFileSync("ctr", ["--address", this.containerdSocket, "--namespace", "k8s.io", ...args], {
      encoding: "utf8",
      maxBuffer: 16 << 20,
    });
  }

  // --- control-plane controllers ------------------------------------------------------------------------------------

  /** What both controllers share: the admin kubeconfig, no serving port (nothing scrapes them), one replica. */
  private controllerFlags(): string[] {
    const kc = this.env.kube.kubeconfigPath;
    return [
      `--kubeconfig=${kc}`,
      `--authentication-kubeconfig=${kc}`,
      `--authorization-kubeconfig=${kc}`,
      "--bind-address=127.0.0.1",
      "--secure-port=0",
      "--leader-elect=false",
    ];
  }

  private startControllerManager(bin: string): void {
    this.spawn("kube-controller-manager", bin, [
      ...this.controllerFlags(),
      // publishes kube-root-ca.crt into every namespace: pods' token volumes need it
      `--root-ca-file=${join(this.env.pkiDir, "ca.crt")}`,
      `--service-account-private-key-file=${join(this.env.pkiDir, "sa.key")}`,
      "--use-service-account-credentials=false",
    ]);
  }

  private startScheduler(bin: string): void {
    this.spawn("kube-scheduler", bin, this.controllerFlags());
  }

  // --- kubelet ------------------------------------------------------------------------------------------------------

  private async startKubelet(bin: string): Promise<void> {
    const root = this.kubeletDir;
    mkdirSync(root, { recursive: true });
    const [port, healthzPort] = [await freePort(), await freePort()];
    const config = join(this.dir, "kubelet-config.json");
    writeFileSync(
      config,
      JSON.stringify({
        apiVersion: "kubelet.config.k8s.io/v1beta1",
        kind: "KubeletConfiguration",
        // these machines have cgroup v1 (hybrid) and no systemd-managed cgroups
        failCgroupV1: false,
        cgroupDriver: "cgroupfs",
        failSwapOn: false,
        containerRuntimeEndpoint: `unix://${this.containerdSocket}`,
        address: "127.0.0.1",
        port,
        readOnlyPort: 0,
        healthzBindAddress: "127.0.0.1",
        healthzPort,
        // loopback only: the apiserver does not call back (no logs/exec through it)
        authentication: { anonymous: { enabled: true }, webhook: { enabled: false } },
        authorization: { mode: "AlwaysAllow" },
        evictionHard: { "memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%" },
        enforceNodeAllocatable: [],
        imageGCHighThresholdPercent: 100,
        imageGCLowThresholdPercent: 99,
        podLogsDir: this.podLogsDir,
        clusterDomain: "cluster.local",
        serializeImagePulls: false,
        fileCheckFrequency: "5s",
        syncFrequency: "5s",
      }),
    );
    const proc = this.spawn("kubelet", bin, [
      `--config=${config}`,
      `--kubeconfig=${this.env.kube.kubeconfigPath}`,
      `--root-dir=${root}`,
      `--cert-dir=${join(root, "pki")}`,
      `--hostname-override=${NODE_NAME}`,
      "--node-ip=127.0.0.1",
      "--v=1",
    ]);
    await waitUntil(
      `node ${NODE_NAME} Ready`,
      async () => {
        const n = await this.env.kube.admin.request<{ status?: { conditions?: { type: string; status: string }[] } }>(
          "GET",
          `/api/v1/nodes/${NODE_NAME}`,
          undefined,
          { acceptStatuses: [404] },
        );
        return (n.body.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
      },
      { timeoutMs: 120_000, process: proc, intervalMs: 1000 },
    );
  }

  // --- pods ---------------------------------------------------------------------------------------------------------

  async podStatus(namespace: string, name: string): Promise<PodStatus | undefined> {
    const res = await this.env.kube.admin.request<{ status?: PodStatus }>(
      "GET",
      `/api/v1/namespaces/${namespace}/pods/${name}`,
      undefined,
      { acceptStatuses: [404] },
    );
    return res.status === 404 ? undefined : res.body.status;
  }

  /** A pod's log directory (one directory per container), or undefined before the kubelet made it. */
  podLogDir(namespace: string, pod: string): string | undefined {
    const podDir = readdirSync(this.podLogsDir).find((d) => d.startsWith(`${namespace}_${pod}_`));
    return podDir && join(this.podLogsDir, podDir);
  }

  /** A container's log as the kubelet wrote it (there is no `kubectl logs` through a loopback-only node). */
  containerLog(namespace: string, pod: string, container: string): string {
    const podDir = this.podLogDir(namespace, pod);
    if (!podDir) return "";
    const dir = join(podDir, container);
    if (!existsSync(dir)) return "";
    return readdirSync(dir)
      .filter((f) => f.endsWith(".log"))
      .sort((a, b) => parseInt(a) - parseInt(b))
      .map((f) => readFileSync(join(dir, f), "utf8"))
      .join("");
  }

  /** The running container's host PID (for /proc checks on uid, groups and mounts). */
  containerPid(containerId: string): number {
    const id = containerId.replace(/^containerd:\/\//, "");
    const out = this.ctr(["tasks", "ls"]);
    const line = out.split("\n").find((l) => l.startsWith(id));
    const pid = line ? Number(line.trim().split(/\s+/)[1]) : NaN;
    if (!Number.isInteger(pid)) throw new Error(`no running task for container ${id}`);
    return pid;
  }

  // --- lifecycle ----------------------------------------------------------------------------------------------------

  spawn(name: string, binary: string, args: string[]): ManagedProcess {
    const p = new ManagedProcess(name, binary, args, join(this.env.dir, `${name}.log`));
    this.processes.push(p);
    return p;
  }

  async stop(): Promise<void> {
    // Controllers first so nothing is recreated, then let the kubelet tear its pods down the normal way (which also
    // removes their network namespaces); whatever is left after that is killed.
    for (const name of ["kube-controller-manager", "kube-scheduler"]) {
      await this.processes.find((p) => p.name === name)?.stop();
    }
    const kubelet = this.processes.find((p) => p.name === "kubelet");
    if (kubelet?.alive) await this.deleteAllPods().catch(() => undefined);
    await kubelet?.stop();
    if (existsSync(this.containerdSocket)) {
      try {
        for (const task of this.ctr(["tasks", "ls", "-q"]).split("\n").filter(Boolean)) {
          try {
            this.ctr(["tasks", "kill", "-s", "SIGKILL", task]);
          } catch {
            // already gone
          }
        }
        await new Promise((r) => setTimeout(r, 1000));
      } catch {
        // containerd not answering: its shims are killed below
      }
    }
    for (const p of [...this.processes].reverse()) await p.stop();
    killShims(this.dir);
    unmountUnder(this.dir);
    for (const ns of listNetns().filter((n) => n.startsWith("cni-") && !this.netnsBefore.has(n))) {
      ipQuiet(["netns", "del", ns]); // left by pods that were killed rather than torn down by the kubelet
    }
    // a killed pod never answers FIN: destroy what is left rather than wait for it
    for (const s of this.forwardedSockets) s.destroy();
    for (const f of this.forwarders) f.close();
    ipQuiet(["link", "del", BRIDGE]);
  }

  private async deleteAllPods(): Promise<void> {
    const list = await this.env.kube.admin.get<{ items: { metadata: { name: string; namespace: string } }[] }>(
      "/api/v1/pods",
    );
    for (const p of list.items) {
      await this.env.kube.admin.request(
        "DELETE",
        `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}`,
        { apiVersion: "v1", kind: "DeleteOptions", gracePeriodSeconds: 0 },
        { acceptStatuses: [404] },
      );
    }
    await waitUntil(
      "the kubelet stopped every pod",
      () => Promise.resolve(this.ctr(["tasks", "ls", "-q"]).trim() === ""),
      {
        timeoutMs: 30_000,
        intervalMs: 500,
      },
    ).catch(() => undefined);
  }
}

function listNetns(): string[] {
  return existsSync("/run/netns") ? readdirSync("/run/netns") : [];
}

function first(bin: string, args: string[]): string {
  return execFileSync(bin, args, { encoding: "utf8" }).split("\n")[0]?.trim() ?? "";
}

function ipQuiet(args: string[]): void {
  try {
    execFileSync("ip", args, { stdio: "ignore" });
  } catch {
    // nothing to delete
  }
}

/** containerd-shim processes outlive containerd by design; ours are the ones started under this node's state dir. */
function killShims(dir: string): void {
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      if (cmd.startsWith("/usr/bin/containerd-shim") && cmd.includes(dir)) process.kill(Number(pid), "SIGKILL");
    } catch {
      // exited meanwhile
    }
  }
}

/** Unmounts (lazily, deepest first) everything the kubelet and containerd mounted under the node's directory. */
function unmountUnder(dir: string): void {
  const mounts = readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[1]?.replace(/\\040/g, " "))
    .filter((m): m is string => !!m && (m === dir || m.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) {
    try {
      execFileSync("umount", ["-l", m], { stdio: "ignore" });
    } catch {
      // already gone
    }
  }
}
