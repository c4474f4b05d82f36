// Time to ready: from spawning `istiod-vault-agent sidecar` to a valid bundle on its socket and in the cacerts
// directory, against the local test environment (etcd, kube-apiserver, OpenBao from test/env, configured by
// setupVault()). Each run is split into Node start-up (spawn → "starting sidecar" log), set-up before the first
// rotation, login, key generation + CSR + chain validation (the rest of the rotation), Vault signing
// (istiod_vault_agent_vault_request_duration_seconds{operation="sign_intermediate"} from /metrics) and the cacerts write,
// and the sidecar's idle RSS two seconds after it is ready.
// Run by hand (the first run builds the servers, see README; `npm run bundle` first):
//   node dist/bench/time-to-ready.js [RUNS] [--entry FILE]... [--node-arg ARG]... [--compile-cache] [--cpu-prof DIR]
// --entry is what `node` runs (default dist/bundle/main.js, as the image does; dist/src/main.js is tsc's output);
// several --entry options interleave their runs (entry A, entry B, A, B, ...) so that the machine's load, which other
// people's work moves, falls on each alike. --node-arg adds a Node option to every start (the image's ENTRYPOINT
// flags). --compile-cache adds a series per entry with NODE_COMPILE_CACHE set (V8's on-disk code cache; a start
// before the series fills it); --compile-cache-dir DIR adds one with NODE_COMPILE_CACHE=DIR as it is (a cache made
// beforehand, e.g. by --help runs as the Dockerfile does, on a read-only mount as in the image); --cpu-prof profiles one more start-up (written when the agent exits).
// --burst N signs N leaves over the socket (16 in flight) after the idle figure and records the RSS 2 s after it
// (rssAfterBurstMiB); --idle-wait S then waits S more seconds and records it again (rssAfterIdleMiB: the signing
// workers exit after 60 s without work).
// Besides wall time, cpuMs is the CPU time (user + system, all threads) the agent had used when it was ready: under
// a loaded machine it moves much less than the wall time does.
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { spawnSync } from "node:child_process";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { CertificateAuthorityAgentClient } from "../src/gen/istiodvaultagent/v1/agent.js";
import { agentArgs, getBundle, nodeBinary, signCertificate, writeIstiodToken } from "../test/env/agent-process.js";
import { workloadCsr } from "../test/env/crypto-check.js";
import { startAgentTestEnv } from "../test/env/fixtures.js";
import { freePort, repoRoot } from "../test/env/harness.js";
import { ManagedProcess } from "../test/env/process.js";
import { createIntermediateCsr } from "../src/authority/csr.js";
import { generateKeyPair } from "../src/crypto/keys.js";

interface LogLine {
  time: string;
  msg: string;
  durationMs?: number;
}

interface Run {
  socketReadyMs: number;
  cpuMs: number;
  cacertsReadyMs: number;
  nodeStartMs: number;
  setupMs: number;
  loginMs: number;
  keyCsrValidateMs: number;
  vaultSignMs: number;
  rotationMs: number;
  sinkMs: number;
  /** VmRSS (MiB) two seconds after ready, with nothing asking for anything: the idle footprint. */
  idleRssMiB: number;
  /** --burst: VmRSS 2 s after N leaves were signed, and --idle-wait seconds after that (NaN without). */
  rssAfterBurstMiB: number;
  rssAfterIdleMiB: number;
}

/** --burst and --idle-wait. */
interface Burst {
  leaves: number;
  idleWaitS: number;
}

/** Signs `n` leaves with 16 in flight. */
async function burst(client: CertificateAuthorityAgentClient, n: number): Promise<void> {
  const csr = await workloadCsr("spiffe://cluster.local/ns/bench/sa/burst");
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next++ < n) await signCertificate(client, csr, 3600);
    }),
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** First log line whose message starts with `prefix`. */
function logLine(lines: LogLine[], prefix: string): LogLine {
  const line = lines.find((l) => l.msg.startsWith(prefix));
  if (!line) throw new Error(`agent log has no "${prefix}" line`);
  return line;
}

async function metric(port: number, operation: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const re = new RegExp(
    `^istiod_vault_agent_vault_request_duration_seconds_sum\\{[^}]*operation="${operation}"[^}]*\\} (\\S+)$`,
    "m",
  );
  const m = re.exec(text);
  if (!m) throw new Error(`no ${operation} duration in /metrics`);
  return Number(m[1]) * 1000;
}

