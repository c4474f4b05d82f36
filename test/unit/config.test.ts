import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, DEFAULT_CONFIG, parseDuration, validateConfig } from "../../src/config/config.js";
import { loadConfig, parseFlags } from "../../src/config/load.js";
import { describeGrants, istiodAgentGrants, istiodAgentPolicy } from "../../src/vault/policies.js";
import { repoRoot } from "../env/harness.js";
import { glooVaultAgentCa, rootTrustPolicy } from "./policy-docs.js";

const env = { VAULT_ADDR: "https://vault.example:8200" };

/** Asserts that the fields of `actual` named in `expected` have those values (others are not compared). */
function assertFields<T extends object>(actual: T, expected: Partial<T>): void {
  const named = Object.fromEntries(Object.keys(expected).map((k) => [k, actual[k as keyof T]]));
  assert.deepEqual(named, expected);
}

void describe("config", () => {
  void it("defaults with a Vault address are valid and fit a standard istiod install", () => {
    const c = loadConfig({}, env);
    assert.equal(c.vault.address, "https://vault.example:8200");
    assert.equal(c.intermediate.caPath, "pki/root/sign-intermediate");
    assert.equal(c.intermediate.keyAlgorithm, "ECDSA_P256");
    assert.equal(c.cacerts.group, 1337);
    assert.equal(c.vault.insecureSkipVerify, false);
    assert.deepEqual(validateConfig(DEFAULT_CONFIG, { needVault: false }), []);
  });

  void it("reports every problem at once, with the field and what is expected", () => {
    assert.throws(
      () =>
        loadConfig(
          parseFlags(["--ttl=soon", "--key-algorithm=DSA", "--trust-domain=Bad Domain", "--socket=rel/path"]),
          {},
        ),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        const text = err.problems.join("\n");
        assert.match(text, /--ttl: "soon" is invalid; expected a duration/);
        assert.match(text, /vault.address: missing/);
        assert.match(text, /--key-algorithm: "DSA" is invalid; expected one of ECDSA_P256/);
        assert.match(text, /trustDomain: "Bad Domain"/);
        assert.match(text, /socketPath: "rel\/path" must be an absolute path/);
        assert.equal(err.problems.length, 5);
        return true;
      },
    );
  });

  void it("resource-limit flags: defaults, overrides, and clear errors for bad values", () => {
    const d = loadConfig({}, env);
    assert.deepEqual(d.serve.limits, {
      maxWatchPerConnection: 16,
      maxWatchTotal: 256,
      maxWatchBufferedBytes: 65536,
      maxSignInFlightPerConnection: 32,
      rotateMinIntervalMs: 30_000,
    });
    assert.equal(d.istioCa.authFailureBurst, 20);
    const c = loadConfig(parseFlags(["--socket-max-watch-total=8", "--rotate-min-interval=2m"]), env);
    assert.equal(c.serve.limits.maxWatchTotal, 8);
    assert.equal(c.serve.limits.rotateMinIntervalMs, 120_000);
    assert.throws(
      () =>
        loadConfig(
          parseFlags([
            "--socket-max-watch-per-connection=0",
            "--istio-ca-max-in-flight=lots",
            "--rotate-min-interval=x",
          ]),
          env,
        ),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        const text = err.problems.join("\n");
        assert.match(text, /--socket-max-watch-per-connection: "0" is invalid; expected a whole number ≥ 1/);
        assert.match(text, /--istio-ca-max-in-flight: "lots" is invalid; expected a whole number ≥ 1/);
        assert.match(text, /--rotate-min-interval: "x" is invalid; expected a duration such as 30s/);
        return true;
      },
    );
  });

  void it("--key-algorithm is case-insensitive and --auth-mount takes every spelling of the mount", () => {
    assert.equal(loadConfig(parseFlags(["--key-algorithm=ecdsa_p384"]), env).intermediate.keyAlgorithm, "ECDSA_P384");
    for (const mount of ["kubernetes", "/kubernetes/", "auth/kubernetes/", "/v1/auth/kubernetes"])
      assert.equal(loadConfig(parseFlags([`--auth-mount=${mount}`]), env).auth.mountPath, "kubernetes", mount);
    assert.equal(loadConfig(parseFlags(["--auth-mount=auth/k8s-east/"]), env).auth.mountPath, "k8s-east");
  });

  void it("VAULT_SKIP_VERIFY is parsed like Vault's client (Go ParseBool): 'false' keeps verification on, junk is an error", () => {
    for (const off of ["false", "0", "f", "F", "FALSE", "False"])
      assert.equal(loadConfig({}, { ...env, VAULT_SKIP_VERIFY: off }).vault.insecureSkipVerify, false, off);
    for (const on of ["true", "1", "t", "T", "TRUE", "True"])
      assert.equal(loadConfig({}, { ...env, VAULT_SKIP_VERIFY: on }).vault.insecureSkipVerify, true, on);
    for (const junk of ["no", "yes", "tRuE", " true", "on"])
      assert.throws(
        () => loadConfig({}, { ...env, VAULT_SKIP_VERIFY: junk }),
        (err: Error) => err.message.includes(`VAULT_SKIP_VERIFY: "${junk}" must be a boolean as Vault reads it`),
        junk,
      );
  });

  void it("reads a RootTrustPolicy file; flags override it", () => {
    const dir = mkdtempSync(join(tmpdir(), "iva-config-"));
    const file = join(dir, "rtp.yaml");
    writeFileSync(
      file,
      [
        "apiVersion: istiod-vault-agent.io/v1alpha1",
        "kind: RootTrustPolicy",
        "metadata: {name: istiod}",
        "spec:",
        "  config:",
        "    agentCa:",
        "      vault:",
        "        server: https://vault.vault:8200",
        "        caPath: pki_int/root/sign-intermediate",
        "        kubernetesAuth: {mountPath: /v1/auth/k8s, role: agent}",
        "    intermediateCertOptions: {ttl: 48h, keyAlgorithm: RSA_3072, orgName: Acme, secretRotationGracePeriodRatio: 0.25}",
      ].join("\n"),
    );
    const c = loadConfig(parseFlags([`--config=${file}`, "--ttl=72h"]), {});
    assert.equal(c.vault.address, "https://vault.vault:8200");
    assertFields(c.auth, { mountPath: "k8s", role: "agent" });
    assertFields(c.intermediate, {
      caPath: "pki_int/root/sign-intermediate",
      ttlSeconds: 72 * 3600,
      keyAlgorithm: "RSA_3072",
      rotationGraceRatio: 0.25,
    });
    writeFileSync(file, "apiVersion: v1\nkind: ConfigMap\ndata: {}\n");
    assert.throws(
      () => loadConfig(parseFlags([`--config=${file}`]), env),
      /expected istiod-vault-agent.io\/v1alpha1\/RootTrustPolicy/,
    );
    writeFileSync(file, "spec: [unclosed");
    assert.throws(() => loadConfig(parseFlags([`--config=${file}`]), env), /cannot read or parse it/);
  });

  void it("unknown flags are refused", () => {
    assert.throws(() => parseFlags(["--vault-adr=x"]), /flags: .*vault-adr/);
  });

  void it("parses durations the way Vault writes them", () => {
    assert.equal(parseDuration("720h"), 720 * 3600);
    assert.equal(parseDuration("2h30m"), 9000);
    assert.equal(parseDuration("90d"), 90 * 86400);
    assert.equal(parseDuration("45"), 45);
    assert.equal(parseDuration("200ms"), 0.2);
    assert.ok(Number.isNaN(parseDuration("1x")));
    assert.ok(Number.isNaN(parseDuration("")));
  });

  void it("vault-policies/istiod-agent.hcl is exactly what setup-vault writes by default", () => {
    assert.equal(readFileSync(join(repoRoot(), "vault-policies/istiod-agent.hcl"), "utf8"), istiodAgentPolicy());
    const rules = istiodAgentPolicy("pki/root/sign-intermediate")
      .split("\n")
      .filter((l) => !l.startsWith("#"))
      .join("\n");
    assert.equal(rules, 'path "pki/root/sign-intermediate" {\n  capabilities = ["update"]\n}\n');
  });

  void it("with --csr-path the policy and setup-vault's report name the generate path and the key delete grant", () => {
    const csr = "pki_int/intermediate/generate/exported";
    assert.equal(
      describeGrants(istiodAgentGrants("pki/root/sign-intermediate", csr)),
      "update on pki/root/sign-intermediate, update on pki_int/intermediate/generate/exported, delete on pki_int/key/*",
    );
    assert.equal(describeGrants(istiodAgentGrants()), "update on pki/root/sign-intermediate");
    const rules = istiodAgentPolicy("pki/root/sign-intermediate", csr);
    assert.match(rules, /^path "pki_int\/key\/\*" \{\n {2}capabilities = \["delete"\]\n\}/m);
  });
});

