// The Vault client conventions as configuration: VAULT_CAPATH, VAULT_CLIENT_CERT/KEY, VAULT_TLS_SERVER_NAME and the
// proxy variables (env and flags, flag over variable), and how they meet an authoritative policy's caBundle.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError } from "../../src/config/config.js";
import { loadConfig, parseFlags } from "../../src/config/load.js";
import { ShadowedByFlagError } from "../../src/config/shadowing.js";
import { proxyFor } from "../../src/vault/transport.js";
import { makeTestCa } from "../env/pki.js";
import { glooVaultAgentCa, rootTrustPolicy } from "./policy-docs.js";

const env = { VAULT_ADDR: "https://vault.example:8200" };

function problems(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems.join("\n");
  }
  assert.fail("expected a ConfigError");
}

void describe("Vault TLS and proxy settings", () => {
  void it("VAULT_CAPATH reads every PEM file of the directory (hidden entries skipped); a non-PEM file is refused", async () => {
    const ca = await makeTestCa("unit-capath-ca");
    const dir = mkdtempSync(join(tmpdir(), "iva-capath-"));
    writeFileSync(join(dir, "a.pem"), ca.certPem);
    mkdirSync(join(dir, "..data"));
    const c = loadConfig({}, { ...env, VAULT_CAPATH: dir });
    assert.equal(c.vault.caDir, dir);
    assert.ok(c.vault.caPem?.includes(ca.certPem.trim()));
    writeFileSync(join(dir, "notes.txt"), "not a certificate");
    assert.match(
      problems(() => loadConfig({}, { ...env, VAULT_CAPATH: dir })),
      /--vault-capath \(VAULT_CAPATH\) .*: notes\.txt holds no PEM certificate/,
    );
    assert.match(
      problems(() => loadConfig({}, { ...env, VAULT_CAPATH: join(dir, "missing") })),
      /cannot read the directory \(ENOENT\)/,
    );
    assert.match(
      problems(() => loadConfig({}, { ...env, VAULT_CAPATH: dir, VAULT_CACERT: join(dir, "a.pem") })),
      /not used together with --vault-cacert/,
    );
  });

  void it("VAULT_CLIENT_CERT/KEY: both or neither, readable and matching; the key's content is never in a message", async () => {
    const ca = await makeTestCa("unit-client-ca");
    const a = await ca.issue({ commonName: "a", client: true });
    const b = await ca.issue({ commonName: "b", client: true });
    const dir = mkdtempSync(join(tmpdir(), "iva-client-"));
    const f = (n: string, s: string) => (writeFileSync(join(dir, n), s), join(dir, n));
    const [cert, key, otherKey] = [f("a.crt", a.certPem), f("a.key", a.keyPem), f("b.key", b.keyPem)];
    const c = loadConfig({}, { ...env, VAULT_CLIENT_CERT: cert, VAULT_CLIENT_KEY: key });
    assert.deepEqual([c.vault.clientCertFile, c.vault.clientKeyFile], [cert, key]);
    // Flags win over the variables.
    const flagged = loadConfig(parseFlags([`--vault-client-key=${key}`]), { ...env, VAULT_CLIENT_CERT: cert });
    assert.equal(flagged.vault.clientKeyFile, key);
    assert.match(
      problems(() => loadConfig({}, { ...env, VAULT_CLIENT_CERT: cert })),
      /VAULT_CLIENT_KEY\): missing/,
    );
    const mismatch = problems(() => loadConfig({}, { ...env, VAULT_CLIENT_CERT: cert, VAULT_CLIENT_KEY: otherKey }));
    assert.match(mismatch, /not usable \(.*\); expected a PEM certificate and its matching PEM private key/);
    assert.ok(!mismatch.includes(b.keyPem.split("\n")[1]!), "no key material in the message");
    assert.match(
      problems(() => loadConfig(parseFlags(["--auth-method=cert"]), env)),
      /--auth-method=cert: needs the client certificate/,
    );
    const certAuth = loadConfig(parseFlags(["--auth-method=cert"]), {
      ...env,
      VAULT_CLIENT_CERT: cert,
      VAULT_CLIENT_KEY: key,
    });
    assert.equal(certAuth.auth.mountPath, "cert", "the cert method's conventional mount");
  });

  void it("VAULT_TLS_SERVER_NAME and the proxies (lower-case spellings too); a bad proxy URL is refused", () => {
    const c = loadConfig(
      {},
      { ...env, VAULT_TLS_SERVER_NAME: "vault.internal", https_proxy: "http://proxy:3128", NO_PROXY: ".svc" },
    );
    assert.equal(c.vault.tlsServerName, "vault.internal");
    assert.deepEqual(c.vault.proxy, { httpsProxy: "http://proxy:3128/", httpProxy: undefined, noProxy: ".svc" });
    assert.equal(proxyFor(c.vault.address, c.vault.proxy), "http://proxy:3128/");
    assert.equal(proxyFor("http://127.0.0.1:8200", c.vault.proxy), undefined, "http:// uses HTTP_PROXY only");
    const flagged = loadConfig(parseFlags(["--vault-https-proxy=http://other:8080"]), {
      ...env,
      HTTPS_PROXY: "http://proxy:3128",
    });
    assert.equal(flagged.vault.proxy.httpsProxy, "http://other:8080/");
    assert.match(
      problems(() => loadConfig({}, { ...env, HTTPS_PROXY: "socks5://proxy:1080" })),
      /HTTPS_PROXY: "socks5:\/\/proxy:1080" is invalid; expected a proxy URL with http:\/\/ or https:\/\//,
    );
  });

  void it("with an authoritative policy, VAULT_CAPATH shadows its caBundle (refused); the other variables do not", async () => {
    const ca = await makeTestCa("unit-shadow-ca");
    const dir = mkdtempSync(join(tmpdir(), "iva-capath-"));
    writeFileSync(join(dir, "a.pem"), ca.certPem);
    const vault = { ...(glooVaultAgentCa().vault as Record<string, unknown>), caBundle: ca.certPem };
    const policyDoc = rootTrustPolicy("gloo", { agentCa: { vault } });
    assert.throws(
      () => loadConfig({}, { VAULT_CAPATH: dir }, { needVault: true, policyDoc }),
      (err: unknown) =>
        err instanceof ShadowedByFlagError &&
        /^VAULT_CAPATH: \(the variable of --vault-capath\) sets what spec\.config\.agentCa\.vault\.caBundle/m.test(
          err.shadowing.join("\n"),
        ),
    );
    const c = loadConfig(
      {},
      { VAULT_TLS_SERVER_NAME: "vault.internal", HTTPS_PROXY: "http://p:3128" },
      {
        needVault: true,
        policyDoc,
      },
    );
    assert.equal(c.vault.tlsServerName, "vault.internal");
  });
});
