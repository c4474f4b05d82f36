// OpenBao fully stopped across a renewal point and started again from its file storage: the agent keeps signing with
// the intermediate it holds, then renews on its own once Vault is back.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { agentSuite, getBundle, signCertificate, type AgentRun } from "../env/agent-process.js";
import { opensslVerify, workloadCsr } from "../env/crypto-check.js";
import { waitUntil } from "../env/process.js";

describe("OpenBao with persistent storage stopped and started again", () => {
  const suite = agentSuite({}, { vault: "persistent" });
  let run: AgentRun | undefined;

  it("signing continues during the outage and the agent renews within its max backoff after the restart", async () => {
    run = await suite.start("sidecar", ["--ttl=20s", "--grace-ratio=0.5"]);
    const first = await getBundle(run.client);
    const rootBefore = first.rootCertPem.join("");
    await suite.env.stopVault();
    try {
      // The renewal point (~10 s) passes while OpenBao is down; that attempt fails once the Vault client's own retries
      // (two, 1-1.5 s and 2-3 s apart, as Vault's Go client does) are spent.
      await waitUntil(
        "a failed renewal attempt",
        () => Promise.resolve(/could not renew the intermediate; still serving the current one/.test(run!.log())),
        { timeoutMs: 20_000 },
      );
      const chain = await signCertificate(run.client, await workloadCsr("spiffe://cluster.local/ns/a/sa/b"), 60);
      assert.equal(chain[1], first.signingCertPem, "the held intermediate keeps signing");
      assert.match(opensslVerify(chain[0]!, chain[2]!, chain[1]), /OK/);
      assert.match(run.log(), /could not renew the intermediate; still serving the current one/);
    } finally {
      await suite.env.startVaultAgain();
    }
    const restartedAt = Date.now();
    // Max backoff is 2 s: the next attempt after the restart must succeed within a few seconds.
    await waitUntil(
      "renewal after OpenBao restart",
      async () => (await getBundle(run!.client)).generation > first.generation,
      {
        timeoutMs: 20_000,
      },
    );
    const renewed = await getBundle(run.client);
    assert.equal(renewed.rootCertPem.join(""), rootBefore, "the root survived the restart (file storage)");
    assert.ok(Date.now() - restartedAt < 20_000);
  });

  it("OpenBao sealed (503): renewal fails and the held intermediate keeps signing; unsealed, it renews", async () => {
    const held = await getBundle(run!.client);
    const sealedAnswers = () => run!.log().match(/HTTP 503/g)?.length ?? 0;
    const before = sealedAnswers();
    await suite.env.vault.client.call("PUT", "sys/seal", { token: suite.env.vault.rootToken });
    try {
      assert.equal((await suite.env.vault.client.health()).status, 503);
      // Past the next renewal point: the agent has asked the sealed OpenBao and logged its answer.
      await waitUntil("a renewal attempt answered 503", () => Promise.resolve(sealedAnswers() > before), {
        timeoutMs: 30_000,
        process: run!.process,
      });
      const chain = await signCertificate(run!.client, await workloadCsr("spiffe://cluster.local/ns/a/sa/b"), 60);
      const now = await getBundle(run!.client);
      assert.equal(now.generation, held.generation, "nothing new while sealed");
      assert.equal(chain[1], held.signingCertPem);
    } finally {
      await suite.env.unsealVault();
    }
    await waitUntil("renewal after unseal", async () => (await getBundle(run!.client)).generation > held.generation, {
      timeoutMs: 20_000,
    });
  });
});
