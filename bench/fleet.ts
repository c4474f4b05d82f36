// A fleet of agents cold-started at once against one Vault: what operators of large meshes meet when many istiod pods
// (replicas × revisions × clusters) start together. N `istiod-vault-agent sidecar` processes are spawned in one go,
// each with its own service account (istio-system/istiod-fleet-<i>, all bound in the one Vault role, as the revisions'
// istiod-<rev> accounts are), its own TokenRequest token file (audience vault, as the projected volume holds), its own
// cacerts directory, socket and metrics port. Reported per fleet size:
// - time from spawn until ready (a bundle on the socket and cacerts' ..data written, as bench/time-to-ready.ts
//   measures), p50/p99/max per agent, and until the whole fleet is ready;
// - Vault requests per agent start: OpenBao's audit log (single node) by path, and the agents' own request counters
//   (istiod_vault_agent_vault_request_duration_seconds_count) for both backends;
// - OpenBao CPU time (utime+stime from /proc/<pid>/stat, all nodes for the cluster) during the start;
// - with --cycles: after that many short-TTL renewal cycles (--ttl), the most renewals that fell into any one second
//   (from the agents' "serving a new intermediate" log lines).
// Against one dev OpenBao (in-memory storage, audit log on), or with --cluster a 3-node OpenBao Raft cluster
// (test/env/openbao-cluster.ts; every agent talks to the active node, as through Vault's `vault-active` Service).
// Run by hand, after `npm run build`:
//   node dist/bench/fleet.js [--agents=25,50,100] [--cluster] [--ttl=60s] [--cycles=3] [--entry=dist/src/main.js]
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir, loadavg, freemem, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createServer } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { CertificateAuthorityAgentClient } from "../src/gen/istiodvaultagent/v1/agent.js";
import { getBundle, nodeBinary } from "../test/env/agent-process.js";
import { ISTIO_NS, ISTIOD_SA, startAgentTestEnv } from "../test/env/fixtures.js";
import { repoRoot, type TestEnv, type VaultAuditEntry } from "../test/env/harness.js";
import { ManagedProcess } from "../test/env/process.js";
import { startOpenBaoCluster, type OpenBaoCluster } from "../test/env/openbao-cluster.js";
import { DEFAULT_SETUP } from "../src/vault/setup.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

interface Backend {
  name: string;
  env: TestEnv;
  vaultUrl: string;
  caFile: string;
  /** PIDs of the OpenBao server(s), for CPU time. */
  pids(): number[];
  /** Where the PKI's storage lives (file or Raft directories), for its size. */
  storageDirs(): string[];
  hasAudit: boolean;
  stop(): Promise<void>;
}

interface Agent {
  i: number;
  dir: string;
  socketPath: string;
  cacertsDir: string;
  logPath: string;
  port: number;
  proc?: ManagedProcess;
  client?: CertificateAuthorityAgentClient;
  spawnedAt: number;
  readyAt?: number;
  /** The agent's own CPU time (user + system) from spawn to ready. */
  cpuAtReadyS?: number;
}

/** The apiserver on this loaded machine can stall for a while after a large fleet: a few tries before giving up. */
async function retry<T>(fn: () => Promise<T>, tries = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= tries) throw err;
      await sleep(2_000 * i);
    }
  }
}

/**
 * A free port for an agent's metrics below the kernel's ephemeral range: a port freePort() picks from that range can be
 * taken, before the agent binds it, by one of the hundreds of outgoing connections a starting fleet opens.
 */
