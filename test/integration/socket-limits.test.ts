// Resource limits against a real agent (real OpenBao, kube-apiserver, TokenReview):
// 1. an abusive local socket client (20 connections × 200 WatchSigningBundle streams from a process that is then
//    stopped, so it never reads again, plus waves of Rotate calls) leaves the agent serving legitimate
//    GetSigningBundle/SignCertificate calls, with RSS under 160 MiB and one Vault signing for the whole burst
//    (counted in Vault's own certificate store);
// 2. the Istio CA listener refuses a real wrong-audience token with the apiserver's reason, stops calling
//    TokenReview for an address that keeps failing, and samples its refusal logs;
// 3. Watch streams of a stopped client are dropped once their unread bytes pass the bound.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import * as grpc from "@grpc/grpc-js";
import { CertificateAuthorityAgentClient } from "../../src/gen/istiodvaultagent/v1/agent.js";
import { IstioCertificateServiceClient } from "../../src/gen/istio/v1/auth/ca.js";
import { startAgentTestEnv, type AgentTestEnv } from "../env/fixtures.js";
import { getBundle, nodeBinary, rotate, signCertificate, startAgent, type AgentRun } from "../env/agent-process.js";
import { freePort, repoRoot } from "../env/harness.js";
import { waitUntil } from "../env/process.js";
import type { AbuserReport } from "../env/socket-abuser.js";
import { workloadCsr } from "../env/crypto-check.js";

const CALLER = { namespace: "default", serviceAccount: "sleep" };
const IDENTITY = `spiffe://cluster.local/ns/${CALLER.namespace}/sa/${CALLER.serviceAccount}`;
const CONNECTIONS = 20;
const STREAMS_PER_CONNECTION = 200;
const ROTATE_WAVES = 10;
const ROTATES_PER_WAVE = 50;
/** The whole test runs inside one interval, so "at most one signing per interval" means exactly one here. */
const ROTATE_INTERVAL_S = 120;
/**
 * How much the abuse may grow the agent's RSS. A growth bound, not an absolute one: this agent reaches the apiserver
 * (TokenReview) through a kubeconfig, which loads @kubernetes/client-node (~55 MiB) before the test starts; in a pod the
 * in-cluster path does not. The abuse itself grew RSS by ~30 MiB when this was set.
 */
const RSS_GROWTH_LIMIT_KB = 64 * 1024;
const AUTH_FAILURE_BURST = 5;

function rssKb(pid: number): number {
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
}

/** Sum of a counter's samples whose labels contain `labels` (e.g. `reason="watch_total"`), from /metrics text. */
function metric(text: string, name: string, labels = ""): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels && !line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

/** Starts test/env/socket-abuser.js, waits until every stream got its first bundle or a refusal, then SIGSTOPs it. */
async function startStoppedAbuser(
  socketPath: string,
  connections: number,
  streams: number,
): Promise<{ report: AbuserReport; kill(): Promise<void> }> {
  const abuser: ChildProcess = spawn(
    nodeBinary(),
    [join(repoRoot(), "dist/test/env/socket-abuser.js"), socketPath, String(connections), String(streams)],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const exited = new Promise<void>((resolve) => abuser.once("exit", () => resolve()));
  const kill = async () => {
    abuser.kill("SIGKILL");
    await exited;
  };
  try {
    const report = await new Promise<AbuserReport>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the abuser's streams did not settle in 60 s")), 60_000);
      createInterface({ input: abuser.stdout! }).once("line", (line) => {
        clearTimeout(timer);
        resolve(JSON.parse(line) as AbuserReport);
      });
    });
    abuser.kill("SIGSTOP");
    return { report, kill };
  } catch (err) {
    await kill();
    throw err;
  }
}

