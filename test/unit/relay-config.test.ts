import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseRelayArgs, type RelayConfig } from "../../src/relay/config.js";
import { relayPolicy } from "../../src/relay/policy.js";
import { relayAgentMetrics } from "../../src/commands/relay.js";
import { RelayMetrics } from "../../src/relay/metrics.js";
import { AgentMetrics } from "../../src/observability/metrics.js";
import { repoRoot } from "../env/harness.js";
import { relayConfig, relayProblems } from "./relay-args.js";

const env = { VAULT_ADDR: "https://vault.example:8200" };

const run = (argv: string[], e: NodeJS.ProcessEnv = env): RelayConfig => relayConfig(argv, e);
const problems = (argv: string[], e: NodeJS.ProcessEnv = env): string[] => relayProblems(argv, e);

void describe("relay config", () => {
  void it("server defaults fit a standard Gloo install", () => {
    const c = run(["--role=server"]);
    assert.equal(c.role, "server");
    assert.equal(c.namespace, "gloo-mesh");
    assert.deepEqual(c.serverDns, ["gloo-mesh-mgmt-server.gloo-mesh"]);
    assert.deepEqual(c.secrets, {
      root: "relay-root-tls-secret",
      server: "relay-server-tls-secret",
      client: "relay-client-tls-secret",
      signing: "relay-tls-signing-secret",
      token: "relay-identity-token-secret",
    });
    assert.equal(c.pkiMount, "pki_relay", "a relay mount of its own, not the Istio root's");
    assert.equal(c.kvPath, "secret/data/relay/identity-token");
    assert.equal(c.sharedToken, false, "per-cluster identity tokens unless --shared-identity-token");
    assert.equal(c.clusterTokensPath, "secret/data/relay/cluster-tokens");
    assert.equal(c.signingIntermediate, false);
    assert.equal(c.keyAlgorithm, "ECDSA_P256");
    assert.equal(c.ttlSeconds, 720 * 3600);
    assert.equal(c.adopt, false);
    assert.equal(c.once, false);
    assert.equal(c.vault.address, "https://vault.example:8200");
  });

  void it("reads every flag", () => {
    const c = run([
      "--role=agent",
      "--cluster=cluster-1",
      "--namespace=relay",
      "--vault-addr=https://other:8200",
      "--vault-namespace=team",
      "--auth-mount=/k8s/",
      "--auth-role=relay-agent",
      "--token-path=/t",
      "--pki-mount=pki_int",
      "--client-role=agents",
      "--kv-path=/v1/kv/data/relay/token",
      "--shared-identity-token",
      "--ttl=20s",
      "--grace-ratio=0.5",
      "--key-algorithm=rsa_2048",
      "--client-secret=my-client",
      "--adopt",
      "--kubeconfig=/kc",
      "--http-addr=",
      "--once",
      "--resync=30s",
    ]);
    assert.equal(c.role, "agent");
    assert.equal(c.cluster, "cluster-1");
    assert.equal(c.namespace, "relay");
    assert.equal(c.vault.address, "https://other:8200");
    assert.equal(c.vault.namespace, "team");
    assert.deepEqual(
      { method: c.auth.method, mountPath: c.auth.mountPath, role: c.auth.role, tokenPath: c.auth.tokenPath },
      { method: "kubernetes", mountPath: "k8s", role: "relay-agent", tokenPath: "/t" },
    );
    assert.equal(c.pkiMount, "pki_int");
    assert.equal(c.clientRole, "agents");
    assert.equal(c.kvPath, "kv/data/relay/token");
    assert.equal(c.ttlSeconds, 20);
    assert.equal(c.graceRatio, 0.5);
    assert.equal(c.keyAlgorithm, "RSA_2048");
    assert.equal(c.secrets.client, "my-client");
    assert.equal(c.adopt, true);
    assert.equal(c.kubeconfig, "/kc");
    assert.equal(c.httpAddress, "");
    assert.equal(c.once, true);
    assert.equal(c.resyncSeconds, 30);
  });

  void it("refuses the Istio root's mount, a cluster named like the server, and an unconstrained signing CA", () => {
    const p = problems(["--role=server", "--pki-mount=pki", "--clusters=a,gloo-mesh-mgmt-server.gloo-mesh"]);
    assert.ok(p.some((x) => x.startsWith('--pki-mount: "pki" is the mount that holds the Istio root')));
    assert.ok(p.some((x) => x.startsWith('--clusters: "gloo-mesh-mgmt-server.gloo-mesh" is a relay server name')));
    assert.ok(
      problems(["--role=server", "--signing-intermediate"]).some((x) => x.startsWith("--signing-intermediate:")),
    );
    const ok = run([
      "--role=server",
      "--pki-mount=pki",
      "--allow-istio-root-mount",
      "--clusters=c1,c2",
      "--signing-intermediate",
    ]);
    assert.deepEqual(ok.clusters, ["c1", "c2"]);
    assert.deepEqual(ok.signingPermittedDns, ["c1", "c2"], "the signing CA is constrained to the registered clusters");
  });

  void it("reports every problem at once, each with the flag and what is expected", () => {
    const p = problems(
      [
        "--role=agent",
        "--ttl=soon",
        "--grace-ratio=1.5",
        "--key-algorithm=DSA",
        "--kv-path=secret/relay/token",
        "--namespace=Gloo_Mesh",
        "--signing-intermediate",
        "--http-addr=nope",
      ],
      {},
    );
    const text = p.join("\n");
    for (const flag of [
      "--vault-addr",
      "--cluster",
      "--ttl",
      "--grace-ratio",
      "--key-algorithm",
      "--kv-path",
      "--namespace",
      "--signing-intermediate",
      "--http-addr",
    ]) {
      assert.match(text, new RegExp(`^${flag}: .*expected`, "m"), `${flag} is reported with what is expected`);
    }
  });

  void it("reports Vault connection problems in the sidecar's words (one check for every mode)", () => {
    const junk = join(mkdtempSync(join(tmpdir(), "relay-cfg-")), "not-a-ca.pem");
    writeFileSync(junk, "no certificate here\n");
    const text = problems(["--role=server", `--vault-cacert=${junk}`], { VAULT_ADDR: "ftp://vault" }).join("\n");
    assert.match(text, /^--vault-addr: "ftp:\/\/vault" must be an https:\/\/ \(or http:\/\/\) URL/m);
    assert.match(text, /^--vault-cacert .*not-a-ca\.pem: not a PEM certificate bundle; expected one or more/m);
    assert.match(problems(["--role=server"], {}).join("\n"), /^--vault-addr: missing; expected the Vault URL/m);
  });

  void it("needs a role, and a cluster name for the agent", () => {
    assert.match(problems([]).join("\n"), /--role: missing; expected server .* or agent/);
    assert.match(problems(["--role=agent"]).join("\n"), /--cluster: missing/);
    assert.match(problems(["--role=agent", "--cluster=Not A Name"]).join("\n"), /--cluster: "Not A Name" is invalid/);
    assert.match(problems(["--role=server", "--cluster=c1"]).join("\n"), /--cluster: only used with --role agent/);
    assert.match(problems(["--role=server", "--server-dns=ok.example,bad_name"]).join("\n"), /"bad_name"/);
    assert.match(problems(["--role=server", "--bogus"]).join("\n"), /flags: .*bogus/);
  });

  void it("rejects two Secrets with the same name", () => {
    assert.match(problems(["--role=server", "--server-secret=relay-root-tls-secret"]).join("\n"), /must all differ/);
  });

  void it("--help and --print-policy need no Vault address", () => {
    assert.deepEqual(parseRelayArgs(["--help"], {}), { kind: "help" });
    const both = parseRelayArgs(["--print-policy"], {});
    assert.equal(both.kind, "print-policy");
    assert.deepEqual((both as { roles: string[] }).roles, ["server", "agent"]);
    const agent = parseRelayArgs(["--print-policy", "--role=agent"], {});
    assert.deepEqual((agent as { roles: string[] }).roles, ["agent"]);
  });
});