let nextPort = 20_000 + Math.floor(Math.random() * 5_000);
async function metricsPort(): Promise<number> {
  for (;;) {
    const port = nextPort++;
    if (nextPort >= 32_000) nextPort = 20_000;
    const free = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once("error", () => resolve(false));
      srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

function serviceAccount(i: number): string {
  return `istiod-fleet-${i}`;
}

/** utime + stime of `pid` in seconds (fields 14 and 15 of /proc/<pid>/stat, after the command's parentheses). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

function rssMiB(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

function dirBytes(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += dirBytes(p);
    else if (e.isFile()) total += statSync(p).size;
  }
  return total;
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] ?? Number.NaN;
}

async function startBackend(cluster: boolean, maxAgents: number): Promise<Backend> {
  // One role binding every fleet account (plus istiod), as setup-vault --revisions binds istiod-<rev>.
  const role = {
    ...DEFAULT_SETUP.role,
    serviceAccounts: [ISTIOD_SA, ...Array.from({ length: maxAgents }, (_, i) => serviceAccount(i))],
  };
  if (!cluster) {
    const t = await startAgentTestEnv({ role }, { vaultAudit: true });
    return {
      name: "one OpenBao (dev, in-memory storage)",
      env: t.env,
      vaultUrl: t.env.vault.url,
      caFile: t.env.vault.caFile,
      pids: () => [t.env.vault.process.pid!],
      storageDirs: () => [],
      hasAudit: true,
      stop: () => t.env.stop(),
    };
  }
  const c: OpenBaoCluster = await startOpenBaoCluster({ nodes: 3, setup: { role } });
  const active = await c.activeNode();
  return {
    name: `3-node OpenBao Raft cluster (agents on the active node, node-${active.index})`,
    env: c.env,
    vaultUrl: active.url,
    caFile: c.caFile,
    pids: () => c.nodes.map((n) => n.process.pid!),
    storageDirs: () => c.nodes.map((n) => join(c.env.dir, "openbao-cluster", `node-${n.index}`)),
    hasAudit: false,
    stop: () => c.stop(),
  };
}

/** The agents' own Vault request counters, summed over the fleet, by operation. */
async function agentRequestCounts(agents: Agent[]): Promise<Record<string, number>> {
  const total: Record<string, number> = {};
  const re = /^istiod_vault_agent_vault_request_duration_seconds_count\{([^}]*)\} (\S+)$/gm;
  for (const a of agents) {
    const text = await (await fetch(`http://127.0.0.1:${a.port}/metrics`)).text();
    for (const m of text.matchAll(re)) {
      const op = /operation="([^"]+)"/.exec(m[1]!)?.[1] ?? "?";
      total[op] = (total[op] ?? 0) + Number(m[2]);
    }
  }
  return total;
}

/** Audit-log requests by path (OpenBao logs each request once as "request" and once as "response"). */
function auditByPath(entries: VaultAuditEntry[]): Record<string, number> {
  const byPath: Record<string, number> = {};
  for (const e of entries) {
    if (e.type !== "request") continue;
    const path = e.request?.path ?? "?";
    byPath[path] = (byPath[path] ?? 0) + 1;
  }
  return byPath;
}

/**
 * Every "serving a new intermediate" line in an agent's log: when the rotation started (the line's time minus its
 * durationMs: what the renewal scheduler and its jitter decide) and when it ended (after Vault answered), epoch ms.
 */
function rotationTimes(logPath: string): { started: number; ended: number }[] {
  if (!existsSync(logPath)) return [];
  return readFileSync(logPath, "utf8")
    .split("\n")
    .filter((l) => l.startsWith("{") && l.includes('"serving a new intermediate'))
    .map((l) => {
      const line = JSON.parse(l) as { time: string; durationMs?: number };
      const ended = Date.parse(line.time);
      return { started: ended - (line.durationMs ?? 0), ended };
    });
}

/** The most timestamps (epoch ms) that fall into any one wall-clock second. */
function maxPerSecond(times: number[]): number {
  const perSecond = new Map<number, number>();
  for (const t of times) perSecond.set(Math.floor(t / 1000), (perSecond.get(Math.floor(t / 1000)) ?? 0) + 1);
  return Math.max(0, ...perSecond.values());
}

/**
 * What maxPerSecond would be if every renewal came exactly at 2/3 of the lifetime ± a uniform 5% (the agent's
 * defaults), starting from each agent's real first issue and as many renewals as it really made: the yardstick the
 * measured figure is compared with (Vault's latency left out).
 */
