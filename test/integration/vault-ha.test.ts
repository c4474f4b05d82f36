// The sidecar against a real 3-node OpenBao Raft cluster (test/env/openbao-cluster.ts): the active node SIGKILLed as
// the intermediate's renewal comes due, and node addresses that answer 503 (sealed) or are standbys that forward.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { getBundle, rotate, signCertificate, startAgent, type AgentRun } from "../env/agent-process.js";
import { opensslVerify, workloadCsr } from "../env/crypto-check.js";
import { startOpenBaoCluster, type OpenBaoCluster, type OpenBaoNode } from "../env/openbao-cluster.js";
import { HA_AGENT_FLAGS, leaderKilledMidRenewal } from "../env/vault-ha-scenario.js";

describe("Vault HA: the sidecar against a 3-node OpenBao Raft cluster", () => {
  let cluster: OpenBaoCluster;
  const runs: AgentRun[] = [];
  before(async () => {
    cluster = await startOpenBaoCluster({ nodes: 3 });
  });
  after(async () => {
    for (const r of runs) {
      await r.stop();
      if (!process.env.IVA_KEEP_ENV) rmSync(r.dir, { recursive: true, force: true });
    }
    await cluster?.stop();
  });

  /** A sidecar given `addresses` (comma-separated) and the cluster's CA. */
  const sidecar = async (addresses: readonly OpenBaoNode[], extra: string[] = []) => {
    const run = await startAgent(
      cluster.env,
      "sidecar",
      [`--vault-addr=${addresses.map((n) => n.url).join(",")}`, `--vault-cacert=${cluster.caFile}`, ...extra],
      { vaultFlags: false, cacerts: false },
    );
    runs.push(run);
    return run;
  };

  /** Every node running, unsealed and a voter: each case starts from a healthy cluster whatever the last one did. */
  const healthyCluster = async () => {
    for (const n of cluster.nodes) if (!n.process.alive) await cluster.start(n);
    for (const [i, role] of (await cluster.roles()).entries())
      if (role === "sealed") await cluster.unseal(cluster.nodes[i]!);
    await cluster.waitHealthy();
  };

  it("active node killed as the renewal comes due: a new leader is elected, the agent renews, no signing fails", async (t) => {
    const active = await cluster.activeNode();
    // The killed node first in the list: the worst case for an agent without a load balancer in front of Vault.
    const order = [active, ...cluster.nodes.filter((n) => n !== active)];
    const run = await sidecar(order, HA_AGENT_FLAGS);
    const result = await leaderKilledMidRenewal(cluster, run);
    t.diagnostic(`measured: ${JSON.stringify(result)}`);
    assert.notEqual(result.newActiveNode, result.killedNode, "a standby became active");
    assert.equal(cluster.nodes[result.killedNode]!.process.alive, false, "the killed node stays down meanwhile");
    assert.ok(result.generationAfter > result.generationBefore, "renewed through the new leader");
    // Generous bound, not a speed assertion: renewed while the old intermediate was still valid.
    assert.ok(result.oldIntermediateLeftMs > 0, `renewed with ${result.oldIntermediateLeftMs} ms of the old one left`);
    assert.ok(result.signings > 0);
    assert.deepEqual(result.failures, [], "no leaf signing failed while the intermediate was valid");
    // The new intermediate is the one signing now, and it chains to the same root.
    const now = await getBundle(run.client);
    const chain = await signCertificate(run.client, await workloadCsr("spiffe://cluster.local/ns/ha/sa/after"), 60);
    assert.equal(chain[1], now.signingCertPem);
    assert.match(opensslVerify(chain[0]!, chain[2]!, chain[1]), /OK/);
    await run.stop();
  });

  it("a sealed node (503) first in the list and a standby that forwards: the agent logs in and renews", async () => {
    await healthyCluster();
    const active = await cluster.activeNode();
    const [sealed, standby] = cluster.nodes.filter((n) => n !== active) as [OpenBaoNode, OpenBaoNode];
    await cluster.kill(sealed);
    await cluster.start(sealed, { unseal: false });
    try {
      assert.equal((await sealed.client.health()).status, 503);
      assert.equal((await standby.client.health()).status, 429, "a standby (sys/health 429)");
      const run = await sidecar([sealed, standby]);
      const first = await getBundle(run.client);
      const renewed = await rotate(run.client);
      assert.ok(renewed.generation > first.generation, "renewed through the standby");
      const log = run.log();
      assert.match(log, /"reason":"HTTP 503"[^\n]*trying the next address/, "the sealed node's 503 moved it on");
      assert.doesNotMatch(log, /could not (obtain|renew)/);
    } finally {
      await cluster.unseal(sealed);
    }
  });
});
