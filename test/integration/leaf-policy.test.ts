// Leaf policy on the real agent (real OpenBao-signed intermediate, real kube-apiserver TokenReview): one URI SAN per
// leaf on both signing paths, zlint on every certificate kind the running agent hands out, no DEP0204 from the
// running agent, and no useless leaves at the intermediate's expiry edge with Vault stopped.
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { toPem } from "../../src/crypto/keys.js";
import { x509 } from "../../src/crypto/x509.js";
import { generateKeyPair } from "../../src/crypto/keys.js";
import {
  agentSuite,
  getBundle,
  signCertificate,
  type AgentRun,
  startIstioCaAgent,
  type IstioCaAgent,
} from "../env/agent-process.js";
import { workloadCsr, SLEEP_SPIFFE_ID } from "../env/crypto-check.js";
import { freePort } from "../env/harness.js";
import { EXCLUDED_LINTS, zlint } from "../env/zlint.js";

/** A workload CSR with the given URI SANs, in order (duplicates kept). */
async function csrWithUris(uris: string[]): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: await generateKeyPair("ECDSA_P256", false),
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions: [new x509.SubjectAlternativeNameExtension(uris.map((value) => ({ type: "url" as const, value })))],
  });
  return csr.toString("pem");
}

function assertLintClean(certPem: string, what: string): void {
  const report = zlint(certPem, EXCLUDED_LINTS);
  assert.ok(report.applied >= 40, `${what}: only ${report.applied} lints applied`);
  assert.deepEqual(report.findings, [], `${what}: zlint findings`);
}

/** The certificate a TLS server presents, as PEM. */
function servingCertificate(port: number, rootPem: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(
      { host: "127.0.0.1", port, servername: "localhost", ca: rootPem, ALPNProtocols: ["h2"] },
      () => {
        const der = socket.getPeerCertificate(false).raw;
        socket.end();
        resolve(toPem(der, "CERTIFICATE"));
      },
    );
    socket.once("error", reject);
  });
}

describe("leaf policy on both signing paths (real agent)", () => {
  const suite = agentSuite();
  let ca: IstioCaAgent;

  before(async () => {
    await suite.env.createServiceAccount("default", "sleep");
    // Any deprecation (DEP0204: KeyObject.from() on a non-extractable CryptoKey) kills the agent.
    ca = await startIstioCaAgent(suite, [], { env: { ...process.env, NODE_OPTIONS: "--throw-deprecation" } });
  });

  const create = async (csr: string): Promise<string[]> =>
    ca.create(csr, await suite.env.requestToken("default", "sleep", "istio-ca", 600));
  const refusedWith = async (p: Promise<unknown>, count: number): Promise<void> => {
    await assert.rejects(p, (e: grpc.ServiceError) => {
      assert.equal(e.code, grpc.status.INVALID_ARGUMENT, e.details);
      assert.equal(
        e.details,
        `multiple_identities: CSR has ${count} URI SANs; expected exactly one spiffe://cluster.local/... ID ` +
          "(an X.509-SVID carries one)",
      );
      return true;
    });
  };

  it("refuses CSRs with two URI SANs, or the caller's own ID twice, on SignCertificate and CreateCertificate", async () => {
    for (const uris of [
      [SLEEP_SPIFFE_ID, "spiffe://cluster.local/ns/default/sa/other"],
      [SLEEP_SPIFFE_ID, SLEEP_SPIFFE_ID],
    ]) {
      const csr = await csrWithUris(uris);
      await refusedWith(signCertificate(ca.run.client, csr, 3600), 2);
      await refusedWith(create(csr), 2);
    }
    // One URI SAN still works on both paths.
    assert.equal((await signCertificate(ca.run.client, await workloadCsr(SLEEP_SPIFFE_ID), 3600)).length, 3);
    assert.equal((await create(await workloadCsr(SLEEP_SPIFFE_ID))).length, 3);
  });

  it("zlint: the leaf from the socket, the leaf from CreateCertificate and the serving certificate are clean", async () => {
    const fromSocket = await signCertificate(ca.run.client, await workloadCsr(SLEEP_SPIFFE_ID), 3600);
    assertLintClean(fromSocket[0]!, "leaf via SignCertificate");
    const fromIstioCa = await create(await workloadCsr(SLEEP_SPIFFE_ID));
    assertLintClean(fromIstioCa[0]!, "leaf via CreateCertificate");
    const serving = await servingCertificate(ca.port, ca.rootPem);
    assert.ok(new x509.X509Certificate(serving).getExtension(x509.SubjectKeyIdentifierExtension), "serving SKI");
    assertLintClean(serving, "Istio CA serving certificate");
  });

  it("ran every signing path under --throw-deprecation without a deprecation (DEP0204)", () => {
    assert.equal(ca.run.process.exitCode, undefined, `the agent exited:\n${ca.run.log().slice(-2000)}`);
    assert.doesNotMatch(ca.run.log(), /DEP0204|DeprecationWarning/);
  });
});