function simulatedMaxPerSecond(firsts: number[], counts: number[], lifetimeMs: number): number {
  const maxima: number[] = [];
  for (let trial = 0; trial < 200; trial++) {
    const times: number[] = [];
    firsts.forEach((first, i) => {
      let t = first;
      for (let k = 0; k < counts[i]!; k++) {
        t += lifetimeMs * (2 / 3 + (Math.random() * 2 - 1) * 0.05);
        times.push(t);
      }
    });
    maxima.push(maxPerSecond(times));
  }
  return quantile(maxima, 0.5);
}

interface FleetResult {
  n: number;
  p50: number;
  p99: number;
  max: number;
  allReadyMs: number;
  audit: Record<string, number> | undefined;
  agentCounts: Record<string, number>;
  vaultCpuS: number;
  /** Mean CPU seconds one agent spent from spawn to ready (2 cores: N × this / 2 is the floor for the whole fleet). */
  agentCpuS: number;
  fleetRssMiB: number;
  /** The most renewals started in one second (the scheduler's doing). */
  maxRenewalsPerSecond?: number;
  /** The most renewals completed in one second (Vault's answers; Raft commits in batches). */
  maxRenewalsEndedPerSecond?: number;
  /** The same figure for ideal uniform ±5% jitter from the same first-issue times (median of 200 simulations). */
  uniformMaxPerSecond?: number;
  renewals?: number;
  renewalAudit?: Record<string, number> | undefined;
  storageBytes?: number;
  pkiCerts: number;
  load: string;
}

