// Relay bootstrap mode end to end against real OpenBao and kube-apiserver: `relay --role server --issuer` (management
// cluster, Vault) and `relay --role agent --bootstrap` (workload cluster, no Vault) as separate processes. An agent
// with only the root and identity-token Secrets obtains a client certificate that completes a relay mTLS handshake;
// it then renews over mTLS without the token; the issuer refuses bad requests with precise reasons; the identity token
// rotates with an overlap window. Logs never hold tokens, JWTs or keys.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate, createPrivateKey, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import type { AddressInfo } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { EXCLUDED_LINTS, firstPem, zlint } from "../env/zlint.js";
import { makeTestCa } from "../env/pki.js";
import * as relayIssuer from "../env/relay-issuer.js";
import { setupRelayVault, startAgentTestEnv, writeRelayPkiRoles, type AgentTestEnv } from "../env/fixtures.js";
import { freePort, repoRoot, type TestEnv } from "../env/harness.js";
import { nodeBinary } from "../env/agent-process.js";
import { ManagedProcess, waitUntil } from "../env/process.js";
import { opensslVerify } from "../env/crypto-check.js";
import { x509 } from "../../src/crypto/x509.js";
import { exportPrivateKeyPem, generateKeyPair } from "../../src/crypto/keys.js";
import type { Issued } from "../../src/gen/relay/v1/issuer.js";
import { relayPolicy } from "../../src/relay/policy.js";
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE } from "../../src/kube/secret-store.js";

const SERVER_DNS = relayIssuer.RELAY_SERVER_DNS;
const EKU_CLIENT = relayIssuer.EKU_CLIENT_AUTH;
const { assertRefused, secretPath, issuedAudits } = relayIssuer;

const MGMT_NS = "gloo-mesh";
const RELAY_SA = "relay-agent";
const KV_PATH = "secret/data/relay/identity-token";
const CLIENT_TTL_S = 20;
const TOKEN_OVERLAP_S = 15;

interface Run {
  name: string;
  process: ManagedProcess;
  args: string[];
  env: NodeJS.ProcessEnv;
  log(): string;
  stop(): Promise<void>;
}

/** The test's environment minus anything that could point a process at Vault. */
function envWithoutVault(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(VAULT_|BAO_|KUBECONFIG$)/.test(k)));
}

