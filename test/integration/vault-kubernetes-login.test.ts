// Foundation: a service-account token from the real kube-apiserver logs in to real OpenBao through Kubernetes auth,
// and the agent's policy lets it have an intermediate signed, and nothing else.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateKeyPair } from "../../src/crypto/keys.js";
import { createIntermediateCsr } from "../../src/authority/csr.js";
import { validateSignAnswer, type PkiSignAnswer } from "../../src/authority/chain.js";
import { HttpStatusError } from "../../src/net/http-json.js";
import { x509 } from "../../src/crypto/x509.js";
import { serverBinaries, serverVersions } from "../env/harness.js";
import { startAgentTestEnv, ISTIO_NS, ISTIOD_SA, type AgentTestEnv } from "../env/fixtures.js";

describe("Vault Kubernetes auth and PKI against real OpenBao + kube-apiserver", () => {
  let t: AgentTestEnv;

  before(async () => {
    console.log(
      `# servers: ${JSON.stringify(serverVersions(serverBinaries(["etcd", "kube-apiserver", "openbao", "istiod"])))}`,
    );
    t = await startAgentTestEnv();
  });
  after(async () => t?.env.stop());

  const login = async (ns: string, sa: string, audience: string) => {
    const jwt = await t.env.requestToken(ns, sa, audience, 600);
    return t.env.vault.client.kubernetesLogin("kubernetes", "istiod-agent", jwt);
  };

  const expectStatus = async (p: Promise<unknown>, status: number, what: string) => {
    await assert.rejects(p, (err: unknown) => {
      assert.ok(err instanceof HttpStatusError, `${what}: expected an HTTP error, got ${String(err)}`);
      assert.equal(err.status, status, `${what}: ${err.message}`);
      return true;
    });
  };

  it("setupVault is idempotent: a second run changes nothing", async () => {
    assert.ok(t.changes.length >= 5, `first run should report its changes, got ${JSON.stringify(t.changes)}`);
    const { setupVault } = await import("../../src/vault/setup.js");
    assert.deepEqual(await setupVault(t.env.vault.client, t.env.vault.rootToken, t.setup), []);
  });

  for (const signer of ["pki", "pki_int"]) {
    it(`istiod's token logs in and ${signer}/root/sign-intermediate returns a chain that verifies to the root`, async () => {
      // The agent's policy names one sign path; widen it for pki_int in this case only, through the same setup code.
      if (signer === "pki_int") {
        const { setupVault } = await import("../../src/vault/setup.js");
        await setupVault(t.env.vault.client, t.env.vault.rootToken, {
          ...t.setup,
          signPath: "pki_int/root/sign-intermediate",
          policyName: "istiod-agent-int",
          role: { ...t.setup.role, name: "istiod-agent-int" },
        });
      }
      const jwt = await t.env.requestToken(ISTIO_NS, ISTIOD_SA, "vault", 600);
      const auth = await t.env.vault.client.kubernetesLogin(
        "kubernetes",
        signer === "pki" ? "istiod-agent" : "istiod-agent-int",
        jwt,
      );
      assert.equal(auth.metadata?.service_account_name, ISTIOD_SA);
      assert.equal(auth.metadata?.service_account_namespace, ISTIO_NS);
      assert.ok(auth.policies.includes(signer === "pki" ? "istiod-agent" : "istiod-agent-int"));

      const keys = await generateKeyPair("ECDSA_P256", false);
      const csr = await createIntermediateCsr(keys, "ECDSA_P256", {
        commonName: "istiod intermediate",
        organization: "test",
      });
      const answer = await t.env.vault.client.write<PkiSignAnswer>(
        `${signer}/root/sign-intermediate`,
        auth.client_token,
        {
          csr,
          common_name: "istiod intermediate",
          ttl: "24h",
          max_path_length: 0,
          format: "pem",
        },
      );
      const chain = await validateSignAnswer(answer.data, keys.publicKey, new Date(), { expectCa: true });
      assert.equal(chain.chainPem.length, signer === "pki" ? 2 : 3);
      const bc = chain.cert.getExtension(x509.BasicConstraintsExtension);
      assert.equal(bc?.ca, true);
      assert.equal(bc?.pathLength, 0);

      // @peculiar/x509's chain builder agrees ...
      const certs = chain.chainPem.map((p) => new x509.X509Certificate(p));
      const built = await new x509.X509ChainBuilder({ certificates: certs.slice(1) }).build(certs[0]!);
      assert.equal(built.length, certs.length);
      // ... and so does openssl.
      const dir = mkdtempSync(join(tmpdir(), "iva-verify-"));
      try {
        writeFileSync(join(dir, "root.pem"), chain.rootPem);
        writeFileSync(join(dir, "untrusted.pem"), chain.chainPem.slice(1, -1).join(""));
        writeFileSync(join(dir, "cert.pem"), chain.certPem);
        const args = ["verify", "-CAfile", join(dir, "root.pem")];
        if (chain.chainPem.length > 2) args.push("-untrusted", join(dir, "untrusted.pem"));
        const out = execFileSync("openssl", [...args, join(dir, "cert.pem")], { encoding: "utf8" });
        assert.match(out, /cert\.pem: OK/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  it("a service account the role does not bind is refused with 403", async () => {
    await t.env.createServiceAccount(ISTIO_NS, "not-istiod");
    await expectStatus(login(ISTIO_NS, "not-istiod", "vault"), 403, "unbound service account");
    await t.env.createServiceAccount("default", ISTIOD_SA);
    await expectStatus(login("default", ISTIOD_SA, "vault"), 403, "right name, wrong namespace");
  });

  it("a token for another audience is refused", async () => {
    await expectStatus(login(ISTIO_NS, ISTIOD_SA, "istio-ca"), 403, "wrong audience");
  });

  it("the policy denies pki/issue/*, other sign paths and sys/* to the agent's token", async () => {
    const auth = await login(ISTIO_NS, ISTIOD_SA, "vault");
    const v = t.env.vault.client;
    const token = auth.client_token;
    await expectStatus(v.write("pki/issue/any", token, { common_name: "x" }), 403, "pki/issue");
    await expectStatus(v.write("pki_int/root/sign-intermediate", token, { csr: "x" }), 403, "other mount's sign path");
    await expectStatus(v.read("sys/mounts", token), 403, "sys/mounts");
    await expectStatus(
      v.write("sys/policy/evil", token, { policy: 'path "*" { capabilities = ["sudo"] }' }),
      403,
      "sys/policy",
    );
    await expectStatus(v.write("pki/root/generate/internal", token, { common_name: "x" }), 403, "root generation");
    // The default policy still lets the agent look itself up and renew.
    const self = await v.read<{ policies: string[] }>("auth/token/lookup-self", token);
    assert.deepEqual([...self.data.policies].sort(), ["default", "istiod-agent"]);
  });
});
