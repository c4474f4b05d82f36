// doctor from a laptop: no pod and no token file, only an admin kubeconfig. doctor asks the real apiserver's
// TokenRequest API for istiod's token (audience vault) and runs every check against real OpenBao configured by
// setup-vault. A good setup passes in text and JSON; a missing role, a policy without update on the sign path and a
// role bound to another audience each fail, naming the failing check and the fix. No JWT ever reaches the output.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestEnv, repoRoot } from "../env/harness.js";
import {
  APISERVER_AUDIENCE,
  DOCTOR_LAPTOP_CHECKS,
  ISTIO_NS,
  ISTIOD_SA,
  setupVaultKubernetesFlags,
} from "../env/fixtures.js";
import { nodeBinary } from "../env/agent-process.js";
import { writeExecKubeconfig, writeTokenKubeconfig } from "../env/kubeconfig-fixture.js";
import { POLICY_BASE, rootTrustPolicy } from "../env/policy-objects.js";

/** Any JWT (a base64url JSON header, `{"` → eyJ, then payload and signature). */
const JWT_SHAPE = /eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+/;

interface Report {
  ok: boolean;
  failed: string[];
  checks: { name: string; ok: boolean; detail: string; fix?: string }[];
}

/** Every check a good setup reports from a laptop, in order. */
const GOOD_CHECKS = DOCTOR_LAPTOP_CHECKS;