void describe("relay metrics", () => {
  // Every mode's own series, without Node's standard process_*/nodejs_* series and the build info every mode has.
  const names = async (m: AgentMetrics) =>
    (await m.registry.getMetricsAsJSON())
      .map((x) => x.name)
      .filter((n) => !/^(process|nodejs)_/.test(n) && n !== "istiod_vault_agent_build_info");

  void it("each relay mode exports only its own series, the sidecar all of its own, all with the one prefix", async () => {
    const server = relayAgentMetrics(run(["--role=server", "--once"]));
    new RelayMetrics(server.registry);
    const serverNames = await names(server);
    assert.ok(serverNames.includes("istiod_vault_agent_relay_rotations_total"));
    assert.ok(serverNames.includes("istiod_vault_agent_vault_logins_total"), "the relay logs in to Vault");
    for (const n of serverNames) assert.match(n, /^istiod_vault_agent_(relay|vault)_/, `relay server exports ${n}`);

    assert.ok(!serverNames.includes("istiod_vault_agent_vault_up"), "--once runs no Vault probe");
    const service = await names(relayAgentMetrics(run(["--role=server"])));
    assert.ok(service.includes("istiod_vault_agent_vault_up"), "the long-running relay probes Vault");
    const unprobed = await names(relayAgentMetrics(run(["--role=server", "--vault-probe-interval=0"])));
    assert.ok(!unprobed.includes("istiod_vault_agent_vault_up"), "--vault-probe-interval=0 turns the probe off");

    const issuer = await names(relayAgentMetrics(run(["--role=server", "--issuer"])));
    assert.ok(
      issuer.includes("istiod_vault_agent_intermediate_not_after_timestamp_seconds"),
      "the issuer's signing intermediate",
    );
    for (const n of issuer) assert.match(n, /^istiod_vault_agent_(vault|intermediate)_/, `relay issuer exports ${n}`);

    const bootstrapMetrics = relayAgentMetrics(run(["--role=agent", "--cluster=c1", "--bootstrap=mgmt:9910"], {}));
    assert.deepEqual(
      await names(bootstrapMetrics),
      [],
      "no Vault in bootstrap mode, so no Vault or intermediate series",
    );
    const all = (await bootstrapMetrics.registry.getMetricsAsJSON()).map((x) => x.name);
    assert.ok(all.includes("istiod_vault_agent_build_info"), "every mode says which build runs");
    assert.ok(all.includes("process_resident_memory_bytes"), "Node's series under their standard names");

    const sidecar = await names(new AgentMetrics({ processMetrics: false }));
    for (const n of [
      "istiod_vault_agent_leaves_signed_total",
      "istiod_vault_agent_cacerts_writes_total",
      "istiod_vault_agent_vault_logins_total",
    ])
      assert.ok(sidecar.includes(n), `the sidecar exports ${n}`);
    assert.ok(!sidecar.includes("istiod_vault_agent_vault_up"), "no vault_up without the probe (it would read 0)");
    assert.ok(
      (await names(new AgentMetrics({ processMetrics: false, vaultProbe: true }))).includes(
        "istiod_vault_agent_vault_up",
      ),
    );
  });
});