describe("socket and Istio CA limits", { timeout: 600_000 }, () => {
  let t: AgentTestEnv;
  let run: AgentRun;
  let httpPort: number;
  let caPort: number;
  let tokens: { valid: string; wrongAudience: string };
  const metricsText = async () => (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  /** Certificates in the root mount's store: one more for each intermediate Vault signed. */
  const vaultCertCount = async () =>
    (
      await t.env.vault.client.call<{ data: { keys: string[] } }>("LIST", "pki/certs", {
        token: t.env.vault.rootToken,
      })
    ).body.data.keys.length;

  before(async () => {
    t = await startAgentTestEnv();
    await t.env.createServiceAccount(CALLER.namespace, CALLER.serviceAccount);
    tokens = {
      valid: await t.env.requestToken(CALLER.namespace, CALLER.serviceAccount, "istio-ca", 3600),
      wrongAudience: await t.env.requestToken(CALLER.namespace, CALLER.serviceAccount, "vault", 3600),
    };
    httpPort = await freePort();
    caPort = await freePort();
    // Run the agent with the Node flags the image ships (its ENTRYPOINT's: the V8 heap caps a pod runs with).
    const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(readFileSync(join(repoRoot(), "Dockerfile"), "utf8"))?.[1];
    assert.ok(entrypoint, "the Dockerfile has an exec-form ENTRYPOINT");
    const shipped = (JSON.parse(entrypoint) as string[]).filter((a) => a.startsWith("--")).join(" ");
    assert.match(shipped, /--max-old-space-size=\d+/, "the image caps V8's heap");
    const nodeOptions = process.env.NODE_OPTIONS;
    process.env.NODE_OPTIONS = shipped;
    try {
      run = await startAgent(t.env, "sidecar", [
        `--http-addr=127.0.0.1:${httpPort}`,
        `--istio-ca-addr=127.0.0.1:${caPort}`,
        "--istio-ca-names=127.0.0.1,localhost",
        `--kubeconfig=${t.env.kube.kubeconfigPath}`,
        `--rotate-min-interval=${ROTATE_INTERVAL_S}s`,
        `--istio-ca-auth-failure-burst=${AUTH_FAILURE_BURST}`,
        "--istio-ca-auth-failures-per-minute=12",
        "--log-level=info",
      ]);
    } finally {
      if (nodeOptions === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = nodeOptions;
    }
  });
  after(async () => {
    await run?.stop();
    if (run) rmSync(run.dir, { recursive: true, force: true });
    await t?.env.stop();
  });

  it("an abusive socket client cannot exhaust memory or make Vault sign more than once per interval", async (tc) => {
    const pid = run.process.pid!;
    const rssBefore = rssKb(pid);
    let peakKb = rssBefore;
    const sampler = setInterval(() => (peakKb = Math.max(peakKb, rssKb(pid))), 100);
    const certsBefore = await vaultCertCount();
    const generationBefore = (await getBundle(run.client)).generation;

    // Abuse: many connections, each opening many Watch streams, in a process that is then stopped, so it reads
    // nothing more: every byte the agent writes to those streams from now on has to wait in the agent.
    const abuser = await startStoppedAbuser(run.socketPath, CONNECTIONS, STREAMS_PER_CONNECTION);
    const report = abuser.report;
    const peakAfterStreamsKb = peakKb;
    // Rotate burst: waves of concurrent calls, each wave after the previous one settled.
    const rotateOutcomes = new Map<string, number>();
    const rotator = new CertificateAuthorityAgentClient(`unix://${run.socketPath}`, grpc.credentials.createInsecure(), {
      "grpc.use_local_subchannel_pool": 1,
    });
    let legitimateCalls = 0;
    const legit = new CertificateAuthorityAgentClient(`unix://${run.socketPath}`, grpc.credentials.createInsecure(), {
      "grpc.use_local_subchannel_pool": 1,
    });
    const csr = await workloadCsr(IDENTITY);
    let generationAfter: number;
    try {
      for (let wave = 0; wave < ROTATE_WAVES; wave++) {
        const results = await Promise.allSettled(
          Array.from({ length: ROTATES_PER_WAVE }, () => rotate(rotator, 30_000)),
        );
        for (const r of results) {
          const key =
            r.status === "fulfilled"
              ? "OK"
              : `${grpc.status[(r.reason as grpc.ServiceError).code]}: ${(r.reason as grpc.ServiceError).details.replace(/\d+/g, "N")}`;
          rotateOutcomes.set(key, (rotateOutcomes.get(key) ?? 0) + 1);
        }
        // A legitimate client keeps being served while the abuse goes on.
        const bundle = await getBundle(legit, 10_000);
        const chain = await signCertificate(legit, csr, 600, 10_000);
        assert.equal(chain[1], bundle.signingCertPem, "the leaf is signed by the served intermediate");
        legitimateCalls += 2;
      }
      // Let the streams that were accepted sit on their unread backlog for a moment while RSS is sampled.
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      generationAfter = (await getBundle(legit, 10_000)).generation;
      await signCertificate(legit, csr, 600, 10_000);
    } finally {
      clearInterval(sampler);
      for (const c of [rotator, legit]) c.close();
      await abuser.kill();
    }

    const certsAfter = await vaultCertCount();
    const text = await metricsText();
    tc.diagnostic(
      `RSS ${(rssBefore / 1024).toFixed(1)} MiB before, peak ${(peakAfterStreamsKb / 1024).toFixed(1)} MiB while the ` +
        `streams were opened, peak ${(peakKb / 1024).toFixed(1)} MiB overall`,
    );
    tc.diagnostic(`Watch streams: ${JSON.stringify(report)}`);
    tc.diagnostic(`Rotate outcomes: ${JSON.stringify(Object.fromEntries(rotateOutcomes))}`);
    tc.diagnostic(`Vault certificates ${certsBefore} → ${certsAfter}; ${legitimateCalls} legitimate calls served`);

    assert.ok(
      peakKb - rssBefore < RSS_GROWTH_LIMIT_KB,
      `RSS grew by ${peakKb - rssBefore} kB under the abuse; it must stay under ${RSS_GROWTH_LIMIT_KB} kB`,
    );
    assert.equal(certsAfter - certsBefore, 1, "one Vault signing for ten waves of Rotate calls");
    assert.equal(generationAfter, generationBefore + 1, "the whole burst made one new intermediate");
    assert.equal(
      metric(text, "istiod_vault_agent_vault_requests_total", 'operation="sign_intermediate",outcome="success"'),
      2,
      "the agent had Vault sign twice: at start and once for the whole burst",
    );
    const limited = rotateOutcomes.get(
      `RESOURCE_EXHAUSTED: Rotate is limited to one Vault signing per Ns (--rotate-min-interval); generation N was made less than that ago; retry in Ns`,
    );
    assert.equal(limited, (ROTATE_WAVES - 1) * ROTATES_PER_WAVE, "every later wave is refused with the reason");
    assert.equal(rotateOutcomes.get("OK"), ROTATES_PER_WAVE, "the first wave shares one rotation");

    const refusals = Object.entries(report.refused);
    const perConnection = refusals.find(([k]) => k.includes("on this connection (limit N"))?.[1] ?? 0;
    const total = refusals.find(([k]) => k.includes("open on the agent (limit N"))?.[1] ?? 0;
    assert.equal(report.accepted, 256, "256 Watch streams in total");
    assert.ok(perConnection > 0, "connections were held to 16 Watch streams each");
    assert.ok(total > 0, "20 connections × 16 streams pass the total of 256");
    assert.equal(
      perConnection + total,
      CONNECTIONS * STREAMS_PER_CONNECTION - 256,
      "exactly 256 streams were accepted",
    );
    assert.ok(metric(text, "istiod_vault_agent_limit_hits_total", 'reason="watch_per_connection"') >= perConnection);
    assert.ok(metric(text, "istiod_vault_agent_limit_hits_total", 'reason="watch_total"') >= total);
    assert.equal(metric(text, "istiod_vault_agent_limit_hits_total", 'reason="rotate_rate_limited"'), limited);
    assert.ok(run.process.alive, "the agent is still running");
  });

  it("the Istio CA listener: real wrong-audience refusal, per-address failure bucket, sampled refusal logs", async (tc) => {
    const rootPem = (await getBundle(run.client)).rootCertPem.join("");
    const ca = new IstioCertificateServiceClient(
      `127.0.0.1:${caPort}`,
      grpc.credentials.createSsl(Buffer.from(rootPem)),
      { "grpc.ssl_target_name_override": "localhost", "grpc.default_authority": "localhost" },
    );
    const csr = await workloadCsr(IDENTITY);
    const create = (token: string | undefined) =>
      new Promise<{ code: grpc.status; details: string }>((resolve) => {
        const md = new grpc.Metadata();
        if (token !== undefined) md.set("authorization", `Bearer ${token}`);
        ca.createCertificate({ csr, validityDuration: 600 }, md, { deadline: Date.now() + 10_000 }, (err, res) =>
          resolve(
            err
              ? { code: err.code, details: err.details }
              : { code: grpc.status.OK, details: `${res.certChain.length}` },
          ),
        );
      });
    try {
      // Refusals without a token never reach TokenReview; their log lines are sampled (10 a minute per reason).
      for (let i = 0; i < 30; i++) assert.equal((await create(undefined)).code, grpc.status.UNAUTHENTICATED);
      const noTokenLines = run
        .log()
        .split("\n")
        .filter((l) => l.includes("refused a CreateCertificate request") && l.includes('"reason":"no_token"'));
      assert.equal(noTokenLines.length, 10, "30 refusals of one reason log 10 lines within a minute");

      // A real token for another audience: the apiserver says why, and the refusal names the expected audience.
      const reviewsBefore = metric(await metricsText(), "istiod_vault_agent_token_reviews_total");
      const wrong = await create(tokens.wrongAudience);
      tc.diagnostic(`wrong audience: ${wrong.details}`);
      assert.equal(wrong.code, grpc.status.UNAUTHENTICATED);
      assert.match(
        wrong.details,
        /rejected by TokenReview \(.*audience.*\); expected a service-account token with audience istio-ca/,
      );
      for (let i = 1; i < AUTH_FAILURE_BURST; i++)
        assert.equal((await create(tokens.wrongAudience)).code, grpc.status.UNAUTHENTICATED);
      const reviewsAtLimit = metric(await metricsText(), "istiod_vault_agent_token_reviews_total");
      assert.equal(reviewsAtLimit - reviewsBefore, AUTH_FAILURE_BURST);

      // The address is out of failures: refused before any TokenReview, even with a (never reviewed) valid token.
      for (const token of [tokens.wrongAudience, "not-a-jwt", tokens.valid]) {
        const r = await create(token);
        assert.equal(r.code, grpc.status.RESOURCE_EXHAUSTED);
        assert.match(r.details, /too many failed authentications from 127\.0\.0\.1 .*; retry in \d+s/);
      }
      assert.equal(
        metric(await metricsText(), "istiod_vault_agent_token_reviews_total"),
        reviewsAtLimit,
        "no TokenReview was made",
      );
      assert.ok(
        metric(await metricsText(), "istiod_vault_agent_limit_hits_total", 'reason="istio_ca_auth_failures"') >= 3,
      );

      // One failure comes back every 5 s (12 a minute): the valid caller is then served.
      await new Promise((resolve) => setTimeout(resolve, 5_500));
      const ok = await create(tokens.valid);
      assert.equal(ok.code, grpc.status.OK, ok.details);
    } finally {
      ca.close();
    }
  });
  it("a Watch stream whose client stopped reading is dropped once its unread bytes pass the bound", async (tc) => {
    // 4 streams on one connection from a stopped process; SIGHUP rotations (not the rate-limited RPC) push one
    // bundle per rotation to each stream until the HTTP/2 windows and socket buffers are full and bytes pile up in
    // the agent, which must then drop the streams at 64 KiB each instead of keeping every bundle.
    const slowBefore = metric(await metricsText(), "istiod_vault_agent_limit_hits_total", 'reason="watch_slow_reader"');
    const abuser = await startStoppedAbuser(run.socketPath, 1, 4);
    let rotations = 0;
    let slow = slowBefore;
    try {
      assert.equal(abuser.report.accepted, 4);
      for (; rotations < 80 && slow < slowBefore + 4; rotations++) {
        const generation = (await getBundle(run.client)).generation;
        run.process.signal("SIGHUP");
        await waitUntil(
          "a new intermediate after SIGHUP",
          async () => (await getBundle(run.client)).generation > generation,
          {
            timeoutMs: 20_000,
          },
        );
        slow = metric(await metricsText(), "istiod_vault_agent_limit_hits_total", 'reason="watch_slow_reader"');
      }
    } finally {
      await abuser.kill();
    }
    tc.diagnostic(`${slow - slowBefore} streams dropped after ${rotations} rotations`);
    assert.equal(slow - slowBefore, 4, "all four unread streams were dropped");
    assert.ok(run.process.alive);
    assert.ok((await getBundle(run.client)).generation > 1);
  });
});
