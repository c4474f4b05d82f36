// RootTrustPolicy through the real apiserver and OpenBao: the CRD's schema refuses bad specs and drops the removed
// fields, the policy is authoritative (a shadowing flag is refused at start, and a policy edit that creates one is
// reported while the agent keeps serving), and a running sidecar reloads a changed policy: a new TTL, a new Vault role.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { readFileSync, rmSync } from "node:fs";
import { startAgentTestEnv, ISTIO_NS, type AgentTestEnv } from "../env/fixtures.js";
import { getBundle, startAgent, type AgentRun } from "../env/agent-process.js";
import { repoRoot } from "../env/harness.js";
import { POLICY_BASE, policyReader, rootTrustPolicy } from "../env/policy-objects.js";
import { waitUntil } from "../env/process.js";
import { HttpStatusError } from "../../src/net/http-json.js";

const BASE = POLICY_BASE;

describe("RootTrustPolicy: schema, authority over flags, live reload", () => {
  let t: AgentTestEnv;
  let run: AgentRun | undefined;
  const dirs: string[] = [];

  const policy = (name: string, ttl: string, extraSpec: Record<string, unknown> = {}) =>
    rootTrustPolicy(
      name,
      {
        server: t.env.vault.url,
        caBundle: readFileSync(t.env.vault.caFile, "utf8"),
        caPath: "pki/root/sign-intermediate",
        kubernetesAuth: { role: "istiod-agent" },
      },
      { intermediateCertOptions: { ttl } },
      extraSpec,
    );
  const { get, ready, readyIs, events } = policyReader(() => t.env.kube.admin);
  const patchSpec = (config: unknown) =>
    t.env.kube.admin.request(
      "PATCH",
      `${BASE}/istiod`,
      { spec: { config } },
      { contentType: "application/merge-patch+json" },
    );
  const policyArgs = [`--policy-name=istiod`, `--policy-namespace=${ISTIO_NS}`];

  before(async () => {
    t = await startAgentTestEnv();
    await t.env.installCrd(join(repoRoot(), "manifests/crd/roottrustpolicies.yaml"));
  });
  after(async () => {
    await run?.stop();
    if (run) dirs.push(run.dir);
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    await t?.env.stop();
  });

  it("the apiserver's schema refuses a bad spec with a readable message", async () => {
    const bad = policy("istiod", "1h");
    (bad.spec.config.intermediateCertOptions as Record<string, unknown>).keyAlgorithm = "DSA_1024";
    (bad.spec.config.intermediateCertOptions as Record<string, unknown>).ttl = "one hour";
    await assert.rejects(t.env.kube.admin.create(BASE, bad), (err: unknown) => {
      assert.ok(err instanceof HttpStatusError);
      assert.equal(err.status, 422);
      assert.match(err.message, /keyAlgorithm: Unsupported value: "DSA_1024"/);
      assert.match(err.message, /ttl: Invalid value: "one hour"/);
      return true;
    });
  });

  it("the removed spec.applyTo and spec.config.relay: refused by strict field validation (kubectl), else dropped", async () => {
    const old = policy("old-fields", "1h", { applyTo: { deployments: [{ name: "istiod" }] } });
    (old.spec.config as Record<string, unknown>).relay = { server: {} };
    await assert.rejects(t.env.kube.admin.create(`${BASE}?fieldValidation=Strict`, old), (err: unknown) => {
      assert.ok(err instanceof HttpStatusError);
      assert.match(err.message, /unknown field "spec\.applyTo"/);
      assert.match(err.message, /unknown field "spec\.config\.relay"/);
      return true;
    });
    // Without strict validation the structural schema prunes them: the agent never sees them from the apiserver (a
    // policy file given with --config that has them is refused by the agent, see the unit tests).
    await t.env.kube.admin.create(BASE, old);
    const stored = await get("old-fields");
    assert.equal(stored.spec.applyTo, undefined);
    assert.equal((stored.spec.config as Record<string, unknown>).relay, undefined);
    await t.env.kube.admin.request("DELETE", `${BASE}/old-fields`);
  });

  it("a flag that shadows a policy field is refused at start: exit 2 and a message naming both", async () => {
    await t.env.kube.admin.create(BASE, policy("istiod", "1h"));
    // The Vault flags the harness passes by default (--vault-addr, --vault-cacert) shadow server and caBundle.
    const refused = await startAgent(t.env, "sidecar", [...policyArgs, `--kubeconfig=${t.env.kube.kubeconfigPath}`], {
      waitForBundle: false,
    });
    dirs.push(refused.dir);
    assert.equal(await refused.process.waitExit(), 2);
    const log = refused.log();
    assert.match(
      log,
      /--vault-addr: sets what spec\.config\.agentCa\.vault\.server of RootTrustPolicy istio-system\/istiod sets; the policy is authoritative/,
    );
    assert.match(log, /--vault-cacert: sets what spec\.config\.agentCa\.vault\.caBundle/);
    assert.match(log, /remove one of them/);
  });

  it("init reads the policy once: it fills cacerts with no Vault flag, and refuses a shadowing one", async () => {
    const init = await startAgent(t.env, "init", [...policyArgs, `--kubeconfig=${t.env.kube.kubeconfigPath}`], {
      vaultFlags: false,
    });
    dirs.push(init.dir);
    assert.equal(await init.process.waitExit(), 0, init.log());
    assert.match(readFileSync(join(init.cacertsDir, "ca-cert.pem"), "utf8"), /BEGIN CERTIFICATE/);
    const refused = await startAgent(
      t.env,
      "init",
      [...policyArgs, `--kubeconfig=${t.env.kube.kubeconfigPath}`, "--auth-role=other"],
      { vaultFlags: false },
    );
    dirs.push(refused.dir);
    assert.equal(await refused.process.waitExit(), 2);
    assert.match(refused.log(), /--auth-role: sets what spec\.config\.agentCa\.vault\.kubernetesAuth\.role/);
  });

  it("a TTL change makes the running sidecar issue a new intermediate, visible in status", async () => {
    run = await startAgent(
      t.env,
      "sidecar",
      [...policyArgs, `--kubeconfig=${t.env.kube.kubeconfigPath}`, "--leaf-max-ttl=48h"],
      { vaultFlags: false },
    );
    const first = await getBundle(run.client);
    assert.ok(first.notAfterUnix - Date.now() / 1000 <= 3600 + 60, "the policy's 1h TTL applies at start");
    await waitUntil(
      "status reports the first intermediate",
      async () => (await get()).status?.intermediateSerial === first.serialHex,
      { timeoutMs: 15_000 },
    );

    await patchSpec({ intermediateCertOptions: { ttl: "3h" } });
    await waitUntil(
      "a new intermediate after the TTL change",
      async () => (await getBundle(run!.client)).generation > first.generation,
      { timeoutMs: 20_000 },
    );
    const second = await getBundle(run.client);
    assert.ok(second.notAfterUnix - second.notBeforeUnix > 2.5 * 3600, "the new intermediate has the new TTL");
    await waitUntil(
      "status shows the new intermediate",
      async () => {
        const s = (await get()).status;
        return s?.intermediateSerial === second.serialHex && s?.observedGeneration === 2;
      },
      { timeoutMs: 15_000 },
    );
    assert.equal((await ready())?.status, "True");
  });

  it("a policy edit of the Vault role takes effect: the agent logs in with the new role", async () => {
    const root = t.env.vault.rootToken;
    const role = (await t.env.vault.client.read<Record<string, unknown>>("auth/kubernetes/role/istiod-agent", root))
      .data;
    const copy = Object.fromEntries(
      [
        "bound_service_account_names",
        "bound_service_account_namespaces",
        "audience",
        "token_policies",
        "token_ttl",
        "token_max_ttl",
      ].map((k) => [k, role[k]]),
    );
    await t.env.vault.client.write("auth/kubernetes/role/istiod-agent-2", root, copy);
    const before = await getBundle(run!.client);
    assert.doesNotMatch(run!.log(), /"role":"istiod-agent-2"/);
    await patchSpec({ agentCa: { vault: { kubernetesAuth: { role: "istiod-agent-2" } } } });
    await waitUntil(
      "a new intermediate from the new role's login",
      async () => (await getBundle(run!.client)).generation > before.generation,
      { timeoutMs: 20_000 },
    );
    assert.match(run!.log(), /"role":"istiod-agent-2"[^\n]*logged in to Vault with Kubernetes auth/);
    await waitUntil(
      "status: generation 3 applied, Ready",
      async () => (await get()).status?.observedGeneration === 3 && (await ready())?.status === "True",
      { timeoutMs: 15_000 },
    );
  });

  it("a policy edit that a flag shadows is refused: Ready=False ShadowedByFlag, a Warning Event, still serving", async () => {
    const before = await getBundle(run!.client);
    // The sidecar runs with --leaf-max-ttl=48h; the policy now sets that field too.
    await patchSpec({ workloadCertOptions: { maxTtl: "24h" } });
    await waitUntil("Ready=False ShadowedByFlag", () => readyIs("False", "ShadowedByFlag"), { timeoutMs: 15_000 });
    assert.match(
      (await ready())!.message,
      /generation 4 refused: --leaf-max-ttl: sets what spec\.config\.workloadCertOptions\.maxTtl/,
    );
    assert.ok(
      (await events()).some(
        (e) => e.type === "Warning" && e.reason === "ShadowedByFlag" && /--leaf-max-ttl/.test(e.message),
      ),
      "a Warning Event names the flag",
    );
    const now = await getBundle(run!.client);
    assert.equal(now.serialHex, before.serialHex, "the last good configuration keeps serving");
    // Removing the field from the policy resolves it.
    await patchSpec({ workloadCertOptions: null });
    await waitUntil("Ready=True again", async () => (await ready())?.status === "True", { timeoutMs: 15_000 });
  });

  it("an invalid change passes the schema but is refused by the agent: status, Event, last good config keeps serving", async () => {
    const before = await getBundle(run!.client);
    // Valid for the schema, invalid for the agent: a minimum leaf TTL beyond the renewal grace period (3h / 3).
    await patchSpec({ workloadCertOptions: { minTtl: "2h" } });
    await waitUntil("Ready=False InvalidSpec", () => readyIs("False", "InvalidSpec"), { timeoutMs: 15_000 });
    const status = (await get()).status!;
    assert.match(status.lastError ?? "", /generation 6 refused: leaf\.minTtl: 7200s must be/);
    assert.ok(
      (await events()).some((e) => e.type === "Warning" && e.reason === "InvalidSpec" && /minTtl/.test(e.message)),
    );
    const now = await getBundle(run!.client);
    assert.equal(now.generation, before.generation, "no rotation for a refused policy");
    assert.equal(now.serialHex, before.serialHex);
  });
});
