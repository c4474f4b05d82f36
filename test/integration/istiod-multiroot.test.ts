// Vault root rotation under upstream istiod with ISTIO_MULTIROOT_MESH=true, following README's runbook: add the new
// root as a trust anchor, switch the signer to the new root, then drop the old root. A workload asks istiod for a
// certificate every 250 ms throughout: every request succeeds, and old and new leaves verify against the bundle
// during the overlap.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { x509 } from "../../src/crypto/x509.js";
import { istiodAgentPolicy } from "../../src/vault/policies.js";
import { mountPkiRoot, startAgentTestEnv, type AgentTestEnv } from "../env/fixtures.js";
import { opensslVerify } from "../env/crypto-check.js";
import { repeatInBackground } from "../env/process.js";
import { startIstiodOnAgentCacerts, type IstiodOnAgentCacerts } from "../env/istiod.js";

describe("Vault root rotation with istiod in multi-root mode", () => {
  let t: AgentTestEnv;
  let stack: IstiodOnAgentCacerts;
  let oldRoot: string;
  let newRoot: string;

  const certs = (pem: string) => pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];

  before(async () => {
    t = await startAgentTestEnv();
    const v = t.env.vault.client;
    const root = t.env.vault.rootToken;
    oldRoot = (await v.read<{ certificate: string }>("pki/cert/ca", undefined)).data.certificate;
    // The new root lives in its own mount; the agent's role gets the sign path there too.
    newRoot = await mountPkiRoot(t.env, "pki2", "new root CA");
    await v.write("sys/policy/istiod-agent-pki2", root, { policy: istiodAgentPolicy("pki2/root/sign-intermediate") });
    const role = (await v.read<Record<string, unknown>>("auth/kubernetes/role/istiod-agent", root)).data;
    await v.write("auth/kubernetes/role/istiod-agent", root, {
      ...role,
      token_policies: ["istiod-agent", "istiod-agent-pki2"],
    });
    stack = await startIstiodOnAgentCacerts(t, {
      agentArgs: ["--multi-root"],
      istiodEnv: { ISTIO_MULTIROOT_MESH: "true" },
      clientRootsPem: () => `${oldRoot}\n${newRoot}\n`,
      prepare: (dir) => {
        writeFileSync(join(dir, "old-root.pem"), oldRoot);
        writeFileSync(join(dir, "new-root.pem"), newRoot);
      },
    });
  });
  after(async () => {
    await stack?.stop();
    await t?.env.stop();
  });

  const createCertificate = () => stack.createCertificate(3600);

  /** Restarts the sidecar with `args` (a new intermediate at every start) and waits until istiod signs with it. */
  const phase = async (args: string[]) => {
    await stack.startSidecar(["--multi-root", ...args]);
    return stack.leafFromCurrentIntermediate(3600);
  };
  const cacerts = (name: string) => stack.cacerts(name);
  const dir = () => stack.dir;

  it("add the new root, switch the signer, drop the old root: certificates throughout, old and new leaves verify", async () => {
    const failures: string[] = [];
    let requests = 0;
    const load = repeatInBackground(async () => {
      try {
        await createCertificate();
        requests++;
      } catch (err) {
        failures.push((err as Error).message);
      }
    }, 250);

    try {
      // 1. Signing from the old root; the new root is added as a trust anchor: root-cert.pem = old + new.
      const leafOld = await phase([`--trust-anchors-file=${join(dir(), "new-root.pem")}`]);
      assert.equal(certs(cacerts("root-cert.pem")).length, 2);
      // 2. The signer moves to the new root; the old root stays a trust anchor.
      const leafNew = await phase([
        "--ca-path=pki2/root/sign-intermediate",
        `--trust-anchors-file=${join(dir(), "old-root.pem")}`,
      ]);
      assert.equal(certs(cacerts("root-cert.pem")).length, 2);
      assert.equal(new x509.X509Certificate(leafNew[1]!).issuer, "CN=new root CA");
      // During the overlap both generations of leaves verify against the served bundle.
      const bundle = cacerts("root-cert.pem");
      assert.match(opensslVerify(leafOld[0]!, bundle, leafOld.slice(1, -1).join("")), /OK/);
      assert.match(opensslVerify(leafNew[0]!, bundle, leafNew.slice(1, -1).join("")), /OK/);
      // 3. Old leaves have expired in a real mesh by now: drop the old root. root-cert.pem = new only.
      const leafFinal = await phase(["--ca-path=pki2/root/sign-intermediate"]);
      assert.deepEqual(
        certs(cacerts("root-cert.pem")).map((c) => c.replace(/\s/g, "")),
        certs(newRoot).map((c) => c.replace(/\s/g, "")),
      );
      assert.match(opensslVerify(leafFinal[0]!, newRoot, leafFinal.slice(1, -1).join("")), /OK/);
      assert.throws(
        () => opensslVerify(leafOld[0]!, newRoot, leafOld.slice(1, -1).join("")),
        "an old-root leaf no longer verifies once the old root is dropped",
      );
    } finally {
      await load.stop();
    }
    assert.deepEqual(failures, [], `workload requests failed during the rotation (${requests} succeeded)`);
    assert.ok(requests >= 10, `the workload kept asking (${requests} requests)`);
    const log = readFileSync(stack.istiod.logPath, "utf8");
    assert.ok(!/\t(error|warn)\t.*(root|cacerts|cert)/i.test(log), "istiod refused no bundle");
  });
});
