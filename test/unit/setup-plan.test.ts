// setup-vault's plan for many clusters: names of mounts, roles, policies and sign paths per cluster, where each
// cluster's apiserver comes from, and the flag combinations it refuses. No Vault here: the plan is pure.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseCommandLine, type FlagTable } from "../../src/cli/flags.js";
import { loadConfig } from "../../src/config/load.js";
import { AGENT_FLAGS } from "../../src/config/load.js";
import {
  SETUP_FLAGS,
  clusterRef,
  describeCluster,
  kubeLookups,
  setupOptions,
  setupSettings,
  type FoundApiserver,
} from "../../src/commands/setup-vault.js";
import { autoTidyConfig, signPathMount } from "../../src/vault/setup.js";

const ENV = { VAULT_ADDR: "https://vault.example:8200" };
const TABLE = { ...AGENT_FLAGS, ...SETUP_FLAGS } as FlagTable<never>;
const CA_A = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n";
const CA_B = "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n";
const FOUND: Record<string, FoundApiserver> = {
  a: { server: "https://a.example:6443", caPem: CA_A, context: "ctx-a" },
  b: { server: "https://b.example:6443", caPem: CA_B, context: "b" },
};

function plan(argv: string[], found: Record<string, FoundApiserver> = FOUND) {
  const { values } = parseCommandLine(TABLE, argv);
  const config = loadConfig(values, ENV);
  return { config, values, ...setupOptions(config, values, found) };
}

void describe("setup-vault --cluster plan", () => {
  void it("NAME[=CONTEXT]: the context defaults to the name; names must be DNS labels", () => {
    assert.deepEqual(clusterRef("east"), { name: "east", context: "east" });
    assert.deepEqual(clusterRef("east=gke_prod_us-east1_east"), { name: "east", context: "gke_prod_us-east1_east" });
    assert.throws(() => clusterRef("East"), /"East" is not NAME\[=CONTEXT\]/);
    assert.throws(() => clusterRef("a="), /empty CONTEXT/);
  });

  void it("each cluster: auth mount <auth-mount>-NAME with its own apiserver and CA, policy <name>-NAME, one role", () => {
    const { plan: p, problems } = plan(["--cluster=a=ctx-a", "--cluster=b", "--revisions=canary"]);
    assert.deepEqual(problems, []);
    assert.equal(p.root.rootMount, "pki");
    assert.deepEqual(
      p.clusters.map((c) => [
        c.name,
        c.kubernetes.mount,
        c.kubernetes.host,
        c.kubernetes.caPem,
        c.policyName,
        c.signPath,
      ]),
      [
        ["a", "kubernetes-a", "https://a.example:6443", CA_A, "istiod-agent-a", "pki/root/sign-intermediate"],
        ["b", "kubernetes-b", "https://b.example:6443", CA_B, "istiod-agent-b", "pki/root/sign-intermediate"],
      ],
    );
    for (const c of p.clusters) {
      assert.deepEqual(c.role.serviceAccounts, ["istiod", "istiod-canary"]);
      assert.equal(c.intermediateMount, undefined, "the root signs directly: no intermediate mount");
    }
    assert.match(describeCluster(p.clusters[0]!), /agent flags: --auth-mount=kubernetes-a --auth-role=istiod-agent/);
  });

  void it("--pki-per-cluster: each cluster's own intermediate mount, and its policy's sign path on it only", () => {
    const { plan: p, problems } = plan(["--cluster=a", "--cluster=b", "--pki-per-cluster", "--auth-mount=k8s"]);
    assert.deepEqual(problems, []);
    assert.deepEqual(
      p.clusters.map((c) => [c.kubernetes.mount, c.intermediateMount, c.signPath]),
      [
        ["k8s-a", "pki-a", "pki-a/root/sign-intermediate"],
        ["k8s-b", "pki-b", "pki-b/root/sign-intermediate"],
      ],
    );
    // A --ca-path on a Vault intermediate keeps its path shape; only the mount is per cluster.
    const int = plan(["--cluster=a", "--pki-per-cluster", "--ca-path=pki_int/issuer/default/sign-intermediate"]);
    assert.equal(int.plan.clusters[0]!.signPath, "pki_int-a/issuer/default/sign-intermediate");
  });

  void it("a reviewer JWT is per cluster: one shared file for several clusters, or an unknown name, is refused", () => {
    const shared = plan(["--cluster=a", "--cluster=b", "--token-reviewer-jwt-file=/x.jwt"]);
    assert.match(shared.problems.join("\n"), /--token-reviewer-jwt-file: a reviewer JWT belongs to one cluster/);
    const stray = setupSettings(
      parseCommandLine(TABLE, ["--cluster=a", "--cluster-token-reviewer-jwt-file=z=/z"]).values,
    );
    assert.match(stray.problems.join("\n"), /"z" is not a --cluster/);
    const twice = setupSettings(parseCommandLine(TABLE, ["--cluster=a", "--cluster=a=other"]).values);
    assert.match(twice.problems.join("\n"), /"a" is given twice/);
    const lone = setupSettings(parseCommandLine(TABLE, ["--pki-per-cluster"]).values);
    assert.match(lone.problems.join("\n"), /--pki-per-cluster: needs --cluster/);
  });

  void it("the kubeconfig is read only for what the flags leave open, with each cluster's own context", () => {
    const lookups = (argv: string[]) => {
      const { values } = parseCommandLine(TABLE, argv);
      return kubeLookups(loadConfig(values, ENV), setupSettings(values).s);
    };
    assert.deepEqual([...lookups(["--kubernetes-host=https://k:6443", "--kubernetes-ca-file=/ca"]).keys()], []);
    assert.deepEqual(
      [...lookups(["--kubernetes-host=https://k:6443", "--context=x"]).entries()],
      [["", { kubeconfig: undefined, context: "x" }]],
    );
    assert.deepEqual(
      [...lookups(["--kubeconfig=/kc", "--cluster=a=ctx-a", "--cluster=b"]).entries()],
      [
        ["a", { kubeconfig: "/kc", context: "ctx-a" }],
        ["b", { kubeconfig: "/kc", context: "b" }],
      ],
    );
  });

  void it("a context that cannot be read names the cluster and the reason", () => {
    const { problems } = plan(["--cluster=a", "--cluster=c"], { ...FOUND, c: { error: 'no context named "c"' } });
    assert.match(problems.join("\n"), /cluster c: --kubernetes-host: missing \(kubeconfig: no context named "c"\)/);
  });
});

