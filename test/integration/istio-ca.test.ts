// The agent as a drop-in Istio CA: istio.v1.auth.IstioCertificateService/CreateCertificate over TLS, callers
// authenticated by the real kube-apiserver's TokenReview, leaves signed with the Vault-derived intermediate.
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { x509 } from "../../src/crypto/x509.js";
import {
  agentSuite,
  getBundle,
  rotate,
  signCertificate,
  startIstioCaAgent,
  type IstioCaAgent,
} from "../env/agent-process.js";
import { freePort } from "../env/harness.js";
import { opensslVerify, workloadCsr, SLEEP_SPIFFE_ID, subjectAltNames } from "../env/crypto-check.js";

describe("drop-in Istio CA (CreateCertificate with TokenReview)", () => {
  const suite = agentSuite();
  let ca: IstioCaAgent;

  before(async () => {
    await suite.env.createServiceAccount("default", "sleep");
    await suite.env.createServiceAccount("default", "other");
    ca = await startIstioCaAgent(suite, ["--leaf-max-ttl=2h"]);
  });

  const create = (csr: string, token?: string, validityDuration = 3600) => ca.create(csr, token, validityDuration);
  const refused = async (p: Promise<unknown>, code: grpc.status, pattern: RegExp) => {
    await assert.rejects(p, (e: grpc.ServiceError) => {
      assert.equal(e.code, code, e.details);
      assert.match(e.details, pattern);
      return true;
    });
  };

  it("signs a workload CSR: leaf → our intermediate → Vault root, with the caller's SPIFFE ID", async () => {
    const token = await suite.env.requestToken("default", "sleep", "istio-ca", 600);
    const chain = await create(await workloadCsr(SLEEP_SPIFFE_ID), token, 7 * 24 * 3600);
    assert.equal(chain.length, 3);
    assert.equal(chain[2]!.trim(), ca.rootPem.trim(), "root last");
    const leaf = new x509.X509Certificate(chain[0]!);
    assert.deepEqual(subjectAltNames(chain[0]!), [SLEEP_SPIFFE_ID]);
    const hours = (leaf.notAfter.getTime() - Date.now()) / 3600_000;
    assert.ok(hours <= 2.01, `TTL capped at --leaf-max-ttl, got ${hours} h`);
    assert.match(opensslVerify(chain[0]!, chain[2]!, chain[1]), /OK/);
  });

  it("refuses a call without a token", async () => {
    await refused(create(await workloadCsr(SLEEP_SPIFFE_ID)), grpc.status.UNAUTHENTICATED, /authorization: Bearer/);
  });

  it("refuses a token for another audience", async () => {
    const token = await suite.env.requestToken("default", "sleep", "vault", 600);
    await refused(create(await workloadCsr(SLEEP_SPIFFE_ID), token), grpc.status.UNAUTHENTICATED, /audience istio-ca/);
  });

  it("refuses a CSR naming another service account", async () => {
    const token = await suite.env.requestToken("default", "other", "istio-ca", 600);
    await refused(
      create(await workloadCsr(SLEEP_SPIFFE_ID), token),
      grpc.status.PERMISSION_DENIED,
      /identity_mismatch/,
    );
  });

  it("refuses a CA CSR", async () => {
    const token = await suite.env.requestToken("default", "sleep", "istio-ca", 600);
    await refused(
      create(await workloadCsr(SLEEP_SPIFFE_ID, { ca: true }), token),
      grpc.status.PERMISSION_DENIED,
      /ca_requested/,
    );
  });

  it("signs the socket's and the listener's leaves on the same signing workers, chained to the current intermediate across a rotation", async () => {
    const httpPort = await freePort();
    const pooled = await startIstioCaAgent(suite, [
      "--signing-workers=2",
      "--rotate-min-interval=0s",
      `--http-addr=127.0.0.1:${httpPort}`,
    ]);
    const token = await suite.env.requestToken("default", "sleep", "istio-ca", 600);
    const signBoth = async () => {
      const csr = await workloadCsr(SLEEP_SPIFFE_ID);
      return [await signCertificate(pooled.run.client, csr, 3600), await pooled.create(csr, token)];
    };
    const checkChains = (chains: string[][], intermediatePem: string) => {
      for (const chain of chains) {
        assert.equal(chain[1]!.trim(), intermediatePem.trim(), "the leaf's chain names the current intermediate");
        // Only the current intermediate is offered to openssl: a leaf signed by the replaced key would not verify.
        assert.match(opensslVerify(chain[0]!, pooled.rootPem, intermediatePem), /OK/);
      }
    };
    const scrape = async () => {
      const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
      return (series: string) => {
        const line = metrics.split("\n").find((l) => l.startsWith(`${series} `));
        return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
      };
    };
    const leaves = (v: (series: string) => number | undefined, listener: string, thread: string) =>
      v(`istiod_vault_agent_signing_leaves_total{listener="${listener}",thread="${thread}"}`) ?? 0;
    // Idle, the agent runs no worker; leaves coming in start one, and they are signed here until it is online.
    assert.equal((await scrape())("istiod_vault_agent_signing_workers"), 0);
    const first = await getBundle(pooled.run.client);
    let signed = 0;
    for (let v = await scrape(); leaves(v, "istio_ca", "worker") === 0; v = await scrape()) {
      assert.ok(signed < 200, "no leaf was signed on a worker after 200 rounds");
      checkChains(await signBoth(), first.signingCertPem);
      signed++;
    }
    const before = await scrape();
    assert.ok((before("istiod_vault_agent_signing_workers") ?? 0) >= 1, "a worker runs");
    assert.equal(leaves(before, "socket", "worker") + leaves(before, "socket", "main"), signed);
    assert.equal(leaves(before, "istio_ca", "worker") + leaves(before, "istio_ca", "main"), signed);
    const second = await rotate(pooled.run.client);
    assert.ok(second.generation > first.generation);
    assert.notEqual(second.signingCertPem, first.signingCertPem);
    // Both listeners read the new bundle from the next request on; the workers are sent the new key first.
    checkChains([...(await signBoth()), ...(await signBoth())], second.signingCertPem);

    const after = await scrape();
    assert.ok((after("istiod_vault_agent_signing_workers") ?? 0) >= 1);
    assert.ok((after("istiod_vault_agent_signing_workers") ?? 0) <= 2, "at most --signing-workers");
    for (const listener of ["socket", "istio_ca"]) {
      assert.equal(leaves(after, listener, "worker"), leaves(before, listener, "worker") + 2, `${listener} on workers`);
      assert.equal(leaves(after, listener, "main"), leaves(before, listener, "main"));
    }
    assert.match(pooled.run.log(), /"signingWorkers":2.*signing leaves on worker threads/);
  });
});