async function runFleet(
  b: Backend,
  n: number,
  opts: { ttl: string; cycles: number; ttlSeconds: number; entry: string },
): Promise<FleetResult> {
  const root = mkdtempSync(join(tmpdir(), `iva-fleet-${n}-`));
  const agents: Agent[] = [];
  try {
    // Everything a pod would have before its container starts: token file, empty cacerts volume, socket directory.
    for (let i = 0; i < n; i++) {
      const dir = join(root, `agent-${i}`);
      mkdirSync(join(dir, "cacerts"), { recursive: true, mode: 0o750 });
      const token = await retry(() => b.env.requestToken(ISTIO_NS, serviceAccount(i), "vault", 3600));
      writeFileSync(join(dir, "vault-token"), token, { mode: 0o600 });
      agents.push({
        i,
        dir,
        socketPath: join(dir, "agent.sock"),
        cacertsDir: join(dir, "cacerts"),
        logPath: join(dir, "agent.log"),
        port: await metricsPort(),
        spawnedAt: 0,
      });
    }
    const auditOffset = b.hasAudit ? b.env.vaultAuditOffset() : 0;
    const cpu0 = b.pids().reduce((s, p) => s + cpuSeconds(p), 0);
    const t0 = Date.now();
    for (const a of agents) {
      const args = [
        join(repoRoot(), opts.entry),
        "sidecar",
        `--vault-addr=${b.vaultUrl}`,
        `--vault-cacert=${b.caFile}`,
        `--token-path=${join(a.dir, "vault-token")}`,
        `--socket=${a.socketPath}`,
        `--cacerts-dir=${a.cacertsDir}`,
        `--http-addr=127.0.0.1:${a.port}`,
        `--ttl=${opts.ttl}`,
        "--log-level=info",
      ];
      a.spawnedAt = Date.now();
      a.proc = new ManagedProcess(`fleet-${a.i}`, nodeBinary(), args, a.logPath);
    }
    // Readiness: each agent polled on its own every 50 ms (concurrently, so a slow agent never delays another's
    // figure), until the cacerts ..data link exists and the socket answers with a bundle.
    const deadline = t0 + 600_000;
    const watch = async (a: Agent) => {
      while (Date.now() < deadline) {
        if (a.proc!.exitCode !== undefined)
          throw new Error(`agent ${a.i} exited:\n${readFileSync(a.logPath, "utf8").slice(-2000)}`);
        const data = join(a.cacertsDir, "..data");
        if (existsSync(data) && lstatSync(data).isSymbolicLink() && existsSync(a.socketPath)) {
          a.client ??= new CertificateAuthorityAgentClient(`unix://${a.socketPath}`, grpc.credentials.createInsecure());
          const ok = await getBundle(a.client, 5_000).then(
            (x) => x.generation > 0,
            () => false,
          );
          if (ok) {
            a.readyAt = Date.now();
            a.cpuAtReadyS = cpuSeconds(a.proc!.pid!);
            return;
          }
        }
        await sleep(50);
      }
    };
    await Promise.all(agents.map(watch));
    const notReady = agents.filter((a) => a.readyAt === undefined).length;
    if (notReady) throw new Error(`${notReady} of ${n} agents not ready within 600 s`);
    const allReady = Math.max(...agents.map((a) => a.readyAt!)) - t0;
    const cpu1 = b.pids().reduce((s, p) => s + cpuSeconds(p), 0);
    const fleetRssMiB = agents.reduce((s, a) => s + rssMiB(a.proc!.pid), 0);
    const load = loadavg()
      .map((x) => x.toFixed(2))
      .join(" ");
    await sleep(1_000); // the audit device writes the last responses
    const startAudit = b.hasAudit ? auditByPath(b.env.vaultAudit(auditOffset)) : undefined;
    const startCounts = await agentRequestCounts(agents);
    const ready = agents.map((a) => a.readyAt! - a.spawnedAt);
    const result: FleetResult = {
      n,
      p50: quantile(ready, 0.5),
      p99: quantile(ready, 0.99),
      max: Math.max(...ready),
      allReadyMs: allReady,
      audit: startAudit,
      agentCounts: startCounts,
      vaultCpuS: cpu1 - cpu0,
      agentCpuS: agents.reduce((sum, a) => sum + (a.cpuAtReadyS ?? 0), 0) / n,
      fleetRssMiB,
      pkiCerts: 0,
      load,
    };
    for (const a of agents) a.client?.close();

    if (opts.cycles > 0) {
      const renewalOffset = b.hasAudit ? b.env.vaultAuditOffset() : 0;
      // The renewal point is at 2/3 of the lifetime (±5% jitter): wait for `cycles` of them and a margin.
      const waitMs = (opts.cycles * (opts.ttlSeconds * 2_000)) / 3 + opts.ttlSeconds * 200;
      console.log(`  waiting ${(waitMs / 1000).toFixed(0)} s for ${opts.cycles} renewal cycles ...`);
      await sleep(waitMs);
      const times = agents.map((a) => rotationTimes(a.logPath));
      const renewals = times.flatMap((t) => t.slice(1));
      result.renewals = renewals.length;
      result.maxRenewalsPerSecond = maxPerSecond(renewals.map((r) => r.started));
      result.maxRenewalsEndedPerSecond = maxPerSecond(renewals.map((r) => r.ended));
      result.uniformMaxPerSecond = simulatedMaxPerSecond(
        times.map((t) => t[0]!.ended),
        times.map((t) => t.length - 1),
        opts.ttlSeconds * 1000,
      );
      result.renewalAudit = b.hasAudit ? auditByPath(b.env.vaultAudit(renewalOffset)) : undefined;
    }
    const certs = await b.env.vault.client
      .read<{ keys: string[] }>("pki/certs?list=true", b.env.vault.rootToken)
      .catch(() => undefined);
    result.pkiCerts = certs?.data.keys.length ?? Number.NaN;
    const dirs = b.storageDirs();
    if (dirs.length) result.storageBytes = dirBytes(dirs[0]!);
    return result;
  } finally {
    await Promise.all(agents.map((a) => a.proc?.stop() ?? Promise.resolve()));
    rmSync(root, { recursive: true, force: true });
  }
}

function fmtCounts(c: Record<string, number> | undefined, n: number): string {
  if (!c) return "-";
  return Object.entries(c)
    .sort()
    .map(([k, v]) => `${k}=${(v / n).toFixed(2)}`)
    .join(" ");
}

