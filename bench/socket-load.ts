// SignCertificate load on the agent's Unix socket from this (separate) client process. It starts the server
// (bench/agent-harness.ts: the real AgentGrpcServer over a local test CA, no Vault) as a child process, then for each
// concurrency level keeps that many requests in flight for a fixed time and reports leaves/s and p50/p99 latency,
// the server's CPU time per leaf, and its RSS (sampled from /proc every few seconds). --soak N then signs N leaves at
// the highest level and reports the server's RSS over the run. Run by hand:
// --rate R replaces the levels with an open loop: requests are sent on a fixed schedule of R per second whether or not
// earlier ones have been answered, and each latency is measured from its scheduled send time (so a stall is not
// hidden by the client waiting). Without IVA_SIGNING_WORKERS the server chooses its workers as the agent does.
//   node dist/bench/socket-load.js --dir DIR [--levels 1,16,64] [--seconds 10] [--soak 1000000] [--rss-csv FILE]
//        [--rate 2500] [--server-node-args "--cpu-prof --cpu-prof-dir=/tmp/prof"] [--server-env IVA_SIGNING_WORKERS=2]
//        [--server-script dist/bench-bundle/agent-harness.js]   (the harness bundled as the image's agent is:
//                                                                 node scripts/bundle.mjs dist/bench-bundle --bench)
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { CertificateAuthorityAgentClient } from "../src/gen/istiodvaultagent/v1/agent.js";
import { loadFixtures } from "./fixtures.js";

const { values: args } = parseArgs({
  options: {
    dir: { type: "string" },
    levels: { type: "string", default: "1,16,64" },
    seconds: { type: "string", default: "10" },
    warmup: { type: "string", default: "2" },
    soak: { type: "string", default: "0" },
    rate: { type: "string", default: "0" },
    "rss-every": { type: "string", default: "5" },
    "rss-csv": { type: "string" },
    "server-node-args": { type: "string", default: "" },
    "server-env": { type: "string", multiple: true, default: [] },
    "server-script": { type: "string" },
  },
});

const TTL_SECONDS = 24 * 3600;

interface ServerProc {
  child: ChildProcess;
  pid: number;
  socketPath: string;
  stop(): Promise<void>;
}

async function startServer(dir: string): Promise<ServerProc> {
  const sockDir = mkdtempSync(join(tmpdir(), "iva-bench-sock-"));
  const socketPath = join(sockDir, "agent.sock");
  const nodeArgs = args["server-node-args"].split(" ").filter(Boolean);
  const env = { ...process.env };
  for (const kv of args["server-env"]) {
    const eq = kv.indexOf("=");
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const harness = args["server-script"] ?? new URL("./agent-harness.js", import.meta.url).pathname;
  const child = spawn(process.execPath, [...nodeArgs, harness, dir, socketPath], {
    env,
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes("ready")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`agent harness exited ${code} before it was ready`)));
  });
  return {
    child,
    pid: child.pid!,
    socketPath,
    stop: async () => {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
      rmSync(sockDir, { recursive: true, force: true });
    },
  };
}

/** Resident set size of `pid` in MiB, from /proc. */
function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** User + system CPU seconds `pid` has used so far (fields 14 and 15 of /proc/PID/stat, in clock ticks). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function sign(client: CertificateAuthorityAgentClient, csrPem: string): Promise<string[]> {
  return new Promise((resolve, reject) =>
    client.signCertificate({ csrPem, ttlSeconds: TTL_SECONDS }, (err, res) =>
      err ? reject(err) : resolve(res.certChainPem),
    ),
  );
}

interface LevelResult {
  concurrency: number;
  leaves: number;
  errors: number;
  seconds: number;
  rate: number;
  p50: number;
  p99: number;
  max: number;
  serverCpuUsPerLeaf: number;
  clientCpuUsPerLeaf: number;
}

