// The proof with upstream istiod: the agent's init fills the cacerts directory, istiod starts on it, the agent's
// sidecar keeps it current; istiod's own CreateCertificate signs workload leaves with the Vault-derived
// intermediate, and follows a rotation without a restart.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IstioCertificateServiceClient } from "../../src/gen/istio/v1/auth/ca.js";
import { x509 } from "../../src/crypto/x509.js";
import { startAgentTestEnv, type AgentTestEnv } from "../env/fixtures.js";
import { getBundle, startAgent, type AgentRun } from "../env/agent-process.js";
import { opensslVerify, publicKeyId } from "../env/crypto-check.js";
import { istiodCaClient, requestWorkloadCertificate, startIstiod, type IstiodRun } from "../env/istiod.js";
import { waitUntil } from "../env/process.js";

const WORKLOAD = "spiffe://cluster.local/ns/default/sa/sleep";

describe("upstream istiod signs with the Vault-derived intermediate", () => {
  let t: AgentTestEnv;
  let dir: string;
  let istiod: IstiodRun;
  let sidecar: AgentRun;
  let client: IstioCertificateServiceClient;

  const cacerts = (name: string) => readFileSync(join(dir, "cacerts", name), "utf8");

  before(async () => {
    t = await startAgentTestEnv();
    await t.env.createServiceAccount("default", "sleep");
    dir = mkdtempSync(join(tmpdir(), "iva-istiod-"));
    // The pod's order: the init container fills cacerts, then istiod starts, then the sidecar keeps it current.
    const init = await startAgent(t.env, "init", ["--ttl=40s", "--grace-ratio=0.5"], { dir });
    assert.equal(await init.process.waitExit(), 0, init.log().slice(-2000));
    istiod = await startIstiod(t.env, join(dir, "cacerts"));
    sidecar = await startAgent(t.env, "sidecar", ["--ttl=40s", "--grace-ratio=0.5"], { dir });
    client = istiodCaClient(istiod, cacerts("root-cert.pem"));
  });
  after(async () => {
    client?.close();
    await sidecar?.stop();
    await istiod?.process.stop();
    await t?.env.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const createCertificate = () =>
    requestWorkloadCertificate(t.env, client, { namespace: "default", serviceAccount: "sleep" });

  /** Polls istiod until it signs with the intermediate the agent serves now (istiod reloads ~100 ms after a write). */
  const leafFromCurrentIntermediate = async () => {
    let chain: string[] = [];
    await waitUntil(
      "istiod signs with the agent's current intermediate",
      async () => {
        const current = (await getBundle(sidecar.client)).signingCertPem;
        chain = await createCertificate();
        return publicKeyId(chain[1]!) === publicKeyId(current);
      },
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    return chain;
  };

  it("CreateCertificate answers leaf → our intermediate → Vault root with the workload's SPIFFE ID", async () => {
    const chain = await leafFromCurrentIntermediate();
    const vaultRoot = (await t.env.vault.client.read<{ certificate: string }>("pki/cert/ca", undefined)).data
      .certificate;
    assert.ok(chain.length >= 3, `chain of ${chain.length}`);
    assert.equal(chain.at(-1)!.trim(), vaultRoot.trim(), "root last, and it is Vault's");
    const leaf = new x509.X509Certificate(chain[0]!);
    const uris = leaf
      .getExtension(x509.SubjectAlternativeNameExtension)
      ?.names.items.filter((n) => n.type === "url")
      .map((n) => n.value);
    assert.deepEqual(uris, [WORKLOAD]);
    assert.match(opensslVerify(chain[0]!, vaultRoot, chain.slice(1, -1).join("")), /OK/);
  });

  it("after a rotation istiod signs with the new intermediate, without a restart; old leaves still verify", async () => {
    const pidBefore = istiod.process.pid;
    const first = await leafFromCurrentIntermediate();
    const firstGen = (await getBundle(sidecar.client)).generation;
    await waitUntil("the agent rotates", async () => (await getBundle(sidecar.client)).generation > firstGen, {
      timeoutMs: 40_000,
    });
    const second = await leafFromCurrentIntermediate();
    assert.notEqual(publicKeyId(first[1]!), publicKeyId(second[1]!), "two different intermediates signed leaves");
    assert.equal(istiod.process.pid, pidBefore);
    assert.ok(istiod.process.alive, "istiod was not restarted");
    const root = cacerts("root-cert.pem");
    for (const chain of [first, second]) {
      // Short-lived intermediates: verify at a moment when every certificate in the chain was valid.
      const certs = chain.map((p) => new x509.X509Certificate(p));
      const from = Math.max(...certs.map((c) => c.notBefore.getTime()));
      const until = Math.min(...certs.map((c) => c.notAfter.getTime()));
      assert.ok(from < until, "the chain has a common validity window");
      const mid = (from + until) / 2000;
      assert.match(opensslVerify(chain[0]!, root, chain.slice(1, -1).join(""), mid), /OK/);
    }
  });

  it("istiod never picked up a half-written bundle (no CA verification failure in its log)", () => {
    const log = readFileSync(istiod.logPath, "utf8");
    assert.match(log, /Added cacerts files watcher at /, "istiod took the plugged-in CA and watches the directory");
    const reloads = log.split("\n").filter((l) => l.includes("Update Istiod cacerts")).length;
    assert.ok(reloads >= 2, `istiod reloaded the directory on each write (saw ${reloads})`);
    // istiod logs a rejected bundle (incomplete, key mismatch, chain) at error or warn level and keeps the old CA.
    const failures = log
      .split("\n")
      .filter((l) => /\t(error|warn)\t/.test(l) && /cert|ca |cacerts|root|key|verif/i.test(l));
    assert.deepEqual(failures, []);
  });
});
