// Kubernetes access from a laptop-style kubeconfig against the real kube-apiserver: a user that is an exec credential
// plugin (printing a real TokenRequest token of a service account with only the RBAC inject needs), split over two
// files merged with KUBECONFIG=a:b, selected with --context. `inject` runs through it; the plugin is seen to run, and to
// run again when its credential expires; a refused token and unsupported users fail with messages that name them.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestEnv, repoRoot } from "../env/harness.js";
import { istiodDeployment } from "../env/istiod-deployment.js";
import { nodeBinary } from "../env/agent-process.js";
import { writeExecKubeconfig, type ExecKubeconfig } from "../env/kubeconfig-fixture.js";
import { kubeClusterInfo, openKube } from "../../src/cli/kube.js";
import { INJECTED_ANNOTATION } from "../../src/inject/pod-template.js";

const NS = "istio-system";
/** What `inject` needs, and no more: read and update istiod Deployments. */
const INJECT_RULES = [{ apiGroups: ["apps"], resources: ["deployments"], verbs: ["get", "list", "update"] }];

describe("kubeconfig: exec credential plugin, merged KUBECONFIG, --context", () => {
  let env: TestEnv;
  let dir: string;
  let kc: ExecKubeconfig;

  before(async () => {
    env = await TestEnv.start({ vault: false });
    dir = mkdtempSync(join(tmpdir(), "iva-kubeconfig-"));
    kc = await writeExecKubeconfig(env, dir, { rules: INJECT_RULES });
    await env.createNamespace(NS);
    await env.kube.admin.create(`/apis/apps/v1/namespaces/${NS}/deployments`, istiodDeployment());
  });
  after(async () => {
    await env?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The CLI with KUBECONFIG=a:b and no other kube hints; the service-account token never appears in its output. */
  const cli = (args: string[]) => {
    const { KUBERNETES_SERVICE_HOST: _h, KUBERNETES_SERVICE_PORT: _p, ...rest } = process.env;
    const res = spawnSync(nodeBinary(), [join(repoRoot(), "dist/src/main.js"), ...args], {
      encoding: "utf8",
      cwd: tmpdir(), // the plugin's relative path must resolve against its kubeconfig, not the cwd
      env: { ...rest, KUBECONFIG: kc.kubeconfig, HOME: dir },
    });
    const output = `${res.stdout}${res.stderr}`;
    assert.ok(!output.includes("eyJ"), "no JWT in the output");
    return { code: res.status, output };
  };
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
