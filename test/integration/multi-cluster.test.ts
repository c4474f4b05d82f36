// Many clusters on one Vault: two real kube-apiservers (each with its own etcd and its own service-account signing
// key, but the same issuer name and the same istio-system/istiod account, as two real clusters would have) share one
// OpenBao. `setup-vault --cluster a=ctx-a --cluster b` reads each apiserver's URL and CA from a two-context kubeconfig
// and gives each cluster its own auth mount, role and policy; each cluster's agent logs in through its own mount with
// its own istiod token and obtains an intermediate; a token of one cluster is refused at the other's mount, and with
// --pki-per-cluster a cluster's Vault token cannot sign on the other cluster's PKI mount.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { TestEnv, repoRoot } from "../env/harness.js";
import { ISTIO_NS, ISTIOD_SA, createTokenReviewer } from "../env/fixtures.js";
import { nodeBinary, startAgent } from "../env/agent-process.js";
import { opensslVerify, workloadCsr } from "../env/crypto-check.js";
import { HttpStatusError } from "../../src/net/http-json.js";

interface KubeconfigDoc {
  clusters: { name: string; cluster: Record<string, string> }[];
  users: { name: string; user: Record<string, string> }[];
  contexts: { name: string; context: { cluster: string; user: string } }[];
}

/** One kubeconfig holding both clusters: context ctx-a for cluster a, context b for cluster b (NAME = CONTEXT). */
function twoContextKubeconfig(a: TestEnv, b: TestEnv, current: string): unknown {
  const read = (env: TestEnv) => JSON.parse(readFileSync(env.kube.kubeconfigPath, "utf8")) as KubeconfigDoc;
  const [ka, kb] = [read(a), read(b)];
  return {
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      { name: "cluster-a", cluster: ka.clusters[0]!.cluster },
      { name: "cluster-b", cluster: kb.clusters[0]!.cluster },
    ],
    users: [
      { name: "admin-a", user: ka.users[0]!.user },
      { name: "admin-b", user: kb.users[0]!.user },
    ],
    contexts: [
      { name: "ctx-a", context: { cluster: "cluster-a", user: "admin-a" } },
      { name: "b", context: { cluster: "cluster-b", user: "admin-b" } },
    ],
    "current-context": current,
  };
}