describe("no useless leaves at the intermediate's expiry edge (Vault stopped, signing under load)", () => {
  const suite = agentSuite({}, { vault: "persistent" });
  let run: AgentRun | undefined;

  it("issues no leaf with less than --min-leaf-ttl, turns unready --unready-before-expiry early, then says expired", async () => {
    const MIN_LEAF_S = 5;
    const MARGIN_S = 8;
    const httpPort = await freePort();
    run = await suite.start("sidecar", [
      "--ttl=20s",
      "--grace-ratio=0.5",
      `--min-leaf-ttl=${MIN_LEAF_S}s`,
      `--unready-before-expiry=${MARGIN_S}s`,
      `--http-addr=127.0.0.1:${httpPort}`,
    ]);
    const bundle = await getBundle(run.client);
    const notAfter = new x509.X509Certificate(bundle.signingCertPem).notAfter.getTime();
    await suite.env.stopVault();
    try {
      const csr = await workloadCsr(SLEEP_SPIFFE_ID);
      const lifetimes: number[] = [];
      const refusals: string[] = [];
      let unreadyAt: number | undefined;
      let readyWhileValid = false;
      const until = notAfter + 2_000;
      const readiness = (async () => {
        while (Date.now() < until) {
          const res = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
          if (res.status === 200) readyWhileValid = true;
          else unreadyAt ??= Date.now();
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      // Four requests in flight back to back until past the expiry (below any per-connection in-flight cap).
      const signer = async (): Promise<void> => {
        while (Date.now() < until) {
          try {
            const chain = await signCertificate(run!.client, csr, 0);
            lifetimes.push(new x509.X509Certificate(chain[0]!).notAfter.getTime() - Date.now());
          } catch (err) {
            const e = err as grpc.ServiceError;
            assert.equal(e.code, grpc.status.UNAVAILABLE, e.details);
            refusals.push(e.details);
          }
        }
      };
      await Promise.all([readiness, ...Array.from({ length: 4 }, signer)]);

      assert.ok(lifetimes.length > 0, "leaves were issued before the edge");
      // Leaves carry whole seconds (notAfter floored): up to 1 s below the minimum, plus the round trip.
      const shortest = Math.min(...lifetimes);
      assert.ok(shortest >= (MIN_LEAF_S - 1.5) * 1000, `a leaf arrived with only ${shortest} ms to live`);
      assert.ok(refusals.some((d) => /^ca_expiring: intermediate expires at .* less than the minimum leaf/.test(d)));
      const afterExpiry = refusals.at(-1) ?? "";
      assert.match(afterExpiry, /^the intermediate \(generation 1\) expired at /);
      assert.doesNotMatch(afterExpiry, /no valid intermediate is held yet/);
      assert.ok(readyWhileValid, "ready while the intermediate had life left");
      assert.ok(unreadyAt !== undefined, "/readyz turned false");
      assert.ok(unreadyAt <= notAfter - (MARGIN_S - 1) * 1000, `unready only ${notAfter - unreadyAt} ms before expiry`);
      await assert.rejects(getBundle(run.client), (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.UNAVAILABLE);
        assert.match(e.details, /^the intermediate \(generation 1\) expired at /);
        return true;
      });
    } finally {
      await suite.env.startVaultAgain();
    }
  });
});
