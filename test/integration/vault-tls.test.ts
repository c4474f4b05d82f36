// Vault's client conventions and the TLS-certificate auth method against real OpenBao: a second listener that
// requires client certificates from a test CA and serves a certificate naming only vault.iva.test (not the address's
// 127.0.0.1). Each variable is shown to take effect by running the built agent's `init` (log in, have an
// intermediate signed, write cacerts) with and without it; a CONNECT proxy on loopback counts what it forwarded.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { connect, type AddressInfo, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startAgentTestEnv, type AgentTestEnv } from "../env/fixtures.js";
import { makeTestCa, type IssuedPem } from "../env/pki.js";
import { ManagedProcess, waitUntil } from "../env/process.js";
import { nodeBinary, writeIstiodToken } from "../env/agent-process.js";
import { repoRoot } from "../env/harness.js";
import { VaultClient } from "../../src/vault/client.js";
import { createAuthSession } from "../../src/vault/auth-methods.js";
import { DEFAULT_CONFIG } from "../../src/config/config.js";
import { x509 } from "../../src/crypto/x509.js";
import { createLogger } from "../../src/observability/logger.js";
import { AgentMetrics } from "../../src/observability/metrics.js";

const VAULT_NAME = "vault.iva.test";

/** A CONNECT-only forward proxy on loopback that counts the tunnels it opened. */
async function startConnectProxy(): Promise<{ url: string; count: () => number; close: () => Promise<void> }> {
  let tunnels = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((_req, res) => res.writeHead(405).end());
  server.on("connect", (req, client: Socket, head: Buffer) => {
    const [host, port] = (req.url ?? "").split(":");
    const upstream = connect(Number(port), host, () => {
      tunnels++;
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    count: () => tunnels,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe("Vault client conventions (VAULT_* variables, proxy) and cert auth against real OpenBao", () => {
  let t: AgentTestEnv;
  let dir: string;
  let client: IssuedPem;
  let clientCa: Awaited<ReturnType<typeof makeTestCa>>;
  const files = {
    serverCa: "",
    caDir: "",
    clientCert: "",
    clientKey: "",
    token: "",
  };

  before(async () => {
    const serverCa = await makeTestCa("iva-test-vault-listener-ca");
    // Only a name that is not the address's host: verification must fail unless VAULT_TLS_SERVER_NAME names it.
    const serving = await serverCa.issue({ commonName: VAULT_NAME, dnsNames: [VAULT_NAME] });
    clientCa = await makeTestCa("iva-test-vault-client-ca");
    client = await clientCa.issue({ commonName: "istiod-agent", client: true });
    t = await startAgentTestEnv(
      {},
      { vaultMtlsListener: { certPem: serving.certPem, keyPem: serving.keyPem, clientCaPem: clientCa.certPem } },
    );
    dir = mkdtempSync(join(tmpdir(), "iva-vault-tls-"));
    files.serverCa = join(dir, "server-ca.pem");
    writeFileSync(files.serverCa, serverCa.certPem);
    files.caDir = join(dir, "capath");
    mkdirSync(files.caDir);
    writeFileSync(join(files.caDir, "vault-ca.pem"), serverCa.certPem);
    files.clientCert = join(dir, "client.crt");
    writeFileSync(files.clientCert, client.certPem);
    files.clientKey = join(dir, "client.key");
    writeFileSync(files.clientKey, client.keyPem, { mode: 0o600 });
    files.token = join(dir, "vault-token");
    await writeIstiodToken(t.env, files.token);
    // The cert auth method: certificates from the client CA log in with the agent's policy; a short TTL to see a renewal.
    const root = t.env.vault.rootToken;
    await t.env.vault.client.write("sys/auth/cert", root, { type: "cert" });
    await t.env.vault.client.write("auth/cert/certs/istiod-agent", root, {
      certificate: clientCa.certPem,
      allowed_common_names: ["istiod-agent"],
      token_policies: [t.setup.policyName],
      token_ttl: "15s",
      token_max_ttl: "1h",
    });
  });
  after(async () => {
    await t?.env.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  /** A certificate's serial as OpenBao's cert auth records it in the token's metadata (decimal). */
  const serialOf = (pem: string) => BigInt(`0x${new x509.X509Certificate(pem).serialNumber}`).toString(10);

  const mtls = () => ({ VAULT_CLIENT_CERT: files.clientCert, VAULT_CLIENT_KEY: files.clientKey });
  const verified = () => ({ VAULT_CACERT: files.serverCa, VAULT_TLS_SERVER_NAME: VAULT_NAME });

  /**
   * `istiod-vault-agent init` against the mTLS listener with exactly `vars` (plus PATH/HOME) as its environment.
   * init retries a failing Vault forever (an init container waits for Vault), so with `failsWith` the run is stopped
   * once its log shows that failure.
   */
  async function init(vars: Record<string, string>, extra: string[] = [], failsWith?: RegExp) {
    const run = mkdtempSync(join(dir, "run-"));
    const cacerts = join(run, "cacerts");
    mkdirSync(cacerts);
    const logPath = join(run, "init.log");
    const proc = new ManagedProcess(
      "agent-init",
      nodeBinary(),
      [
        join(repoRoot(), "dist/src/main.js"),
        "init",
        `--vault-addr=${t.env.vault.mtlsUrl}`,
        `--token-path=${files.token}`,
        `--cacerts-dir=${cacerts}`,
        `--ca-path=${t.setup.signPath}`,
        "--http-addr=",
        "--backoff-initial=100ms",
        "--backoff-max=200ms",
        "--log-level=debug",
        ...extra,
      ],
      logPath,
      { PATH: process.env.PATH, HOME: process.env.HOME, ...vars },
    );
    const readLog = () => (existsSync(logPath) ? readFileSync(logPath, "utf8") : "");
    if (failsWith) {
      await waitUntil(`init log shows ${String(failsWith)}`, () => Promise.resolve(failsWith.test(readLog())), {
        timeoutMs: 30_000,
        process: proc,
      }).catch((err: Error) => assert.fail(`${err.message}\n${readLog().slice(-2000)}`));
      await proc.stop();
    } else {
      // A run expected to succeed that keeps retrying instead would otherwise hang the suite: stop it after 30s
      // (exit code then not 0, so the caller's assertion fails with the log).
      const timer = setTimeout(() => void proc.stop(), 30_000);
      await proc.waitExit();
      clearTimeout(timer);
    }
    const code = await proc.waitExit();
    const log = readLog();
    // Nothing secret may reach the log: the client key, the service-account JWT.
    assert.ok(!log.includes(client.keyPem.split("\n")[1]!), "the client key must not be logged");
    assert.ok(!log.includes(readFileSync(files.token, "utf8").trim()), "the service-account token must not be logged");
    return { code, log, wrote: existsSync(join(cacerts, "ca-cert.pem")) };
  }

  it("mutual TLS: without VAULT_CLIENT_CERT/KEY the agent cannot reach Vault (clear error); with them it obtains an intermediate", async () => {
    const without = await init({ ...verified() }, [], /set VAULT_CLIENT_CERT and VAULT_CLIENT_KEY/);
    assert.equal(without.wrote, false);
    const withCert = await init({ ...verified(), ...mtls() });
    assert.equal(withCert.code, 0, withCert.log.slice(-3000));
    assert.equal(withCert.wrote, true);
    // The flags do the same as the variables.
    const flags = await init(verified(), [
      `--vault-client-cert=${files.clientCert}`,
      `--vault-client-key=${files.clientKey}`,
    ]);
    assert.equal(flags.code, 0, flags.log.slice(-3000));
  });

  it("a client certificate without its key is refused at start (exit 2) naming the missing variable", async () => {
    const res = await init({ ...verified(), VAULT_CLIENT_CERT: files.clientCert });
    assert.equal(res.code, 2, res.log.slice(-2000));
    assert.match(res.log, /VAULT_CLIENT_KEY\): missing/);
  });

  it("VAULT_TLS_SERVER_NAME: Vault's certificate names only vault.iva.test; without the variable verification fails", async () => {
    const without = await init({ VAULT_CACERT: files.serverCa, ...mtls() }, [], /ERR_TLS_CERT_ALTNAME_INVALID/);
    assert.equal(without.wrote, false);
    assert.match(without.log, /set VAULT_TLS_SERVER_NAME/);
    const withName = await init({ VAULT_CACERT: files.serverCa, VAULT_TLS_SERVER_NAME: VAULT_NAME, ...mtls() });
    assert.equal(withName.code, 0, withName.log.slice(-3000));
    const flag = await init({ VAULT_CACERT: files.serverCa, ...mtls() }, [`--vault-tls-server-name=${VAULT_NAME}`]);
    assert.equal(flag.code, 0, flag.log.slice(-3000));
  });

  it("VAULT_CAPATH: a directory holding the CA is trusted; without any CA the system store refuses Vault", async () => {
    const withDir = await init({ VAULT_CAPATH: files.caDir, VAULT_TLS_SERVER_NAME: VAULT_NAME, ...mtls() });
    assert.equal(withDir.code, 0, withDir.log.slice(-3000));
    const noCa = await init({ VAULT_TLS_SERVER_NAME: VAULT_NAME, ...mtls() }, [], /set VAULT_CACERT or VAULT_CAPATH/);
    assert.equal(noCa.wrote, false);
  });

  it("VAULT_SKIP_VERIFY=TRUE (Vault's spelling) is accepted and logged loudly; a garbage value is refused", async () => {
    const on = await init({ VAULT_SKIP_VERIFY: "TRUE", ...mtls() });
    assert.equal(on.code, 0, on.log.slice(-3000));
    assert.match(on.log, /TLS VERIFICATION OF VAULT IS OFF/);
    const garbage = await init({ VAULT_SKIP_VERIFY: "yes-please", ...mtls() });
    assert.equal(garbage.code, 2, garbage.log.slice(-2000));
    assert.match(garbage.log, /VAULT_SKIP_VERIFY: "yes-please" must be a boolean as Vault reads it/);
  });

  it("HTTPS_PROXY: requests go through the proxy; NO_PROXY covering Vault's host bypasses it", async () => {
    const proxy = await startConnectProxy();
    try {
      const via = await init({ ...verified(), ...mtls(), HTTPS_PROXY: proxy.url });
      assert.equal(via.code, 0, via.log.slice(-3000));
      const forwarded = proxy.count();
      assert.ok(forwarded > 0, `the proxy should have forwarded the agent's Vault connections, counted ${forwarded}`);
      const bypass = await init({ ...verified(), ...mtls(), HTTPS_PROXY: proxy.url, NO_PROXY: "localhost,127.0.0.1" });
      assert.equal(bypass.code, 0, bypass.log.slice(-3000));
      assert.equal(proxy.count(), forwarded, "NO_PROXY covers 127.0.0.1: nothing more may go through the proxy");
      // The lower-case spelling and the flag work too.
      const lower = await init({ ...verified(), ...mtls(), https_proxy: proxy.url });
      assert.equal(lower.code, 0, lower.log.slice(-3000));
      assert.ok(proxy.count() > forwarded, "https_proxy (lower case) should be used as well");
    } finally {
      await proxy.close();
    }
  });

  it("cert auth: the agent's init logs in with its client certificate (--auth-method=cert) and obtains an intermediate", async () => {
    const res = await init({ ...verified(), ...mtls() }, ["--auth-method=cert", "--auth-role=istiod-agent"]);
    assert.equal(res.code, 0, res.log.slice(-3000));
    assert.equal(res.wrote, true);
    assert.match(res.log, /logged in to Vault with TLS certificate auth/);
  });

  it("cert auth: login, token renewal (bound to the certificate) and re-login after the token is revoked", async () => {
    const vault = new VaultClient({
      address: t.env.vault.mtlsUrl!,
      tls: {
        caPem: readFileSync(files.serverCa, "utf8"),
        tlsServerName: VAULT_NAME,
        clientCertFile: files.clientCert,
        clientKeyFile: files.clientKey,
      },
    });
    const metrics = new AgentMetrics({ processMetrics: false, groups: ["vault"] });
    const auth = createAuthSession(
      vault,
      { ...DEFAULT_CONFIG.auth, method: "cert", mountPath: "cert", role: "istiod-agent", tokenPath: "/nonexistent" },
      createLogger({ level: "silent" }),
      metrics,
    );
    const root = t.env.vault.rootToken;
    const lookup = async (token: string) =>
      (
        await t.env.vault.client.write<{
          accessor: string;
          last_renewal_time?: number | null;
          meta?: Record<string, string> | null;
        }>("auth/token/lookup", root, { token })
      ).data;
    try {
      const first = await auth.token();
      const info = await lookup(first);
      assert.ok(!info.last_renewal_time, "a fresh token has not been renewed");
      // The lease is 15s: KubernetesAuth's timer renews at 10s, over the connection presenting the certificate (a lease
      // under 10s would count as the max TTL reached and mean a new login instead).
      const deadline = Date.now() + 45_000;
      let renewed = false;
      while (!renewed && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 500));
        renewed = !!(await lookup(first)).last_renewal_time;
      }
      assert.ok(renewed, "OpenBao should record a renewal of the cert-auth token");
      assert.equal(await auth.token(), first, "the renewed token is kept");
      // Revoke it behind the agent's back: the next call gets 403, logs in again with the certificate, and retries.
      await t.env.vault.client.write("auth/token/revoke", root, { token: first });
      const used: string[] = [];
      await auth.withToken(async (token) => {
        used.push(token);
        return vault.read("auth/token/lookup-self", token);
      });
      assert.equal(used.length, 2, "one 403 with the revoked token, then one call with the new one");
      assert.equal(used[0], first);
      assert.notEqual(used[1], first);
      assert.equal((await lookup(used[1]!)).accessor.length > 0, true);

      // Rotation: new certificate and key written over the files; the next login presents the new certificate
      // (Vault records its serial in the token's metadata) without a restart.
      const loginSerial = async (token: string) =>
        String((await lookup(token)).meta?.serial_number ?? "")
          .replace(/[^0-9a-f]/gi, "")
          .toLowerCase();
      assert.equal(await loginSerial(used[1]!), serialOf(client.certPem), "logged in with the first certificate");
      const rotated = await clientCa.issue({ commonName: "istiod-agent", client: true });
      writeFileSync(files.clientCert, rotated.certPem);
      writeFileSync(files.clientKey, rotated.keyPem, { mode: 0o600 });
      auth.invalidate();
      const afterRotation = await auth.token();
      assert.equal(await loginSerial(afterRotation), serialOf(rotated.certPem), "the rotated certificate is presented");
      assert.equal(vault.transport.builds, 2, "one dispatcher for each certificate");
      writeFileSync(files.clientCert, client.certPem);
      writeFileSync(files.clientKey, client.keyPem, { mode: 0o600 });
    } finally {
      auth.stop();
      await vault.close();
    }
  });
});
