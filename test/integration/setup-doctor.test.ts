// setup-vault on an empty OpenBao, then the agent works against it; doctor passes on that setup and flags an
// over-broad policy and an untrusted TLS certificate, each with a fix.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { setTimeout } from "node:timers/promises";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestEnv, repoRoot } from "../env/harness.js";
import { ISTIO_NS, ISTIOD_SA, setupVaultKubernetesFlags } from "../env/fixtures.js";
import { nodeBinary, startAgent, writeIstiodToken } from "../env/agent-process.js";
import { opensslVerify } from "../env/crypto-check.js";

describe("setup-vault and doctor against an empty OpenBao", () => {
  let env: TestEnv;
  let dir: string;
  let kubeFlags: string[];

  before(async () => {
    env = await TestEnv.start();
    dir = mkdtempSync(join(tmpdir(), "iva-setup-"));
    await env.createServiceAccount(ISTIO_NS, ISTIOD_SA);
    kubeFlags = await setupVaultKubernetesFlags(env, dir);
    await writeIstiodToken(env, join(dir, "vault-token"));
  });
  after(async () => {
    await env?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const cli = (args: string[], opts: { withToken?: boolean } = {}) => {
    const res = spawnSync(nodeBinary(), [join(repoRoot(), "dist/src/main.js"), ...args], {
      encoding: "utf8",
      env: { ...process.env, ...(opts.withToken ? { VAULT_TOKEN: env.vault.rootToken } : {}) },
    });
    const output = `${res.stdout}${res.stderr}`;
    assert.ok(!output.includes(env.vault.rootToken), "the admin token is never printed");
    return { code: res.status, output };
  };
  const vaultFlags = () => [`--vault-addr=${env.vault.url}`, `--vault-cacert=${env.vault.caFile}`];
  const agentFlags = () => [...vaultFlags(), `--token-path=${join(dir, "vault-token")}`];

  it("setup-vault configures an empty OpenBao and a second run changes nothing", () => {
    const setupArgs = ["setup-vault", ...vaultFlags(), ...kubeFlags];
    const first = cli(setupArgs, { withToken: true });
    assert.equal(first.code, 0, first.output);
    assert.match(first.output, /mounted pki at pki\//);
    assert.match(first.output, /wrote role istiod-agent: istio-system\/istiod, audience vault/);
    const second = cli(setupArgs, { withToken: true });
    assert.equal(second.code, 0, second.output);
    assert.match(second.output, /nothing changed/);
    const noToken = cli(setupArgs);
    assert.equal(noToken.code, 2);
    assert.match(noToken.output, /VAULT_TOKEN: missing/);
  });

  it("the agent's init works against that setup", async () => {
    const run = await startAgent(env, "init", [], { dir: mkdtempSync(join(tmpdir(), "iva-agent-")) });
    try {
      assert.equal(await run.process.waitExit(), 0, run.log().slice(-2000));
      console.log("DEBUGLOG", run.log());
      const f = (n: string) => readFileSync(join(run.cacertsDir, n), "utf8");
      assert.match(opensslVerify(f("ca-cert.pem"), f("root-cert.pem")), /OK/);
    } finally {
      rmSync(run.dir, { recursive: true, force: true });
    }
  });

  it("doctor passes on the least-privilege setup", () => {
    const res = cli(["doctor", ...agentFlags()]);
    assert.equal(res.code, 0, res.output);
    assert.match(res.output, /ok {3}policy is least-privilege/);
    assert.match(res.output, /ok {3}dry-run intermediate/);
    assert.match(res.output, /all checks passed/);
  });

  it("doctor flags an over-broad policy and says how to fix it", async () => {
    const v = env.vault.client;
    const root = env.vault.rootToken;
    await v.write("sys/policy/too-broad", root, {
      policy: 'path "pki/*" { capabilities = ["create", "update", "read"] }',
    });
    const role = (await v.read<Record<string, unknown>>("auth/kubernetes/role/istiod-agent", root)).data;
    await v.write("auth/kubernetes/role/istiod-agent", root, {
      ...role,
      token_policies: ["istiod-agent", "too-broad"],
    });
    try {
      const res = cli(["doctor", ...agentFlags()]);
      assert.equal(res.code, 1, res.output);
      assert.match(res.output, /FAIL policy is least-privilege: the token can also use: pki\/issue\/doctor-probe/);
      assert.match(res.output, /fix: narrow the role's policies/);
    } finally {
      await v.write("auth/kubernetes/role/istiod-agent", root, { ...role, token_policies: ["istiod-agent"] });
    }
  });

  it("setup-vault --revisions=canary: istiod-canary logs in and obtains an intermediate; istiod-other is refused", async () => {
    for (const sa of ["istiod-canary", "istiod-other"]) await env.createServiceAccount(ISTIO_NS, sa);
    const setupArgs = ["setup-vault", ...vaultFlags(), ...kubeFlags];
    const bad = cli([...setupArgs, "--revisions=canary,Stable_1"], { withToken: true });
    assert.equal(bad.code, 2, bad.output);
    assert.match(bad.output, /--revisions.*"Stable_1" is not.*e\.g\. canary,stable/);
    const res = cli([...setupArgs, "--revisions=canary"], { withToken: true });
    assert.equal(res.code, 0, res.output);

    // The canary revision's agent, with its own service account's token: login, sign-intermediate, valid chain.
    const runDir = mkdtempSync(join(tmpdir(), "iva-agent-"));
    try {
      writeFileSync(join(runDir, "vault-token"), await env.requestToken(ISTIO_NS, "istiod-canary", "vault", 3600));
      const run = await startAgent(env, "init", [], { dir: runDir });
      try {
        // A refused login keeps init retrying: bounded here, so a role without the account fails instead of hanging.
        const exit = await Promise.race([run.process.waitExit(), setTimeout(30_000, "still retrying")]);
        assert.equal(exit, 0, run.log().slice(-2000));
        const f = (n: string) => readFileSync(join(run.cacertsDir, n), "utf8");
        assert.match(opensslVerify(f("ca-cert.pem"), f("root-cert.pem")), /OK/);
      } finally {
        await run.stop();
      }
    } finally {
      rmSync(runDir, { recursive: true, force: true });
    }
    assert.match(res.output, /wrote role istiod-agent: istio-system\/istiod,istiod-canary, audience vault/);
    // A service account of no listed revision is refused by the role.
    const other = await env.requestToken(ISTIO_NS, "istiod-other", "vault", 3600);
    await assert.rejects(env.vault.client.kubernetesLogin("kubernetes", "istiod-agent", other), (err: Error) => {
      assert.match(err.message, /403|permission denied|not authorized/i);
      return true;
    });
    // The default revision's istiod still logs in.
    const istiod = await env.requestToken(ISTIO_NS, ISTIOD_SA, "vault", 3600);
    const ok = await env.vault.client.kubernetesLogin("kubernetes", "istiod-agent", istiod);
    await env.vault.client.write("auth/token/revoke-self", ok.client_token, {});
  });

  it("doctor explains an untrusted Vault certificate", () => {
    const res = cli(["doctor", `--vault-addr=${env.vault.url}`, `--token-path=${join(dir, "vault-token")}`]);
    assert.equal(res.code, 1, res.output);
    assert.match(res.output, /FAIL vault reachable/);
    assert.match(res.output, /fix: Vault's TLS certificate is not trusted: pass its CA with --vault-cacert/);
  });
});
