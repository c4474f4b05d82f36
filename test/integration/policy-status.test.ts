// The RootTrustPolicy's status tells the truth against the real apiserver and OpenBao: a renewal failure turns Ready
// False (RenewalFailed) with a Warning Event and recovery turns it True with a new lastTransitionTime, while a write
// with no status change keeps it; with two replicas only the holder of the status Lease writes, and killing it hands
// the writing over to the other.
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { agentSuite, getBundle, startAgent, type AgentRun } from "../env/agent-process.js";
import { ISTIO_NS } from "../env/fixtures.js";
import { repoRoot } from "../env/harness.js";
import { POLICY_BASE, policyReader, rootTrustPolicy, type Condition } from "../env/policy-objects.js";
import { waitUntil } from "../env/process.js";

const BASE = POLICY_BASE;
/** The Vault policy setupVault() writes for the agent's role. */
const AGENT_VAULT_POLICY = "istiod-agent";
const LEASE = `/apis/coordination.k8s.io/v1/namespaces/${ISTIO_NS}/leases/istiod-vault-agent-istiod`;

describe("RootTrustPolicy status: conditions, Events, one writer", () => {
  const suite = agentSuite();
  let a: AgentRun;
  let b: AgentRun | undefined;

  const { status, ready, readyIs, events } = policyReader(() => suite.env.kube.admin);
  const replica = (name: string) =>
    suite.start(
      "sidecar",
      [
        "--policy-name=istiod",
        `--policy-namespace=${ISTIO_NS}`,
        `--kubeconfig=${suite.env.kube.kubeconfigPath}`,
        // Short, so the hand-over below happens within seconds; the elector's own timing is unit-tested.
        "--status-lease-duration=3s",
      ],
      { vaultFlags: false, env: { ...process.env, POD_NAME: name } },
    );
  const aclPath = `sys/policies/acl/${AGENT_VAULT_POLICY}`;

  before(async () => {
    await suite.env.installCrd(join(repoRoot(), "manifests/crd/roottrustpolicies.yaml"));
    await suite.env.kube.admin.create(
      BASE,
      rootTrustPolicy(
        "istiod",
        {
          server: suite.env.vault.url,
          caBundle: readFileSync(suite.env.vault.caFile, "utf8"),
          caPath: "pki/root/sign-intermediate",
          kubernetesAuth: { role: "istiod-agent" },
        },
        { intermediateCertOptions: { ttl: "1h" } },
      ),
    );
    a = await replica("istiod-a");
    await waitUntil(
      "istiod-a writes the status, Ready",
      async () => (await status()).writer === "istiod-a" && (await ready())?.status === "True",
      { timeoutMs: 30_000 },
    );
  });

  it("a renewal failure turns Ready False (RenewalFailed) with a Warning Event; recovery turns it True", async () => {
    const root = suite.env.vault.rootToken;
    const vault = suite.env.vault.client;
    const granted = (await vault.read<{ policy: string }>(aclPath, root)).data.policy;
    assert.match(granted, /pki\/root\/sign-intermediate/);
    const served = (await ready())!;
    let failed: Condition;
    try {
      // The agent's policy loses its sign grant; its token still logs in and renews, but signing is denied.
      await vault.write(aclPath, root, { policy: 'path "pki/ca/pem" {\n  capabilities = ["read"]\n}\n' });
      a.process.signal("SIGHUP");
      await waitUntil("Ready=False RenewalFailed", () => readyIs("False", "RenewalFailed"), { timeoutMs: 20_000 });
      failed = (await ready())!;
      assert.match(failed.message, /permission denied/);
      assert.notEqual(failed.lastTransitionTime, undefined);
      assert.ok(failed.lastTransitionTime >= served.lastTransitionTime);
      const rotationFailed = async () =>
        (await events()).filter((e) => e.type === "Warning" && e.reason === "RotationFailed");
      // The retries (backoff from 200 ms) fail the same way: one Event counts them instead of one Event each.
      await waitUntil(
        "a Warning RotationFailed Event counting 3 failures",
        async () => (await rotationFailed()).some((e) => (e.count ?? 1) >= 3),
        { timeoutMs: 20_000 },
      );
      const warnings = await rotationFailed();
      assert.ok(warnings.every((e) => e.reportingInstance === "istiod-a" && e.source?.host === "istiod-a"));
      const messages = warnings.map((e) => e.message);
      assert.equal(new Set(messages).size, messages.length, "no two Events with the same message");

      // lastTransitionTime has whole seconds: let one pass so the recovery's time differs from the failure's.
      await new Promise((r) => setTimeout(r, 1_100));
    } finally {
      // Restored even when an assertion above fails, so the next test starts from a working Vault.
      await vault.write(aclPath, root, { policy: granted });
    }
    const beforeRecovery = await getBundle(a.client);
    a.process.signal("SIGHUP");
    await waitUntil("Ready=True after recovery", () => readyIs("True", "IntermediateServed"), { timeoutMs: 30_000 });
    const recovered = (await ready())!;
    assert.ok(recovered.lastTransitionTime > failed.lastTransitionTime, "a new lastTransitionTime");
    const serving = await getBundle(a.client);
    assert.notEqual(serving.serialHex, beforeRecovery.serialHex);
    assert.ok(
      (await events()).some(
        (e) => e.type === "Normal" && e.reason === "IntermediateRotated" && e.message.includes(serving.serialHex),
      ),
      "a Normal IntermediateRotated Event names the new serial",
    );

    // Another rotation: the status is written again (new serial) but Ready stays True, so the time stays.
    await new Promise((r) => setTimeout(r, 1_100));
    a.process.signal("SIGHUP");
    await waitUntil(
      "status shows the next intermediate",
      async () => {
        const s = await status();
        return s.intermediateSerial !== undefined && s.intermediateSerial !== serving.serialHex;
      },
      { timeoutMs: 20_000 },
    );
    assert.equal((await ready())!.lastTransitionTime, recovered.lastTransitionTime);
  });

  it("two replicas: only the Lease holder writes the status; killing it hands over to the other", async () => {
    b = await replica("istiod-b");
    const bSerials = new Set<string>([(await getBundle(b.client)).serialHex]);
    // Both rotate a few times; every status seen is istiod-a's, never istiod-b's.
    for (let i = 0; i < 12; i++) {
      if (i % 4 === 0) {
        a.process.signal("SIGHUP");
        b.process.signal("SIGHUP");
      }
      await new Promise((r) => setTimeout(r, 500));
      bSerials.add((await getBundle(b.client)).serialHex);
      const s = await status();
      assert.equal(s.writer, "istiod-a", "the writer never flips while both run");
      assert.ok(!bSerials.has(s.intermediateSerial ?? ""), "the serial in the status is never istiod-b's");
    }
    const aSerial = (await getBundle(a.client)).serialHex;
    await waitUntil("the status shows istiod-a's serial", async () => (await status()).intermediateSerial === aSerial, {
      timeoutMs: 20_000,
    });
    const lease = await suite.env.kube.admin.get<{ spec: { holderIdentity: string } }>(LEASE);
    assert.equal(lease.spec.holderIdentity, "istiod-a");

    // The holder dies without releasing the Lease: istiod-b takes over once it has seen no renewal for a duration.
    a.process.signal("SIGKILL");
    const bSerial = (await getBundle(b.client)).serialHex;
    await waitUntil(
      "istiod-b writes the status with its own serial",
      async () => {
        const s = await status();
        return s.writer === "istiod-b" && s.intermediateSerial === bSerial;
      },
      { timeoutMs: 60_000 },
    );
    assert.equal(
      (await suite.env.kube.admin.get<{ spec: { holderIdentity: string } }>(LEASE)).spec.holderIdentity,
      "istiod-b",
    );
    assert.equal((await ready())?.status, "True");
  });

  it("a writer that cannot obtain its first intermediate says so (NoIntermediate), then recovers", async () => {
    const root = suite.env.vault.rootToken;
    const vault = suite.env.vault.client;
    const granted = (await vault.read<{ policy: string }>(aclPath, root)).data.policy;
    // A graceful stop releases the Lease: the next replica takes it without waiting a duration.
    await b!.stop();
    try {
      await vault.write(aclPath, root, { policy: 'path "pki/ca/pem" {\n  capabilities = ["read"]\n}\n' });
      const c = suite.track(
        await startAgent(
          suite.env,
          "sidecar",
          [
            "--policy-name=istiod",
            `--policy-namespace=${ISTIO_NS}`,
            `--kubeconfig=${suite.env.kube.kubeconfigPath}`,
            "--status-lease-duration=3s",
          ],
          { vaultFlags: false, waitForBundle: false, env: { ...process.env, POD_NAME: "istiod-c" } },
        ),
      );
      // Written when istiod-c takes the Lease ("no intermediate yet"), then after each failed attempt.
      await waitUntil(
        "istiod-c writes Ready=False NoIntermediate with the failure",
        async () => {
          const cond = await ready();
          return (
            (await status()).writer === "istiod-c" &&
            cond?.status === "False" &&
            cond.reason === "NoIntermediate" &&
            /permission denied/.test(cond.message)
          );
        },
        { timeoutMs: 30_000, process: c.process },
      );
    } finally {
      await vault.write(aclPath, root, { policy: granted });
    }
    await waitUntil("istiod-c recovers: Ready=True", async () => (await ready())?.status === "True", {
      timeoutMs: 30_000,
    });
  });
});
