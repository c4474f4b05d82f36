// The proof with upstream istiod: the agent's init fills the cacerts directory, istiod starts on it, the agent's
// sidecar keeps it current; istiod's own CreateCertificate signs workload leaves with the Vault-derived
// intermediate, and follows a rotation without a restart.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { x509 } from "../../src/crypto/x509.js";
import { startAgentTestEnv, type AgentTestEnv } from "../env/fixtures.js";
import { getBundle } from "../env/agent-process.js";
import { opensslVerify, publicKeyId, SLEEP_SPIFFE_ID, subjectAltNames } from "../env/crypto-check.js";
import { startIstiodOnAgentCacerts, type IstiodOnAgentCacerts } from "../env/istiod.js";
import { waitUntil } from "../env/process.js";

const AGENT_ARGS = ["--ttl=40s", "--grace-ratio=0.5"];

describe("upstream istiod signs with the Vault-derived intermediate", () => {
  let t: AgentTestEnv;
  let stack: IstiodOnAgentCacerts;

  before(async () => {
    t = await startAgentTestEnv();
    stack = await startIstiodOnAgentCacerts(t, { agentArgs: AGENT_ARGS });
    await stack.startSidecar(AGENT_ARGS);
  });
  after(async () => {
    await stack?.stop();
    await t?.env.stop();
  });

  it("CreateCertificate answers leaf → our intermediate → Vault root with the workload's SPIFFE ID", async () => {
    const chain = await stack.leafFromCurrentIntermediate();
    const vaultRoot = (await t.env.vault.client.read<{ certificate: string }>("pki/cert/ca", undefined)).data
      .certificate;
    assert.ok(chain.length >= 3, `chain of ${chain.length}`);
    assert.equal(chain.at(-1)!.trim(), vaultRoot.trim(), "root last, and it is Vault's");
    assert.deepEqual(subjectAltNames(chain[0]!), [SLEEP_SPIFFE_ID], "the workload's SPIFFE ID, nothing else");
    assert.match(opensslVerify(chain[0]!, vaultRoot, chain.slice(1, -1).join("")), /OK/);
  });

  it("after a rotation istiod signs with the new intermediate, without a restart; old leaves still verify", async () => {
    const sidecar = stack.sidecar!;
    const pidBefore = stack.istiod.process.pid;
    const first = await stack.leafFromCurrentIntermediate();
    const firstGen = (await getBundle(sidecar.client)).generation;
    await waitUntil("the agent rotates", async () => (await getBundle(sidecar.client)).generation > firstGen, {
      timeoutMs: 40_000,
    });
    const second = await stack.leafFromCurrentIntermediate();
    assert.notEqual(publicKeyId(first[1]!), publicKeyId(second[1]!), "two different intermediates signed leaves");
    assert.equal(stack.istiod.process.pid, pidBefore);
    assert.ok(stack.istiod.process.alive, "istiod was not restarted");
    const root = stack.cacerts("root-cert.pem");
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
    const log = readFileSync(stack.istiod.logPath, "utf8");
    assert.match(log, /Added cacerts files watcher at /, "istiod took the plugged-in CA and watches the directory");
    const reloads = log.split("\n").filter((l) => l.includes("Update Istiod cacerts")).length;
    // istiod started on init's files, which the sidecar adopted without rewriting them; every later write (a
    // rotation) is a reload.
    const writes = (stack.sidecar!.log().match(/wrote cacerts for istiod/g) ?? []).length;
    assert.ok(writes >= 1, "the sidecar wrote the rotated intermediate");
    assert.ok(
      reloads >= writes,
      `istiod reloaded the directory on each of the sidecar's ${writes} writes (saw ${reloads})`,
    );
    // istiod logs a rejected bundle (incomplete, key mismatch, chain) at error or warn level and keeps the old CA.
    const failures = log
      .split("\n")
      .filter((l) => /\t(error|warn)\t/.test(l) && /cert|ca |cacerts|root|key|verif/i.test(l));
    assert.deepEqual(failures, []);
  });
});
