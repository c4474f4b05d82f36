// The CA sidecar end to end against real OpenBao and kube-apiserver: init and sidecar as separate processes, the
// socket API, rotation, token revocation, Vault outages, and what must never leak.
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, statSync, lstatSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import {
  agentSuite,
  getBundle,
  nodeBinary,
  rotate,
  signCertificate,
  watchBundles,
  type AgentRun,
} from "../env/agent-process.js";
import { freePort, repoRoot } from "../env/harness.js";
import { setupVault } from "../../src/vault/setup.js";
import { opensslVerify, publicKeyId, workloadCsr, SLEEP_SPIFFE_ID } from "../env/crypto-check.js";
import { waitUntil } from "../env/process.js";
import { pemPrivateKeysInMemory } from "../env/process-memory.js";

describe("CA sidecar against real OpenBao + kube-apiserver", () => {
  const suite = agentSuite({}, { vaultAudit: true });
  let vaultRootPem: string;

  before(async () => {
    vaultRootPem = (await suite.env.vault.client.read<{ certificate: string }>("pki/cert/ca", undefined)).data
      .certificate;
  });

  /** LIST <mount>/keys with the root token: how many keys the PKI mount stores. */
  async function pkiKeyCount(mount: string): Promise<number> {
    const res = await suite.env.vault.client.call<{ data?: { keys?: string[] } }>("GET", `${mount}/keys?list=true`, {
      token: suite.env.vault.rootToken,
      acceptStatuses: [404],
    });
    return res.body?.data?.keys?.length ?? 0;
  }

  /** Accessors of every token Vault holds (root token; accessors are not credentials). */
  async function tokenAccessors(): Promise<string[]> {
    const res = await suite.env.vault.client.call<{ data?: { keys?: string[] } }>(
      "GET",
      "auth/token/accessors?list=true",
      {
        token: suite.env.vault.rootToken,
      },
    );
    return res.body?.data?.keys ?? [];
  }

  /** lookup-accessor: the token's path and metadata, or undefined when Vault no longer knows the token. */
  async function lookupAccessor(
    accessor: string,
  ): Promise<{ path?: string; meta?: Record<string, string> | null } | undefined> {
    const res = await suite.env.vault.client.call<{ data?: { path?: string; meta?: Record<string, string> | null } }>(
      "POST",
      "auth/token/lookup-accessor",
      { token: suite.env.vault.rootToken, body: { accessor }, acceptStatuses: [400, 403, 404] },
    );
    return res.status === 200 ? res.body?.data : undefined;
  }

  it("init writes the four cacerts files and exits 0; openssl verifies ca-cert.pem against root-cert.pem", async () => {
    const run = await suite.start("init");
    assert.equal(await run.process.waitExit(), 0, run.log().slice(-2000));
    const file = (n: string) => readFileSync(join(run.cacertsDir, n), "utf8");
    for (const n of ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]) {
      assert.ok(lstatSync(join(run.cacertsDir, n)).isSymbolicLink(), `${n} is a link into ..data`);
      assert.equal(statSync(join(run.cacertsDir, n)).mode & 0o777, 0o640, `${n} is 0640`);
    }
    assert.match(opensslVerify(file("ca-cert.pem"), file("root-cert.pem")), /OK/);
    assert.equal(file("root-cert.pem").trim(), vaultRootPem.trim(), "root-cert.pem is Vault's root");
    assert.ok(file("cert-chain.pem").startsWith(file("ca-cert.pem").trim().slice(0, 64)));
  });

  it("sidecar serves a bundle over a 0660 socket that verifies to the Vault root, and signs leaves", async () => {
    const run = await suite.start("sidecar");
    assert.equal(statSync(run.socketPath).mode & 0o777, 0o660);
    const b = await getBundle(run.client);
    assert.equal(b.generation, 1);
    assert.equal(b.privateKeyPem, "", "key export is off by default");
    assert.deepEqual(
      b.rootCertPem.map((p) => p.trim()),
      [vaultRootPem.trim()],
    );
    assert.match(opensslVerify(b.signingCertPem, b.rootCertPem.join("")), /OK/);

    const chain = await signCertificate(run.client, await workloadCsr(SLEEP_SPIFFE_ID), 3600);
    assert.equal(chain.length, 3, "leaf, intermediate, root");
    assert.match(opensslVerify(chain[0]!, chain[2]!, chain[1]), /OK/);
    assert.equal(chain[1], b.signingCertPem);

    // Refusals carry the right status and say which rule failed.
    await assert.rejects(
      signCertificate(run.client, await workloadCsr("spiffe://evil.example/ns/a/sa/b")),
      (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.PERMISSION_DENIED);
        assert.match(e.details, /trust domain/);
        return true;
      },
    );
    await assert.rejects(
      signCertificate(run.client, await workloadCsr(SLEEP_SPIFFE_ID, { ca: true })),
      (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.PERMISSION_DENIED);
        assert.match(e.details, /ca_requested/);
        return true;
      },
    );
    await assert.rejects(
      signCertificate(run.client, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"),
      (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.INVALID_ARGUMENT);
        return true;
      },
    );
    await run.stop();
  });

  it("/readyz, /metrics, SIGHUP rotation and the status command", async () => {
    const port = await freePort();
    const run = await suite.start("sidecar", [`--http-addr=127.0.0.1:${port}`]);
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
    assert.equal(ready.status, 200);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /istiod_vault_agent_intermediate_not_after_timestamp_seconds \d+/);
    assert.match(metrics, /istiod_vault_agent_vault_logins_total\{outcome="success"\} 1/);
    assert.match(metrics, /istiod_vault_agent_intermediate_rotations_total\{outcome="success",trigger="start"\} 1/);

    const before = await getBundle(run.client);
    run.process.signal("SIGHUP");
    await waitUntil(
      "rotation after SIGHUP",
      async () => (await getBundle(run.client)).generation === before.generation + 1,
      {
        timeoutMs: 15_000,
      },
    );
    const after = await getBundle(run.client);
    assert.notEqual(publicKeyId(after.signingCertPem), publicKeyId(before.signingCertPem));

    const status = execFileSync(
      nodeBinary(),
      [join(repoRoot(), "dist/src/main.js"), "status", `--socket=${run.socketPath}`],
      {
        encoding: "utf8",
      },
    );
    assert.match(status, new RegExp(`generation: ${after.generation}`));
    assert.match(status, new RegExp(`serial:\\s+${after.serialHex}`));
    assert.match(status, /\[1\] CN=istiod-vault-agent root CA/);
    await run.stop();
  });

  it("/readyz is 503 until a bundle is held (Vault frozen at start) and once it expires, 200 otherwise; /healthz is 200 throughout", async () => {
    const port = await freePort();
    const probe = async (path: "/readyz" | "/healthz") => (await fetch(`http://127.0.0.1:${port}${path}`)).status;
    suite.env.vault.process.signal("SIGSTOP");
    let run: AgentRun;
    try {
      run = await suite.start(
        "sidecar",
        [`--http-addr=127.0.0.1:${port}`, "--ttl=20s", "--grace-ratio=0.5", "--unready-before-expiry=2s"],
        { waitForBundle: false },
      );
      await waitUntil("the health port listens", async () => (await probe("/healthz")) === 200, {
        timeoutMs: 30_000,
        process: run.process,
      });
      assert.equal(await probe("/readyz"), 503, "no bundle yet: Vault is unreachable");
      // The socket is bound right after the health port; asking before it exists would test the connect, not the agent.
      await waitUntil("the socket exists", () => Promise.resolve(existsSync(run.socketPath)), { timeoutMs: 10_000 });
      await assert.rejects(getBundle(run.client, 5_000), /no valid intermediate is held yet/, "nothing to serve yet");
    } finally {
      suite.env.vault.process.signal("SIGCONT");
    }
    await waitUntil("ready once Vault answers", async () => (await probe("/readyz")) === 200, { timeoutMs: 40_000 });
    const held = await getBundle(run.client);
    assert.equal(await probe("/healthz"), 200);

    // Vault freezes again and stays frozen past the intermediate's expiry (less the 2 s margin): not ready, alive.
    suite.env.vault.process.signal("SIGSTOP");
    try {
      await waitUntil("unready before the held intermediate expires", async () => (await probe("/readyz")) === 503, {
        timeoutMs: 30_000,
        intervalMs: 250,
      });
      assert.ok(Date.now() >= held.notAfterUnix * 1000 - 2_000 - 1_000, "not before the readiness margin");
      assert.equal(await probe("/healthz"), 200, "the process is alive and says so");
    } finally {
      suite.env.vault.process.signal("SIGCONT");
    }
    await waitUntil("ready again after renewal", async () => (await probe("/readyz")) === 200, { timeoutMs: 40_000 });
    assert.ok((await getBundle(run.client)).generation > held.generation);
    await run.stop();
  });

  it("without --cacerts-dir the key never leaves: none from Get/Watch/Rotate, no PEM of it in memory, no key file", async () => {
    const run = await suite.start("sidecar", ["--rotate-min-interval=0s"], { cacerts: false });
    const watched = watchBundles(run.client, 2, 30_000);
    const first = await getBundle(run.client);
    const rotated = await rotate(run.client);
    for (const b of [first, rotated, ...(await watched)])
      assert.equal(b.privateKeyPem, "", `generation ${b.generation}`);
    // Nor does the process ever hold it in an exportable form: its memory, read from outside, has no PEM key.
    assert.equal(pemPrivateKeysInMemory(run.process.pid!), 0, "no PEM private key in the agent's memory");
    // The same checks do see the key when export is asked for: the empty answers above are a refusal, not a gap.
    const exporting = await suite.start("sidecar", ["--key-export"], { cacerts: false });
    assert.match((await getBundle(exporting.client)).privateKeyPem, /BEGIN PRIVATE KEY/);
    assert.ok(pemPrivateKeysInMemory(exporting.process.pid!) >= 1, "with --key-export the PEM key is in memory");
    await exporting.stop();
    await run.stop();
    const files = readdirSync(run.dir, { recursive: true, encoding: "utf8" });
    assert.ok(!files.some((f) => f.startsWith("cacerts")), "no cacerts directory was created");
    for (const f of files) {
      const p = join(run.dir, f);
      if (statSync(p).isFile()) assert.doesNotMatch(readFileSync(p, "latin1"), /PRIVATE KEY/, `${f} holds no key`);
    }
  });

  it("the opt-in Gloo flow: Vault generates the key at csrPath, the root mount signs it, the key is held in memory", async () => {
    await setupVault(suite.env.vault.client, suite.env.vault.rootToken, {
      ...suite.t.setup,
      role: { ...suite.t.setup.role, name: "istiod-agent-gloo" },
      policyName: "istiod-agent-gloo",
      csrPath: "pki_int/intermediate/generate/exported",
    });
    const keysBefore = await pkiKeyCount("pki_int");
    const auditFrom = suite.env.vaultAuditOffset();
    const run = await suite.start("sidecar", [
      "--auth-role=istiod-agent-gloo",
      "--csr-path=pki_int/intermediate/generate/exported",
      "--rotate-min-interval=0s", // three rotations back to back below
    ]);
    const b = await getBundle(run.client);
    assert.match(opensslVerify(b.signingCertPem, vaultRootPem), /OK/);
    const chain = await signCertificate(run.client, await workloadCsr(SLEEP_SPIFFE_ID), 600);
    assert.match(opensslVerify(chain[0]!, chain.at(-1)!, chain.slice(1, -1).join("")), /OK/);
    // Vault stores every key generated at csrPath; the agent deletes its copy after import, so across rotations the
    // number of keys in the mount stays where it was once the first key was deleted.
    const keysAfterFirst = await pkiKeyCount("pki_int");
    for (let i = 0; i < 3; i++) await rotate(run.client);
    assert.equal(await pkiKeyCount("pki_int"), keysAfterFirst, "LIST pki_int/keys: no key accumulates per rotation");
    assert.equal(keysAfterFirst, keysBefore, "the first generated key was deleted as well");
    assert.match(run.log(), /deleted Vault's stored copy of the generated intermediate key/);

    // Vault's audit log, seen from outside the agent: every CSR sent to the sign path is one Vault generated at
    // csrPath (the log HMACs both with the same key, so equal hashes mean equal CSRs), and every generated key_id was
    // then deleted from the mount.
    const audit = suite.env.vaultAudit(auditFrom);
    const generated = audit.filter(
      (e) => e.type === "response" && e.request?.path === "pki_int/intermediate/generate/exported" && !e.error,
    );
    const signed = audit.filter((e) => e.type === "request" && e.request?.path === "pki/root/sign-intermediate");
    assert.equal(generated.length, 4, "one key generated by Vault per intermediate (start + 3 rotations)");
    assert.equal(signed.length, 4);
    assert.deepEqual(
      signed.map((e) => e.request?.data?.csr),
      generated.map((e) => e.response?.data?.csr),
      "each CSR signed is the one Vault generated with the key",
    );
    const deletedIds = audit
      .filter((e) => e.type === "request" && e.request?.operation === "delete")
      .map((e) => /^pki_int\/key\/(.+)$/.exec(e.request?.path ?? "")?.[1])
      .filter((id): id is string => id !== undefined);
    assert.deepEqual(
      await Promise.all(deletedIds.map((id) => suite.env.vaultAuditHash(decodeURIComponent(id)))),
      generated.map((e) => e.response?.data?.key_id),
      "each generated key deleted from pki_int",
    );
    await run.stop();
  });

  it("revokes its own Vault token on SIGTERM: a lookup of that token fails afterwards", async () => {
    const before = new Set(await tokenAccessors());
    const run = await suite.start("sidecar");
    await getBundle(run.client);
    const mine: string[] = [];
    for (const a of await tokenAccessors()) {
      if (before.has(a)) continue;
      const info = await lookupAccessor(a);
      if (info?.path === "auth/kubernetes/login" && info.meta?.role === "istiod-agent") mine.push(a);
    }
    assert.equal(mine.length, 1, "exactly one new agent token while it runs");
    await run.stop();
    assert.equal(run.process.exitCode, 0);
    assert.equal(await lookupAccessor(mine[0]!), undefined, "the agent's token no longer exists after SIGTERM");
    assert.match(run.log(), /revoked its Vault token at shutdown/);
  });

  it("with a short TTL, WatchSigningBundle delivers rotations, each with a new key", async () => {
    const run = await suite.start("sidecar", ["--ttl=12s", "--grace-ratio=0.5"]);
    const bundles = await watchBundles(run.client, 3, 60_000);
    const gens = bundles.map((b) => b.generation);
    assert.deepEqual(gens, [gens[0]!, gens[0]! + 1, gens[0]! + 2]);
    const keys = new Set(bundles.map((b) => publicKeyId(b.signingCertPem)));
    assert.equal(keys.size, 3, "every rotation makes a new key");
    // Short-lived by design: verify each at the middle of its own validity.
    for (const b of bundles) {
      assert.match(opensslVerify(b.signingCertPem, vaultRootPem, "", (b.notBeforeUnix + b.notAfterUnix) / 2), /OK/);
    }
    await run.stop();
  });

  it("after its Vault token is revoked, the agent logs in again and the next rotation succeeds", async () => {
    const run = await suite.start("sidecar");
    const before = await getBundle(run.client);
    await suite.env.vault.client.write("sys/leases/revoke-prefix/auth/kubernetes/login", suite.env.vault.rootToken, {});
    const after = await rotate(run.client);
    assert.equal(after.generation, before.generation + 1);
    assert.notEqual(publicKeyId(after.signingCertPem), publicKeyId(before.signingCertPem));
    assert.match(run.log(), /Vault answered 403; logging in again/);
    await run.stop();
  });

  it("while OpenBao hangs (SIGSTOP) across a renewal point, signing keeps working; it renews after SIGCONT", async () => {
    const run = await suite.start("sidecar", ["--ttl=16s", "--grace-ratio=0.5"]);
    const first = await getBundle(run.client);
    suite.env.vault.process.signal("SIGSTOP");
    try {
      // The renewal point (~8 s in) passes while Vault is frozen: the current intermediate keeps signing.
      await new Promise((r) => setTimeout(r, 10_000));
      const chain = await signCertificate(run.client, await workloadCsr(SLEEP_SPIFFE_ID), 60);
      assert.equal(chain[1], first.signingCertPem, "signed by the intermediate held before the outage");
      assert.equal((await getBundle(run.client)).generation, first.generation);
    } finally {
      suite.env.vault.process.signal("SIGCONT");
    }
    // Max backoff is 2 s and HTTP timeouts 15 s: a new bundle must follow well within 30 s.
    await waitUntil("renewal after SIGCONT", async () => (await getBundle(run.client)).generation > first.generation, {
      timeoutMs: 30_000,
    });
    await run.stop();
  });

  it("logs of the runs contain no token, JWT or private key, and no file outside cacerts holds key material", () => {
    const secrets = [suite.env.vault.rootToken];
    for (const r of suite.runs) {
      secrets.push(readFileSync(r.tokenPath, "utf8").trim());
      const log = r.log();
      assert.ok(log.length > 0, "the agent logged something");
      for (const s of secrets) assert.ok(!log.includes(s), `${r.logPath} contains a secret`);
      assert.doesNotMatch(log, /eyJ[\w-]{10,}\.[\w-]{10,}\./, "no JWT");
      assert.doesNotMatch(log, /\b(hvs|s)\.[A-Za-z0-9]{20,}/, "no Vault token");
      assert.doesNotMatch(log, /PRIVATE KEY/, "no private key");
    }
    // Key material: every ca-key.pem the agent wrote; none of their bodies may appear outside a cacerts directory.
    const keyBodies = suite.runs
      .map((r) => {
        try {
          return readFileSync(join(r.cacertsDir, "ca-key.pem"), "utf8")
            .replace(/-----[^-]+-----|\s/g, "")
            .slice(0, 60);
        } catch {
          return "";
        }
      })
      .filter(Boolean);
    assert.ok(keyBodies.length >= 1, "at least one run wrote a key to cacerts");
    const offenders: string[] = [];
    const scan = (dir: string, depth: number) => {
      if (depth > 6) return;
      let entries;
      try {
        entries = readdirSync(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        const p = join(dir, e.name);
        if (e.isDirectory()) {
          if (!p.includes(`${"/"}cacerts`) && e.name !== "node_modules") scan(p, depth + 1);
        } else if (e.isFile()) {
          try {
            const st = statSync(p);
            if (st.size > 4 * 1024 * 1024) continue;
            const text = readFileSync(p, "latin1").replace(/\s/g, "");
            if (keyBodies.some((k) => text.includes(k))) offenders.push(p);
          } catch {
            /* unreadable or vanished */
          }
        }
      }
    };
    scan(tmpdir(), 0);
    assert.deepEqual(offenders, [], "key material found outside cacerts directories");
  });
});
