// One pod start, one Vault signing: `init` then `sidecar` on the same cacerts directory (the overlay's order), counted
// on Vault's side from OpenBao's audit log. The sidecar adopts the init container's intermediate only when it is valid
// and was obtained with the same settings; otherwise it signs a new one, as before, and says why.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate, generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { agentSuite, getBundle, signCertificate, type AgentRun } from "../env/agent-process.js";
import { opensslVerify, workloadCsr, SLEEP_SPIFFE_ID } from "../env/crypto-check.js";
import { waitUntil } from "../env/process.js";

const SIGN_PATH = "pki/root/sign-intermediate";

describe("the sidecar adopts the init container's intermediate (real OpenBao, audit-counted)", () => {
  const suite = agentSuite({}, { vaultAudit: true });

  /** sign-intermediate requests Vault received since `from` (an audit-log offset). */
  const signCalls = (from: number) =>
    suite.env.vaultAudit(from).filter((e) => e.type === "request" && e.request?.path === SIGN_PATH).length;
  const logins = (from: number) =>
    suite.env.vaultAudit(from).filter((e) => e.type === "response" && e.request?.path === "auth/kubernetes/login")
      .length;
  const serialOf = (pem: string) => new X509Certificate(pem).serialNumber.toLowerCase();
  const file = (run: AgentRun, name: string) => readFileSync(join(run.cacertsDir, name), "utf8");

  /** init in a new pod directory, run to completion; returns it and the serial it published. */
  async function initPod(args: string[] = []): Promise<{ init: AgentRun; dir: string; serial: string }> {
    const dir = mkdtempSync(join(tmpdir(), "iva-adopt-"));
    const init = await suite.start("init", args, { dir });
    assert.equal(await init.process.waitExit(), 0, init.log().slice(-2000));
    return { init, dir, serial: serialOf(file(init, "ca-cert.pem")) };
  }

  it("init then sidecar: exactly one sign-intermediate call, and the sidecar serves the init's serial", async () => {
    const from = suite.env.vaultAuditOffset();
    const { init, dir, serial } = await initPod();
    const published = readlinkSync(join(init.cacertsDir, "..data"));
    const sidecar = await suite.start("sidecar", [], { dir });
    const b = await getBundle(sidecar.client);

    assert.equal(signCalls(from), 1, "one pod start, one sign-intermediate call on Vault's side");
    assert.equal(serialOf(b.signingCertPem), serial, "the sidecar serves the intermediate init wrote");
    assert.equal(b.generation, 1);
    assert.match(sidecar.log(), /adopted the intermediate an earlier agent of this pod published/);
    assert.equal(readlinkSync(join(init.cacertsDir, "..data")), published, "the files were not rewritten");
    // The adopted key signs: a workload leaf chains through the init's intermediate to Vault's root.
    const chain = await signCertificate(sidecar.client, await workloadCsr(SLEEP_SPIFFE_ID), 3600);
    assert.equal(serialOf(chain[1]!), serial);
    assert.match(opensslVerify(chain[0]!, file(init, "root-cert.pem"), chain[1]), /OK/);
    // The sidecar still logs in at start (for its renewals): init's login and its own.
    await waitUntil("the sidecar's Vault login", () => Promise.resolve(logins(from) === 2), { timeoutMs: 30_000 });
    await sidecar.stop();
  });

  it("an adopted intermediate is renewed on schedule like a signed one, and the cacerts files follow", async () => {
    const from = suite.env.vaultAuditOffset();
    const { init, dir, serial } = await initPod(["--ttl=30s"]);
    const sidecar = await suite.start("sidecar", ["--ttl=30s"], { dir });
    assert.equal(serialOf((await getBundle(sidecar.client)).signingCertPem), serial);
    assert.equal(signCalls(from), 1);
    // Renewal at about 2/3 of the 30 s lifetime measured from init's issue time, not from the sidecar's start.
    await waitUntil("the scheduled renewal", async () => (await getBundle(sidecar.client)).generation === 2, {
      timeoutMs: 60_000,
      intervalMs: 500,
    });
    const renewed = await getBundle(sidecar.client);
    assert.notEqual(serialOf(renewed.signingCertPem), serial);
    assert.equal(signCalls(from), 2, "the renewal is the second signing");
    await waitUntil(
      "cacerts follows the renewal",
      () => Promise.resolve(serialOf(file(init, "ca-cert.pem")) === serialOf(renewed.signingCertPem)),
      { timeoutMs: 10_000 },
    );
    assert.match(sidecar.log(), /"trigger":"schedule"/);
    await sidecar.stop();
  });

  /** Runs the sidecar on `dir` and checks that it signed a new intermediate (counted) and logged why not adopted. */
  async function expectNewSigning(
    from: number,
    dir: string,
    initSerial: string,
    sidecarArgs: string[],
    why: RegExp,
  ): Promise<void> {
    const sidecar = await suite.start("sidecar", sidecarArgs, { dir });
    const b = await getBundle(sidecar.client);
    assert.notEqual(serialOf(b.signingCertPem), initSerial, "a new intermediate, not the init's");
    assert.equal(signCalls(from), 2, "init's signing and the sidecar's");
    assert.match(sidecar.log(), /not adopting the intermediate in the cacerts directory/);
    assert.match(sidecar.log(), why);
    await waitUntil(
      "the sidecar publishes its own intermediate",
      () =>
        Promise.resolve(
          serialOf(readFileSync(join(dir, "cacerts/ca-cert.pem"), "utf8")) === serialOf(b.signingCertPem),
        ),
      { timeoutMs: 10_000 },
    );
    await sidecar.stop();
  }

  it("a different TTL: not adopted, a new intermediate is signed", async () => {
    const from = suite.env.vaultAuditOffset();
    const { dir, serial } = await initPod();
    await expectNewSigning(from, dir, serial, ["--ttl=48h"], /ttlSeconds: 2592000 → 172800/);
  });

  it("a different key algorithm: not adopted, a new intermediate is signed", async () => {
    const from = suite.env.vaultAuditOffset();
    const { dir, serial } = await initPod(["--key-algorithm=ECDSA_P384"]);
    await expectNewSigning(from, dir, serial, [], /keyAlgorithm: ECDSA_P384 → ECDSA_P256/);
  });

  it("a key file that does not match the certificate: not adopted, a new intermediate is signed", async () => {
    const from = suite.env.vaultAuditOffset();
    const { init, dir, serial } = await initPod();
    const other = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({
      type: "pkcs8",
      format: "pem",
    });
    // Written through the link into the current generation: same file, owner and mode, other key.
    writeFileSync(join(init.cacertsDir, "ca-key.pem"), other);
    await expectNewSigning(from, dir, serial, [], /does not match the certificate/);
  });

  it("an intermediate already inside its renewal window: not adopted, a new one is signed", async () => {
    const from = suite.env.vaultAuditOffset();
    const { init, dir, serial } = await initPod(["--ttl=60s"]);
    // With --grace-ratio=0.9 the sidecar renews once 10% (±5%) of the 60 s lifetime has passed: by 9 s after issue.
    const issuedAt = Date.parse(
      (JSON.parse(file(init, "..data/istiod-vault-agent-origin.json")) as { issuedAt: string }).issuedAt,
    );
    await waitUntil("the renewal point has passed", () => Promise.resolve(Date.now() > issuedAt + 10_000), {
      timeoutMs: 20_000,
      intervalMs: 250,
    });
    await expectNewSigning(from, dir, serial, ["--ttl=60s", "--grace-ratio=0.9"], /due for renewal/);
  });
});
