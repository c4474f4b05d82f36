// "Vault leader killed mid-renewal", shared by test/integration/vault-ha.test.ts and bench/vault-ha.ts: a sidecar
// holds an intermediate whose renewal comes due in seconds, a client signs leaves over its socket without pause, and
// the active OpenBao node is SIGKILLed just before the renewal point, so the renewal runs while the cluster elects a
// new leader. Everything is measured from outside: the cluster's sys/health, the agent's socket and its log.
import { existsSync, readFileSync } from "node:fs";
import { getBundle, signCertificate, type AgentRun } from "./agent-process.js";
import { workloadCsr } from "./crypto-check.js";
import type { OpenBaoCluster, OpenBaoNode } from "./openbao-cluster.js";

/** Agent flags for the scenario: a 60 s intermediate renewed when 85% (±5%) of its life remains, i.e. in 6-12 s. */
export const HA_AGENT_FLAGS = ["--ttl=60s", "--grace-ratio=0.85"];

export interface LeaderKillResult {
  killedNode: number;
  newActiveNode: number;
  /** The agent's scheduled renewal point, relative to the kill (positive: due after the kill). */
  renewalDueAfterKillMs: number;
  /** Kill → another node answers sys/health 200 (polled every 100 ms). */
  electedAfterKillMs: number;
  /** New leader seen → the agent serves a new generation (polled every 100 ms; negative if seen first). */
  renewedAfterElectionMs: number;
  renewedAfterKillMs: number;
  /** How much of the old intermediate's life was left when the new one was seen. */
  oldIntermediateLeftMs: number;
  generationBefore: number;
  generationAfter: number;
  signings: number;
  /** Leaf signings that failed while the held intermediate was valid (the assertion: none). */
  failedSignings: number;
  failures: string[];
  /** What the agent's log says its Vault client did between the kill and the renewal. */
  agentLog: { redirects: number; retries: number; nextAddress: number; renewalErrors: number };
}

interface LogLine {
  time?: string;
  msg?: string;
  renewInMs?: number;
}

function logLines(run: AgentRun): LogLine[] {
  if (!existsSync(run.logPath)) return [];
  return readFileSync(run.logPath, "utf8")
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => {
      try {
        return JSON.parse(l) as LogLine;
      } catch {
        return {};
      }
    });
}

/** When the agent will renew the intermediate it holds now: the last "scheduled intermediate renewal" in its log. */
export function scheduledRenewalAt(run: AgentRun): number | undefined {
  const line = logLines(run)
    .filter((l) => l.msg === "scheduled intermediate renewal" && typeof l.renewInMs === "number" && l.time)
    .at(-1);
  return line ? Date.parse(line.time!) + line.renewInMs! : undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/**
 * Runs the scenario once against a healthy cluster and a running sidecar (started with HA_AGENT_FLAGS). Kills the
 * active node `killBeforeDueMs` (default 1 s) before the agent's renewal point: elections take 1.5-3 s here, so the
 * renewal comes due while there is no leader. Leaves the killed node down: the caller restarts it
 * (cluster.start) before another run.
 */
export async function leaderKilledMidRenewal(
  cluster: OpenBaoCluster,
  run: AgentRun,
  opts: { killBeforeDueMs?: number; renewalTimeoutMs?: number } = {},
): Promise<LeaderKillResult> {
  const before = await getBundle(run.client);
  const notAfter = Number(before.notAfterUnix) * 1000;
  const dueAt = scheduledRenewalAt(run);
  if (dueAt === undefined)
    throw new Error("the agent's log has no scheduled renewal (start it with --log-level=debug)");
  const csr = await workloadCsr("spiffe://cluster.local/ns/ha/sa/client");
  let signings = 0;
  const failures: string[] = [];
  let signing = true;
  const signer = (async () => {
    while (signing) {
      try {
        const chain = await signCertificate(run.client, csr, 60);
        if (chain.length < 2) throw new Error(`a chain of ${chain.length} certificates`);
        signings++;
      } catch (err) {
        if (Date.now() < notAfter) failures.push(`${new Date().toISOString()} ${(err as Error).message}`);
      }
      await sleep(10);
    }
  })();
  let active: OpenBaoNode;
  let killedAt: number;
  try {
    // Found before the wait, checked with one sys/health after it: polling every node there would make the kill late on
    // a loaded machine. Leadership can move by itself under load: then the node active now is the one killed.
    active = await cluster.activeNode();
    await sleep(dueAt - (opts.killBeforeDueMs ?? 1_000) - Date.now());
    if ((await active.client.health().catch(() => ({ status: 0 }))).status !== 200) active = await cluster.activeNode();
    const logOffset = readFileSync(run.logPath).length;
    killedAt = Date.now();
    await cluster.kill(active);
    const elected = await cluster.activeNode(60_000);
    const electedAt = Date.now();
    const timeout = opts.renewalTimeoutMs ?? notAfter - Date.now();
    let after = before;
    const deadline = Date.now() + timeout;
    while (after.generation <= before.generation) {
      if (Date.now() > deadline)
        throw new Error(
          `the agent did not renew within ${timeout} ms of the new leader (generation still ${before.generation})`,
        );
      await sleep(100);
      after = await getBundle(run.client);
    }
    const renewedAt = Date.now();
    await sleep(1_000); // keep signing with the new intermediate for a moment
    const since = readFileSync(run.logPath).subarray(logOffset).toString("utf8");
    const count = (re: RegExp) => (since.match(re) ?? []).length;
    return {
      killedNode: active.index,
      newActiveNode: elected.index,
      renewalDueAfterKillMs: dueAt - killedAt,
      electedAfterKillMs: electedAt - killedAt,
      renewedAfterElectionMs: renewedAt - electedAt,
      renewedAfterKillMs: renewedAt - killedAt,
      oldIntermediateLeftMs: notAfter - renewedAt,
      generationBefore: Number(before.generation),
      generationAfter: Number(after.generation),
      signings,
      failedSignings: failures.length,
      failures: failures.slice(0, 5),
      agentLog: {
        redirects: count(/Vault standby redirected the request/g),
        retries: count(/Vault request failed; retrying/g),
        nextAddress: count(/trying the next address/g),
        renewalErrors: count(/could not renew the intermediate/g),
      },
    };
  } finally {
    signing = false;
    await signer;
  }
}
