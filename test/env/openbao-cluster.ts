// A real OpenBao HA cluster for failover tests: N `bao server` processes (the binary test/env/build.sh builds) on
// 127.0.0.1, integrated storage (Raft) joined with retry_join, one TLS certificate for every listener, initialised
// (Shamir 1/1) and unsealed by the harness, beside the same etcd + kube-apiserver TestEnv the single node runs with,
// and configured by the same setupVault() (PKI, Kubernetes auth against the test apiserver). Nothing here is a mock.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { VaultClient } from "../../src/vault/client.js";
import type { VaultSetupOptions } from "../../src/vault/setup.js";
import { TestEnv, freePort, serverBinaries, type TestEnvOptions } from "./harness.js";
import { configureAgentTestEnv, type AgentTestEnv } from "./fixtures.js";
import { makeTestCa } from "./pki.js";
import { ManagedProcess, waitUntil } from "./process.js";

export interface OpenBaoNode {
  /** 0-based; also its Raft node_id `node-<index>`. */
  readonly index: number;
  /** The API address (https://127.0.0.1:PORT), which is also its api_addr. */
  readonly url: string;
  /** Its cluster_addr (Raft and request forwarding). */
  readonly clusterUrl: string;
  /** A client with no token (root token per call), verifying the cluster's CA. */
  readonly client: VaultClient;
  /** The running process (replaced by start()). */
  process: ManagedProcess;
}

export type NodeRole = "active" | "standby" | "sealed" | "down" | "other";

export interface OpenBaoCluster {
  /** etcd + kube-apiserver; env.vault is the cluster seen through node 0 (url, CA file, root token, client). */
  readonly env: TestEnv;
  /** The service accounts and setupVault() result, as startAgentTestEnv() returns them for one node. */
  readonly agentEnv: AgentTestEnv;
  readonly nodes: readonly OpenBaoNode[];
  /** Every node's API address, in node order. */
  readonly urls: readonly string[];
  readonly rootToken: string;
  /** PEM of the CA that signs every node's TLS certificate, and the file it is in (for --vault-cacert). */
  readonly caPem: string;
  readonly caFile: string;
  /** The node whose /v1/sys/health answers 200, waiting (up to timeoutMs, default 60 s) until one does. */
  activeNode(timeoutMs?: number): Promise<OpenBaoNode>;
  /** What each node's /v1/sys/health says now. */
  roles(): Promise<NodeRole[]>;
  /** SIGKILL: no step-down, no goodbye; the node's Raft data stays on disk. */
  kill(node: OpenBaoNode): Promise<void>;
  /** Starts a stopped node again from its data, unseals it and waits until it is active or a standby. */
  start(node: OpenBaoNode): Promise<void>;
  /**
   * Waits until exactly one running node is active, every other running node is an unsealed standby, and every
   * running node is a Raft voter (so killing any one of three leaves a quorum to elect a new leader).
   */
  waitHealthy(timeoutMs?: number): Promise<OpenBaoNode>;
  stop(): Promise<void>;
}

export interface OpenBaoClusterOptions {
  /** Number of OpenBao servers (default 3: a quorum survives one loss). */
  nodes?: number;
  /** setupVault() overrides (mounts, TTLs), as for startAgentTestEnv(). */
  setup?: Partial<Omit<VaultSetupOptions, "kubernetes">>;
  /** The apiserver side's options (vault is always false here: the cluster replaces it). */
  env?: Omit<TestEnvOptions, "vault">;
}

