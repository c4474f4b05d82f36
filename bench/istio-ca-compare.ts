// The drop-in Istio CA listener beside istiod's own CreateCertificate, same client, same run. Starts the test
// environment (etcd, kube-apiserver, OpenBao; test/env), the agent's init and then upstream istiod on the agent's
// cacerts (test/env/istiod.ts, istiod built by `bash test/env/build.sh istiod`), and the agent's sidecar on the same
// directory with --istio-ca-addr and default signing workers. Both servers then sign the same CSRs for default/sleep
// with the same service-account token (audience istio-ca) from this one client process: alternating rounds of
// --seconds each at --concurrency in flight, after a warm-up of each. The agent reviews a token once and then answers
// from its TokenReview cache; istiod reviews it as it does. Reports leaves/s, p50/p99 and each server's CPU per leaf,
// then the agent/istiod ratio of each pair of rounds. Run by hand:
//   node dist/bench/istio-ca-compare.js [--rounds 3] [--seconds 10] [--concurrency 16] [--agent-args "--signing-workers=0"]
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { IstioCertificateServiceClient } from "../src/gen/istio/v1/auth/ca.js";
import { startAgentTestEnv } from "../test/env/fixtures.js";
import { freePort } from "../test/env/harness.js";
import { SLEEP_SPIFFE_ID, workloadCsr } from "../test/env/crypto-check.js";
import { istiodCaClient, startIstiodOnAgentCacerts } from "../test/env/istiod.js";

const { values: args } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    seconds: { type: "string", default: "10" },
    warmup: { type: "string", default: "3" },
    concurrency: { type: "string", default: "16" },
    csrs: { type: "string", default: "200" },
    "agent-args": { type: "string", default: "" },
  },
});

/** User + system CPU seconds of `pid` (all threads), from /proc. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

interface Round {
  rate: number;
  p50: number;
  p99: number;
  errors: number;
  cpuUsPerLeaf: number;
  apiserverCpuUsPerLeaf: number;
}

async function main(): Promise<void> {
  const t = await startAgentTestEnv();
  const agentPort = await freePort();
  const stack = await startIstiodOnAgentCacerts(t, { agentArgs: [] });
  const extra = args["agent-args"].split(" ").filter(Boolean);
  const sidecar = await stack.startSidecar([
    `--istio-ca-addr=127.0.0.1:${agentPort}`,
    "--istio-ca-names=127.0.0.1,localhost",
    `--kubeconfig=${t.env.kube.kubeconfigPath}`,
    "--log-level=info",
    ...extra,
  ]);
  const root = stack.cacerts("root-cert.pem");
  const agent = new IstioCertificateServiceClient(
    `127.0.0.1:${agentPort}`,
    grpc.credentials.createSsl(Buffer.from(root)),
  );
  const istiod = istiodCaClient(stack.istiod, root);
  const token = await t.env.requestToken("default", "sleep", "istio-ca", 3600);
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${token}`);
  const csrs: string[] = [];
  for (let i = 0; i < Number(args.csrs); i++) csrs.push(await workloadCsr(SLEEP_SPIFFE_ID));
  const apiserverPid = t.env.apiserverProcess.pid;
  const workers = /"signingWorkers":(\d+)/.exec(sidecar.log())?.[1];
  console.log(
    `agent pid ${sidecar.process.pid} (signing workers ${workers ?? "?"}), istiod pid ${stack.istiod.process.pid}, ` +
      `kube-apiserver pid ${apiserverPid ?? "?"}; ${args.concurrency} in flight, ${csrs.length} CSRs, one token`,
  );

  const create = (client: IstioCertificateServiceClient, csr: string) =>
    new Promise<string[]>((resolve, reject) =>
      client.createCertificate({ csr, validityDuration: 3600 }, md, { deadline: Date.now() + 10_000 }, (err, res) =>
        err ? reject(err) : resolve(res.certChain),
      ),
    );
  const round = async (client: IstioCertificateServiceClient, pid: number, seconds: number): Promise<Round> => {
    const latencies: number[] = [];
    let errors = 0;
    let firstError: unknown;
    let next = 0;
    const cpu0 = cpuSeconds(pid);
    const api0 = apiserverPid ? cpuSeconds(apiserverPid) : 0;
    const start = performance.now();
    const end = start + seconds * 1000;
    await Promise.all(
      Array.from({ length: Number(args.concurrency) }, async () => {
        while (performance.now() < end) {
          const t0 = performance.now();
          try {
            const chain = await create(client, csrs[next++ % csrs.length]!);
            if (chain.length < 3) throw new Error(`chain of ${chain.length}`);
            latencies.push(performance.now() - t0);
          } catch (err) {
            errors++;
            firstError ??= err;
            if (errors > 100) throw firstError as Error;
          }
        }
      }),
    );
    const elapsed = (performance.now() - start) / 1000;
    if (firstError) console.error(`errors: ${errors}; first: ${(firstError as Error).message}`);
    const sorted = Float64Array.from(latencies).sort();
    return {
      rate: latencies.length / elapsed,
      p50: percentile(sorted, 0.5),
      p99: percentile(sorted, 0.99),
      errors,
      cpuUsPerLeaf: ((cpuSeconds(pid) - cpu0) * 1e6) / latencies.length,
      apiserverCpuUsPerLeaf: apiserverPid ? ((cpuSeconds(apiserverPid) - api0) * 1e6) / latencies.length : Number.NaN,
    };
  };
  const show = (name: string, r: Round) =>
    console.log(
      `${name.padEnd(7)} ${r.rate.toFixed(0).padStart(8)}  ${r.p50.toFixed(2).padStart(7)}  ${r.p99.toFixed(2).padStart(7)}  ` +
        `${String(r.errors).padStart(6)}  ${r.cpuUsPerLeaf.toFixed(0).padStart(16)}  ${r.apiserverCpuUsPerLeaf.toFixed(0).padStart(19)}`,
    );
  try {
    await round(agent, sidecar.process.pid!, Number(args.warmup));
    await round(istiod, stack.istiod.process.pid!, Number(args.warmup));
    console.log("server   leaves/s   p50 ms   p99 ms  errors  server CPU us/leaf  apiserver CPU us/leaf");
    const ratios: number[] = [];
    for (let i = 0; i < Number(args.rounds); i++) {
      // Alternate which goes first, so a load change on the machine does not always favour one side.
      const order = i % 2 === 0 ? (["agent", "istiod"] as const) : (["istiod", "agent"] as const);
      const results: Record<string, Round> = {};
      for (const who of order) {
        results[who] =
          who === "agent"
            ? await round(agent, sidecar.process.pid!, Number(args.seconds))
            : await round(istiod, stack.istiod.process.pid!, Number(args.seconds));
        show(who, results[who]);
      }
      ratios.push(results.agent!.rate / results.istiod!.rate);
    }
    const sortedRatios = [...ratios].sort((a, b) => a - b);
    console.log(
      `agent/istiod leaves/s per round: ${ratios.map((r) => r.toFixed(2)).join(", ")}; median ${sortedRatios[Math.floor(sortedRatios.length / 2)]!.toFixed(2)}`,
    );
  } finally {
    agent.close();
    await stack.stop();
    await t.env.stop();
  }
}

await main();
