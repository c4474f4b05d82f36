// --auth-method and its flags: the mount that follows the method, what each method needs, credential flags of another
// method refused, and an authoritative policy's kubernetesAuth refusing an --auth-method flag as shadowing it.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/config.js";
import { loadConfig, parseFlags } from "../../src/config/load.js";
import { ShadowedByFlagError } from "../../src/config/shadowing.js";
import { parseRelayArgs } from "../../src/relay/config.js";
import { rootTrustPolicy } from "./policy-docs.js";

const env = { VAULT_ADDR: "https://vault.example:8200" };

function problems(argv: string[]): string {
  try {
    loadConfig(parseFlags(argv), env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems.join("\n");
  }
  assert.fail(`expected ${argv.join(" ")} to be refused`);
}

void describe("--auth-method", () => {
  void it("defaults to kubernetes on the kubernetes mount", () => {
    const c = loadConfig({}, env);
    assert.equal(c.auth.method, "kubernetes");
    assert.equal(c.auth.mountPath, "kubernetes");
  });

  void it("jwt and approle default their mount to the method's name unless --auth-mount names one", () => {
    assert.equal(loadConfig(parseFlags(["--auth-method=jwt"]), env).auth.mountPath, "jwt");
    assert.equal(
      loadConfig(parseFlags(["--auth-method=JWT", "--auth-mount=/v1/auth/jwt-east/"]), env).auth.mountPath,
      "jwt-east",
    );
    const a = loadConfig(parseFlags(["--auth-method=approle", "--role-id-file=/r", "--secret-id-file=/s"]), env).auth;
    assert.equal(a.mountPath, "approle");
    assert.equal(a.roleIdFile, "/r");
    assert.equal(a.secretIdFile, "/s");
    assert.equal(
      loadConfig(parseFlags(["--auth-method=token", "--vault-token-file=/t"]), env).auth.vaultTokenFile,
      "/t",
    );
  });

  void it("says what each method is missing, with the flag to use", () => {
    const approle = problems(["--auth-method=approle"]);
    assert.match(
      approle,
      /--role-id-file: missing; --auth-method=approle needs the file holding the AppRole's role-id/,
    );
    assert.match(approle, /--secret-id-file: missing/);
    assert.match(problems(["--auth-method=token"]), /--vault-token-file: missing; --auth-method=token needs/);
    assert.match(problems(["--auth-method=saml"]), /--auth-method.*expected kubernetes, jwt, approle, token, cert/);
    assert.match(
      problems(["--auth-method=cert"]),
      /--auth-method=cert: needs the client certificate Vault checks; set --vault-client-cert/,
    );
  });

  void it("refuses a credential flag of another method rather than ignoring it", () => {
    assert.match(
      problems(["--vault-token-file=/t"]),
      /--vault-token-file: only used with --auth-method=token, not with --auth-method=kubernetes/,
    );
    assert.match(
      problems(["--auth-method=token", "--vault-token-file=/t", "--secret-id-file=/s"]),
      /--secret-id-file: only used with --auth-method=approle/,
    );
    assert.match(
      problems(["--auth-method=token", "--vault-token-file=/t", "--auth-mount=x"]),
      /--auth-mount: not used with --auth-method=token/,
    );
  });

  void it("an authoritative policy with kubernetesAuth refuses --auth-method as shadowing it", () => {
    const doc = rootTrustPolicy("ours", {
      agentCa: { vault: { server: "https://vault.vault:8200", kubernetesAuth: { role: "istiod-agent" } } },
    });
    assert.throws(
      () => loadConfig(parseFlags(["--auth-method=jwt"]), {}, { needVault: true, policyDoc: doc }),
      (err: unknown) =>
        err instanceof ShadowedByFlagError &&
        /^--auth-method: sets what spec\.config\.agentCa\.vault\.kubernetesAuth of RootTrustPolicy/.test(
          err.shadowing.join("\n"),
        ),
    );
    // Without kubernetesAuth in the policy the method stays the flags' to choose.
    const noAuth = rootTrustPolicy("ours", { agentCa: { vault: { server: "https://vault.vault:8200" } } });
    const c = loadConfig(
      parseFlags(["--auth-method=approle", "--role-id-file=/r", "--secret-id-file=/s"]),
      {},
      {
        needVault: true,
        policyDoc: noAuth,
      },
    );
    assert.equal(c.auth.method, "approle");
  });

  void it("the relay mode takes the same flags", () => {
    const r = parseRelayArgs(
      [
        "--role=server",
        "--vault-addr=https://v:8200",
        "--auth-method=approle",
        "--role-id-file=/r",
        "--secret-id-file=/s",
      ],
      {},
    );
    assert.equal(r.kind, "run");
    if (r.kind === "run") assert.equal(r.config.auth.mountPath, "approle");
    assert.throws(
      () => parseRelayArgs(["--role=server", "--vault-addr=https://v:8200", "--auth-method=token"], {}),
      /--vault-token-file: missing/,
    );
  });
});