/** Keeps `concurrency` requests in flight until `until()` says stop; records each latency in ms. */
async function drive(
  client: CertificateAuthorityAgentClient,
  csrs: string[],
  concurrency: number,
  until: (done: number) => boolean,
  latencies: number[] | undefined,
): Promise<{ leaves: number; errors: number }> {
  let next = 0;
  let done = 0;
  let errors = 0;
  let firstError: unknown;
  const worker = async (): Promise<void> => {
    while (!until(done)) {
      const csr = csrs[next++ % csrs.length]!;
      const t0 = performance.now();
      try {
        const chain = await sign(client, csr);
        if (chain.length !== 3) throw new Error(`chain of ${chain.length} certificates`);
        latencies?.push(performance.now() - t0);
        done++;
      } catch (err) {
        errors++;
        firstError ??= err;
        if (errors > 100) throw firstError as Error;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  if (firstError) console.error(`errors: ${errors}; first: ${(firstError as Error).message}`);
  return { leaves: done, errors };
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

async function level(
  client: CertificateAuthorityAgentClient,
  server: ServerProc,
  csrs: string[],
  concurrency: number,
  seconds: number,
): Promise<LevelResult> {
  const warmEnd = performance.now() + Number(args.warmup) * 1000;
  await drive(client, csrs, concurrency, () => performance.now() > warmEnd, undefined);
  const latencies: number[] = [];
  const cpu0 = cpuSeconds(server.pid);
  const client0 = process.cpuUsage();
  const start = performance.now();
  const end = start + seconds * 1000;
  const { leaves, errors } = await drive(client, csrs, concurrency, () => performance.now() > end, latencies);
  const elapsed = (performance.now() - start) / 1000;
  const serverCpu = cpuSeconds(server.pid) - cpu0;
  const clientCpu = process.cpuUsage(client0);
  const sorted = Float64Array.from(latencies).sort();
  return {
    concurrency,
    leaves,
    errors,
    seconds: elapsed,
    rate: leaves / elapsed,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    max: sorted[sorted.length - 1] ?? Number.NaN,
    serverCpuUsPerLeaf: (serverCpu * 1e6) / leaves,
    clientCpuUsPerLeaf: (clientCpu.user + clientCpu.system) / leaves,
  };
}

async function soak(
  client: CertificateAuthorityAgentClient,
  server: ServerProc,
  csrs: string[],
  concurrency: number,
  total: number,
): Promise<void> {
  const samples: { t: number; leaves: number; rssMiB: number }[] = [];
  let done = 0;
  const start = performance.now();
  const sample = (): void => {
    samples.push({ t: (performance.now() - start) / 1000, leaves: done, rssMiB: rssMiB(server.pid) });
  };
  sample();
  const timer = setInterval(sample, Number(args["rss-every"]) * 1000);
  const latencies: number[] = [];
  const cpu0 = cpuSeconds(server.pid);
  const result = await drive(
    client,
    csrs,
    concurrency,
    (n) => {
      done = n;
      return n >= total;
    },
    latencies,
  );
  clearInterval(timer);
  sample();
  const elapsed = (performance.now() - start) / 1000;
  const serverCpu = cpuSeconds(server.pid) - cpu0;
  const sorted = Float64Array.from(latencies).sort();
  const rss = samples.map((s) => s.rssMiB);
  console.log(
    `\nsoak: ${result.leaves} leaves at ${concurrency} in flight in ${elapsed.toFixed(1)} s ` +
      `(${Math.round(result.leaves / elapsed)}/s, p50 ${percentile(sorted, 0.5).toFixed(2)} ms, ` +
      `p99 ${percentile(sorted, 0.99).toFixed(2)} ms, errors ${result.errors}, ` +
      `server CPU ${((serverCpu * 1e6) / result.leaves).toFixed(0)} us/leaf)`,
  );
  console.log(
    `server RSS over ${samples.length} samples every ${args["rss-every"]} s: first ${rss[0]!.toFixed(1)} MiB, ` +
      `last ${rss[rss.length - 1]!.toFixed(1)} MiB, max ${Math.max(...rss).toFixed(1)} MiB, ` +
      `min ${Math.min(...rss).toFixed(1)} MiB`,
  );
  const csv = args["rss-csv"];
  if (csv) {
    writeFileSync(
      csv,
      "seconds,leaves,rss_mib\n" +
        samples.map((s) => `${s.t.toFixed(1)},${s.leaves},${s.rssMiB.toFixed(1)}`).join("\n") +
        "\n",
    );
    console.log(`RSS samples written to ${csv}`);
  }
}

/**
 * Open loop: request i is due at start + i / rate; a timer sends every due request (a late timer sends the backlog
 * at once, as clients keep arriving), and latency runs from the due time to the answer.
 */
async function openLoop(
  client: CertificateAuthorityAgentClient,
  server: ServerProc,
  csrs: string[],
  rate: number,
  seconds: number,
): Promise<void> {
  const run = async (durationS: number, latencies: number[] | undefined) => {
    const total = Math.floor(rate * durationS);
    const start = performance.now();
    let sent = 0;
    let done = 0;
    let errors = 0;
    let maxOutstanding = 0;
    let firstError: unknown;
    await new Promise<void>((resolve) => {
      const tick = () => {
        const now = performance.now();
        while (sent < total && start + (sent * 1000) / rate <= now) {
          const due = start + (sent * 1000) / rate;
          const csr = csrs[sent++ % csrs.length]!;
          maxOutstanding = Math.max(maxOutstanding, sent - done - errors);
          sign(client, csr).then(
            () => {
              latencies?.push(performance.now() - due);
              if (++done + errors === total) resolve();
            },
            (err: unknown) => {
              firstError ??= err;
              if (done + ++errors === total) resolve();
            },
          );
        }
        if (sent < total) setTimeout(tick, 1);
      };
      tick();
    });
    if (firstError) console.error(`errors: ${errors}; first: ${(firstError as Error).message}`);
    return { done, errors, maxOutstanding, elapsed: (performance.now() - start) / 1000 };
  };
  await run(Number(args.warmup), undefined);
  const latencies: number[] = [];
  const cpu0 = cpuSeconds(server.pid);
  const r = await run(seconds, latencies);
  const serverCpu = cpuSeconds(server.pid) - cpu0;
  const sorted = Float64Array.from(latencies).sort();
  console.log(
    `open loop at ${rate}/s for ${seconds} s: ${r.done} leaves (${Math.round(r.done / r.elapsed)}/s achieved), ` +
      `p50 ${percentile(sorted, 0.5).toFixed(2)} ms, p99 ${percentile(sorted, 0.99).toFixed(2)} ms, ` +
      `p99.9 ${percentile(sorted, 0.999).toFixed(2)} ms, max ${(sorted[sorted.length - 1] ?? Number.NaN).toFixed(1)} ms, ` +
      `errors ${r.errors}, most outstanding ${r.maxOutstanding}, server CPU ${((serverCpu * 1e6) / r.done).toFixed(0)} us/leaf ` +
      `(${((serverCpu / r.elapsed) * 100).toFixed(0)}% of a core), RSS ${rssMiB(server.pid).toFixed(1)} MiB`,
  );
}

async function main(): Promise<void> {
  const dir = args.dir;
  if (!dir) {
    console.error("usage: socket-load.js --dir FIXTURE_DIR [--levels 1,16,64] [--seconds 10] [--soak N]");
    process.exit(2);
  }
  const { csrs } = await loadFixtures(dir);
  const server = await startServer(dir);
  const client = new CertificateAuthorityAgentClient(`unix://${server.socketPath}`, grpc.credentials.createInsecure());
  try {
    console.log(`server pid ${server.pid}, RSS at start ${rssMiB(server.pid).toFixed(1)} MiB`);
    if (Number(args.rate) > 0) {
      await openLoop(client, server, csrs, Number(args.rate), Number(args.seconds));
      return;
    }
    console.log(
      "in-flight  leaves/s   p50 ms   p99 ms   max ms  errors  server CPU us/leaf  client CPU us/leaf  RSS MiB",
    );
    const levels = args.levels.split(",").map(Number);
    for (const concurrency of levels) {
      const r = await level(client, server, csrs, concurrency, Number(args.seconds));
      console.log(
        `${String(r.concurrency).padStart(9)}  ${r.rate.toFixed(0).padStart(8)}  ${r.p50.toFixed(2).padStart(7)}  ` +
          `${r.p99.toFixed(2).padStart(7)}  ${r.max.toFixed(1).padStart(7)}  ${String(r.errors).padStart(6)}  ` +
          `${r.serverCpuUsPerLeaf.toFixed(0).padStart(18)}  ${r.clientCpuUsPerLeaf.toFixed(0).padStart(18)}  ` +
          `${rssMiB(server.pid).toFixed(1).padStart(7)}`,
      );
    }
    const soakLeaves = Number(args.soak);
    if (soakLeaves > 0) await soak(client, server, csrs, Math.max(...levels), soakLeaves);
  } finally {
    client.close();
    await server.stop();
  }
}

await main();
