// Fault injection against the real servers. What every case checks: no wrong certificate is ever served, signing
// keeps working while a valid intermediate is held, and the agent recovers on its own once the fault is gone.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate, createPrivateKey } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { spawnSync } from "node:child_process";
import * as grpc from "@grpc/grpc-js";
import { ISTIO_NS } from "../env/fixtures.js";
import {
  agentSuite,
  agentArgs,
  getBundle,
  nodeBinary,
  rotate,
  signCertificate,
  type AgentRun,
} from "../env/agent-process.js";
import { publicKeyId, workloadCsr, SLEEP_SPIFFE_ID } from "../env/crypto-check.js";
import { startCorruptingProxy, type CorruptingProxy } from "../env/corrupting-proxy.js";
import { repoRoot } from "../env/harness.js";
import { repeatInBackground, waitUntil } from "../env/process.js";

describe("fault injection", () => {
  const suite = agentSuite({}, { vaultAudit: true });

  const revokeAgentTokens = () =>
    suite.env.vault.client.write("sys/leases/revoke-prefix/auth/kubernetes/login", suite.env.vault.rootToken, {});
  const rotateFails = async (run: AgentRun, pattern: RegExp) => {
    const before = await getBundle(run.client);
    await assert.rejects(rotate(run.client), (e: grpc.ServiceError) => {
      assert.equal(e.code, grpc.status.UNAVAILABLE);
      assert.match(e.details, pattern);
      return true;
    });
    const now = await getBundle(run.client);
    assert.equal(now.generation, before.generation, "the last good bundle keeps serving");
    assert.equal(now.signingCertPem, before.signingCertPem);
    const chain = await signCertificate(run.client, await workloadCsr(SLEEP_SPIFFE_ID), 300);
    assert.equal(chain[1], before.signingCertPem, "signing continues with the held intermediate");
  };

  it("bad Vault answers (malformed JSON, a certificate for another key, HTTP 500) are refused; the old bundle serves", async () => {
    const proxy: CorruptingProxy = await startCorruptingProxy(suite.env.vault.url, suite.env.vault.caPem);
    try {
      const dir = mkdtempSync(join(tmpdir(), "iva-agent-"));
      writeFileSync(join(dir, "proxy-ca.pem"), proxy.caPem);
      const run = await suite.start(
        "sidecar",
        [`--vault-addr=${proxy.url}`, `--vault-cacert=${join(dir, "proxy-ca.pem")}`],
        { dir },
      );
      proxy.mode = "malformed-json";
      await rotateFails(run, /not JSON/);
      proxy.mode = "wrong-key-certificate";
      await rotateFails(run, /refused: the certificate's public key is not the key this agent generated/);
      proxy.mode = "http-500";
      await rotateFails(run, /HTTP 500: injected failure/);
      // The HTTP 500 was sent again twice (Vault's client retries 5xx); the other corruptions are answers, not retried.
      assert.equal(proxy.corrupted, 1 + 1 + 3);
      proxy.mode = "pass";
      const renewed = await rotate(run.client);
      assert.ok(renewed.generation > 1);
      await run.stop();
    } finally {
      await proxy.close();
    }
  });

  it("the service-account token file removed, then replaced by another identity's token: clear errors, recovery", async () => {
    const run = await suite.start("sidecar");
    const saved = readFileSync(run.tokenPath, "utf8");
    await revokeAgentTokens();
    rmSync(run.tokenPath);
    await rotateFails(run, new RegExp(`cannot read the service-account token file ${run.tokenPath} \\(ENOENT\\)`));
    // Re-read at every login: a token for a service account the role does not bind is refused by Vault.
    await suite.env.createServiceAccount(ISTIO_NS, "intruder");
    writeFileSync(run.tokenPath, await suite.env.requestToken(ISTIO_NS, "intruder", "vault", 600));
    await rotateFails(run, /auth\/kubernetes\/login answered HTTP 403/);
    writeFileSync(run.tokenPath, saved);
    assert.ok((await rotate(run.client)).generation > 1);
    await run.stop();
  });

  it("the Kubernetes auth role deleted, then recreated", async () => {
    const run = await suite.start("sidecar");
    const v = suite.env.vault.client;
    const role = (await v.read<Record<string, unknown>>("auth/kubernetes/role/istiod-agent", suite.env.vault.rootToken))
      .data;
    await v.call("DELETE", "auth/kubernetes/role/istiod-agent", { token: suite.env.vault.rootToken });
    await revokeAgentTokens();
    try {
      await rotateFails(run, /auth\/kubernetes\/login answered HTTP (400|403)/);
    } finally {
      await v.write("auth/kubernetes/role/istiod-agent", suite.env.vault.rootToken, role);
    }
    assert.ok((await rotate(run.client)).generation > 1);
    await run.stop();
  });

  it("a token is renewed (renew-self) while renewable and replaced by a new login at its max TTL; rotations continue", async () => {
    const v = suite.env.vault.client;
    const role = (await v.read<Record<string, unknown>>("auth/kubernetes/role/istiod-agent", suite.env.vault.rootToken))
      .data;
    // Renewed at 2/3 of 12 s: at 8 s to a 12 s lease, at 16 s capped to the 8 s left of the 24 s max TTL.
    await v.write("auth/kubernetes/role/istiod-agent", suite.env.vault.rootToken, {
      ...role,
      token_ttl: 12,
      token_max_ttl: 24,
    });
    try {
      const auditFrom = suite.env.vaultAuditOffset();
      const run = await suite.start("sidecar", ["--ttl=10s", "--grace-ratio=0.5"]);
      const first = (await getBundle(run.client)).generation;
      // What Vault saw, from its audit log: the agent's logins (with the new token's accessor) and every request
      // made with one of those tokens.
      const logins = () =>
        suite.env
          .vaultAudit(auditFrom)
          .filter((e) => e.type === "response" && e.request?.path === "auth/kubernetes/login" && !e.error)
          .map((e) => ({ accessor: e.auth?.accessor ?? e.response?.auth?.accessor, at: Date.parse(e.time) }));
      await waitUntil(
        "a second login, and rotations throughout",
        async () => logins().length >= 2 && (await getBundle(run.client)).generation >= first + 3,
        { timeoutMs: 60_000, intervalMs: 500 },
      );
      await run.stop();
      const [login1, login2] = logins() as [{ accessor: string; at: number }, { accessor: string; at: number }];
      const audit = suite.env.vaultAudit(auditFrom).filter((e) => e.type === "response");
      const withToken1 = audit.filter((e) => e.auth?.accessor === login1.accessor);
      const renewals = withToken1.filter((e) => e.request?.path === "auth/token/renew-self");
      assert.ok(renewals.length >= 1, `the first token was renewed with renew-self (${renewals.length} times)`);
      assert.deepEqual(
        renewals.filter((e) => e.error),
        [],
        "every renewal was accepted",
      );
      assert.ok(
        withToken1.every((e) => Date.parse(e.time) < login1.at + 24_000),
        "the first token was never used past its max TTL",
      );
      assert.ok(login2.at > Date.parse(renewals.at(-1)!.time), "the new login followed the last renewal");
      assert.notEqual(login2.accessor, login1.accessor);
      assert.deepEqual(
        audit.filter((e) => e.error && e.request?.path !== "auth/token/revoke-self").map((e) => e.request?.path),
        [],
        "no request was refused (the token was replaced, not used until Vault said 403)",
      );
      assert.match(run.log(), /Vault token reached its max TTL; will log in again/);
      assert.doesNotMatch(run.log(), /Vault answered 403/);
    } finally {
      await v.write("auth/kubernetes/role/istiod-agent", suite.env.vault.rootToken, role);
    }
  });

  it("kube-apiserver down: signing and rotation with a held Vault token continue", async () => {
    const run = await suite.start("sidecar");
    suite.env.apiserverProcess.signal("SIGSTOP");
    try {
      const chain = await signCertificate(run.client, await workloadCsr(SLEEP_SPIFFE_ID), 300);
      assert.equal(chain.length, 3);
      const renewed = await rotate(run.client);
      assert.equal(renewed.generation, 2, "Vault signs with the held token; only a new login needs the apiserver");
    } finally {
      suite.env.apiserverProcess.signal("SIGCONT");
    }
    await run.stop();
  });

  it("SIGKILL during rotations, then restart: new key every start, the cacerts directory is never half-written", async () => {
    const dir = mkdtempSync(join(tmpdir(), "iva-agent-"));
    const cacerts = join(dir, "cacerts");
    mkdirSync(cacerts);
    const violations: string[] = [];
    let samples = 0;
    // istiod-style check of whatever is published: four files, key matches cert, cert is a CA signed by the root.
    const sampler = repeatInBackground(() => {
      try {
        if (existsSync(join(cacerts, "..data"))) {
          const target = readlinkSync(join(cacerts, "..data"));
          const read = (n: string) => readFileSync(join(cacerts, target, n), "utf8");
          const [cert, key, chain, root] = ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"].map(
            read,
          ) as [string, string, string, string];
          const x = new X509Certificate(cert);
          const r = new X509Certificate(root);
          if (!x.ca) violations.push(`${target}: not a CA`);
          if (!x.checkPrivateKey(createPrivateKey(key))) violations.push(`${target}: key does not match`);
          if (!x.verify(r.publicKey)) violations.push(`${target}: not signed by root`);
          if (!chain.startsWith(cert.trim().slice(0, 60)))
            violations.push(`${target}: chain does not start with the cert`);
          samples++;
        }
      } catch (err) {
        // A directory removed between readlink and read is the previous set being cleaned up: not a violation.
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") violations.push(`read: ${(err as Error).message}`);
      }
    }, 5);
    const keys = new Set<string>();
    try {
      for (let i = 0; i < 3; i++) {
        const run = await suite.start("sidecar", ["--ttl=10s", "--grace-ratio=0.8"], { dir });
        keys.add(publicKeyId((await getBundle(run.client)).signingCertPem));
        await new Promise((r) => setTimeout(r, 2_500 + Math.random() * 2_000));
        run.process.signal("SIGKILL");
        await run.process.waitExit();
        run.client.close();
      }
    } finally {
      await sampler.stop();
    }
    assert.deepEqual(violations, []);
    assert.ok(samples > 100, `sampled the directory ${samples} times`);
    assert.equal(keys.size, 3, "every start made a new key");
  });

  it("startup errors name the path and the permission needed, before any Vault call", () => {
    const dir = mkdtempSync(join(tmpdir(), "iva-startup-"));
    chmodSync(dir, 0o755);
    const token = join(dir, "token");
    writeFileSync(token, "not-a-real-token", { mode: 0o644 });
    const base = (extra: string[]) => [
      ...agentArgs(suite.env, { socketPath: join(dir, "s", "agent.sock"), tokenPath: token }).filter(
        (a) => !a.startsWith("--vault-cacert="),
      ),
      ...extra,
    ];
    // The unprivileged run needs to reach the checkout: a CI clone may sit under a 0700 temp dir.
    const opened: [string, number][] = [];
    for (let d = repoRoot(); d !== dirname(d); d = dirname(d)) {
      const mode = statSync(d).mode & 0o777;
      if ((mode & 0o001) === 0) {
        opened.push([d, mode]);
        chmodSync(d, mode | 0o001);
      }
    }
    const agent = (args: string[], asNobody = false) => {
      const cmd = [nodeBinary(), join(repoRoot(), "dist/src/main.js"), ...args];
      const res = asNobody
        ? spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", ...cmd], {
            encoding: "utf8",
            timeout: 20_000,
          })
        : spawnSync(cmd[0]!, cmd.slice(1), { encoding: "utf8", timeout: 20_000 });
      return { code: res.status, out: `${res.stdout}${res.stderr}` };
    };
    try {
      writeFileSync(join(dir, "a-file"), "x");
      const notDir = agent(["init", ...base([`--cacerts-dir=${join(dir, "a-file")}`])]);
      assert.equal(notDir.code, 1);
      assert.match(notDir.out, new RegExp(`cacerts path ${join(dir, "a-file")} is not a directory`));
      assert.doesNotMatch(notDir.out, /logged in to Vault/);

      mkdirSync(join(dir, "root-owned"), { mode: 0o755 });
      const readOnly = agent(["init", ...base([`--cacerts-dir=${join(dir, "root-owned")}`])], true);
      assert.equal(readOnly.code, 1, readOnly.out);
      assert.match(
        readOnly.out,
        new RegExp(
          `cacerts directory ${join(dir, "root-owned")} is not writable .*needs write and search \\(w\\+x\\) permission`,
        ),
      );

      const socketUnderFile = agent([
        "sidecar",
        ...base([`--socket=${join(dir, "a-file", "agent.sock")}`, "--http-addr="]),
      ]);
      assert.equal(socketUnderFile.code, 1, socketUnderFile.out);
      assert.match(socketUnderFile.out, new RegExp(`socket directory ${join(dir, "a-file")}`));
    } finally {
      for (const [d, mode] of opened) chmodSync(d, mode);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("nothing secret reached the agents' logs", () => {
    for (const r of suite.runs) {
      const log = r.log();
      assert.doesNotMatch(log, /eyJ[\w-]{10,}\.[\w-]{10,}\./, "no JWT");
      assert.doesNotMatch(log, /PRIVATE KEY/);
      assert.ok(!log.includes(suite.env.vault.rootToken));
    }
  });
});
