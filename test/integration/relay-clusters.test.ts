// Per-cluster relay identities against real OpenBao and kube-apiserver: `relay --role server --issuer --clusters=…`
// on a relay PKI mount of its own. Each registered cluster gets its own identity token (Vault KV + a Secret); a token
// bootstraps only its own cluster; a deleted token is refused within --token-refresh and replaced by a fresh one
// (never the deleted value); a removed cluster cannot renew; a chain cannot renew past --max-bootstrap-age; the relay
// refuses the Istio root's mount; the Secret-held signing CA is name-constrained. Logs never hold tokens or keys.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate, randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as relayIssuer from "../env/relay-issuer.js";
import {
  mountPkiRoot,
  setupRelayVault,
  startAgentTestEnv,
  writeRelayPkiRoles,
  type AgentTestEnv,
} from "../env/fixtures.js";
import { freePort, repoRoot, type TestEnv } from "../env/harness.js";
import { nodeBinary } from "../env/agent-process.js";
import { ManagedProcess, waitUntil } from "../env/process.js";
import { x509 } from "../../src/crypto/x509.js";
import { exportPrivateKeyPem, generateKeyPair } from "../../src/crypto/keys.js";
import { relayPolicy } from "../../src/relay/policy.js";

const NS = "gloo-mesh";
const SERVER_DNS = relayIssuer.RELAY_SERVER_DNS;
type Outcome = relayIssuer.IssuerOutcome;
const { assertRefused } = relayIssuer;
const RELAY_SA = "relay-server";
const PREFIX = "secret/data/relay/cluster-tokens";
const META = "secret/metadata/relay/cluster-tokens";
const TOKEN_REFRESH_S = 2;
const MAX_AGE_S = 25;