void describe("setup-vault --auto-tidy plan", () => {
  void it("off unless asked; the safety buffer defaults to the intermediate's --ttl, at least 72h", () => {
    assert.equal(plan([]).plan.root.autoTidy, undefined);
    assert.deepEqual(plan(["--auto-tidy"]).plan.root.autoTidy, {
      intervalSeconds: 12 * 3600,
      safetyBufferSeconds: 720 * 3600,
    });
    assert.deepEqual(plan(["--auto-tidy", "--ttl=24h"]).plan.root.autoTidy?.safetyBufferSeconds, 72 * 3600);
    const given = plan(["--auto-tidy", "--tidy-safety-buffer=100h", "--tidy-interval=1h"], { "": FOUND.a! });
    assert.deepEqual(given.problems, []);
    assert.deepEqual(given.plan.root.autoTidy, { intervalSeconds: 3600, safetyBufferSeconds: 100 * 3600 });
  });

  void it("its settings without --auto-tidy, or out of range, are refused", () => {
    const { problems } = setupSettings(
      parseCommandLine(TABLE, ["--tidy-safety-buffer=1h", "--tidy-interval=1h"]).values,
    );
    assert.match(problems.join("\n"), /--tidy-safety-buffer: needs --auto-tidy/);
    assert.match(problems.join("\n"), /--tidy-interval: needs --auto-tidy/);
    const low = setupSettings(parseCommandLine(TABLE, ["--auto-tidy", "--tidy-interval=10s"]).values);
    assert.match(low.problems.join("\n"), /--tidy-interval/);
  });

  void it("tidies the mount that stores the intermediates: the sign path's mount", () => {
    assert.equal(signPathMount("pki/root/sign-intermediate"), "pki");
    assert.equal(signPathMount("pki_int/root/sign-intermediate"), "pki_int");
    assert.equal(signPathMount("/team/pki/issuer/default/sign-intermediate"), "team/pki");
    assert.deepEqual(autoTidyConfig({ intervalSeconds: 60, safetyBufferSeconds: 7 }), {
      enabled: true,
      interval_duration: 60,
      tidy_cert_store: true,
      tidy_revoked_certs: true,
      safety_buffer: 7,
    });
  });
});