void describe("relay policy", () => {
  void it("vault-policies/relay.hcl is the default rendering", () => {
    assert.equal(readFileSync(join(repoRoot(), "vault-policies/relay.hcl"), "utf8"), relayPolicy());
  });

  void it("grants update on the two sign paths and the per-cluster token entries, nothing else", () => {
    const grants = (p: string) =>
      [...p.matchAll(/^path "([^"]+)" \{\n {2}capabilities = \[([^\]]*)\]\n\}/gm)].map((m) => [m[1], m[2]]);
    const p = relayPolicy();
    assert.deepEqual(grants(p), [
      ["pki_relay/sign/relay-server", '"update"'],
      ["pki_relay/sign/relay-client", '"update"'],
      ["secret/data/relay/cluster-tokens/*", '"read", "create", "update"'],
      ["secret/metadata/relay/cluster-tokens/", '"list"'],
    ]);
    assert.match(
      p,
      /^# {3}path "pki_relay\/root\/sign-intermediate"/m,
      "the optional grant is documented, commented out",
    );
    assert.deepEqual(grants(relayPolicy({ roles: ["agent"] })), [["pki_relay/sign/relay-client", '"update"']]);
    assert.deepEqual(grants(relayPolicy({ sharedToken: true })).at(-1), [
      "secret/data/relay/identity-token",
      '"read", "create", "update"',
    ]);
  });

  void it("adds sign-intermediate only for the signing intermediate, and narrows to one role", () => {
    const withSigning = relayPolicy({ signingIntermediate: true, pkiMount: "/relay_pki/" });
    assert.match(withSigning, /^path "relay_pki\/root\/sign-intermediate" \{\n {2}capabilities = \["update"\]/m);
    const agentOnly = relayPolicy({ roles: ["agent"], signingIntermediate: true, clientRole: "agents" });
    assert.match(agentOnly, /^path "pki_relay\/sign\/agents"/m);
    assert.doesNotMatch(agentOnly, /relay-server|sign-intermediate/);
  });
});