async function main(): Promise<void> {
  // Stopped by hand: exit, so the harness's exit hook kills every agent and server this run started.
  for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => process.exit(130));
  const { values } = parseArgs({
    options: {
      agents: { type: "string", default: "25,50,100" },
      cluster: { type: "boolean", default: false },
      ttl: { type: "string", default: "60s" },
      cycles: { type: "string", default: "3" },
      entry: { type: "string", default: "dist/src/main.js" },
    },
  });
  const sizes = values.agents.split(",").map(Number);
  if (sizes.some((x) => !Number.isInteger(x) || x < 1)) throw new Error(`--agents: ${values.agents}`);
  const ttlMatch = /^(\d+)s$/.exec(values.ttl);
  if (!ttlMatch) throw new Error(`--ttl: ${values.ttl}; expected seconds such as 60s`);
  const opts = { ttl: values.ttl, ttlSeconds: Number(ttlMatch[1]), cycles: Number(values.cycles), entry: values.entry };
  const mib = (x: number) => (x / 1048576).toFixed(0);
  console.log(
    `machine: ${execFileSync("nproc", { encoding: "utf8" }).trim()} cores, memory ${mib(totalmem())} MiB total, ` +
      `${mib(freemem())} MiB free; load ${loadavg()
        .map((x) => x.toFixed(2))
        .join(" ")}; ${new Date().toISOString()}`,
  );
  const b = await startBackend(values.cluster, Math.max(...sizes));
  console.log(`backend: ${b.name}`);
  const results: FleetResult[] = [];
  try {
    for (let i = 0; i < Math.max(...sizes); i++) await b.env.createServiceAccount(ISTIO_NS, serviceAccount(i));
    for (const n of sizes) {
      console.log(`fleet of ${n} ...`);
      const r = await runFleet(b, n, opts);
      results.push(r);
      console.log(
        `  ready per agent p50 ${r.p50} ms, p99 ${r.p99} ms, max ${r.max} ms; whole fleet ${r.allReadyMs} ms; ` +
          `OpenBao CPU ${r.vaultCpuS.toFixed(2)} s; agent CPU to ready ${r.agentCpuS.toFixed(2)} s each; fleet RSS ${r.fleetRssMiB.toFixed(0)} MiB; load ${r.load}`,
      );
      console.log(`  Vault requests per start (audit log): ${fmtCounts(r.audit, n)}`);
      console.log(`  Vault requests per start (agents' counters): ${fmtCounts(r.agentCounts, n)}`);
      if (r.renewals !== undefined)
        console.log(
          `  ${r.renewals} renewals in ${opts.cycles} cycles of --ttl=${opts.ttl}; most started in one second: ` +
            `${r.maxRenewalsPerSecond}, completed: ${r.maxRenewalsEndedPerSecond} (ideal uniform ±5% jitter from the same starts: ${r.uniformMaxPerSecond}); ` +
            `Vault requests per renewal (audit): ${fmtCounts(r.renewalAudit, r.renewals)}`,
        );
      console.log(
        `  pki/certs entries so far: ${r.pkiCerts}` +
          (r.storageBytes !== undefined ? `; node-0 Raft directory ${mib(r.storageBytes)} MiB` : ""),
      );
    }
  } finally {
    await b.stop();
  }
  console.log(
    "\nN | ready p50 / p99 / max (ms) | all ready (ms) | Vault req/start | OpenBao CPU (s) | max renewals/s | load",
  );
  for (const r of results) {
    const perStart = r.audit
      ? Object.values(r.audit).reduce((s, v) => s + v, 0) / r.n
      : Object.values(r.agentCounts).reduce((s, v) => s + v, 0) / r.n;
    console.log(
      `${r.n} | ${r.p50} / ${r.p99} / ${r.max} | ${r.allReadyMs} | ${perStart.toFixed(2)} | ${r.vaultCpuS.toFixed(2)} | ` +
        `${r.maxRenewalsPerSecond ?? "-"} | ${r.load}`,
    );
  }
}

await main();
