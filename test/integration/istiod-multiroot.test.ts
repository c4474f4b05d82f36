// Vault root rotation under upstream istiod with ISTIO_MULTIROOT_MESH=true, following README's runbook: add the new
// root as a trust anchor, switch the signer to the new root, then drop the old root. A workload asks istiod for a
// certificate every 250 ms throughout: every request succeeds, and old and new leaves verify against the bundle
// during the overlap. Then the trust anchors change without a restart: the file is replaced the kubelet's way (a
// ConfigMap update swaps the ..data symlink) and the sidecar serves the new roots at once; a broken file is refused and
// the last good roots stay.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { x509 } from "../../src/crypto/x509.js";
import { istiodAgentPolicy } from "../../src/vault/policies.js";
import { mountPkiRoot, startAgentTestEnv, type AgentTestEnv } from "../env/fixtures.js";
import { opensslVerify } from "../env/crypto-check.js";
import { repeatInBackground } from "../env/process.js";
import { startIstiodOnAgentCacerts, type IstiodOnAgentCacerts } from "../env/istiod.js";
import { getBundle } from "../env/agent-process.js";
import { waitUntil } from "../env/process.js";
import { freePort } from "../env/harness.js";
import { makeTestCa } from "../env/pki.js";
import type { SigningBundle } from "../../src/gen/istiodvaultagent/v1/agent.js";

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

  it("a trust-anchors file replaced the kubelet's way is served live; a broken one keeps the last good roots", async () => {
    const anchors = join(dir(), "anchors");
    const file = join(anchors, "roots.pem");
    mkdirSync(anchors);
    // What the kubelet does for a ConfigMap volume: a new timestamped directory, then ..data swapped to it by rename;
    // roots.pem is a link through ..data, so the file itself is never written.
    const publish = (generation: number, text: string) => {
      const data = `..2026_11_30_00_00_0${generation}.000000000`;
      mkdirSync(join(anchors, data));
      writeFileSync(join(anchors, data, "roots.pem"), text);
      symlinkSync(data, join(anchors, "..data_tmp"));
      renameSync(join(anchors, "..data_tmp"), join(anchors, "..data"));
      if (!existsSync(file)) symlinkSync("..data/roots.pem", file);
    };
    const norm = (pem: string) => certs(pem).map((c) => c.replace(/\s/g, ""));
    const has = (pem: string, cert: string) => norm(pem).includes(norm(cert)[0]!);
    publish(1, oldRoot);
    const port = await freePort();
    const sidecar = await stack.startSidecar([
      "--multi-root",
      "--ca-path=pki2/root/sign-intermediate",
      `--trust-anchors-file=${file}`,
      `--http-addr=127.0.0.1:${port}`,
    ]);
    assert.ok(has(cacerts("root-cert.pem"), oldRoot) && has(cacerts("root-cert.pem"), newRoot));
    const before = await getBundle(sidecar.client);

    // One Watch stream, open before the change: it must be pushed the new roots.
    const pushed: SigningBundle[] = [];
    const stream = sidecar.client.watchSigningBundle({});
    stream.on("data", (b: SigningBundle) => pushed.push(b));
    stream.on("error", () => undefined);
    try {
      await waitUntil("the Watch stream delivers the current bundle", () => Promise.resolve(pushed.length >= 1), {
        timeoutMs: 10_000,
      });
      // Through the file alone: add a new anchor beside the old one (istiod must accept the bundle), then drop it
      // again (the cacerts sink lets istiod drop only roots at an end of root-cert.pem: this one was appended).
      const third = (await makeTestCa("third root")).certPem;
      publish(2, oldRoot + third);
      await waitUntil(
        "cacerts root-cert.pem carries the added anchor",
        () => Promise.resolve(has(cacerts("root-cert.pem"), third)),
        { timeoutMs: 30_000, process: sidecar.process },
      );
      assert.ok(has(cacerts("root-cert.pem"), oldRoot) && has(cacerts("root-cert.pem"), newRoot));
      await waitUntil("the Watch stream is pushed the new roots", () => Promise.resolve(pushed.length >= 2), {
        timeoutMs: 10_000,
      });
      const added = pushed[pushed.length - 1]!;
      assert.ok(has(added.rootCertPem.join(""), third), "the socket's stream carries the new anchor");
      assert.equal(added.serialHex, before.serialHex, "the same intermediate: no new Vault signing was needed");
      assert.ok(has((await getBundle(sidecar.client)).rootCertPem.join(""), third));
      await createCertificate(); // istiod, reloading the new root-cert.pem, still signs
      publish(3, oldRoot);
      await waitUntil(
        "cacerts root-cert.pem drops the anchor again",
        () => Promise.resolve(!has(cacerts("root-cert.pem"), third)),
        { timeoutMs: 30_000, process: sidecar.process },
      );
      assert.ok(!has((await getBundle(sidecar.client)).rootCertPem.join(""), third), "the socket drops it too");

      // Garbage: refused, logged naming the file and what is expected, counted; the last good roots stay.
      const good = cacerts("root-cert.pem");
      publish(4, "this is not a certificate\n");
      await waitUntil(
        "the agent logs the refused file",
        () => Promise.resolve(sidecar.log().includes("still serving the last good roots")),
        { timeoutMs: 30_000, process: sidecar.process },
      );
      assert.ok(
        sidecar.log().includes(`--trust-anchors-file ${file}: holds no PEM certificate; expected a PEM file of`),
        "the error names the file and what is expected",
      );
      assert.equal(cacerts("root-cert.pem"), good, "root-cert.pem is untouched");
      const kept = (await getBundle(sidecar.client)).rootCertPem.join("");
      assert.ok(has(kept, oldRoot) && has(kept, newRoot), "the socket keeps the last good roots");
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.match(
        metrics,
        /istiod_vault_agent_trust_anchors_reloads_total\{trigger="watch",outcome="rejected"\} [1-9]/,
      );
      assert.match(metrics, /istiod_vault_agent_trust_anchors_reloads_total\{trigger="watch",outcome="applied"\} 2/);

      // SIGHUP re-reads the file before rotating. Written in place inside the data directory, which the (not recursive)
      // watch does not see, so only the signal can pick it up.
      const fourth = (await makeTestCa("fourth root")).certPem;
      writeFileSync(join(anchors, "..data", "roots.pem"), oldRoot + fourth);
      sidecar.process.signal("SIGHUP");
      await waitUntil(
        "SIGHUP serves the file's roots with a new intermediate",
        async () => {
          const b = await getBundle(sidecar.client);
          return has(b.rootCertPem.join(""), fourth) && b.serialHex !== before.serialHex;
        },
        { timeoutMs: 30_000, process: sidecar.process },
      );
      await waitUntil(
        "cacerts root-cert.pem carries the SIGHUP's anchor",
        () => Promise.resolve(has(cacerts("root-cert.pem"), fourth)),
        { timeoutMs: 30_000, process: sidecar.process },
      );
      assert.match(
        await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(),
        /istiod_vault_agent_trust_anchors_reloads_total\{trigger="signal",outcome="applied"\} 1/,
      );

      // root-cert.pem is now signing root, old, fourth: dropping the old root from the middle is what istiod refuses
      // (it takes a smaller bundle only as a byte-for-byte part of the current one). Refused before anything serves
      // it, so the socket and cacerts still agree.
      const agreed = cacerts("root-cert.pem");
      publish(5, fourth);
      await waitUntil(
        "the agent refuses roots istiod would refuse",
        () => Promise.resolve(sidecar.log().includes("these roots would be refused")),
        { timeoutMs: 30_000, process: sidecar.process },
      );
      assert.equal(cacerts("root-cert.pem"), agreed);
      assert.ok(has((await getBundle(sidecar.client)).rootCertPem.join(""), oldRoot), "the socket keeps the old root");
    } finally {
      stream.cancel();
    }
  });
});