describe("relay per-cluster identities against real OpenBao + kube-apiserver", () => {
  let t: AgentTestEnv;
  let env: TestEnv;
  let dir: string;
  let tokenPath: string;
  let issuerPort: number;
  let rootPem: string;
  let issuer: ManagedProcess;
  let issuerLog: string;
  const procs: { p: ManagedProcess; log: string }[] = [];
  const seenTokens: string[] = [];

  const log = (path: string) => (existsSync(path) ? readFileSync(path, "utf8") : "");

  const secretData = (name: string) => relayIssuer.secretDataIfExists(env, NS, name);

  async function kvToken(cluster: string): Promise<{ token: string | undefined; version: number }> {
    const res = await env.vault.client.call<{
      data?: { data?: { token?: string } | null; metadata?: { version?: number } };
    }>("GET", `${PREFIX}/${cluster}`, { token: env.vault.rootToken, acceptStatuses: [404] });
    return { token: res.body?.data?.data?.token ?? undefined, version: res.body?.data?.metadata?.version ?? 0 };
  }

  function start(name: string, args: string[], subcommand: string[] = []): { p: ManagedProcess; log: string } {
    const logPath = join(dir, `${name}.log`);
    const env2 = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(VAULT_|BAO_)/.test(k)));
    const p = new ManagedProcess(
      name,
      nodeBinary(),
      [
        join(repoRoot(), "dist/src/main.js"),
        "relay",
        ...subcommand,
        ...relayIssuer.relayConnectionArgs(env, tokenPath),
        `--namespace=${NS}`,
        "--backoff-initial=200ms",
        "--backoff-max=2s",
        "--log-level=debug",
        ...args,
      ],
      logPath,
      env2,
    );
    const run = { p, log: logPath };
    procs.push(run);
    return run;
  }

  /** Starts an issuer (`--role=server --issuer`) on free local ports and waits until /readyz answers 200. */
  async function startIssuer(name: string, args: string[]): Promise<{ p: ManagedProcess; log: string; port: number }> {
    const port = await freePort();
    const http = await freePort();
    const run = start(name, [
      "--role=server",
      "--issuer",
      `--issuer-addr=127.0.0.1:${port}`,
      `--http-addr=127.0.0.1:${http}`,
      ...args,
    ]);
    await waitUntil(`${name} ready`, async () => (await fetch(`http://127.0.0.1:${http}/readyz`)).status === 200, {
      timeoutMs: 60_000,
      process: run.p,
    });
    return { ...run, port };
  }

  const issuerTarget = (): relayIssuer.IssuerTarget => ({ port: issuerPort, rootPem });
  const bootstrapCall = (csrPem: string, identityToken: string, clusterName: string) =>
    relayIssuer.bootstrapCall(issuerTarget(), { csrPem, identityToken, clusterName });
  const renewCall = (csrPem: string, pair?: relayIssuer.ClientPair) =>
    relayIssuer.renewCall(issuerTarget(), csrPem, pair);

  async function csr(cluster: string): Promise<{ pem: string; keyPem: string }> {
    const keys = await generateKeyPair("ECDSA_P256", true);
    const req = await x509.Pkcs10CertificateRequestGenerator.create({
      name: `CN=${cluster}`,
      keys,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: "dns", value: cluster }])],
    });
    return { pem: req.toString("pem"), keyPem: await exportPrivateKeyPem(keys.privateKey) };
  }

  /** Bootstrap (or renew with `pair`) for `cluster`; returns the outcome and the new pair when it succeeded. */
  async function issue(
    cluster: string,
    how: { token: string } | { pair: { cert: string; key: string } },
  ): Promise<{ o: Outcome; pair?: { cert: string; key: string } }> {
    const c = await csr(cluster);
    const o = "token" in how ? await bootstrapCall(c.pem, how.token, cluster) : await renewCall(c.pem, how.pair);
    return o.ok ? { o, pair: { cert: o.issued.certChainPem.slice(0, -1).join(""), key: c.keyPem } } : { o };
  }

  /** Asserts that a Bootstrap for `cluster` with `token` is refused as token_invalid. */
  async function assertTokenInvalid(cluster: string, token: string, what: string): Promise<void> {
    assertRefused((await issue(cluster, { token })).o, grpc.status.UNAUTHENTICATED, "token_invalid", what);
  }

  const audits = () => relayIssuer.issuedAudits(log(issuerLog));

  before(async () => {
    t = await startAgentTestEnv();
    env = t.env;
    dir = mkdtempSync(join(tmpdir(), "iva-relay-clusters-"));
    // The relay's own PKI: a mount and root separate from the Istio root in pki/.
    rootPem = await mountPkiRoot(env, "pki_relay", "relay root CA");
    await writeRelayPkiRoles(env, "pki_relay", { serverDns: SERVER_DNS });
    tokenPath = join(dir, "vault-token");
    await setupRelayVault(env, {
      namespace: NS,
      serviceAccount: RELAY_SA,
      policy: relayPolicy({ signingIntermediate: true, roles: ["server"] }),
      tokenPath,
    });

    const run = await startIssuer("issuer", [
      "--clusters=cluster-a,cluster-b",
      "--signing-intermediate",
      "--ttl=60s",
      "--signing-ttl=120s",
      "--client-ttl=10s",
      "--grace-ratio=0.5",
      "--resync=2s",
      `--token-refresh=${TOKEN_REFRESH_S}s`,
      `--max-bootstrap-age=${MAX_AGE_S}s`,
      "--token-overlap=60s",
      "--issuer-peer-rate=100",
      "--issuer-peer-burst=1000",
    ]);
    issuerPort = run.port;
    issuer = run.p;
    issuerLog = run.log;
  });

  after(async () => {
    for (const r of procs) await r.p.stop();
    await t?.env.stop();
    if (dir && !process.env.IVA_KEEP_ENV) rmSync(dir, { recursive: true, force: true });
  });

  it("refuses to sign from the Istio root's mount unless told so", async () => {
    const run = start("on-istio-mount", ["--role=server", "--pki-mount=pki", "--once", "--http-addr="]);
    assert.equal(await run.p.waitExit(), 2);
    assert.match(log(run.log), /--pki-mount: "pki" is the mount that holds the Istio root/);
  });

  it("each registered cluster has its own token (Vault KV and a Secret); the signing CA is name-constrained", async () => {
    const a = await kvToken("cluster-a");
    const b = await kvToken("cluster-b");
    assert.ok(a.token && b.token, "a KV entry per cluster");
    assert.notEqual(a.token, b.token);
    seenTokens.push(a.token, b.token);
    assert.equal((await secretData("relay-identity-token-secret-cluster-a"))?.token, a.token);
    assert.equal((await secretData("relay-identity-token-secret-cluster-b"))?.token, b.token);
    assert.equal(await secretData("relay-identity-token-secret"), undefined, "no shared token Secret");
    const signing = (await secretData("relay-tls-signing-secret"))!["tls.crt"]!;
    const text = execFileSync("openssl", ["x509", "-noout", "-ext", "nameConstraints"], { input: signing }).toString();
    assert.match(text, /Permitted:\s+DNS:cluster-a\s+DNS:cluster-b/, text);
    assert.doesNotMatch(text, new RegExp(SERVER_DNS.replace(/\./g, "\\.")));
    assert.equal(new X509Certificate(signing).checkIssued(new X509Certificate(rootPem)), true, "from pki_relay");
  });

  it("cluster A's token gets A's certificate only: not B's, not the management server's", async () => {
    const tokenA = (await kvToken("cluster-a")).token!;
    await assertTokenInvalid("cluster-b", tokenA, "A's token for B");
    await assertTokenInvalid(SERVER_DNS, tokenA, "A's token for the server name");
    const { o } = await issue("cluster-a", { token: tokenA });
    assert.ok(o.ok, o.ok ? "" : o.details);
    const audit = audits().find((x) => x.cluster === "cluster-a" && x.method === "bootstrap");
    assert.ok(audit, "an audit line for the bootstrap");
    assert.match(audit.peer, /127\.0\.0\.1/, "the audit line carries the peer address");
    assert.ok(!audits().some((x) => x.cluster === "cluster-b" || x.cluster === SERVER_DNS));
  });

  it("a renewed chain keeps its bootstrap time and never outlives --max-bootstrap-age; then only the token helps", async () => {
    const tokenA = (await kvToken("cluster-a")).token!;
    const first = await issue("cluster-a", { token: tokenA });
    assert.ok(first.o.ok && first.pair);
    const bootAudit = audits()
      .filter((x) => x.cluster === "cluster-a" && x.method === "bootstrap")
      .at(-1)!;
    const deadline = Date.parse(bootAudit.bootstrappedAt) + MAX_AGE_S * 1000;
    let pair = first.pair;
    let renewals = 0;
    let refused = false;
    // Renew every ~4 s until refused. The issuer stops renewing once less than its minimum certificate life (5 s)
    // remains before the chain's maximum age.
    while (Date.now() < deadline + 2_000) {
      const r = await issue("cluster-a", { pair });
      if (!r.o.ok) {
        assert.ok(Date.now() >= deadline - 6_000, `renewal refused before the maximum age: ${r.o.details}`);
        assert.equal(grpc.status[r.o.code], "UNAUTHENTICATED", r.o.details);
        refused = true;
        break;
      }
      renewals++;
      const notAfter = Date.parse(new X509Certificate(r.pair!.cert).validTo);
      assert.ok(notAfter <= deadline, "no renewed certificate outlives bootstrap time + max age");
      const audit = audits()
        .filter((x) => x.cluster === "cluster-a" && x.method === "renew")
        .at(-1)!;
      assert.equal(audit.bootstrappedAt, bootAudit.bootstrappedAt, "a renewal carries the original bootstrap time");
      pair = r.pair!;
      await new Promise((res) => setTimeout(res, 4_000));
    }
    assert.ok(renewals >= 3, `renewed ${renewals} times within the maximum age`);
    assert.ok(refused, "renewal is refused at the maximum age");
    const late = await issue("cluster-a", { pair });
    assert.equal(late.o.ok, false, "past the maximum age the chain cannot renew");
    const again = await issue("cluster-a", { token: tokenA });
    assert.ok(again.o.ok, "a new Bootstrap with the cluster's token re-authorises it");
  });

  it("a deleted token is refused within the refresh interval; the relay writes a fresh one after the soft delete", async () => {
    const old = await kvToken("cluster-b");
    assert.ok(old.token);
    const { o } = await issue("cluster-b", { token: old.token });
    assert.ok(o.ok, "B's token works before the delete");
    await env.vault.client.call("DELETE", `${PREFIX}/cluster-b`, { token: env.vault.rootToken }); // soft delete
    const deletedAt = Date.now();
    await waitUntil(
      "the deleted token is refused",
      async () => {
        const r = await issue("cluster-b", { token: old.token! });
        return !r.o.ok && r.o.details.startsWith("token_invalid: ");
      },
      { timeoutMs: 20_000, process: issuer },
    );
    const refusedAfterMs = Date.now() - deletedAt;
    assert.ok(refusedAfterMs <= TOKEN_REFRESH_S * 1000 + 3_000, `refused after ${refusedAfterMs} ms`);

    // The server relay notices the soft delete and writes a new token with cas=<deleted version>.
    await waitUntil(
      "a fresh token for cluster-b",
      async () => {
        const now = await kvToken("cluster-b");
        return now.token !== undefined && now.version > old.version;
      },
      { timeoutMs: 20_000, process: issuer },
    );
    const fresh = (await kvToken("cluster-b")).token!;
    assert.notEqual(fresh, old.token, "never the deleted value");
    seenTokens.push(fresh);
    await waitUntil(
      "the Secret carries the fresh token",
      async () => (await secretData("relay-identity-token-secret-cluster-b"))?.token === fresh,
      { timeoutMs: 20_000 },
    );
    assert.match(log(issuerLog), /the identity token in Vault was deleted; generated a new one/);
    await waitUntil("the fresh token works", async () => (await issue("cluster-b", { token: fresh })).o.ok, {
      timeoutMs: 10_000,
    });
    // Several refreshes later the deleted token is still refused: no overlap window, no resurrection.
    await new Promise((r) => setTimeout(r, 3 * TOKEN_REFRESH_S * 1000));
    const stale = await issue("cluster-b", { token: old.token });
    assertRefused(stale.o, grpc.status.UNAUTHENTICATED, "token_invalid", "the deleted token, later");
  });

  it("a removed cluster can no longer renew", async () => {
    // cluster-c is registered by hand (not in --clusters, so the relay does not recreate it).
    const tokenC = randomBytes(32).toString("base64url");
    seenTokens.push(tokenC);
    await env.vault.client.write(`${PREFIX}/cluster-c`, env.vault.rootToken, { data: { token: tokenC } });
    let pair: { cert: string; key: string } | undefined;
    await waitUntil(
      "cluster-c bootstraps",
      async () => {
        pair = (await issue("cluster-c", { token: tokenC })).pair;
        return pair !== undefined;
      },
      { timeoutMs: 15_000, process: issuer },
    );
    const renewed = await issue("cluster-c", { pair: pair! });
    assert.ok(renewed.o.ok && renewed.pair, "renews while registered");
    await env.vault.client.call("DELETE", `${META}/cluster-c`, { token: env.vault.rootToken });
    await waitUntil(
      "renewal refused for the removed cluster",
      async () => {
        const r = await issue("cluster-c", { pair: renewed.pair! });
        return !r.o.ok && r.o.details.startsWith("cluster_not_registered: ");
      },
      { timeoutMs: TOKEN_REFRESH_S * 1000 + 5_000, process: issuer },
    );
  });

  it("relay register-cluster NAME registers one more cluster: its token in KV and a Secret, never printed", async () => {
    const run = start("register-d", [], ["register-cluster", "cluster-d"]);
    assert.equal(await run.p.waitExit(), 0, log(run.log).slice(-2000));
    const tokenD = (await kvToken("cluster-d")).token;
    assert.ok(tokenD, "a KV entry for cluster-d");
    seenTokens.push(tokenD);
    assert.equal((await secretData("relay-identity-token-secret-cluster-d"))?.token, tokenD);
    assert.match(
      log(run.log),
      /registered cluster cluster-d: copy Secret gloo-mesh\/relay-identity-token-secret-cluster-d/,
    );
    await waitUntil(
      "cluster-d bootstraps with its own token",
      async () => (await issue("cluster-d", { token: tokenD })).o.ok,
      {
        timeoutMs: TOKEN_REFRESH_S * 1000 + 5_000,
        process: issuer,
      },
    );
    await assertTokenInvalid("cluster-a", tokenD, "D's token for A");
    const bad = start("register-bad", [], ["register-cluster", SERVER_DNS]);
    assert.equal(await bad.p.waitExit(), 2, "a server name is not a cluster");
  });

  it("limits each peer address before authentication, on Renew as well as Bootstrap", async () => {
    // A second issuer (own namespace and Secrets, same Vault KV) with a tiny per-peer bucket: 3, then 1 per 100 s.
    await env.createNamespace("gloo-mesh-peer");
    const run = await startIssuer("issuer-peer", [
      "--namespace=gloo-mesh-peer",
      "--issuer-peer-rate=0.01",
      "--issuer-peer-burst=3",
      "--resync=2s",
    ]);
    const saved = issuerPort;
    issuerPort = run.port;
    try {
      const c = await csr("cluster-a");
      // No client certificate at all: without a limit each call would be refused as no_client_certificate.
      const outcomes: Outcome[] = [];
      for (let i = 0; i < 5; i++) outcomes.push(await renewCall(c.pem));
      const reasons = outcomes.map((o) => (o.ok ? "ok" : o.details.split(":")[0]));
      assert.deepEqual(
        reasons,
        [
          "no_client_certificate",
          "no_client_certificate",
          "no_client_certificate",
          "rate_limited_peer",
          "rate_limited_peer",
        ],
        "three refusals for the missing certificate, then the address's bucket is empty",
      );
      const tokenA = (await kvToken("cluster-a")).token!;
      assertRefused(
        await bootstrapCall(c.pem, tokenA, "cluster-a"),
        grpc.status.RESOURCE_EXHAUSTED,
        "rate_limited_peer",
        "even a valid token, from an exhausted address",
      );
    } finally {
      issuerPort = saved;
      await run.p.stop();
    }
  });

  it("stops cleanly, revokes its Vault token, and no log holds a token, JWT or key", async () => {
    await issuer.stop();
    assert.equal(issuer.exitCode, 0);
    assert.match(log(issuerLog), /revoked its Vault token at shutdown/);
    const jwt = readFileSync(tokenPath, "utf8").trim();
    for (const r of procs) {
      const text = log(r.log);
      assert.ok(!text.includes(jwt), "no service-account JWT");
      assert.doesNotMatch(text, /PRIVATE KEY/);
      assert.ok(!text.includes(env.vault.rootToken));
      for (const s of seenTokens) assert.ok(!text.includes(s), "no identity token");
    }
  });
});
