// The relay command end to end against real OpenBao and kube-apiserver: both roles as separate processes, the Secrets
// they keep, an mTLS handshake between the server and client certificates, rotation under short TTLs, Secrets that are
// not ours, the shared identity token, and a Vault token that carries only the relay policy.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import type { AddressInfo } from "node:net";
import { EXCLUDED_LINTS, firstPem, zlint } from "../env/zlint.js";
import { makeTestCa } from "../env/pki.js";
import * as relayIssuer from "../env/relay-issuer.js";
import { setupRelayVault, startAgentTestEnv, writeRelayPkiRoles, type AgentTestEnv } from "../env/fixtures.js";
import type { TestEnv } from "../env/harness.js";
import { freePort, repoRoot } from "../env/harness.js";
import { nodeBinary } from "../env/agent-process.js";
import { ManagedProcess, waitUntil } from "../env/process.js";
import { opensslVerify } from "../env/crypto-check.js";
import { HttpStatusError } from "../../src/net/http-json.js";
import { relayPolicy } from "../../src/relay/policy.js";
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE } from "../../src/kube/secret-store.js";

const SERVER_DNS = relayIssuer.RELAY_SERVER_DNS;
const EKU_CLIENT = relayIssuer.EKU_CLIENT_AUTH;
const EKU_SERVER = relayIssuer.EKU_SERVER_AUTH;

const RELAY_NS = "gloo-mesh";
const RELAY_SA = "relay-agent";
const KV_PATH = "secret/data/relay/identity-token";

interface RelayRun {
  process: ManagedProcess;
  logPath: string;
  log(): string;
  stop(): Promise<void>;
}

