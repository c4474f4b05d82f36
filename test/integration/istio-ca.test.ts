// The agent as a drop-in Istio CA: istio.v1.auth.IstioCertificateService/CreateCertificate over TLS, callers
// authenticated by the real kube-apiserver's TokenReview, leaves signed with the Vault-derived intermediate.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { IstioCertificateServiceClient } from "../../src/gen/istio/v1/auth/ca.js";
import { x509 } from "../../src/crypto/x509.js";
import { startAgentTestEnv, type AgentTestEnv } from "../env/fixtures.js";
import { getBundle, startAgent, type AgentRun } from "../env/agent-process.js";
import { opensslVerify, workloadCsr } from "../env/crypto-check.js";
import { freePort } from "../env/harness.js";

const WORKLOAD = "spiffe://cluster.local/ns/default/sa/sleep";

describe("drop-in Istio CA (CreateCertificate with TokenReview)", () => {
  let t: AgentTestEnv;
  let run: AgentRun;
  let client: IstioCertificateServiceClient;
  let rootPem: string;

  before(async () => {
    t = await startAgentTestEnv();
    await t.env.createServiceAccount("default", "sleep");
    await t.env.createServiceAccount("default", "other");
    const port = await freePort();
    run = await startAgent(t.env, "sidecar", [
      `--istio-ca-addr=127.0.0.1:${port}`,
      "--istio-ca-names=127.0.0.1,localhost",
      `--kubeconfig=${t.env.kube.kubeconfigPath}`,
      "--leaf-max-ttl=2h",
    ]);
    rootPem = (await getBundle(run.client)).rootCertPem.join("");
    client = new IstioCertificateServiceClient(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(rootPem)));
  });
  after(async () => {
    client?.close();
    await run?.stop();
    if (run) rmSync(run.dir, { recursive: true, force: true });
    await t?.env.stop();
  });

  const create = (csr: string, token?: string, validityDuration = 3600) => {
    const md = new grpc.Metadata();
    if (token) md.set("authorization", `Bearer ${token}`);
    return new Promise<string[]>((resolve, reject) =>
      client.createCertificate({ csr, validityDuration }, md, { deadline: Date.now() + 10_000 }, (err, res) =>
        err ? reject(err) : resolve(res.certChain),
      ),
    );
  };
  const refused = async (p: Promise<unknown>, code: grpc.status, pattern: RegExp) => {
    await assert.rejects(p, (e: grpc.ServiceError) => {
      assert.equal(e.code, code, e.details);
      assert.match(e.details, pattern);
      return true;
    });
  };

  it("signs a workload CSR: leaf → our intermediate → Vault root, with the caller's SPIFFE ID", async () => {
    const token = await t.env.requestToken("default", "sleep", "istio-ca", 600);
    const chain = await create(await workloadCsr(WORKLOAD), token, 7 * 24 * 3600);
    assert.equal(chain.length, 3);
    assert.equal(chain[2]!.trim(), rootPem.trim(), "root last");
    const leaf = new x509.X509Certificate(chain[0]!);
    const san = leaf.getExtension(x509.SubjectAlternativeNameExtension);
    assert.deepEqual(
      san?.names.items.map((n) => n.value),
      [WORKLOAD],
    );
    const hours = (leaf.notAfter.getTime() - Date.now()) / 3600_000;
    assert.ok(hours <= 2.01, `TTL capped at --leaf-max-ttl, got ${hours} h`);
    assert.match(opensslVerify(chain[0]!, chain[2]!, chain[1]), /OK/);
  });

  it("refuses a call without a token", async () => {
    await refused(create(await workloadCsr(WORKLOAD)), grpc.status.UNAUTHENTICATED, /authorization: Bearer/);
  });

  it("refuses a token for another audience", async () => {
    const token = await t.env.requestToken("default", "sleep", "vault", 600);
    await refused(create(await workloadCsr(WORKLOAD), token), grpc.status.UNAUTHENTICATED, /audience istio-ca/);
  });

  it("refuses a CSR naming another service account", async () => {
    const token = await t.env.requestToken("default", "other", "istio-ca", 600);
    await refused(create(await workloadCsr(WORKLOAD), token), grpc.status.PERMISSION_DENIED, /identity_mismatch/);
  });

  it("refuses a CA CSR", async () => {
    const token = await t.env.requestToken("default", "sleep", "istio-ca", 600);
    await refused(
      create(await workloadCsr(WORKLOAD, { ca: true }), token),
      grpc.status.PERMISSION_DENIED,
      /ca_requested/,
    );
  });
});
