// Kubernetes access from a laptop-style kubeconfig against the real kube-apiserver: a user that is an exec credential
// plugin (printing a real TokenRequest token of a service account with only the RBAC inject needs), split over two
// files merged with KUBECONFIG=a:b, selected with --context. `inject` and `doctor` (a TokenRequest for istiod's token)
// run through it, the plugin seen to run, and to run again when its credential expires; `setup-vault` takes the
// context's apiserver URL and CA into real OpenBao's auth/kubernetes/config (it needs no credential: no plugin run);
// a context's proxy-url is used; a refused token and unsupported users fail with messages that name them.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestEnv, repoRoot } from "../env/harness.js";
import { istiodDeployment } from "../env/istiod-deployment.js";
import { nodeBinary } from "../env/agent-process.js";
import { writeExecKubeconfig, type ExecKubeconfig } from "../env/kubeconfig-fixture.js";
import { startCountingProxy, type CountingProxy } from "../env/counting-proxy.js";
import { DOCTOR_LAPTOP_CHECKS, ISTIOD_SA, createTokenReviewer } from "../env/fixtures.js";
import { kubeClusterInfo, openKube } from "../../src/cli/kube.js";
import { INJECTED_ANNOTATION } from "../../src/inject/pod-template.js";

const NS = "istio-system";
/**
 * What the commands need, and no more: inject reads and updates istiod Deployments; doctor requests istiod's token.
 * setup-vault needs nothing of the apiserver (only the kubeconfig's cluster entry).
 */
const LAPTOP_RULES = [
  { apiGroups: ["apps"], resources: ["deployments"], verbs: ["get", "list", "update"] },
  { apiGroups: [""], resources: ["serviceaccounts/token"], verbs: ["create"], resourceNames: [ISTIOD_SA] },
];