export async function startOpenBaoCluster(opts: OpenBaoClusterOptions = {}): Promise<OpenBaoCluster> {
  const count = opts.nodes ?? 3;
  if (!Number.isInteger(count) || count < 1) throw new Error(`startOpenBaoCluster: nodes must be ≥ 1, got ${count}`);
  const bin = serverBinaries(["openbao"]).openbao;
  const env = await TestEnv.start({ ...opts.env, vault: false });
  const nodes: OpenBaoNode[] = [];
  try {
    const dir = join(env.dir, "openbao-cluster");
    mkdirSync(dir, { mode: 0o700 });
    const ca = await makeTestCa("iva-test-openbao-cluster-ca");
    const serving = await ca.issue({ commonName: "openbao", dnsNames: ["localhost"], ips: ["127.0.0.1"] });
    const caFile = join(dir, "vault-ca.pem");
    writeFileSync(caFile, ca.certPem);
    writeFileSync(join(dir, "tls.crt"), serving.certPem, { mode: 0o600 });
    writeFileSync(join(dir, "tls.key"), serving.keyPem, { mode: 0o600 });
    const ports = [];
    for (let i = 0; i < count; i++) ports.push({ api: await freePort(), cluster: await freePort() });
    const configs: string[] = [];
    for (let i = 0; i < count; i++) {
      const dataDir = join(dir, `node-${i}`);
      mkdirSync(dataDir, { mode: 0o700 });
      // Every other node is a join candidate, so a restarted node finds whichever is leader then.
      const joins = ports
        .filter((_, j) => j !== i)
        .map((p) =>
          [
            `  retry_join {`,
            `    leader_api_addr = "https://127.0.0.1:${p.api}"`,
            `    leader_ca_cert_file = "${caFile}"`,
            `  }`,
          ].join("\n"),
        );
      const configPath = join(dir, `node-${i}.hcl`);
      writeFileSync(
        configPath,
        [
          `storage "raft" {`,
          `  path = "${dataDir}"`,
          `  node_id = "node-${i}"`,
          // 1 is the production-tuned setting (shortest election timeouts); the default (5) is for small machines.
          `  performance_multiplier = 1`,
          ...joins,
          `}`,
          `listener "tcp" {`,
          `  address = "127.0.0.1:${ports[i]!.api}"`,
          `  cluster_address = "127.0.0.1:${ports[i]!.cluster}"`,
          `  tls_cert_file = "${join(dir, "tls.crt")}"`,
          `  tls_key_file = "${join(dir, "tls.key")}"`,
          `}`,
          `api_addr = "https://127.0.0.1:${ports[i]!.api}"`,
          `cluster_addr = "https://127.0.0.1:${ports[i]!.cluster}"`,
          `disable_mlock = true`,
          `log_level = "info"`,
        ].join("\n"),
      );
      configs.push(configPath);
    }
    const spawnNode = (i: number) =>
      env.spawn(`openbao-${i}`, bin, ["server", `-config=${configs[i]}`], { HOME: env.dir });
    for (let i = 0; i < count; i++) {
      const url = `https://127.0.0.1:${ports[i]!.api}`;
      nodes.push({
        index: i,
        url,
        clusterUrl: `https://127.0.0.1:${ports[i]!.cluster}`,
        client: new VaultClient({ address: url, tls: { caPem: ca.certPem } }),
        process: spawnNode(i),
      });
    }
    const first = nodes[0]!;
    await waitUntil("OpenBao node-0 listener", async () => (await first.client.health()).status === 501, {
      timeoutMs: 30_000,
      process: first.process,
    });
    const init = await first.client.call<{ keys_base64: string[]; root_token: string }>("PUT", "sys/init", {
      body: { secret_shares: 1, secret_threshold: 1 },
    });
    const unsealKey = init.body.keys_base64[0]!;
    const rootToken = init.body.root_token;

    /** Unseals `node` (a joining node needs the key too: it answers the leader's join challenge with it). */
    const unseal = async (node: OpenBaoNode, timeoutMs = 60_000) => {
      await waitUntil(
        `OpenBao node-${node.index} unsealed`,
        async () => {
          const h = await node.client.health();
          if (h.status === 200 || h.status === 429) return true;
          // 501 (not joined yet) or 503 (sealed): offer the key; a node still waiting for its join answers 400/503.
          await node.client.call("PUT", "sys/unseal", { body: { key: unsealKey }, acceptStatuses: [400, 500, 503] });
          return false;
        },
        { timeoutMs, process: node.process, intervalMs: 300 },
      );
    };
    await unseal(first);
    await waitUntil("OpenBao node-0 active", async () => (await first.client.health()).status === 200, {
      timeoutMs: 30_000,
      process: first.process,
    });
    // Autopilot promotes a joined node to a voter only after it has been healthy for server_stabilization_time
    // (10 s by default); until then losing the leader leaves no quorum. 2 s keeps the start short.
    await first.client.write("sys/storage/raft/autopilot/configuration", rootToken, {
      server_stabilization_time: "2s",
    });
    for (const node of nodes.slice(1)) await unseal(node);

    const role = async (node: OpenBaoNode): Promise<NodeRole> => {
      if (!node.process.alive) return "down";
      try {
        const h = await node.client.health();
        return h.status === 200 ? "active" : h.status === 429 ? "standby" : h.status === 503 ? "sealed" : "other";
      } catch {
        return "down";
      }
    };
    const roles = () => Promise.all(nodes.map(role));
    const waitHealthy = async (timeoutMs = 60_000) => {
      let active: OpenBaoNode | undefined;
      await waitUntil(
        "OpenBao cluster: one active node, the others standbys",
        async () => {
          const r = await roles();
          const running = nodes.filter((n) => n.process.alive);
          const actives = running.filter((n) => r[n.index] === "active");
          active = actives[0];
          if (actives.length !== 1 || !running.every((n) => ["active", "standby"].includes(r[n.index]!))) return false;
          // Every running node a Raft voter, so the cluster keeps a quorum when any one node is then killed.
          const cfg = await active!.client.read<{ config: { servers: { node_id: string; voter: boolean }[] } }>(
            "sys/storage/raft/configuration",
            rootToken,
          );
          const voters = new Set(cfg.data.config.servers.filter((s) => s.voter).map((s) => s.node_id));
          return running.every((n) => voters.has(`node-${n.index}`));
        },
        { timeoutMs, intervalMs: 250 },
      );
      return active!;
    };
    await waitHealthy();

    env.vault = { url: first.url, caPem: ca.certPem, rootToken, client: first.client, process: first.process, caFile };
    const agentEnv = await configureAgentTestEnv(env, opts.setup);

    const cluster: OpenBaoCluster = {
      env,
      agentEnv,
      nodes,
      urls: nodes.map((n) => n.url),
      rootToken,
      caPem: ca.certPem,
      caFile,
      async activeNode(timeoutMs = 60_000) {
        let active: OpenBaoNode | undefined;
        await waitUntil(
          "an active OpenBao node",
          async () => {
            const r = await roles();
            active = nodes.find((n) => r[n.index] === "active");
            return active !== undefined;
          },
          { timeoutMs, intervalMs: 100 },
        );
        return active!;
      },
      roles,
      async kill(node) {
        node.process.signal("SIGKILL");
        await node.process.waitExit();
      },
      async start(node) {
        if (node.process.alive) throw new Error(`OpenBao node-${node.index} is still running`);
        node.process = spawnNode(node.index);
        if (node.index === 0) env.vault.process = node.process;
        await waitUntil(
          `OpenBao node-${node.index} listener after restart`,
          async () => (await node.client.health()).status !== 0,
          { timeoutMs: 30_000, process: node.process },
        );
        await unseal(node);
      },
      waitHealthy,
      async stop() {
        for (const n of nodes) await n.client.close().catch(() => undefined);
        await env.stop(); // stops every node (spawned through env) and removes the data
      },
    };
    return cluster;
  } catch (err) {
    for (const n of nodes) await n.client.close().catch(() => undefined);
    await env.stop();
    throw err;
  }
}