describe("relay bootstrap mode (issuer + Vault-less agents) against real OpenBao + kube-apiserver", () => {
  let t: AgentTestEnv;
  let env: TestEnv;
  let dir: string;
  let tokenPath: string;
  let issuerRun: Run;
  let issuerPort: number;
  let issuerHttpPort: number;
  let agentA: Run;
  let firstClientPair: relayIssuer.TlsPair;
  let rootPem: string;
  let tokenV1: string;
  let tokenV2: string;
  const runs: Run[] = [];

  const b64 = (s: string) => Buffer.from(s).toString("base64");
  const getSecret = (ns: string, name: string) => relayIssuer.getSecret(env, ns, name);
  const secretData = (ns: string, name: string) => relayIssuer.secretData(env, ns, name);
  const tlsPair = (ns: string, name: string) => relayIssuer.tlsPair(env, ns, name);

  function start(name: string, args: string[], procEnv: NodeJS.ProcessEnv): Run {
    const logPath = join(dir, `${name}.log`);
    const fullArgs = [join(repoRoot(), "dist/src/main.js"), "relay", ...args];
    const proc = new ManagedProcess(name, nodeBinary(), fullArgs, logPath, procEnv);
    const run: Run = {
      name,
      process: proc,
      args: fullArgs,
      env: procEnv,
      log: () => (existsSync(logPath) ? readFileSync(logPath, "utf8") : ""),
      stop: () => proc.stop(),
    };
    runs.push(run);
    return run;
  }

  /** A workload cluster's relay agent in bootstrap mode: kubeconfig and issuer address only, no Vault anything. */
  function startAgent(ns: string, cluster: string, extra: string[] = []): Run {
    return start(
      `agent-${cluster}`,
      [
        "--role=agent",
        `--bootstrap=127.0.0.1:${issuerPort}`,
        `--cluster=${cluster}`,
        `--namespace=${ns}`,
        `--kubeconfig=${env.kube.kubeconfigPath}`,
        "--grace-ratio=0.5",
        "--resync=5s",
        "--backoff-initial=200ms",
        "--backoff-max=2s",
        "--http-addr=",
        "--log-level=debug",
        ...extra,
      ],
      envWithoutVault(),
    );
  }

  /** What an operator does before registering a workload cluster: copy the root CA and the identity token. */
  async function prepareWorkloadNamespace(ns: string, token: string): Promise<void> {
    await env.createNamespace(ns);
    for (const [name, data] of [
      ["relay-root-tls-secret", { "ca.crt": b64(rootPem) }],
      ["relay-identity-token-secret", { token: b64(token) }],
    ] as const) {
      await env.kube.admin.create(`/api/v1/namespaces/${ns}/secrets`, {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name, namespace: ns },
        type: "Opaque",
        data,
      });
    }
  }

  const audits = () => issuedAudits(issuerRun.log());

  async function kvToken(): Promise<string> {
    return (await env.vault.client.read<{ data: { token: string } }>(KV_PATH, env.vault.rootToken)).data.data.token;
  }

  const issuer = (): relayIssuer.IssuerTarget => ({ port: issuerPort, rootPem });
  const bootstrapCall = (req: { csrPem: string; identityToken: string; clusterName: string }) =>
    relayIssuer.bootstrapCall(issuer(), req);
  const renewCall = (csrPem: string, client?: relayIssuer.ClientPair) =>
    relayIssuer.renewCall(issuer(), csrPem, client);

  /** A CSR from a fresh key with the given SANs / CA request; returns the CSR and the key. */
  async function csr(opts: {
    cn?: string;
    dns?: string[];
    uri?: string[];
    ca?: boolean;
  }): Promise<{ pem: string; keyPem: string }> {
    const keys = await generateKeyPair("ECDSA_P256", true);
    const names = [
      ...(opts.dns ?? []).map((value) => ({ type: "dns" as const, value })),
      ...(opts.uri ?? []).map((value) => ({ type: "url" as const, value })),
    ];
    const req = await x509.Pkcs10CertificateRequestGenerator.create({
      ...(opts.cn ? { name: `CN=${opts.cn}` } : {}),
      keys,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      extensions: [
        ...(names.length ? [new x509.SubjectAlternativeNameExtension(names)] : []),
        ...(opts.ca ? [new x509.BasicConstraintsExtension(true, undefined, true)] : []),
      ],
    });
    return { pem: req.toString("pem"), keyPem: await exportPrivateKeyPem(keys.privateKey) };
  }

  /** Bootstraps a certificate for `cluster` directly; returns it as a client pair (tls.crt without the root). */
  async function directBootstrap(cluster: string, token: string): Promise<relayIssuer.TlsPair & { issued: Issued }> {
    const c = await csr({ cn: cluster, dns: [cluster] });
    const o = await bootstrapCall({ csrPem: c.pem, identityToken: token, clusterName: cluster });
    assert.ok(o.ok, `bootstrap of ${cluster}: ${o.ok ? "" : o.details}`);
    const chain = o.issued.certChainPem;
    return { cert: chain.slice(0, -1).join(""), key: c.keyPem, ca: chain.at(-1)!, issued: o.issued };
  }

  function dnsSans(certPem: string): string[] {
    return (new X509Certificate(certPem).subjectAltName ?? "")
      .split(", ")
      .filter((s) => s.startsWith("DNS:"))
      .map((s) => s.slice(4));
  }

  function pemCount(pem: string): number {
    return (pem.match(/-----BEGIN CERTIFICATE-----/g) ?? []).length;
  }

  /** A TLS server like the relay's: the server Secret, client certificates required and verified against ca.crt. */
  async function relayHandshake(server: relayIssuer.TlsPair, client: relayIssuer.TlsPair): Promise<void> {
    const accepted: { authorized: boolean; san: string | undefined }[] = [];
    const srv = tls.createServer(
      { cert: server.cert, key: server.key, ca: server.ca, requestCert: true, rejectUnauthorized: true },
      (socket) => {
        accepted.push({ authorized: socket.authorized, san: socket.getPeerCertificate().subjectaltname });
        socket.end("hello from the relay server\n");
      },
    );
    await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
    try {
      const port = (srv.address() as AddressInfo).port;
      const res = await new Promise<{ authorized: boolean; data: string; error?: string; san?: string }>((resolve) => {
        let data = "";
        let authorized = false;
        let san: string | undefined;
        const s = tls.connect({ host: "127.0.0.1", port, servername: SERVER_DNS, ...client });
        s.setEncoding("utf8");
        s.on("secureConnect", () => {
          authorized = s.authorized;
          san = s.getPeerCertificate().subjectaltname;
        });
        s.on("data", (chunk: string) => (data += chunk));
        s.on("error", (err: Error) => resolve({ authorized, data, error: err.message }));
        s.on("close", () => resolve({ authorized, data, ...(san ? { san } : {}) }));
        s.setTimeout(10_000, () => s.destroy(new Error("timed out")));
      });
      assert.equal(res.error, undefined, `handshake error: ${res.error}`);
      assert.ok(res.authorized, "the agent verified the relay server certificate against its ca.crt");
      assert.equal(res.san, `DNS:${SERVER_DNS}`);
      assert.equal(res.data, "hello from the relay server\n");
      assert.equal(accepted.length, 1);
      assert.ok(accepted[0]!.authorized, "the relay server verified the agent's client certificate against ca.crt");
      assert.equal(accepted[0]!.san, `DNS:${dnsSans(client.cert)[0]}`);
    } finally {
      await new Promise<void>((resolve) => srv.close(() => resolve()));
    }
  }

  function assertNoSecretsInLogs(extra: string[]): void {
    const jwt = readFileSync(tokenPath, "utf8").trim();
    for (const r of runs) {
      const log = r.log();
      assert.ok(!log.includes(jwt), `${r.name}: the service-account JWT is not in the log`);
      assert.doesNotMatch(log, /eyJ[\w-]{10,}\.[\w-]{10,}\./, `${r.name}: no JWT-shaped string in the log`);
      assert.doesNotMatch(log, /PRIVATE KEY/, `${r.name}: no private key in the log`);
      assert.ok(!log.includes(env.vault.rootToken), `${r.name}: no Vault root token in the log`);
      for (const s of extra) assert.ok(!log.includes(s), `${r.name}: no identity token in the log`);
    }
  }

  before(async () => {
    t = await startAgentTestEnv();
    env = t.env;
    dir = mkdtempSync(join(tmpdir(), "iva-relay-boot-"));
    // The relay server's own certificate still comes from Vault (management cluster).
    await writeRelayPkiRoles(env, "pki", { serverDns: SERVER_DNS });
    tokenPath = join(dir, "vault-token");
    await setupRelayVault(env, {
      namespace: MGMT_NS,
      serviceAccount: RELAY_SA,
      policy: relayPolicy({ signingIntermediate: true, roles: ["server"], pkiMount: "pki", sharedToken: true }),
      tokenPath,
    });

    issuerPort = await freePort();
    issuerHttpPort = await freePort();
    issuerRun = start(
      "issuer",
      [
        "--role=server",
        "--issuer",
        // This file covers the opt-in shared token; relay-clusters.test.ts covers per-cluster tokens.
        "--shared-identity-token",
        "--pki-mount=pki",
        "--allow-istio-root-mount",
        "--token-refresh=2s",
        "--issuer-peer-rate=100",
        "--issuer-peer-burst=1000",
        `--issuer-addr=127.0.0.1:${issuerPort}`,
        `--namespace=${MGMT_NS}`,
        ...relayIssuer.relayConnectionArgs(env, tokenPath),
        // Short lives: the server certificate rotates every ~15 s, the signing intermediate every ~30 s.
        "--ttl=30s",
        "--signing-ttl=60s",
        `--client-ttl=${CLIENT_TTL_S}s`,
        "--grace-ratio=0.5",
        "--resync=2s",
        `--token-overlap=${TOKEN_OVERLAP_S}s`,
        "--issuer-rate=2",
        "--issuer-burst=10",
        `--http-addr=127.0.0.1:${issuerHttpPort}`,
        "--backoff-initial=200ms",
        "--backoff-max=2s",
        "--log-level=debug",
      ],
      envWithoutVault(),
    );
    await waitUntil(
      "issuer ready",
      async () => (await fetch(`http://127.0.0.1:${issuerHttpPort}/readyz`)).status === 200,
      { timeoutMs: 60_000, process: issuerRun.process },
    );
    rootPem = (await secretData(MGMT_NS, "relay-root-tls-secret"))["ca.crt"]!;
    tokenV1 = (await secretData(MGMT_NS, "relay-identity-token-secret")).token!;
    assert.equal(tokenV1, await kvToken());
  });

  after(async () => {
    for (const r of runs) await r.stop();
    await t?.env.stop();
    if (dir && !process.env.IVA_KEEP_ENV) rmSync(dir, { recursive: true, force: true });
  });

  it("bootstrap mode refuses Vault flags at start, naming them", async () => {
    const run = start(
      "agent-with-vault-flags",
      [
        "--role=agent",
        `--bootstrap=127.0.0.1:${issuerPort}`,
        "--cluster=cluster-x",
        `--vault-addr=${env.vault.url}`,
        "--auth-role=relay",
      ],
      envWithoutVault(),
    );
    assert.equal(await run.process.waitExit(), 2);
    assert.match(run.log(), /--vault-addr: not accepted with --bootstrap/);
    assert.match(run.log(), /--auth-role: not accepted with --bootstrap/);
  });

  it("an agent with only the root and token Secrets obtains a client certificate; the relay mTLS handshake works", async () => {
    await prepareWorkloadNamespace("wl-a", tokenV1);
    agentA = startAgent("wl-a", "cluster-a");
    await waitUntil(
      "relay-client-tls-secret in wl-a",
      async () => (await getSecret("wl-a", "relay-client-tls-secret")) !== undefined,
      {
        timeoutMs: 30_000,
        process: agentA.process,
      },
    );
    const secret = await getSecret("wl-a", "relay-client-tls-secret");
    assert.equal(secret?.type, "kubernetes.io/tls");
    assert.equal(secret?.metadata.labels?.[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
    const client = await tlsPair("wl-a", "relay-client-tls-secret");
    firstClientPair = client;
    const cert = new X509Certificate(client.cert);
    assert.ok(cert.checkPrivateKey(createPrivateKey(client.key)), "tls.key matches tls.crt");
    assert.deepEqual(dnsSans(client.cert), ["cluster-a"]);
    assert.equal(cert.subjectAltName, "DNS:cluster-a", "no SAN but the cluster name");
    assert.deepEqual(cert.keyUsage, [EKU_CLIENT]);
    assert.equal(cert.ca, false);
    assert.equal(client.ca.trim(), rootPem.trim(), "ca.crt is the relay root");
    assert.equal(pemCount(client.cert), 2, "tls.crt = the certificate and the issuer's signing intermediate");
    const intermediate = new X509Certificate(client.cert.slice(client.cert.indexOf("-----BEGIN", 10)));
    assert.equal(intermediate.ca, true);
    assert.match(intermediate.subject, /relay-issuer-signing-ca/);
    assert.ok(
      Date.parse(cert.validTo) - Date.now() <= CLIENT_TTL_S * 1000 + 1000,
      "the lifetime is capped by --client-ttl",
    );
    assert.match(opensslVerify(client.cert, client.ca, client.cert), /OK/);

    await relayHandshake(await tlsPair(MGMT_NS, "relay-server-tls-secret"), client);

    // The agent process knows nothing about Vault: not in its arguments, not in its environment.
    const cmdline = readFileSync(`/proc/${agentA.process.pid}/cmdline`, "utf8").split("\0");
    const environ = readFileSync(`/proc/${agentA.process.pid}/environ`, "utf8").split("\0");
    for (const s of [...cmdline, ...environ]) {
      assert.doesNotMatch(s, /^(--)?(vault|VAULT_|BAO_)/i, `agent arg/env ${s.split("=")[0]}`);
      assert.ok(!s.includes(env.vault.url), "no Vault address in the agent's args/env");
      assert.ok(!s.includes(env.vault.rootToken), "no Vault token in the agent's args/env");
      assert.ok(!s.includes(tokenPath), "no Vault credential file in the agent's args/env");
    }
    assert.ok(!agentA.args.some((a) => /vault|token-path|auth-/i.test(a)));
    assert.match(agentA.log(), /bootstrapped a relay client certificate with the identity token/);
  });

  it("zlint: the bootstrap client certificate and the issuer's serving certificate lint clean", async () => {
    const pairs = {
      "bootstrap client": await tlsPair("wl-a", "relay-client-tls-secret"),
      "relay server": await tlsPair(MGMT_NS, "relay-server-tls-secret"),
    };
    for (const [what, pair] of Object.entries(pairs)) {
      const report = zlint(firstPem(pair.cert), EXCLUDED_LINTS);
      assert.deepEqual(report.findings, [], `${what}: ${JSON.stringify(report.findings)}`);
      assert.ok(report.applied >= 30, `${what}: ${report.applied} lints applied`);
    }
  });

  it("renews over mTLS again and again without the identity token (one bootstrap, several renewals)", async () => {
    // Remove the token from the workload cluster: renewals must not need it.
    await env.kube.admin.request("DELETE", secretPath("wl-a", "relay-identity-token-secret"));
    const serials = new Set<string>();
    await waitUntil(
      "two mTLS renewals for cluster-a",
      async () => {
        const pair = await tlsPair("wl-a", "relay-client-tls-secret");
        const cert = new X509Certificate(pair.cert);
        assert.ok(cert.checkPrivateKey(createPrivateKey(pair.key)), "the Secret always holds a matching pair");
        assert.ok(Date.parse(cert.validTo) > Date.now(), "the Secret never holds an expired certificate");
        serials.add(cert.serialNumber);
        return audits().filter((a) => a.cluster === "cluster-a" && a.method === "renew").length >= 2;
      },
      { timeoutMs: 45_000, process: agentA.process, intervalMs: 500 },
    );
    const forA = audits().filter((a) => a.cluster === "cluster-a");
    assert.equal(forA.filter((a) => a.method === "bootstrap").length, 1, "exactly one bootstrap for cluster-a");
    assert.ok(forA.filter((a) => a.method === "renew").length >= 2, "at least two renewals for cluster-a");
    assert.ok(serials.size >= 2, "the Secret's certificate changed");
    const current = new X509Certificate((await tlsPair("wl-a", "relay-client-tls-secret")).cert);
    assert.ok(
      forA.some((a) => a.serial === current.serialNumber.toLowerCase()),
      "the Secret holds a certificate from the audit log",
    );
    assert.match(agentA.log(), /renewed the relay client certificate over mTLS/);
    assert.doesNotMatch(agentA.log(), /relay-identity-token-secret is missing/, "the agent never looked for the token");
    await relayHandshake(
      await tlsPair(MGMT_NS, "relay-server-tls-secret"),
      await tlsPair("wl-a", "relay-client-tls-secret"),
    );
  });

  it("refuses bad Bootstrap and Renew requests, each with the rule that failed", async () => {
    const ok = await csr({ cn: "cluster-t", dns: ["cluster-t"] });
    const other = await csr({ cn: "cluster-t", dns: ["cluster-other"] });
    const ca = await csr({ cn: "cluster-t", dns: ["cluster-t"], ca: true });
    const uri = await csr({ dns: ["cluster-t"], uri: ["spiffe://cluster.local/ns/x/sa/y"] });
    // Flip a bit in the signature (the last bytes of the DER).
    const der = Buffer.from(ok.pem.replace(/-----[^-]+-----|\s/g, ""), "base64");
    der[der.length - 2] = der[der.length - 2]! ^ 0x01;
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64").replace(/.{64}/g, "$&\n")}\n-----END CERTIFICATE REQUEST-----\n`;
    const { UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT } = grpc.status;
    // [what, CSR, identity token, status, reason] of each Bootstrap for cluster-t, sent in this order.
    const refusals: [string, string, string, grpc.status, string][] = [
      ["wrong token", ok.pem, "not-the-token", UNAUTHENTICATED, "token_invalid"],
      ["no token", ok.pem, "", UNAUTHENTICATED, "token_missing"],
      ["CSR naming another cluster", other.pem, tokenV1, PERMISSION_DENIED, "csr_other_cluster"],
      ["CA CSR", ca.pem, tokenV1, PERMISSION_DENIED, "ca_requested"],
      ["CSR with a URI SAN", uri.pem, tokenV1, PERMISSION_DENIED, "csr_extra_san"],
      ["malformed CSR", "not a csr", tokenV1, INVALID_ARGUMENT, "csr_malformed"],
      ["CSR whose signature does not verify", tampered, tokenV1, INVALID_ARGUMENT, "csr_signature"],
    ];
    for (const [what, csrPem, identityToken, code, reason] of refusals)
      assertRefused(await bootstrapCall({ csrPem, identityToken, clusterName: "cluster-t" }), code, reason, what);

    // Renew: the caller's certificate decides who it is.
    assertRefused(await renewCall(ok.pem), grpc.status.UNAUTHENTICATED, "no_client_certificate", "Renew without mTLS");

    const foreignLeaf = await (
      await makeTestCa("foreign relay CA")
    ).issue({ commonName: "cluster-a", dnsNames: ["cluster-a"], client: true });
    const renewA = await csr({ cn: "cluster-a", dns: ["cluster-a"] });
    assertRefused(
      await renewCall(renewA.pem, {
        cert: foreignLeaf.certPem,
        key: foreignLeaf.keyPem,
      }),
      grpc.status.UNAUTHENTICATED,
      "client_cert_untrusted",
      "Renew with a certificate from a foreign CA",
    );

    // The agent's first certificate, once expired, cannot renew (even though it was ours).
    const expiry = Date.parse(new X509Certificate(firstClientPair.cert).validTo);
    if (Date.now() < expiry + 1_000) await new Promise((r) => setTimeout(r, expiry + 1_000 - Date.now()));
    const expired = await renewCall(renewA.pem, firstClientPair);
    assertRefused(expired, grpc.status.UNAUTHENTICATED, "client_cert_expired", "Renew with an expired certificate");
    assert.match(expired.ok ? "" : expired.details, /expired at .*bootstrap again with the identity token/);

    // The relay server certificate chains to the root but is no client certificate.
    const server = await tlsPair(MGMT_NS, "relay-server-tls-secret");
    assertRefused(
      await renewCall(renewA.pem, server),
      grpc.status.PERMISSION_DENIED,
      "client_cert_not_relay_client",
      "Renew with the server certificate",
    );

    // A valid certificate for cluster-t renews for cluster-t only.
    const tPair = await directBootstrap("cluster-t", tokenV1);
    assertRefused(
      await renewCall(renewA.pem, tPair),
      grpc.status.PERMISSION_DENIED,
      "csr_other_cluster",
      "Renew whose CSR names another cluster",
    );
    const renewT = await csr({ cn: "cluster-t", dns: ["cluster-t"] });
    const renewed = await renewCall(renewT.pem, tPair);
    assert.ok(renewed.ok, renewed.ok ? "" : renewed.details);
    assert.deepEqual(
      dnsSans(renewed.issued.certChainPem[0]!),
      ["cluster-t"],
      "the new certificate names the same cluster",
    );

    const metrics = await (await fetch(`http://127.0.0.1:${issuerHttpPort}/metrics`)).text();
    for (const [method, reason] of [
      ["bootstrap", "token_invalid"],
      ["bootstrap", "csr_other_cluster"],
      ["bootstrap", "ca_requested"],
      ["renew", "no_client_certificate"],
      ["renew", "client_cert_untrusted"],
      ["renew", "client_cert_expired"],
    ])
      assert.match(
        metrics,
        new RegExp(`istiod_vault_agent_relay_issuer_refused_total\\{method="${method}",reason="${reason}"\\} 1`),
      );
    assert.match(metrics, /istiod_vault_agent_relay_issuer_issued_total\{method="renew"\} \d+/);
    // Refusals are logged with their reason; the wrong token never is.
    assert.match(issuerRun.log(), /"reason":"client_cert_expired"/);
    assert.ok(!issuerRun.log().includes("not-the-token"));
  });

  it("token rotation: the old token keeps working for the overlap, agents with certificates are unaffected", async () => {
    const renewsBefore = audits().filter((a) => a.cluster === "cluster-a" && a.method === "renew").length;
    tokenV2 = randomBytes(32).toString("base64url");
    await env.vault.client.write(KV_PATH, env.vault.rootToken, { data: { token: tokenV2 } });
    await waitUntil(
      "issuer sees the new token",
      () => Promise.resolve(/identity token changed in Vault KV/.test(issuerRun.log())),
      {
        timeoutMs: 15_000,
        process: issuerRun.process,
      },
    );
    const rotatedAt = Date.now();

    // A new cluster bootstraps with the new token.
    await prepareWorkloadNamespace("wl-b", tokenV2);
    const agentB = startAgent("wl-b", "cluster-b");
    await waitUntil(
      "relay-client-tls-secret in wl-b",
      async () => (await getSecret("wl-b", "relay-client-tls-secret")) !== undefined,
      {
        timeoutMs: 30_000,
        process: agentB.process,
      },
    );
    assert.deepEqual(dnsSans((await tlsPair("wl-b", "relay-client-tls-secret")).cert), ["cluster-b"]);
    await relayHandshake(
      await tlsPair(MGMT_NS, "relay-server-tls-secret"),
      await tlsPair("wl-b", "relay-client-tls-secret"),
    );
    await agentB.stop();

    // The old token still works within the overlap.
    await directBootstrap("cluster-old-token", tokenV1);
    const viaOld = audits().find((a) => a.cluster === "cluster-old-token");
    assert.equal(viaOld?.acceptedToken, "previous");

    // The existing agent keeps renewing with mTLS, never bootstrapping again.
    await waitUntil(
      "cluster-a renews after the token rotation",
      () =>
        Promise.resolve(
          audits().filter((a) => a.cluster === "cluster-a" && a.method === "renew").length > renewsBefore,
        ),
      { timeoutMs: 20_000, process: agentA.process },
    );

    // After the overlap the old token is refused; the new one works.
    const wait = rotatedAt + TOKEN_OVERLAP_S * 1000 + 1_000 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const late = await csr({ cn: "cluster-late", dns: ["cluster-late"] });
    assertRefused(
      await bootstrapCall({ csrPem: late.pem, identityToken: tokenV1, clusterName: "cluster-late" }),
      grpc.status.UNAUTHENTICATED,
      "token_invalid",
      "old token after the overlap",
    );
    await directBootstrap("cluster-late", tokenV2);
    const forA = audits().filter((a) => a.cluster === "cluster-a");
    assert.equal(forA.filter((a) => a.method === "bootstrap").length, 1, "cluster-a never bootstrapped again");
    assert.ok(agentA.process.alive, "agent A is still running");
    assert.ok(
      Date.parse(new X509Certificate((await tlsPair("wl-a", "relay-client-tls-secret")).cert).validTo) > Date.now(),
    );
  });

  it("rotates its own serving certificate without a restart; rate-limits per token", async () => {
    // The issuer presents the relay server certificate currently in the Secret (it rotated several times by now).
    assert.match(issuerRun.log(), /the relay server certificate rotated/);
    await waitUntil(
      "issuer presents the current relay server certificate",
      async () => {
        const want = new X509Certificate((await tlsPair(MGMT_NS, "relay-server-tls-secret")).cert).serialNumber;
        const got = await new Promise<string>((resolve, reject) => {
          const s = tls.connect(
            { host: "127.0.0.1", port: issuerPort, servername: SERVER_DNS, ca: rootPem, ALPNProtocols: ["h2"] },
            () => {
              resolve(s.getPeerCertificate().serialNumber);
              s.destroy();
            },
          );
          s.on("error", reject);
        });
        return got === want;
      },
      { timeoutMs: 10_000, process: issuerRun.process },
    );

    // Burst 10, 2/s: a flood of wrong tokens exhausts the shared bucket of wrong tokens.
    const c = await csr({ cn: "cluster-flood", dns: ["cluster-flood"] });
    const results = await Promise.all(
      Array.from({ length: 25 }, () =>
        bootstrapCall({ csrPem: c.pem, identityToken: "guess", clusterName: "cluster-flood" }),
      ),
    );
    const limited = results.filter((r) => !r.ok && r.code === grpc.status.RESOURCE_EXHAUSTED);
    assert.ok(limited.length >= 10, `${limited.length} of 25 were rate limited`);
    assert.ok(!limited[0]!.ok && limited[0]!.details.startsWith("rate_limited: "));
    // A valid token has its own bucket and still works.
    await directBootstrap("cluster-after-flood", tokenV2);

    await agentA.stop();
    await issuerRun.stop();
    assert.equal(agentA.process.exitCode, 0, "the agent stops cleanly on SIGTERM");
    assert.equal(issuerRun.process.exitCode, 0, "the issuer stops cleanly on SIGTERM");
    assertNoSecretsInLogs([tokenV1, tokenV2]);
  });
});