describe("relay against real OpenBao + kube-apiserver", () => {
  let t: AgentTestEnv;
  let env: TestEnv;
  let dir: string;
  let tokenPath: string;
  let vaultRootPem: string;
  const runs: RelayRun[] = [];

  before(async () => {
    t = await startAgentTestEnv();
    env = t.env;
    dir = mkdtempSync(join(tmpdir(), "iva-relay-"));
    const v = env.vault.client;
    vaultRootPem = (await v.read<{ certificate: string }>("pki/cert/ca", undefined)).data.certificate;

    // PKI roles for the two leaf kinds: the server name only, any (hostname-shaped) cluster name for agents.
    await writeRelayPkiRoles(env, "pki", { serverDns: SERVER_DNS, client: true });
    // KV v2 at secret/ (OpenBao's dev mode mounts it already; a real install may not).
    tokenPath = join(dir, "vault-token");
    await setupRelayVault(env, {
      namespace: RELAY_NS,
      serviceAccount: RELAY_SA,
      policy: relayPolicy({ signingIntermediate: true, pkiMount: "pki", sharedToken: true }),
      tokenPath,
    });
  });

  after(async () => {
    for (const r of runs) await r.stop();
    await t?.env.stop();
    if (dir && !process.env.IVA_KEEP_ENV) rmSync(dir, { recursive: true, force: true });
  });

  let seq = 0;
  /** Starts `istiod-vault-agent relay` as its own process, like a pod runs it. */
  function startRelay(args: string[]): RelayRun {
    const name = `relay-${++seq}`;
    const logPath = join(dir, `${name}.log`);
    const proc = new ManagedProcess(
      name,
      nodeBinary(),
      [
        join(repoRoot(), "dist/src/main.js"),
        "relay",
        ...relayIssuer.relayConnectionArgs(env, tokenPath),
        // This file covers the opt-in shared token on the Istio root's mount; relay-clusters.test.ts the defaults.
        "--pki-mount=pki",
        "--allow-istio-root-mount",
        "--shared-identity-token",
        "--backoff-initial=200ms",
        "--backoff-max=2s",
        "--log-level=debug",
        ...args,
      ],
      logPath,
    );
    const run: RelayRun = {
      process: proc,
      logPath,
      log: () => (existsSync(logPath) ? readFileSync(logPath, "utf8") : ""),
      stop: () => proc.stop(),
    };
    runs.push(run);
    return run;
  }

  async function runOnce(args: string[]): Promise<{ code: number | null; log: string }> {
    const run = startRelay(["--once", "--http-addr=", ...args]);
    const code = await run.process.waitExit();
    return { code, log: run.log() };
  }

  const getSecret = (ns: string, name: string) => relayIssuer.getSecret(env, ns, name);
  const secretData = (ns: string, name: string) => relayIssuer.secretData(env, ns, name);
  const tlsPair = (ns: string, name: string) => relayIssuer.tlsPair(env, ns, name);

  function keyMatchesCert(pair: relayIssuer.TlsPair): boolean {
    return new X509Certificate(pair.cert).checkPrivateKey(createPrivateKey(pair.key));
  }

  function dnsSans(certPem: string): string[] {
    return (new X509Certificate(certPem).subjectAltName ?? "")
      .split(", ")
      .filter((s) => s.startsWith("DNS:"))
      .map((s) => s.slice(4));
  }

  async function kvToken(): Promise<string> {
    const res = await env.vault.client.read<{ data: { token: string } }>(KV_PATH, env.vault.rootToken);
    return res.data.data.token;
  }

  function assertNoSecretsInLog(log: string, extra: string[] = []): void {
    const jwt = readFileSync(tokenPath, "utf8").trim();
    assert.ok(!log.includes(jwt), "the service-account JWT is not in the log");
    assert.doesNotMatch(log, /eyJ[\w-]{10,}\.[\w-]{10,}\./, "no JWT-shaped string in the log");
    assert.doesNotMatch(log, /PRIVATE KEY/, "no private key in the log");
    for (const s of extra) assert.ok(!log.includes(s), "no identity token in the log");
  }

  /** A TLS server from the server Secret that requires and verifies client certificates. */
  async function mtlsServer(pair: relayIssuer.TlsPair) {
    const accepted: { authorized: boolean; peerSan: string | undefined }[] = [];
    const clientErrors: string[] = [];
    const server = tls.createServer(
      { cert: pair.cert, key: pair.key, ca: pair.ca, requestCert: true, rejectUnauthorized: true },
      (socket) => {
        accepted.push({ authorized: socket.authorized, peerSan: socket.getPeerCertificate().subjectaltname });
        socket.end("hello from the relay server\n");
      },
    );
    server.on("tlsClientError", (err) => clientErrors.push(err.message));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    return {
      port,
      accepted,
      clientErrors,
      close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    };
  }

  /** Connects with the given client material; resolves with what the server sent, or the error that ended it. */
  function mtlsClient(
    port: number,
    client: { cert?: string; key?: string; ca: string },
  ): Promise<{ authorized: boolean; data: string; error?: string; serverSan?: string | undefined }> {
    return new Promise((resolve) => {
      let data = "";
      let authorized = false;
      let serverSan: string | undefined;
      const socket = tls.connect({
        host: "127.0.0.1",
        port,
        servername: SERVER_DNS,
        ca: client.ca,
        cert: client.cert,
        key: client.key,
      });
      socket.setEncoding("utf8");
      socket.on("secureConnect", () => {
        authorized = socket.authorized;
        serverSan = socket.getPeerCertificate().subjectaltname;
      });
      socket.on("data", (chunk: string) => (data += chunk));
      socket.on("error", (err: Error) => resolve({ authorized, data, error: err.message, serverSan }));
      socket.on("close", () => resolve({ authorized, data, serverSan }));
      socket.setTimeout(10_000, () => socket.destroy(new Error("timed out")));
    });
  }

  async function handshake(serverPair: relayIssuer.TlsPair, clientPair: relayIssuer.TlsPair): Promise<void> {
    const srv = await mtlsServer(serverPair);
    try {
      const res = await mtlsClient(srv.port, clientPair);
      assert.equal(res.error, undefined, `handshake error: ${res.error}`);
      assert.ok(res.authorized, "the client verified the server certificate against ca.crt");
      assert.equal(res.serverSan, `DNS:${SERVER_DNS}`);
      assert.equal(res.data, "hello from the relay server\n");
      assert.equal(srv.accepted.length, 1);
      assert.ok(srv.accepted[0]!.authorized, "the server verified the client certificate against ca.crt");
      assert.equal(srv.accepted[0]!.peerSan, `DNS:${dnsSans(clientPair.cert)[0]}`);
    } finally {
      await srv.close();
    }
  }

  it("server role --once creates the root, server, signing-intermediate and identity-token Secrets", async () => {
    const { code, log } = await runOnce([
      "--role=server",
      "--signing-intermediate",
      "--signing-permitted-dns=cluster1,cluster2",
    ]);
    assert.equal(code, 0, log.slice(-3000));

    const root = await getSecret(RELAY_NS, "relay-root-tls-secret");
    assert.equal(root?.metadata.labels?.[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
    assert.equal((await secretData(RELAY_NS, "relay-root-tls-secret"))["ca.crt"]?.trim(), vaultRootPem.trim());

    const serverSecret = await getSecret(RELAY_NS, "relay-server-tls-secret");
    assert.equal(serverSecret?.type, "kubernetes.io/tls");
    assert.equal(serverSecret?.metadata.labels?.[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
    const server = await tlsPair(RELAY_NS, "relay-server-tls-secret");
    assert.ok(keyMatchesCert(server), "tls.key matches tls.crt");
    assert.equal(server.ca.trim(), vaultRootPem.trim(), "ca.crt is Vault's root");
    assert.deepEqual(dnsSans(server.cert), [SERVER_DNS]);
    const serverCert = new X509Certificate(server.cert);
    assert.equal(serverCert.ca, false);
    assert.deepEqual(serverCert.keyUsage, [EKU_SERVER]);
    assert.match(opensslVerify(server.cert, server.ca), /OK/);

    const signing = await tlsPair(RELAY_NS, "relay-tls-signing-secret");
    assert.ok(keyMatchesCert(signing), "signing tls.key matches its tls.crt");
    assert.equal(new X509Certificate(signing.cert).ca, true, "the signing certificate is a CA");
    assert.match(opensslVerify(signing.cert, signing.ca), /OK/);

    const token = (await secretData(RELAY_NS, "relay-identity-token-secret")).token;
    assert.match(token ?? "", /^[A-Za-z0-9_-]{43}$/, "32 random bytes, base64url");
    assert.equal(token, await kvToken(), "the token is the one stored in Vault KV");

    // Logged in with the relay role; its Vault token carries only default + relay.
    assert.match(log, /"policies":\["default","relay"\]/);
    assertNoSecretsInLog(log, [token]);
  });

  it("agent role --once creates the root, client and identity-token Secrets; both roles share the token", async () => {
    await env.createNamespace("workload-1");
    const { code, log } = await runOnce(["--role=agent", "--cluster=cluster1", "--namespace=workload-1"]);
    assert.equal(code, 0, log.slice(-3000));
    assert.equal((await secretData("workload-1", "relay-root-tls-secret"))["ca.crt"]?.trim(), vaultRootPem.trim());
    const client = await tlsPair("workload-1", "relay-client-tls-secret");
    assert.ok(keyMatchesCert(client));
    assert.deepEqual(dnsSans(client.cert), ["cluster1"]);
    assert.deepEqual(new X509Certificate(client.cert).keyUsage, [EKU_CLIENT]);
    const agentToken = (await secretData("workload-1", "relay-identity-token-secret")).token;
    const serverToken = (await secretData(RELAY_NS, "relay-identity-token-secret")).token;
    assert.ok(agentToken);
    assert.equal(agentToken, serverToken, "server and agent agree on the identity token");
    assert.match(log, /"policies":\["default","relay"\]/);
    assertNoSecretsInLog(log, [agentToken]);
  });

  it("server and client certificates complete an mTLS handshake; a client from another CA is refused", async () => {
    const server = await tlsPair(RELAY_NS, "relay-server-tls-secret");
    const client = await tlsPair("workload-1", "relay-client-tls-secret");
    await handshake(server, client);

    // A client certificate for the same name from a CA the relay does not trust.
    const foreignLeaf = await (
      await makeTestCa("foreign relay CA")
    ).issue({ commonName: "cluster1", dnsNames: ["cluster1"], client: true });
    const srv = await mtlsServer(server);
    try {
      const refused = await mtlsClient(srv.port, {
        cert: foreignLeaf.certPem,
        key: foreignLeaf.keyPem,
        ca: client.ca,
      });
      assert.equal(refused.data, "", "the server sent nothing to the foreign client");
      const noCert = await mtlsClient(srv.port, { ca: client.ca });
      assert.equal(noCert.data, "", "the server sent nothing to a client without a certificate");
      await waitUntil("server reports the refused handshakes", () => Promise.resolve(srv.clientErrors.length >= 2), {
        timeoutMs: 5_000,
      });
      assert.equal(srv.accepted.length, 0, "no connection was accepted");
      assert.match(srv.clientErrors.join("\n"), /unknown ca|certificate|peer did not return/i);
    } finally {
      await srv.close();
    }
  });

  // The signing intermediate is a CA certificate Vault makes: zlint's CA checks there are CABF requirements for public
  // CAs (country, organization, certificate policies, AIA, CRL distribution points); end-entity certificates only.
  it("zlint: the relay server and client certificates lint clean", async () => {
    const pairs = {
      "relay server": await tlsPair(RELAY_NS, "relay-server-tls-secret"),
      "relay client": await tlsPair("workload-1", "relay-client-tls-secret"),
    };
    for (const [what, pair] of Object.entries(pairs)) {
      const report = zlint(firstPem(pair.cert), EXCLUDED_LINTS);
      assert.deepEqual(report.findings, [], `${what}: ${JSON.stringify(report.findings)}`);
      assert.ok(report.applied >= 30, `${what}: ${report.applied} lints applied`);
    }
  });

  it("a second run keeps the valid certificates it finds (no needless rotation)", async () => {
    const names = [
      "relay-root-tls-secret",
      "relay-server-tls-secret",
      "relay-tls-signing-secret",
      "relay-identity-token-secret",
    ];
    const before = await Promise.all(names.map((n) => getSecret(RELAY_NS, n)));
    const { code, log } = await runOnce([
      "--role=server",
      "--signing-intermediate",
      "--signing-permitted-dns=cluster1,cluster2",
    ]);
    assert.equal(code, 0, log.slice(-3000));
    const afterRun = await Promise.all(names.map((n) => getSecret(RELAY_NS, n)));
    names.forEach((n, i) =>
      assert.equal(afterRun[i]?.metadata.resourceVersion, before[i]?.metadata.resourceVersion, `${n} not rewritten`),
    );
    assert.match(log, /keeping the valid certificate already in the Secret/);
  });

  it("leaves a Secret without the managed-by label untouched and says so; --adopt takes it over", async () => {
    const ns = "adopt-test";
    await env.createNamespace(ns);
    const b64 = (s: string) => Buffer.from(s).toString("base64");
    const userSecret = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "relay-client-tls-secret", namespace: ns, labels: { owner: "someone-else" } },
      type: "kubernetes.io/tls",
      data: { "tls.crt": b64("user cert"), "tls.key": b64("user key"), "extra.txt": b64("keep me") },
    };
    await env.kube.admin.create(`/api/v1/namespaces/${ns}/secrets`, userSecret);
    await env.kube.admin.create(`/api/v1/namespaces/${ns}/secrets`, {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "unrelated", namespace: ns },
      data: { a: b64("b") },
    });
    const before = await getSecret(ns, "relay-client-tls-secret");

    const refused = await runOnce(["--role=agent", "--cluster=cluster-adopt", `--namespace=${ns}`]);
    assert.equal(refused.code, 1, "non-zero exit when a Secret is not ours");
    assert.match(refused.log, /adopt-test\/relay-client-tls-secret/);
    assert.match(refused.log, /--adopt/);
    const untouched = await getSecret(ns, "relay-client-tls-secret");
    assert.equal(untouched?.metadata.resourceVersion, before?.metadata.resourceVersion, "left untouched");
    assert.deepEqual(untouched?.data, before?.data);
    // The other Secrets are still put in place.
    assert.ok(await getSecret(ns, "relay-root-tls-secret"));
    assert.ok(await getSecret(ns, "relay-identity-token-secret"));

    const adopted = await runOnce(["--role=agent", "--cluster=cluster-adopt", `--namespace=${ns}`, "--adopt"]);
    assert.equal(adopted.code, 0, adopted.log.slice(-3000));
    assert.match(adopted.log, /adopted Secret adopt-test\/relay-client-tls-secret/);
    const taken = await getSecret(ns, "relay-client-tls-secret");
    assert.equal(taken?.metadata.labels?.[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
    assert.equal(taken?.metadata.labels?.owner, "someone-else", "existing labels are kept");
    const pair = await tlsPair(ns, "relay-client-tls-secret");
    assert.ok(keyMatchesCert(pair));
    assert.deepEqual(dnsSans(pair.cert), ["cluster-adopt"]);
    assert.ok(await getSecret(ns, "unrelated"), "the relay never deletes Secrets");
    assertNoSecretsInLog(refused.log + adopted.log);
  });

  it("the relay's Vault token can do what the relay needs and nothing more", async () => {
    const jwt = readFileSync(tokenPath, "utf8").trim();
    const auth = await env.vault.client.kubernetesLogin("kubernetes", "relay", jwt);
    assert.deepEqual([...auth.policies].sort(), ["default", "relay"]);
    const token = auth.client_token;
    const denied = async (fn: () => Promise<unknown>, what: string) =>
      assert.rejects(fn, (e: unknown) => e instanceof HttpStatusError && e.status === 403, what);
    await denied(
      () => env.vault.client.write("pki/issue/relay-server", token, { common_name: SERVER_DNS }),
      "no issue/*",
    );
    await denied(
      () => env.vault.client.write("pki_int/root/sign-intermediate", token, { csr: "x" }),
      "no other mounts",
    );
    await denied(
      () => env.vault.client.call("DELETE", KV_PATH, { token }),
      "cannot delete (revoke) the shared identity token",
    );
    await denied(() => env.vault.client.read("secret/data/other", token), "no other KV paths");
    await denied(() => env.vault.client.read("sys/mounts", token), "no sys/*");
  });

  it("with short TTLs both roles rotate before expiry, every Secret always holds a matching pair", async () => {
    // A fresh identity token path state: both roles start together and race to create it (cas=0).
    await env.vault.client.call("DELETE", "secret/metadata/relay/identity-token", { token: env.vault.rootToken });
    await env.createNamespace("rot-mgmt");
    await env.createNamespace("rot-workload");
    const serverPort = await freePort();
    const agentPort = await freePort();
    const short = ["--ttl=20s", "--grace-ratio=0.5", "--resync=5s"];
    const serverRun = startRelay([
      "--role=server",
      "--namespace=rot-mgmt",
      "--signing-intermediate",
      "--signing-permitted-dns=cluster1,cluster2",
      `--http-addr=127.0.0.1:${serverPort}`,
      ...short,
    ]);
    const agentRun = startRelay([
      "--role=agent",
      "--cluster=cluster2",
      "--namespace=rot-workload",
      `--http-addr=127.0.0.1:${agentPort}`,
      ...short,
    ]);
    for (const [run, port] of [
      [serverRun, serverPort],
      [agentRun, agentPort],
    ] as const) {
      await waitUntil("relay ready", async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, {
        timeoutMs: 30_000,
        process: run.process,
      });
    }
    const watched: [string, string][] = [
      ["rot-mgmt", "relay-server-tls-secret"],
      ["rot-mgmt", "relay-tls-signing-secret"],
      ["rot-workload", "relay-client-tls-secret"],
    ];
    const seen = new Map<string, { serial: string; notAfter: number; firstSeen: number }[]>();
    // Watched until every Secret has rotated twice (each poll checks the pair and its expiry), at most 45 s.
    const deadline = Date.now() + 45_000;
    const rotatedTwice = () => watched.every(([, name]) => (seen.get(name)?.length ?? 0) >= 3);
    while (Date.now() < deadline && !rotatedTwice()) {
      for (const [ns, name] of watched) {
        const pair = await tlsPair(ns, name);
        const now = Date.now();
        assert.ok(keyMatchesCert(pair), `${ns}/${name}: tls.key matches tls.crt at every poll`);
        const cert = new X509Certificate(pair.cert);
        const notAfter = Date.parse(cert.validTo);
        assert.ok(notAfter > now, `${ns}/${name}: never holds an expired certificate`);
        const list = seen.get(name) ?? [];
        if (list.at(-1)?.serial !== cert.serialNumber) {
          const prev = list.at(-1);
          if (prev) assert.ok(prev.notAfter > now, `${name}: replaced before the previous certificate expired`);
          list.push({ serial: cert.serialNumber, notAfter, firstSeen: now });
        }
        seen.set(name, list);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const [, name] of watched) {
      assert.ok(
        (seen.get(name)?.length ?? 0) >= 3,
        `${name} rotated at least twice in 45 s (${seen.get(name)?.length})`,
      );
    }

    // A fresh handshake with the current certificates.
    await handshake(
      await tlsPair("rot-mgmt", "relay-server-tls-secret"),
      await tlsPair("rot-workload", "relay-client-tls-secret"),
    );

    // Both started together with no token in Vault: they agree on the one that won the cas=0 race.
    const serverToken = (await secretData("rot-mgmt", "relay-identity-token-secret")).token;
    const agentToken = (await secretData("rot-workload", "relay-identity-token-secret")).token;
    assert.ok(serverToken);
    assert.equal(serverToken, agentToken);
    assert.equal(serverToken, await kvToken());

    const metrics = await (await fetch(`http://127.0.0.1:${serverPort}/metrics`)).text();
    const notAfter =
      /istiod_vault_agent_relay_secret_not_after_timestamp_seconds\{secret="relay-server-tls-secret"\} (\S+)/.exec(
        metrics,
      );
    const toExpiry = notAfter ? Number(notAfter[1]) - Date.now() / 1000 : Number.NaN;
    assert.ok(toExpiry > 0 && toExpiry <= 21, `NotAfter gauge within the 20 s lifetime (${toExpiry})`);
    assert.match(metrics, /^istiod_vault_agent_vault_up 1$/m, "the relay server probes Vault too");
    assert.match(
      metrics,
      /istiod_vault_agent_relay_rotations_total\{secret="relay-server-tls-secret",trigger="schedule"\} \d+/,
    );
    assert.match(
      metrics,
      /istiod_vault_agent_relay_secret_writes_total\{secret="relay-server-tls-secret",operation="created"\} 1/,
    );

    await serverRun.stop();
    await agentRun.stop();
    assert.equal(serverRun.process.exitCode, 0, serverRun.log().slice(-2000));
    assert.equal(agentRun.process.exitCode, 0, agentRun.log().slice(-2000));
    assertNoSecretsInLog(serverRun.log() + agentRun.log(), [serverToken]);
  });
});