describe("kubeconfig: exec credential plugin, merged KUBECONFIG, --context", () => {
  let env: TestEnv;
  let dir: string;
  let kc: ExecKubeconfig;
  let proxy: CountingProxy | undefined;

  before(async () => {
    env = await TestEnv.start();
    dir = mkdtempSync(join(tmpdir(), "iva-kubeconfig-"));
    kc = await writeExecKubeconfig(env, dir, { rules: LAPTOP_RULES });
    // A proxy on loopback that counts its tunnels, and a third file with a context whose cluster uses it.
    proxy = await startCountingProxy();
    writeFileSync(
      join(dir, "c.yaml"),
      JSON.stringify({
        clusters: [
          {
            name: "test-proxied",
            cluster: {
              server: env.kube.url,
              "certificate-authority": "ca.crt",
              "proxy-url": proxy.url,
            },
          },
        ],
        contexts: [{ name: "proxied", context: { cluster: "test-proxied", user: "plugin-user" } }],
      }),
    );
    await env.createNamespace(NS);
    await env.kube.admin.create(`/apis/apps/v1/namespaces/${NS}/deployments`, istiodDeployment());
  });
  after(async () => {
    await proxy?.close();
    await env?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** How the CLI runs: KUBECONFIG=a:b:c and no other kube hints. */
  const cliOptions = (extraEnv: NodeJS.ProcessEnv = {}) => {
    const rest = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !/^(VAULT_|BAO_|KUBECONFIG$|KUBERNETES_|POD_)/.test(k)),
    );
    return {
      cwd: tmpdir(), // the plugin's relative path must resolve against its kubeconfig, not the cwd
      env: { ...rest, KUBECONFIG: `${kc.kubeconfig}:${join(dir, "c.yaml")}`, HOME: dir, ...extraEnv },
    };
  };
  const checked = (code: number | null, output: string) => {
    assert.ok(!output.includes("eyJ"), "no JWT in the output");
    assert.ok(!output.includes(env.vault.rootToken), "no Vault token in the output");
    return { code, output };
  };
  const cli = (args: string[], extraEnv: NodeJS.ProcessEnv = {}) => {
    const res = spawnSync(nodeBinary(), [join(repoRoot(), "dist/src/main.js"), ...args], {
      encoding: "utf8",
      ...cliOptions(extraEnv),
    });
    return checked(res.status, `${res.stdout}${res.stderr}`);
  };
  /** The same without blocking this process: needed while a server in it (the proxy) must answer the CLI. */
  const cliAsync = (args: string[]) =>
    new Promise<{ code: number | null; output: string }>((resolve, reject) => {
      const child = spawn(nodeBinary(), [join(repoRoot(), "dist/src/main.js"), ...args], cliOptions());
      let output = "";
      child.stdout.on("data", (d: Buffer) => (output += d.toString()));
      child.stderr.on("data", (d: Buffer) => (output += d.toString()));
      child.on("error", reject);
      child.on("close", (code) => resolve(checked(code, output)));
    });
  const injectArgs = ["inject", "--vault-addr=https://vault.vault:8200", `--namespace=${NS}`];

  it("inject succeeds through the exec plugin of the --context user, and the plugin ran", async () => {
    const before = kc.pluginCalls();
    const res = cli([...injectArgs, "--context=plugin"]);
    assert.equal(res.code, 0, res.output);
    assert.ok(kc.pluginCalls() > before, "the exec plugin was invoked");
    const d = await env.kube.admin.get<{ metadata: { annotations?: Record<string, string> } }>(
      `/apis/apps/v1/namespaces/${NS}/deployments/istiod`,
    );
    assert.ok(d.metadata.annotations?.[INJECTED_ANNOTATION], "the Deployment was injected");
    // Run again with --dry-run: reads through the plugin, writes nothing, still succeeds.
    const dry = cli([...injectArgs, "--context=plugin", "--dry-run"]);
    assert.equal(dry.code, 0, dry.output);
  });

  it("setup-vault takes the --context's apiserver URL and CA; doctor then passes every check through the plugin", async () => {
    await env.createServiceAccount(NS, ISTIOD_SA);
    const reviewer = join(dir, "reviewer.jwt");
    writeFileSync(reviewer, await createTokenReviewer(env, 3600));
    const vaultFlags = [`--vault-addr=${env.vault.url}`, `--vault-cacert=${env.vault.caFile}`];

    // setup-vault reads only the context's cluster entry (a.yaml's "test", CA by a path relative to a.yaml; b.yaml's
    // "test" points nowhere): it needs no credential, so the plugin does not run.
    const before = kc.pluginCalls();
    const setup = cli(["setup-vault", ...vaultFlags, "--context=plugin", `--token-reviewer-jwt-file=${reviewer}`], {
      VAULT_TOKEN: env.vault.rootToken,
    });
    assert.equal(setup.code, 0, setup.output);
    assert.equal(kc.pluginCalls(), before, "setup-vault asks the apiserver nothing");
    const cfg = (
      await env.vault.client.read<{ kubernetes_host: string; kubernetes_ca_cert: string }>(
        "auth/kubernetes/config",
        env.vault.rootToken,
      )
    ).data;
    assert.equal(cfg.kubernetes_host, env.kube.url, "the apiserver of context plugin's cluster (the first file's)");
    assert.equal(cfg.kubernetes_ca_cert.trim(), env.kube.caPem.trim());

    // doctor requests istiod's token through the plugin's credentials; Vault reviews it with the apiserver at the
    // URL and CA setup-vault stored, so the login passing also proves those right.
    const doctor = cli(["doctor", ...vaultFlags, "--context=plugin", "-o", "json"]);
    assert.equal(doctor.code, 0, doctor.output);
    const report = JSON.parse(doctor.output) as { ok: boolean; checks: { name: string; ok: boolean }[] };
    assert.equal(report.ok, true);
    assert.deepEqual(
      report.checks.map((c) => c.name),
      DOCTOR_LAPTOP_CHECKS,
    );
    assert.ok(kc.pluginCalls() > before, "the exec plugin was invoked for doctor's TokenRequest");
  });

  it("inject reaches the apiserver through the context's proxy-url", async () => {
    const before = proxy!.forwarded();
    const res = await cliAsync([...injectArgs, "--context=proxied", "--dry-run"]);
    assert.equal(res.code, 0, res.output);
    assert.ok(proxy!.forwarded() > before, "the proxy tunnelled the requests");
  });

  it("without --context the first file's current-context is used, and its refused token is named, not a bare 401", () => {
    const res = cli(injectArgs);
    assert.equal(res.code, 1, res.output);
    assert.match(res.output, /HTTP 401/);
    assert.match(res.output, /did not accept the credentials of kubeconfig context "nobody" \(user "nobody"\)/);
  });

  it("an exec credential is cached until it expires, then the plugin runs again", async () => {
    const count = async (context: string) => {
      const kube = await openKube({ kubeconfig: kc.kubeconfig, context });
      const before = kc.pluginCalls();
      try {
        for (let i = 0; i < 3; i++) await kube.get("/apis/apps/v1/namespaces/istio-system/deployments");
      } finally {
        await kube.close();
      }
      return kc.pluginCalls() - before;
    };
    assert.equal(await count("plugin"), 0, "a credential without expiry is reused (it ran once, at open)");
    assert.equal(await count("plugin-expiring"), 3, "an expired credential is fetched again for each request");
  });

  it("kubeClusterInfo gives the context's apiserver and CA from the merged files (the first file wins)", async () => {
    const info = await kubeClusterInfo({ kubeconfig: kc.kubeconfig, context: "plugin" });
    assert.equal(info.server, env.kube.url);
    assert.equal(info.caPem, env.kube.caPem);
    assert.deepEqual([info.context, info.cluster], ["plugin", "test"]);
  });

  it("a user with an auth-provider client-node cannot serve, or with no credentials, fails naming it", () => {
    const legacy = cli([...injectArgs, "--context=legacy"]);
    assert.equal(legacy.code, 2, legacy.output);
    assert.match(legacy.output, /user "legacy-user" of context "legacy": auth-provider "openstack" is not supported/);
    assert.match(legacy.output, /expected .*exec credential plugin/);
    const none = cli([...injectArgs, "--context=no-creds"]);
    assert.equal(none.code, 2, none.output);
    assert.match(none.output, /user "no-creds" of context "no-creds": has no credentials; expected/);
    const missing = cli([...injectArgs, "--context=elsewhere"]);
    assert.equal(missing.code, 2, missing.output);
    assert.match(missing.output, /no context named "elsewhere"; expected one of: nobody, plugin/);
  });
});
