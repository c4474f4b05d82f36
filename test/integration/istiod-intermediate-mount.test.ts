// The agent's intermediate signed by Vault's INTERMEDIATE mount (--ca-path=pki_int/root/sign-intermediate), so the
// mesh hangs below two Vault CAs: istiod, on the agent's cacerts, signs workload leaves that chain leaf → agent
// intermediate → Vault intermediate (pki_int) → Vault root (pki), and cert-chain.pem carries those three CAs.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { x509 } from "../../src/crypto/x509.js";
import { startAgentTestEnv, type AgentTestEnv } from "../env/fixtures.js";
import { getBundle, signCertificate } from "../env/agent-process.js";
import { opensslVerify, workloadCsr, SLEEP_SPIFFE_ID, subjectAltNames } from "../env/crypto-check.js";
import { startIstiodOnAgentCacerts, type IstiodOnAgentCacerts } from "../env/istiod.js";

const AGENT_ARGS = ["--ca-path=pki_int/root/sign-intermediate"];
const certs = (pem: string) => pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
const same = (a: string, b: string) => a.replace(/\s/g, "") === b.replace(/\s/g, "");

describe("--ca-path on Vault's intermediate mount: a three-CA chain through istiod", () => {
  let t: AgentTestEnv;
  let stack: IstiodOnAgentCacerts;
  let vaultRoot: string;
  let vaultIntermediate: string;

  before(async () => {
    // The fixtures' pki_int holds an intermediate signed by pki; the agent's policy allows only pki_int's sign path.
    t = await startAgentTestEnv({ signPath: "pki_int/root/sign-intermediate" });
    vaultRoot = (await t.env.vault.client.read<{ certificate: string }>("pki/cert/ca", undefined)).data.certificate;
    vaultIntermediate = certs(
      (await t.env.vault.client.read<{ certificate: string }>("pki_int/cert/ca", undefined)).data.certificate,
    )[0]!;
    assert.ok(!same(vaultIntermediate, vaultRoot), "pki_int's CA is not the root");
    stack = await startIstiodOnAgentCacerts(t, { agentArgs: AGENT_ARGS });
    await stack.startSidecar(AGENT_ARGS);
  });
  after(async () => {
    await stack?.stop();
    await t?.env.stop();
  });

  it("cacerts: ca-cert.pem is issued by pki_int; cert-chain.pem = agent CA, pki_int CA, root; root-cert.pem = root", () => {
    const caCert = stack.cacerts("ca-cert.pem");
    const chain = certs(stack.cacerts("cert-chain.pem"));
    assert.equal(chain.length, 3, "agent intermediate, Vault intermediate, Vault root");
    assert.ok(same(chain[0], caCert), "the chain starts with ca-cert.pem");
    assert.ok(same(chain[1]!, vaultIntermediate), "then pki_int's CA");
    assert.ok(same(chain[2]!, vaultRoot), "then the root");
    const roots = certs(stack.cacerts("root-cert.pem"));
    assert.equal(roots.length, 1);
    assert.ok(same(roots[0], vaultRoot), "root-cert.pem is Vault's root, not pki_int's CA");
    const ca = new x509.X509Certificate(caCert);
    assert.equal(ca.issuer, new x509.X509Certificate(vaultIntermediate).subject, "signed by pki_int");
    assert.match(opensslVerify(caCert, vaultRoot, vaultIntermediate), /OK/);
  });

  it("istiod's CreateCertificate: leaf → agent intermediate → pki_int CA → root, verified by openssl", async () => {
    const chain = await stack.leafFromCurrentIntermediate();
    // istiod answers the leaf, cert-chain.pem, then root-cert.pem: the root comes twice. The distinct CAs, in order:
    const cas = chain.slice(1).filter((c, i, all) => all.findIndex((o) => same(o, c)) === i);
    assert.equal(cas.length, 3, `three distinct CAs above the leaf (got ${cas.length} in a chain of ${chain.length})`);
    assert.equal(
      new x509.X509Certificate(cas[0]!).issuer,
      new x509.X509Certificate(vaultIntermediate).subject,
      "the agent's intermediate first, issued by pki_int",
    );
    assert.ok(same(cas[1]!, vaultIntermediate), "then pki_int's CA");
    assert.ok(same(cas[2]!, vaultRoot), "then Vault's root");
    assert.ok(same(chain.at(-1)!, vaultRoot), "root last");
    assert.deepEqual(subjectAltNames(chain[0]!), [SLEEP_SPIFFE_ID], "the workload's SPIFFE ID, nothing else");
    assert.match(opensslVerify(chain[0]!, vaultRoot, `${chain[1]}\n${chain[2]}`), /OK/);
    assert.throws(
      () => opensslVerify(chain[0]!, vaultRoot, chain[1]),
      "without pki_int's CA the leaf does not reach the root: the middle certificate is needed",
    );
  });

  it("the sidecar's own signing answers the same four-certificate chain", async () => {
    const bundle = await getBundle(stack.sidecar!.client);
    assert.deepEqual(
      bundle.rootCertPem.map((p) => p.replace(/\s/g, "")),
      [vaultRoot.replace(/\s/g, "")],
    );
    const chain = await signCertificate(stack.sidecar!.client, await workloadCsr(SLEEP_SPIFFE_ID), 600);
    assert.equal(chain.length, 4);
    assert.ok(same(chain[1]!, bundle.signingCertPem));
    assert.ok(same(chain[2]!, vaultIntermediate));
    assert.ok(same(chain[3]!, vaultRoot));
    assert.match(opensslVerify(chain[0]!, vaultRoot, `${chain[1]}\n${chain[2]}`), /OK/);
  });

  it("the sidecar adopted init's intermediate through the three-CA chain (no second signing)", async () => {
    const bundle = await getBundle(stack.sidecar!.client);
    assert.ok(same(bundle.signingCertPem, stack.cacerts("ca-cert.pem")), "it serves the file init wrote");
    assert.match(stack.sidecar!.log(), /adopted the intermediate an earlier agent of this pod published/);
  });
});
