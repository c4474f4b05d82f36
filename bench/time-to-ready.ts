// Time to ready: from spawning `istiod-vault-agent sidecar` to a valid bundle on its socket and in the cacerts
// directory, against the local test environment (etcd, kube-apiserver, OpenBao from test/env, configured by
// setupVault()). Each run is split into Node start-up (spawn → "starting sidecar" log), set-up before the first
// rotation, login, key generation + CSR + chain validation (the rest of the rotation), Vault signing
// (istiod_vault_agent_vault_request_duration_seconds{operation="sign_intermediate"} from /metrics) and the cacerts write,
// and the sidecar's idle RSS two seconds after it is ready.
// Run by hand (the first run builds the servers, see README):
//   node dist/bench/time-to-ready.js [RUNS] [--compile-cache] [--cpu-prof DIR]
// --compile-cache adds a second series with NODE_COMPILE_CACHE set (V8's on-disk code cache, Node >= 22.1; the
// warm-up run fills it); --cpu-prof profiles one more start-up (the profile is written when the agent exits).
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { CertificateAuthorityAgentClient } from "../src/gen/istiodvaultagent/v1/agent.js";
import { agentArgs, getBundle, nodeBinary, writeIstiodToken } from "../test/env/agent-process.js";
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
  extraEnv: NodeJS.ProcessEnv = {},
  nodeArgs: string[] = [],
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
  const proc = new ManagedProcess(
    `agent-${i}`,
    nodeBinary(),
    [...nodeArgs, join(repoRoot(), "dist/src/main.js"), "sidecar", ...args],
    logPath,
    { ...process.env, ...extraEnv },
  );
  let socketReady = 0;
  let cacertsReady = 0;
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
      await sleep(2);
    }
    if (!socketReady || !cacertsReady) throw new Error("agent not ready within 30 s");
    await sleep(100); // let the log flush
    const lines = readFileSync(logPath, "utf8")
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as LogLine);
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
    return {
      socketReadyMs: socketReady - t0,
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
  "nodeStartMs",
  "setupMs",
  "loginMs",
  "keyCsrValidateMs",
  "vaultSignMs",
  "rotationMs",
  "sinkMs",
  "idleRssMiB",
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
    options: { "compile-cache": { type: "boolean", default: false }, "cpu-prof": { type: "string" } },
  });
  const runs = Number(positionals[0] ?? 5);
  const bareTimes: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    spawnSync(nodeBinary(), ["-e", ""]);
    bareTimes.push(performance.now() - t);
  }
  const keygen = JSON.parse(
    spawnSync(nodeBinary(), [new URL(import.meta.url).pathname, "keygen"], { encoding: "utf8" }).stdout,
  ) as number[];

  console.log("starting etcd, kube-apiserver and OpenBao ...");
  const t = await startAgentTestEnv();
  const results: Run[] = [];
  const cached: Run[] = [];
  const cacheDir = mkdtempSync(join(tmpdir(), "iva-compile-cache-"));
  try {
    await oneRun(t.env, -1); // warm-up: page cache, OpenBao's first PKI use
    for (let i = 0; i < runs; i++) results.push(await oneRun(t.env, i));
    if (values["compile-cache"]) {
      await oneRun(t.env, -2, { NODE_COMPILE_CACHE: cacheDir }); // fills the cache
      for (let i = 0; i < runs; i++) cached.push(await oneRun(t.env, 100 + i, { NODE_COMPILE_CACHE: cacheDir }));
    }
    const profDir = values["cpu-prof"];
    if (profDir) await oneRun(t.env, -3, {}, ["--cpu-prof", `--cpu-prof-dir=${profDir}`]);
  } finally {
    await t.env.stop();
    rmSync(cacheDir, { recursive: true, force: true });
  }
  console.log(`bare node start (node -e ""): median ${median(bareTimes).toFixed(0)} ms`);
  console.log(
    `generateKeyPair + createIntermediateCsr in a fresh process: first ${keygen[0]!.toFixed(1)} ms, then ` +
      keygen
        .slice(1)
        .map((x) => x.toFixed(1))
        .join(", ") +
      " ms",
  );
  printRuns("agent as built (ms from spawn; phases in ms)", results);
  if (cached.length) printRuns("with NODE_COMPILE_CACHE (ms)", cached);
}

await main();