describe("Gloo Mesh RootTrustPolicy translation", () => {
  const gloo = (config: Record<string, unknown>, extraSpec: Record<string, unknown> = {}) =>
    rootTrustPolicy("gloo", config, extraSpec);

  it("translates the supported Vault fields", () => {
    const c = loadConfig(
      {},
      {},
      {
        needVault: true,
        policyDoc: gloo({
          agentCa: glooVaultAgentCa(),
          intermediateCertOptions: {
            ttlDays: 365,
            rsaKeySizeBytes: 4096,
            orgName: "Solo",
            secretRotationGracePeriodRatio: 0.1,
          },
        }),
      },
    );
    assert.equal(c.vault.address, "https://vault.vault:8200");
    assertFields(c.auth, {
      mountPath: "kube-cluster1",
      role: "gloo-mesh-istiod",
      tokenPath: "/var/run/secrets/kubernetes.io/serviceaccount/token",
    });
    assertFields(c.intermediate, {
      csrPath: "pki_int/intermediate/generate/exported",
      ttlSeconds: 365 * 86400,
      keyAlgorithm: "RSA_4096",
      rotationGraceRatio: 0.1,
    });
  });

  it("names every field it does not support", () => {
    assert.throws(
      () =>
        loadConfig({}, env, {
          needVault: true,
          policyDoc: gloo(
            {
              mgmtServerCa: { generated: {} },
              autoRestartPods: true,
              agentCa: { vault: { server: "https://v:8200", tokenSecretRef: { name: "t" } } },
            },
            { applyToMeshes: [{ name: "m" }] },
          ),
        }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        const text = err.problems.join("\n");
        assert.match(text, /spec.applyToMeshes: not supported/);
        assert.match(text, /spec.config.mgmtServerCa: not supported \(the root stays in Vault/);
        assert.match(text, /spec.config.autoRestartPods: not supported/);
        assert.match(text, /agentCa.vault.tokenSecretRef: not supported \(a token in a Secret.*--auth-method=token/);
        return true;
      },
    );
  });
});