async function oneRun(
  env: Awaited<ReturnType<typeof startAgentTestEnv>>["env"],
  i: number,
  entry: string,
  extraEnv: NodeJS.ProcessEnv = {},
  nodeArgs: string[] = [],
  load: Burst = { leaves: 0, idleWaitS: 0 },
): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), "iva-ready-"));
  const socketPath = join(dir, "agent.sock");
  const cacertsDir = join(dir, "cacerts");
  const tokenPath = join(dir, "vault-token");
  mkdirSync(cacertsDir, { mode: 0o750 });
  await writeIstiodToken(env, tokenPath);
  const port = await freePort();
  const logPath = join(dir, "agent.log");
  const args = agentArgs(env, { socketPath, cacertsDir, tokenPath }, [`--http-addr=127.0.0.1:${port}`]);
  const client = new CertificateAuthorityAgentClient(`unix://${socketPath}`, grpc.credentials.createInsecure());
  const t0 = Date.now();
  const proc = new ManagedProcess(`agent-${i}`, nodeBinary(), [...nodeArgs, entry, "sidecar", ...args], logPath, {
    ...process.env,
    ...extraEnv,
  });
  let socketReady = 0;
  let cacertsReady = 0;
  let cpuMs = 0;
  try {
    // Poll both every 2 ms: cheap next to what is being measured, and fine-grained enough.
    while ((!socketReady || !cacertsReady) && Date.now() - t0 < 30_000) {
      if (proc.exitCode !== undefined) throw new Error(`agent exited:\n${readFileSync(logPath, "utf8").slice(-2000)}`);
      if (
        !cacertsReady &&
        existsSync(join(cacertsDir, "..data")) &&
        lstatSync(join(cacertsDir, "..data")).isSymbolicLink()
      ) {
        cacertsReady = Date.now();
      }
      if (!socketReady && existsSync(socketPath)) {
        const ok = await getBundle(client, 200).then(
          (b) => b.generation > 0,
          () => false,
        );
        if (ok) socketReady = Date.now();
      }
      if (socketReady && cacertsReady && !cpuMs) cpuMs = cpuTimeMs(proc.pid);
      await sleep(2);
    }
    if (!socketReady || !cacertsReady) throw new Error("agent not ready within 30 s");
    // The log lines land a little after the files and the socket (later still on a loaded machine).
    const readLines = () =>
      readFileSync(logPath, "utf8")
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as LogLine);
    let lines = readLines();
    for (let waited = 0; !lines.some((l) => l.msg.startsWith("wrote cacerts")) && waited < 10_000; waited += 50) {
      await sleep(50);
      lines = readLines();
    }
    const at = (l: LogLine) => Date.parse(l.time);
    const starting = logLine(lines, "starting sidecar");
    const login = logLine(lines, "logged in to Vault");
    const serving = logLine(lines, "serving a new intermediate");
    const wrote = logLine(lines, "wrote cacerts");
    const rotationMs = serving.durationMs ?? Number.NaN;
    const vaultSignMs = await metric(port, "sign_intermediate");
    const loginMs = login.durationMs ?? Number.NaN;
    await sleep(2000);
    const idleRssMiB = rssMiB(proc.pid);
    let rssAfterBurstMiB = Number.NaN;
    let rssAfterIdleMiB = Number.NaN;
    if (load.leaves > 0) {
      await burst(client, load.leaves);
      await sleep(2000);
      rssAfterBurstMiB = rssMiB(proc.pid);
      if (load.idleWaitS > 0) {
        await sleep(load.idleWaitS * 1000);
        rssAfterIdleMiB = rssMiB(proc.pid);
      }
    }
    return {
      rssAfterBurstMiB,
      rssAfterIdleMiB,
      socketReadyMs: socketReady - t0,
      cpuMs,
      cacertsReadyMs: cacertsReady - t0,
      nodeStartMs: at(starting) - t0,
      setupMs: at(serving) - rotationMs - at(starting),
      loginMs,
      vaultSignMs,
      keyCsrValidateMs: rotationMs - loginMs - vaultSignMs,
      rotationMs,
      sinkMs: at(wrote) - at(serving),
      idleRssMiB,
    };
  } finally {
    client.close();
    await proc.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Resident set size of `pid` in MiB, from /proc (Linux). */
function rssMiB(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** utime + stime of `pid` (all its threads) in ms, from /proc/PID/stat (Linux; clock ticks of 10 ms). */
function cpuTimeMs(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** In a fresh process: generateKeyPair + createIntermediateCsr, cold (first use) and warm. */
async function keygenChild(): Promise<void> {
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    const keys = await generateKeyPair("ECDSA_P256", true);
    await createIntermediateCsr(keys, "ECDSA_P256", { commonName: "istiod-vault-agent" });
    times.push(performance.now() - t);
  }
  console.log(JSON.stringify(times));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const COLUMNS: (keyof Run)[] = [
  "socketReadyMs",
  "cacertsReadyMs",
  "cpuMs",
  "nodeStartMs",
  "setupMs",
  "loginMs",
  "keyCsrValidateMs",
  "vaultSignMs",
  "rotationMs",
  "sinkMs",
  "idleRssMiB",
  "rssAfterBurstMiB",
  "rssAfterIdleMiB",
];

function printRuns(title: string, results: Run[]): void {
  const row = (value: (c: keyof Run) => number): string =>
    COLUMNS.map((c) => value(c).toFixed(0).padStart(c.length)).join("  ");
  console.log(`\n${title}`);
  console.log(COLUMNS.join("  "));
  for (const r of results) console.log(row((c) => r[c]));
  console.log(`${row((c) => median(results.map((r) => r[c])))}  (median)`);
}

async function main(): Promise<void> {
  if (process.argv[2] === "keygen") return keygenChild();
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      entry: { type: "string", multiple: true, default: ["dist/bundle/main.js"] },
      "node-arg": { type: "string", multiple: true, default: [] },
      "compile-cache": { type: "boolean", default: false },
      "compile-cache-dir": { type: "string" },
      "cpu-prof": { type: "string" },
      burst: { type: "string", default: "0" },
      "idle-wait": { type: "string", default: "0" },
    },
  });
  const load: Burst = { leaves: Number(values.burst), idleWaitS: Number(values["idle-wait"]) };
  const runs = Number(positionals[0] ?? 5);
  const entries = values.entry.map((e) => resolve(repoRoot(), e));
  const nodeArgs = values["node-arg"];
  const bareTimes: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    spawnSync(nodeBinary(), ["-e", ""]);
    bareTimes.push(performance.now() - t);
  }
  const keygen = JSON.parse(
    spawnSync(nodeBinary(), [new URL(import.meta.url).pathname, "keygen"], { encoding: "utf8" }).stdout,
  ) as number[];

  console.log(
    `starting etcd, kube-apiserver and OpenBao ... (load ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")})`,
  );
  const t = await startAgentTestEnv();
  const results = entries.map(() => [] as Run[]);
  const cached = entries.map(() => [] as Run[]);
  const given = entries.map(() => [] as Run[]);
  const givenDir = values["compile-cache-dir"];
  const cacheDirs = entries.map(() => mkdtempSync(join(tmpdir(), "iva-compile-cache-")));
  try {
    for (const e of entries) await oneRun(t.env, -1, e, {}, nodeArgs); // warm-up: page cache, OpenBao's first PKI use
    for (let i = 0; i < runs; i++) {
      for (const [k, e] of entries.entries()) {
        results[k]!.push(await oneRun(t.env, i, e, {}, nodeArgs, load));
        if (givenDir) given[k]!.push(await oneRun(t.env, 200 + i, e, { NODE_COMPILE_CACHE: givenDir }, nodeArgs, load));
      }
    }
    if (values["compile-cache"]) {
      for (const [k, e] of entries.entries()) {
        await oneRun(t.env, -2, e, { NODE_COMPILE_CACHE: cacheDirs[k] }, nodeArgs); // fills the cache
      }
      for (let i = 0; i < runs; i++) {
        for (const [k, e] of entries.entries()) {
          cached[k]!.push(await oneRun(t.env, 100 + i, e, { NODE_COMPILE_CACHE: cacheDirs[k] }, nodeArgs));
        }
      }
    }
    const profDir = values["cpu-prof"];
    if (profDir) {
      for (const e of entries) await oneRun(t.env, -3, e, {}, [...nodeArgs, "--cpu-prof", `--cpu-prof-dir=${profDir}`]);
    }
  } finally {
    await t.env.stop();
    for (const d of cacheDirs) rmSync(d, { recursive: true, force: true });
  }
  console.log(
    `load at the end: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  console.log(`bare node start (node -e ""): median ${median(bareTimes).toFixed(0)} ms`);
  console.log(
    `generateKeyPair + createIntermediateCsr in a fresh process: first ${keygen[0]!.toFixed(1)} ms, then ` +
      keygen
        .slice(1)
        .map((x) => x.toFixed(1))
        .join(", ") +
      " ms",
  );
  const flags = nodeArgs.length ? ` with ${nodeArgs.join(" ")}` : "";
  for (const [k, e] of entries.entries()) {
    printRuns(`${relative(repoRoot(), e)}${flags} (ms from spawn; phases in ms)`, results[k]!);
    if (given[k]!.length)
      printRuns(`${relative(repoRoot(), e)}${flags} with NODE_COMPILE_CACHE=${givenDir}`, given[k]!);
    if (cached[k]!.length) printRuns(`${relative(repoRoot(), e)}${flags} with NODE_COMPILE_CACHE (ms)`, cached[k]!);
  }
}

await main();