describe("doctor from outside any pod, with a kubeconfig", () => {
  let env: TestEnv;
  let dir: string;
  const ROLE_PATH = "auth/kubernetes/role/istiod-agent";

  before(async () => {
    env = await TestEnv.start();
    dir = mkdtempSync(join(tmpdir(), "iva-doctor-"));
    await env.createServiceAccount(ISTIO_NS, ISTIOD_SA);
    const kubeFlags = await setupVaultKubernetesFlags(env, dir);
    const setup = cli(["setup-vault", ...vaultFlags(), ...kubeFlags], { VAULT_TOKEN: env.vault.rootToken });
    assert.equal(setup.code, 0, setup.output);
  });
  after(async () => {
    await env?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Runs the CLI as an operator's shell would: no pod environment, no KUBECONFIG or VAULT_* of the test machine. */
  function cli(args: string[], extraEnv: NodeJS.ProcessEnv = {}) {
    const clean = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !/^(VAULT_|BAO_|KUBECONFIG$|KUBERNETES_|POD_)/.test(k)),
    );
    const res = spawnSync(nodeBinary(), [join(repoRoot(), "dist/src/main.js"), ...args], {
      encoding: "utf8",
      env: { ...clean, ...extraEnv },
    });
    const output = `${res.stdout}${res.stderr}`;
    assert.ok(!output.includes(env.vault.rootToken), "the admin token is never printed");
    assert.doesNotMatch(output, JWT_SHAPE, "no JWT (the requested token included) is ever printed");
    return { code: res.status, stdout: res.stdout, output };
  }
  function vaultFlags() {
    return [`--vault-addr=${env.vault.url}`, `--vault-cacert=${env.vault.caFile}`];
  }
  const doctor = (...extra: string[]) =>
    cli(["doctor", ...vaultFlags(), `--kubeconfig=${env.kube.kubeconfigPath}`, ...extra]);
  const doctorJson = (...extra: string[]) => {
    const res = doctor("-o", "json", ...extra);
    return { code: res.code, report: JSON.parse(res.stdout) as Report, output: res.output };
  };
  const root = () => env.vault.rootToken;

  it("a good setup: every check ok, exit 0, in text and in JSON", () => {
    const text = doctor();
    assert.equal(text.code, 0, text.output);
    for (const name of GOOD_CHECKS) assert.match(text.output, new RegExp(`^ok {3}${name}: `, "m"), name);
    assert.match(
      text.output,
      /^ok {3}service-account token: TokenRequest issued a token for istio-system\/istiod, audience vault/m,
    );
    assert.match(
      text.output,
      /^ok {3}kubernetes login: role istiod-agent at auth\/kubernetes as istio-system\/istiod/m,
    );
    assert.match(text.output, /all checks passed/);
    assert.doesNotMatch(text.output, /FAIL/);

    const json = doctorJson();
    assert.equal(json.code, 0, json.output);
    assert.equal(json.report.ok, true);
    assert.deepEqual(json.report.failed, []);
    assert.deepEqual(
      json.report.checks.map((c) => c.name),
      GOOD_CHECKS,
    );
    for (const c of json.report.checks) {
      assert.equal(c.ok, true, c.name);
      assert.equal(typeof c.detail, "string");
    }
    // The token is short-lived: the apiserver's expiry for it is at most ~10 minutes away.
    const expiry = /expiring (\S+)/.exec(json.report.checks[1]!.detail)?.[1];
    assert.ok(expiry, json.report.checks[1]!.detail);
    const left = Date.parse(expiry) - Date.now();
    assert.ok(left > 0 && left <= 11 * 60_000, `expires in ${left} ms`);
  });

  it("the Vault role missing: exit 1, the login check fails and says to create the role", async () => {
    const role = (await env.vault.client.read<Record<string, unknown>>(ROLE_PATH, root())).data;
    await env.vault.client.call("DELETE", ROLE_PATH, { token: root() });
    try {
      const text = doctor();
      assert.equal(text.code, 1, text.output);
      assert.match(text.output, /^FAIL kubernetes login: .*invalid role name/m);
      assert.match(text.output, /fix: role istiod-agent does not exist at auth\/kubernetes: create it \(setup-vault\)/);
      assert.match(text.output, /1 check\(s\) failed: kubernetes login$/m);
      const json = doctorJson();
      assert.equal(json.code, 1);
      assert.equal(json.report.ok, false);
      assert.deepEqual(json.report.failed, ["kubernetes login"]);
    } finally {
      await env.vault.client.write(ROLE_PATH, root(), role);
    }
  });

  it("the Vault policy too narrow (read, not update, on the sign path): exit 1, naming the policy check", async () => {
    const policy = (await env.vault.client.read<{ rules: string }>("sys/policy/istiod-agent", root())).data.rules;
    assert.match(policy, /pki\/root\/sign-intermediate/);
    await env.vault.client.write("sys/policy/istiod-agent", root(), {
      policy: 'path "pki/root/sign-intermediate" { capabilities = ["read"] }',
    });
    try {
      const json = doctorJson();
      assert.equal(json.code, 1, json.output);
      assert.ok(json.report.failed.includes("policy allows pki/root/sign-intermediate"), json.report.failed.join());
      const check = json.report.checks.find((c) => c.name === "policy allows pki/root/sign-intermediate")!;
      assert.equal(check.detail, "capabilities: read");
      assert.match(check.fix ?? "", /add path "pki\/root\/sign-intermediate" \{ capabilities = \["update"\] \}/);
      assert.ok(json.report.checks.find((c) => c.name === "kubernetes login")?.ok, "the login itself still works");
      const text = doctor();
      assert.equal(text.code, 1);
      assert.match(text.output, /^FAIL policy allows pki\/root\/sign-intermediate: capabilities: read$/m);
      assert.match(text.output, /check\(s\) failed: policy allows pki\/root\/sign-intermediate/);
    } finally {
      await env.vault.client.write("sys/policy/istiod-agent", root(), { policy });
    }
  });

  it("the audience wrong (the role bound to another audience): exit 1, the fix names the audience", async () => {
    const role = (await env.vault.client.read<Record<string, unknown>>(ROLE_PATH, root())).data;
    await env.vault.client.write(ROLE_PATH, root(), { ...role, audience: "vault-other" });
    try {
      const json = doctorJson();
      assert.equal(json.code, 1, json.output);
      assert.deepEqual(json.report.failed, ["kubernetes login"]);
      const login = json.report.checks.find((c) => c.name === "kubernetes login")!;
      assert.match(login.fix ?? "", /bound to another audience than the token's \(vault\)/);
      // A token for the role's audience logs in: --audience is what the request carries.
      const matching = doctor("--audience=vault-other");
      assert.equal(matching.code, 0, matching.output);
      assert.match(matching.output, /audience vault-other/);
    } finally {
      await env.vault.client.write(ROLE_PATH, root(), role);
    }
  });

  it("a revision's service account that does not exist, and a user not allowed to request tokens, fail the token check", async () => {
    const canary = doctorJson("--revision=canary");
    assert.equal(canary.code, 1, canary.output);
    assert.deepEqual(canary.report.failed, ["service-account token"]);
    assert.match(canary.report.checks[1]!.detail, /service account istio-system\/istiod-canary not found/);

    // A kubeconfig whose user is a service account with no right to create tokens for istiod.
    const weak = await env.requestToken("vault-system", "vault-token-reviewer", APISERVER_AUDIENCE, 3600);
    const kubeconfig = writeTokenKubeconfig(env, join(dir, "weak.kubeconfig"), weak);
    const res = cli(["doctor", ...vaultFlags(), `--kubeconfig=${kubeconfig}`]);
    assert.equal(res.code, 1, res.output);
    assert.match(res.output, /^FAIL service-account token: not allowed to request a token for istio-system\/istiod/m);
    assert.match(res.output, /fix: the kubeconfig's user needs create on serviceaccounts\/token in istio-system/);
  });

  it("--policy-name: the RootTrustPolicy supplies Vault's address and CA; a missing one fails its check", async () => {
    await env.installCrd(join(repoRoot(), "manifests/crd/roottrustpolicies.yaml"));
    await env.kube.admin.create(
      POLICY_BASE,
      rootTrustPolicy("istiod", {
        server: env.vault.url,
        caBundle: env.vault.caPem,
        caPath: "pki/root/sign-intermediate",
        // The pod's path: from a laptop the requested token is used instead.
        kubernetesAuth: { role: "istiod-agent", serviceAccountTokenPath: "/var/run/secrets/tokens/vault-token" },
      }),
    );
    const kc = `--kubeconfig=${env.kube.kubeconfigPath}`;
    const good = cli(["doctor", kc, "--policy-name=istiod", `--policy-namespace=${ISTIO_NS}`, "-o", "json"]);
    assert.equal(good.code, 0, good.output);
    const report = JSON.parse(good.stdout) as Report;
    assert.deepEqual(
      report.checks.map((c) => c.name),
      ["root trust policy", ...GOOD_CHECKS],
    );
    assert.match(report.checks[0]!.detail, /istio-system\/istiod found/);

    // A policy naming another audience: doctor requests that one, and a role bound to it accepts the token.
    const role = (await env.vault.client.read<Record<string, unknown>>(ROLE_PATH, root())).data;
    await env.vault.client.write(ROLE_PATH, root(), { ...role, audience: "vault-other" });
    try {
      await env.kube.admin.create(
        POLICY_BASE,
        rootTrustPolicy("other-audience", {
          server: env.vault.url,
          caBundle: env.vault.caPem,
          kubernetesAuth: { role: "istiod-agent", audience: "vault-other" },
        }),
      );
      const other = cli(["doctor", kc, "--policy-name=other-audience", `--policy-namespace=${ISTIO_NS}`]);
      assert.equal(other.code, 0, other.output);
      assert.match(other.output, /^ok {3}service-account token: .*audience vault-other/m);
    } finally {
      await env.vault.client.write(ROLE_PATH, root(), role);
    }

    const missing = cli(["doctor", kc, "--policy-name=nope", `--policy-namespace=${ISTIO_NS}`, ...vaultFlags()]);
    assert.equal(missing.code, 1, missing.output);
    assert.match(missing.output, /^FAIL root trust policy: RootTrustPolicy istio-system\/nope not found/m);
    assert.match(missing.output, /1 check\(s\) failed: root trust policy$/m, "the other checks still run and pass");
  });

  it("a laptop's kubeconfig: exec plugin, KUBECONFIG=a:b and --context; the user may only create istiod's token", async () => {
    const kdir = join(dir, "exec");
    mkdirSync(kdir);
    const exec = await writeExecKubeconfig(env, kdir, {
      rules: [{ apiGroups: [""], resources: ["serviceaccounts/token"], verbs: ["create"], resourceNames: [ISTIOD_SA] }],
    });
    // No --kubeconfig: outside a pod, auto requests a token through $KUBECONFIG.
    const good = cli(["doctor", ...vaultFlags(), "--context=plugin"], { KUBECONFIG: exec.kubeconfig });
    assert.equal(good.code, 0, good.output);
    assert.match(good.output, /all checks passed/);
    assert.ok(exec.pluginCalls() >= 1, "the exec plugin supplied the credentials");
    // The current-context's user holds a token the apiserver refuses: the token check fails and says so.
    const refused = cli(["doctor", ...vaultFlags()], { KUBECONFIG: exec.kubeconfig });
    assert.equal(refused.code, 1, refused.output);
    assert.match(refused.output, /^FAIL service-account token: the apiserver refused the credentials/m);
    assert.match(refused.output, /fix: the kubeconfig's credentials are expired or of another cluster/);
    // A revision the user may not mint for: refused by RBAC, named as such.
    await env.createServiceAccount(ISTIO_NS, "istiod-canary");
    const canary = cli(["doctor", ...vaultFlags(), "--context=plugin", "--revision=canary"], {
      KUBECONFIG: exec.kubeconfig,
    });
    assert.equal(canary.code, 1, canary.output);
    assert.match(
      canary.output,
      /^FAIL service-account token: not allowed to request a token for istio-system\/istiod-canary/m,
    );
    // An auth shape the loader cannot serve is a usage error naming it.
    const legacy = cli(["doctor", ...vaultFlags(), "--context=legacy"], { KUBECONFIG: exec.kubeconfig });
    assert.equal(legacy.code, 2, legacy.output);
    assert.match(legacy.output, /openstack|auth-provider/);
  });

  it("--auth-method=approle and token: doctor logs in as the agent would, requests no service-account token", async () => {
    await env.vault.client.write("sys/auth/approle", root(), { type: "approle" });
    await env.vault.client.write("auth/approle/role/istiod-agent", root(), { token_policies: ["istiod-agent"] });
    const roleId = (await env.vault.client.read<{ role_id: string }>("auth/approle/role/istiod-agent/role-id", root()))
      .data.role_id;
    const secretId = (
      await env.vault.client.write<{ secret_id: string }>("auth/approle/role/istiod-agent/secret-id", root(), {})
    ).data.secret_id;
    const roleIdFile = join(dir, "role-id");
    const secretIdFile = join(dir, "secret-id");
    writeFileSync(roleIdFile, roleId, { mode: 0o600 });
    writeFileSync(secretIdFile, secretId, { mode: 0o600 });
    const approle = (...extra: string[]) =>
      doctorJson("--auth-method=approle", `--role-id-file=${roleIdFile}`, `--secret-id-file=${secretIdFile}`, ...extra);

    const good = approle();
    assert.equal(good.code, 0, good.output);
    assert.ok(!good.output.includes(secretId), "the secret-id is never printed");
    assert.deepEqual(
      good.report.checks.map((c) => c.name),
      ["vault reachable", "approle login", ...GOOD_CHECKS.slice(3)],
      "the AppRole login, and no service-account token (nor Kubernetes login)",
    );
    assert.match(good.report.checks[1]!.detail, /^AppRole at auth\/approle \(role-id .*\): policies .*istiod-agent/);

    // A secret-id of no role: the AppRole login itself fails (a Kubernetes-style login would not have noticed).
    writeFileSync(secretIdFile, "00000000-0000-0000-0000-000000000000", { mode: 0o600 });
    const bad = approle();
    assert.equal(bad.code, 1, bad.output);
    assert.deepEqual(bad.report.failed, ["approle login"]);
    assert.match(bad.report.checks[1]!.fix ?? "", /live secret-id of one role/);

    // The token method: the operator's token is used and, unlike doctor's own logins, not revoked afterwards.
    const token = (
      await env.vault.client.write<unknown>("auth/token/create", root(), { policies: ["istiod-agent"], ttl: "10m" })
    ).auth!.client_token;
    const tokenFile = join(dir, "vault-token");
    writeFileSync(tokenFile, token, { mode: 0o600 });
    const byToken = doctorJson("--auth-method=token", `--vault-token-file=${tokenFile}`);
    assert.equal(byToken.code, 0, byToken.output);
    assert.ok(!byToken.output.includes(token), "the Vault token is never printed");
    assert.deepEqual(byToken.report.checks[1]!.name, "token login");
    assert.ok((await env.vault.client.lookupSelf(token)).policies?.includes("istiod-agent"), "still valid");
  });

  it("usage errors exit 2: a token file with --token-source=request, an unreadable kubeconfig", () => {
    const both = doctor("--token-source=request", `--token-path=${join(dir, "none")}`);
    assert.equal(both.code, 2, both.output);
    assert.match(both.output, /--token-path: not used when doctor requests a token/);
    const unreadable = cli(["doctor", ...vaultFlags(), `--kubeconfig=${join(dir, "missing.kubeconfig")}`]);
    assert.equal(unreadable.code, 2, unreadable.output);
    assert.match(unreadable.output, /kubeconfig \S*missing\.kubeconfig: cannot read/);
  });
});