describe("many clusters on one Vault", () => {
  let a: TestEnv; // cluster a, and the OpenBao both clusters share
  let b: TestEnv; // cluster b: its own etcd and apiserver, no Vault
  let dir: string;
  let kubeconfig: string;

  before(async () => {
    a = await TestEnv.start();
    b = await TestEnv.start({ vault: false });
    dir = mkdtempSync(join(tmpdir(), "iva-multi-"));
    kubeconfig = join(dir, "kubeconfig");
    writeFileSync(kubeconfig, JSON.stringify(twoContextKubeconfig(a, b, "ctx-a")), { mode: 0o600 });
    for (const [name, env] of [
      ["a", a],
      ["b", b],
    ] as const) {
      await env.createServiceAccount(ISTIO_NS, ISTIOD_SA);
      // Each cluster's own TokenReview credential, as a real install has one: a reviewer account in that cluster.
      const jwt = await createTokenReviewer(env);
      writeFileSync(join(dir, `reviewer-${name}.jwt`), jwt, { mode: 0o600 });
    }
  });
  after(async () => {
    await b?.stop();
    await a?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const cli = (args: string[]) => {
    const res = spawnSync(nodeBinary(), [join(repoRoot(), "dist/src/main.js"), ...args], {
      encoding: "utf8",
      env: { ...process.env, KUBECONFIG: "", KUBERNETES_SERVICE_HOST: "", VAULT_TOKEN: a.vault.rootToken },
    });
    const output = `${res.stdout}${res.stderr}`;
    assert.ok(!output.includes(a.vault.rootToken), "the admin token is never printed");
    return { code: res.status, output };
  };
  const setup = (...extra: string[]) =>
    cli([
      "setup-vault",
      `--vault-addr=${a.vault.url}`,
      `--vault-cacert=${a.vault.caFile}`,
      `--kubeconfig=${kubeconfig}`,
      "--cluster=a=ctx-a",
      "--cluster=b",
      `--cluster-token-reviewer-jwt-file=a=${join(dir, "reviewer-a.jwt")}`,
      `--cluster-token-reviewer-jwt-file=b=${join(dir, "reviewer-b.jwt")}`,
      ...extra,
    ]);
  const istiodToken = (env: TestEnv) => env.requestToken(ISTIO_NS, ISTIOD_SA, "vault", 3600);
  const vault = () => a.vault.client;
  const root = () => a.vault.rootToken;

  /** The agent flags setup-vault printed for `cluster`. */
  const printedFlags = (output: string, cluster: string): string[] => {
    const block = output.split(`cluster ${cluster}: Vault calls`)[1] ?? "";
    const line = /agent flags: (.*)/.exec(block)?.[1];
    assert.ok(line, `setup-vault printed no agent flags for cluster ${cluster}:\n${output}`);
    return line.split(" ");
  };

  /** Runs `init` as cluster `env`'s istiod would: that cluster's token, the given flags; returns the cacerts files. */
  const initIn = async (env: TestEnv, flags: string[]) => {
    const runDir = mkdtempSync(join(tmpdir(), "iva-agent-"));
    try {
      writeFileSync(join(runDir, "vault-token"), await istiodToken(env), { mode: 0o600 });
      const run = await startAgent(a, "init", flags, { dir: runDir });
      try {
        // A refused login keeps init retrying: bounded here, so a broken mount fails instead of hanging.
        const exit = await Promise.race([run.process.waitExit(), delay(60_000, "still retrying")]);
        assert.equal(exit, 0, run.log().slice(-2000));
        const f = (n: string) => readFileSync(join(run.cacertsDir, n), "utf8");
        return { ca: f("ca-cert.pem"), chain: f("cert-chain.pem"), root: f("root-cert.pem") };
      } finally {
        await run.stop();
      }
    } finally {
      rmSync(runDir, { recursive: true, force: true });
    }
  };

  let firstOutput = "";

  it("setup-vault --cluster configures a mount per cluster from its kubeconfig context; a second run changes nothing", async () => {
    const first = setup();
    assert.equal(first.code, 0, first.output);
    firstOutput = first.output;
    for (const c of ["a", "b"]) {
      assert.match(first.output, new RegExp(`cluster ${c}: enabled kubernetes auth at auth/kubernetes-${c}/`));
      assert.match(
        first.output,
        new RegExp(
          `cluster ${c}: wrote policy istiod-agent-${c} \\(grants exactly: update on pki/root/sign-intermediate\\)`,
        ),
      );
      assert.match(
        first.output,
        new RegExp(`cluster ${c}: wrote role istiod-agent: istio-system/istiod, audience vault`),
      );
    }
    assert.match(first.output, /cluster a: Vault calls \S+ \(kubeconfig context ctx-a\)/);
    assert.match(first.output, /cluster b: Vault calls \S+ \(kubeconfig context b\)/);
    // Each mount calls its own cluster's apiserver, trusts its CA, and never a local reviewer.
    for (const [c, env] of [
      ["a", a],
      ["b", b],
    ] as const) {
      const cfg = (
        await vault().read<{ kubernetes_host: string; kubernetes_ca_cert: string; disable_local_ca_jwt: boolean }>(
          `auth/kubernetes-${c}/config`,
          root(),
        )
      ).data;
      assert.equal(cfg.kubernetes_host, env.kube.url);
      assert.equal(cfg.kubernetes_ca_cert.trim(), env.kube.caPem.trim());
      assert.equal(cfg.disable_local_ca_jwt, true);
    }
    assert.notEqual(a.kube.url, b.kube.url);

    const second = setup();
    assert.equal(second.code, 0, second.output);
    assert.match(second.output, /nothing changed/);
  });

  it("each cluster's agent logs in through its own mount and obtains an intermediate (flags; RootTrustPolicy)", async () => {
    // Cluster a's agent with exactly the flags setup-vault printed for it.
    const flagsA = printedFlags(firstOutput, "a");
    assert.deepEqual(flagsA, [
      "--auth-mount=kubernetes-a",
      "--auth-role=istiod-agent",
      "--ca-path=pki/root/sign-intermediate",
    ]);
    const fromA = await initIn(a, flagsA);
    assert.match(opensslVerify(fromA.ca, fromA.root), /OK/);

    // Cluster b's agent told its mount by a RootTrustPolicy's existing fields (kubernetesAuth.mountPath), no flags.
    assert.match(
      firstOutput,
      /cluster b: [^]*RootTrustPolicy: spec\.config\.agentCa\.vault\.kubernetesAuth\.mountPath: kubernetes-b/,
    );
    const policy = join(dir, "rtp-b.yaml");
    writeFileSync(
      policy,
      [
        "apiVersion: istiod-vault-agent.io/v1alpha1",
        "kind: RootTrustPolicy",
        "spec:",
        "  config:",
        "    agentCa:",
        "      vault:",
        "        caPath: pki/root/sign-intermediate",
        "        kubernetesAuth:",
        "          mountPath: kubernetes-b",
        "          role: istiod-agent",
      ].join("\n"),
    );
    const fromB = await initIn(b, [`--config=${policy}`]);
    assert.match(opensslVerify(fromB.ca, fromB.root), /OK/);
    assert.equal(fromA.root, fromB.root, "both clusters chain to the one root");
  });

  it("a token of cluster a is refused at cluster b's mount, and b's at a's", async () => {
    const [tokenA, tokenB] = [await istiodToken(a), await istiodToken(b)];
    for (const [token, mount] of [
      [tokenA, "kubernetes-b"],
      [tokenB, "kubernetes-a"],
    ] as const) {
      await assert.rejects(vault().kubernetesLogin(mount, "istiod-agent", token), (err: Error) => {
        assert.ok(err instanceof HttpStatusError, String(err));
        assert.equal(err.status, 403, `login at ${mount}: ${err.message}`);
        return true;
      });
    }
    // The same tokens are good at their own mounts: the refusal is the mount's cluster, not the token.
    for (const [token, mount] of [
      [tokenA, "kubernetes-a"],
      [tokenB, "kubernetes-b"],
    ] as const) {
      const auth = await vault().kubernetesLogin(mount, "istiod-agent", token);
      assert.deepEqual(
        auth.policies.filter((p) => p !== "default"),
        [`istiod-agent-${mount.slice(-1)}`],
      );
      await vault().write("auth/token/revoke-self", auth.client_token, {});
    }
  });

  it("setup-vault restores disable_local_ca_jwt, so a Vault in a pod never reviews with its own cluster's token", async () => {
    const path = "auth/kubernetes-b/config";
    const cfg = (await vault().read<Record<string, unknown>>(path, root())).data;
    await vault().write(path, root(), {
      kubernetes_host: cfg.kubernetes_host,
      kubernetes_ca_cert: cfg.kubernetes_ca_cert,
      token_reviewer_jwt: readFileSync(join(dir, "reviewer-b.jwt"), "utf8"),
      disable_local_ca_jwt: false,
    });
    const res = setup();
    assert.equal(res.code, 0, res.output);
    assert.match(res.output, /cluster b: configured auth\/kubernetes-b\/config/);
    assert.doesNotMatch(res.output, /cluster a: configured/);
    assert.equal((await vault().read<{ disable_local_ca_jwt: boolean }>(path, root())).data.disable_local_ca_jwt, true);
  });

  it("--pki-per-cluster: each cluster signs on its own intermediate mount; a's token cannot sign on b's", async () => {
    const first = setup("--pki-per-cluster");
    assert.equal(first.code, 0, first.output);
    for (const c of ["a", "b"]) {
      assert.match(first.output, new RegExp(`cluster ${c}: created an intermediate CA in pki-${c}/ signed by pki/`));
      assert.match(
        first.output,
        new RegExp(
          `cluster ${c}: wrote policy istiod-agent-${c} \\(grants exactly: update on pki-${c}/root/sign-intermediate\\)`,
        ),
      );
    }
    assert.match(setup("--pki-per-cluster").output, /nothing changed/);

    // Each agent's intermediate is issued by its own cluster's Vault intermediate, under the one root.
    for (const [c, env] of [
      ["a", a],
      ["b", b],
    ] as const) {
      const flags = printedFlags(first.output, c);
      assert.ok(flags.includes(`--ca-path=pki-${c}/root/sign-intermediate`), flags.join(" "));
      const got = await initIn(env, flags);
      assert.match(opensslVerify(got.ca, got.root, got.chain), /OK/);
      assert.match(new X509Certificate(got.ca).issuer, new RegExp(`intermediate for cluster ${c}`));
    }

    // Cluster a's Vault token: signing on its own mount is allowed, on cluster b's refused by policy.
    const auth = await vault().kubernetesLogin("kubernetes-a", "istiod-agent", await istiodToken(a));
    try {
      const csr = await workloadCsr("spiffe://cluster.local/ns/probe/sa/probe", { ca: true });
      const sign = (mount: string) =>
        vault().write(`${mount}/root/sign-intermediate`, auth.client_token, { csr, common_name: "probe", ttl: "1h" });
      await sign("pki-a");
      await assert.rejects(sign("pki-b"), (err: Error) => {
        assert.ok(err instanceof HttpStatusError, String(err));
        assert.equal(err.status, 403, err.message);
        return true;
      });
    } finally {
      await vault().write("auth/token/revoke-self", auth.client_token, {});
    }
  });

  it("without --cluster, setup-vault takes the apiserver URL and CA from the kubeconfig's context", async () => {
    const res = cli([
      "setup-vault",
      `--vault-addr=${a.vault.url}`,
      `--vault-cacert=${a.vault.caFile}`,
      `--kubeconfig=${kubeconfig}`,
      "--auth-mount=kubernetes-single",
    ]);
    assert.equal(res.code, 0, res.output);
    assert.match(res.output, /configured auth\/kubernetes-single\/config for \S+/);
    const cfg = (
      await vault().read<{ kubernetes_host: string; kubernetes_ca_cert: string }>(
        "auth/kubernetes-single/config",
        root(),
      )
    ).data;
    assert.equal(cfg.kubernetes_host, a.kube.url, "the current context is ctx-a");
    assert.equal(cfg.kubernetes_ca_cert.trim(), a.kube.caPem.trim());

    // --context picks another context of the same kubeconfig.
    const other = cli([
      "setup-vault",
      `--vault-addr=${a.vault.url}`,
      `--vault-cacert=${a.vault.caFile}`,
      `--kubeconfig=${kubeconfig}`,
      "--context=b",
      "--auth-mount=kubernetes-single-b",
    ]);
    assert.equal(other.code, 0, other.output);
    const cfgB = (
      await vault().read<{ kubernetes_host: string; kubernetes_ca_cert: string }>(
        "auth/kubernetes-single-b/config",
        root(),
      )
    ).data;
    assert.equal(cfgB.kubernetes_host, b.kube.url);
    assert.equal(cfgB.kubernetes_ca_cert.trim(), b.kube.caPem.trim());
  });

  it("bad --cluster values and conflicting flags are usage errors that say what is expected", () => {
    const bad = setup("--cluster=Bad_Name", "--token-reviewer-jwt-file=/nonexistent");
    assert.equal(bad.code, 2, bad.output);
    assert.match(bad.output, /--cluster: "Bad_Name" is not NAME\[=CONTEXT\]; expected NAME a DNS label/);
    assert.match(bad.output, /--token-reviewer-jwt-file: a reviewer JWT belongs to one cluster/);
    const withContext = setup("--context=b");
    assert.equal(withContext.code, 2, withContext.output);
    assert.match(
      withContext.output,
      /--context: not used with --cluster; expected each cluster's context as --cluster NAME=CONTEXT/,
    );
    const stray = setup("--cluster-token-reviewer-jwt-file=z=/tmp/z.jwt");
    assert.equal(stray.code, 2, stray.output);
    assert.match(stray.output, /--cluster-token-reviewer-jwt-file: "z" is not a --cluster/);
    const missing = setup("--cluster=c=no-such-context");
    assert.equal(missing.code, 2, missing.output);
    assert.match(missing.output, /cluster c: --kubernetes-host: missing \(kubeconfig: .*no-such-context/);
  });
});
