// The RootTrustPolicy read with --policy-name is authoritative: flags and variables that set one of its fields are
// refused (config layer), removed fields are refused with their reason, and the shipped manifests pass no flag that
// shadows the example policy.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { ConfigError } from "../../src/config/config.js";
import { AGENT_FLAGS, loadConfig, parseFlags } from "../../src/config/load.js";
import { ShadowedByFlagError, shadowingProblems } from "../../src/config/shadowing.js";
import { repoRoot } from "../env/harness.js";
import { rootTrustPolicy } from "./policy-docs.js";

const CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

function policy(extraVault: Record<string, unknown> = {}, extraSpec: Record<string, unknown> = {}) {
  return rootTrustPolicy(
    "ours",
    {
      agentCa: {
        vault: {
          server: "https://vault.vault:8200",
          caBundle: CA,
          kubernetesAuth: { role: "istiod-agent" },
          ...extraVault,
        },
      },
      intermediateCertOptions: { ttl: "24h" },
    },
    extraSpec,
  );
}

function refusal(fn: () => unknown): ShadowedByFlagError {
  let caught: unknown;
  assert.throws(fn, (err: unknown) => ((caught = err), true));
  assert.ok(caught instanceof ShadowedByFlagError, `expected ShadowedByFlagError, got ${String(caught)}`);
  return caught;
}

void describe("authoritative RootTrustPolicy (--policy-name)", () => {
  void it("refuses a flag that sets a field the policy sets, naming both and what to do", () => {
    const err = refusal(() =>
      loadConfig(
        parseFlags(["--vault-addr=https://other:8200", "--auth-role=r", "--ttl=1h"]),
        {},
        {
          needVault: true,
          policyDoc: policy(),
          policyName: "istio-system/istiod",
        },
      ),
    );
    assert.equal(err.shadowing.length, 3);
    assert.match(
      err.shadowing.join("\n"),
      /^--vault-addr: sets what spec\.config\.agentCa\.vault\.server of RootTrustPolicy istio-system\/istiod sets; the policy is authoritative.*remove one of them/m,
    );
    assert.match(
      err.shadowing.join("\n"),
      /^--auth-role: sets what spec\.config\.agentCa\.vault\.kubernetesAuth\.role/m,
    );
    assert.match(err.shadowing.join("\n"), /^--ttl: sets what spec\.config\.intermediateCertOptions\.ttl/m);
    assert.ok(err instanceof ConfigError, "a ConfigError: the command exits 2");
  });

  void it("refuses an environment variable the same way, and the CA file against caBundle", () => {
    const err = refusal(() =>
      loadConfig(
        {},
        { VAULT_ADDR: "https://vault.vault:8200", VAULT_CACERT: "/etc/ca.pem" },
        {
          needVault: true,
          policyDoc: policy(),
        },
      ),
    );
    const text = err.shadowing.join("\n");
    assert.match(text, /^VAULT_ADDR: \(the variable of --vault-addr\) sets what spec\.config\.agentCa\.vault\.server/m);
    assert.match(
      text,
      /^VAULT_CACERT: \(the variable of --vault-cacert\) sets what spec\.config\.agentCa\.vault\.caBundle/m,
    );
  });

  void it("accepts flags for fields the policy leaves alone (pod layout: token path, socket, cacerts, http)", () => {
    const c = loadConfig(
      parseFlags([
        "--token-path=/var/run/secrets/tokens/vault-token",
        "--socket=/var/run/istiod-vault-agent/agent.sock",
        "--cacerts-dir=/etc/cacerts",
        "--http-addr=0.0.0.0:15300",
      ]),
      {},
      { needVault: true, policyDoc: policy() },
    );
    assert.equal(c.vault.address, "https://vault.vault:8200");
    assert.equal(c.auth.tokenPath, "/var/run/secrets/tokens/vault-token");
    // ... but not once the policy sets the token path too.
    const err = refusal(() =>
      loadConfig(
        parseFlags(["--token-path=/t"]),
        {},
        {
          needVault: true,
          policyDoc: policy({ kubernetesAuth: { role: "r", serviceAccountTokenPath: "/p" } }),
        },
      ),
    );
    assert.match(
      err.shadowing[0]!,
      /^--token-path: sets what spec\.config\.agentCa\.vault\.kubernetesAuth\.serviceAccountTokenPath/,
    );
  });

  void it("a --config file stays overridable by flags (only the apiserver's policy is authoritative)", () => {
    const file = join(mkdtempSync(join(tmpdir(), "iva-policy-")), "policy.yaml");
    writeFileSync(file, JSON.stringify(policy()));
    const c = loadConfig(parseFlags([`--config=${file}`, "--ttl=2h"]), {}, { needVault: true });
    assert.equal(c.intermediate.ttlSeconds, 7200);
    assert.throws(
      () => loadConfig({ config: "/x.yaml" }, {}, { needVault: true, policyDoc: policy() }),
      /--config \/x.yaml: not used with --policy-name/,
    );
  });

  void it("refuses the removed spec.applyTo and spec.config.relay with the reason", () => {
    const doc = policy({}, { applyTo: { deployments: [{ name: "istiod" }] } });
    (doc.spec as { config: Record<string, unknown> }).config.relay = { server: {} };
    assert.throws(
      () => loadConfig({}, {}, { needVault: true, policyDoc: doc }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        const text = err.problems.join("\n");
        assert.match(text, /^spec\.applyTo: removed; a policy applies to the istiod Deployment of the same name/m);
        assert.match(text, /^spec\.config\.relay: removed; the relay mode is configured by its own flags/m);
        return true;
      },
    );
  });

  void it("the shipped manifests pass no flag that shadows the example policy", () => {
    const root = repoRoot();
    const example: unknown = parseYaml(readFileSync(join(root, "manifests/examples/root-trust-policy.yaml"), "utf8"));
    const patch = parseYaml(readFileSync(join(root, "manifests/overlays/istiod/agent-patch.yaml"), "utf8")) as {
      spec: { template: { spec: { initContainers: Container[]; containers: Container[] } } };
    };
    const values = parseYaml(readFileSync(join(root, "manifests/helm/istiod-values.yaml"), "utf8")) as {
      initContainers: Container[];
    };
    type Container = { name: string; args?: string[]; env?: { name: string; value?: string }[] };
    const agents = [
      ...patch.spec.template.spec.initContainers,
      ...patch.spec.template.spec.containers,
      ...values.initContainers,
    ].filter((c) => c.args?.some((a) => a.startsWith("--policy-name=")));
    assert.equal(agents.length, 3, "the overlay's init container and sidecar, and the Helm values' sidecar");
    for (const c of agents) {
      const env = Object.fromEntries((c.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value]));
      const flags = parseFlags(c.args!.slice(1));
      assert.deepEqual(shadowingProblems(AGENT_FLAGS, flags, env, example, "example"), [], c.name);
      // And the example with those flags is a complete, valid configuration.
      loadConfig(flags, env, { needVault: true, policyDoc: example });
    }
  });
});
