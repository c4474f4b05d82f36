// "Vault leader killed mid-renewal": a 3-node OpenBao Raft cluster (test/env/openbao-cluster.ts), a sidecar given
// every node's address (the active node first, the worst case without a load balancer) and a 60 s intermediate
// renewed in 6-12 s, a client signing leaves over the socket without pause, and the active node SIGKILLed 500 ms
// before the renewal point (test/env/vault-ha-scenario.ts). Each run: how long the election took, how long after the
// new leader the agent served a renewed intermediate, how many signings failed (expected: none), and what the agent's
// Vault client did (redirects, retries, next address). The killed node is restarted and the cluster is healthy again
// before the next run.
// Run by hand (build first: npx tsc -p tsconfig.json):
//   node dist/bench/vault-ha.js [RUNS]        (default 3)
import { loadavg } from "node:os";
import { rmSync } from "node:fs";
import { startAgent } from "../test/env/agent-process.js";
import { startOpenBaoCluster } from "../test/env/openbao-cluster.js";
import { HA_AGENT_FLAGS, leaderKilledMidRenewal, type LeaderKillResult } from "../test/env/vault-ha-scenario.js";

const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 3);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`RUNS: expected a positive integer, got ${process.argv[2]}`);
  console.log(`load before: ${load()}`);
  const cluster = await startOpenBaoCluster({ nodes: 3 });
  const results: LeaderKillResult[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      const active = await cluster.activeNode();
      const order = [active, ...cluster.nodes.filter((n) => n !== active)];
      const run = await startAgent(
        cluster.env,
        "sidecar",
        [`--vault-addr=${order.map((n) => n.url).join(",")}`, `--vault-cacert=${cluster.caFile}`, ...HA_AGENT_FLAGS],
        { vaultFlags: false, cacerts: false },
      );
      try {
        const r = await leaderKilledMidRenewal(cluster, run, { killBeforeDueMs: 500 });
        results.push(r);
        console.log(
          `run ${i + 1}: killed node-${r.killedNode}, node-${r.newActiveNode} active after ${r.electedAfterKillMs} ms; ` +
            `renewed ${r.renewedAfterElectionMs} ms after the new leader (${r.renewedAfterKillMs} ms after the kill, ` +
            `renewal was due ${r.renewalDueAfterKillMs} ms after it); ${r.signings} signings, ${r.failedSignings} failed; ` +
            `client: ${r.agentLog.redirects} redirects, ${r.agentLog.nextAddress} next-address, ${r.agentLog.retries} retries, ` +
            `${r.agentLog.renewalErrors} failed renewal attempts; load ${load()}`,
        );
        if (r.failures.length) console.log(`  failures: ${r.failures.join(" | ")}`);
      } finally {
        await run.stop();
        rmSync(run.dir, { recursive: true, force: true });
      }
      const killed = cluster.nodes[results.at(-1)?.killedNode ?? -1];
      if (killed && !killed.process.alive) await cluster.start(killed);
      await cluster.waitHealthy();
    }
  } finally {
    await cluster.stop();
  }
  const sorted = (f: (r: LeaderKillResult) => number) => results.map(f).sort((a, b) => a - b);
  const median = (xs: number[]) => xs[Math.floor(xs.length / 2)]!;
  const renewed = sorted((r) => r.renewedAfterElectionMs);
  const elected = sorted((r) => r.electedAfterKillMs);
  console.log(
    `summary over ${results.length} runs: election median ${median(elected)} ms (max ${elected.at(-1)}), ` +
      `renewed after the new leader median ${median(renewed)} ms (max ${renewed.at(-1)}), ` +
      `failed signings ${results.reduce((n, r) => n + r.failedSignings, 0)} of ${results.reduce((n, r) => n + r.signings, 0)}`,
  );
  console.log(`load after: ${load()}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
