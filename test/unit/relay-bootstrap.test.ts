// Bootstrap mode pieces without servers: flags, the CSR policy, the token set with its overlap window, the rate limiter,
// the Renew caller's certificate checks and the agent's check of what the issuer returned.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { KeyObject, webcrypto } from "node:crypto";
import type { SigningBundle } from "../../src/authority/bundle.js";
import { generateKeyPair } from "../../src/crypto/keys.js";
import { x509 } from "../../src/crypto/x509.js";
import type { RelayConfig } from "../../src/relay/config.js";
import { InvalidIssuedError, validateIssued } from "../../src/relay/bootstrap/agent.js";
import { bootstrapTimeAttribute, readBootstrapTime } from "../../src/relay/bootstrap/bootstrap-time.js";
import { signClientCertificate } from "../../src/relay/bootstrap/client-signer.js";
import { checkClusterCsr, checkClusterName } from "../../src/relay/bootstrap/csr-policy.js";
import {
  IdentityTokenRegistry,
  IdentityTokenSet,
  type IdentityTokenSource,
} from "../../src/relay/bootstrap/identity-tokens.js";
import { verifyClientCertificate, type PeerCertificateInfo } from "../../src/relay/bootstrap/peer-verify.js";
import { TokenBucketLimiter } from "../../src/util/token-bucket.js";
import { IssuerRefusal } from "../../src/relay/bootstrap/refusal.js";
import { ECDSA_SHA256 as SIGN, caCertificate, testSigningBundle } from "../env/ca-certs.js";
import { relayConfig, relayProblems } from "./relay-args.js";

const run = (argv: string[], e: NodeJS.ProcessEnv = {}): RelayConfig => relayConfig(argv, e);
const problems = (argv: string[], e: NodeJS.ProcessEnv = {}): string[] => relayProblems(argv, e);

async function refusal(p: Promise<unknown>, code: string, reason: string): Promise<IssuerRefusal> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof IssuerRefusal, `expected an IssuerRefusal, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.reason, reason, err.message);
    return err;
  }
  assert.fail(`expected a refusal (${reason})`);
}

async function makeCsr(opts: { cn?: string; dns?: string[]; uri?: string[]; ip?: string[]; ca?: boolean }) {
  const keys = await generateKeyPair("ECDSA_P256", false);
  const names = [
    ...(opts.dns ?? []).map((value) => ({ type: "dns" as const, value })),
    ...(opts.uri ?? []).map((value) => ({ type: "url" as const, value })),
    ...(opts.ip ?? []).map((value) => ({ type: "ip" as const, value })),
  ];
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    ...(opts.cn ? { name: `CN=${opts.cn}` } : {}),
    keys,
    signingAlgorithm: SIGN,
    extensions: [
      ...(names.length ? [new x509.SubjectAlternativeNameExtension(names)] : []),
      ...(opts.ca ? [new x509.BasicConstraintsExtension(true, undefined, true)] : []),
    ],
  });
  return { pem: csr.toString("pem"), keys };
}

interface TestCa {
  cert: x509.X509Certificate;
  keys: webcrypto.CryptoKeyPair;
}

async function makeRoot(name: string): Promise<TestCa> {
  const keys = await generateKeyPair("ECDSA_P256", true);
  const now = Date.now();
  const cert = await caCertificate({
    subject: `CN=${name}`,
    keys,
    serialNumber: "01",
    notBefore: new Date(now - 3600_000),
    notAfter: new Date(now + 24 * 3600_000),
    subjectKeyIdentifier: false,
  });
  return { cert, keys };
}

async function makeIntermediate(root: TestCa, name: string): Promise<TestCa> {
  const keys = await generateKeyPair("ECDSA_P256", true);
  const now = Date.now();
  const cert = await caCertificate({
    subject: `CN=${name}`,
    keys,
    issuer: { cert: root.cert, privateKey: root.keys.privateKey },
    serialNumber: "02",
    notBefore: new Date(now - 3600_000),
    notAfter: new Date(now + 12 * 3600_000),
    pathLength: 0,
    authorityKeyIdentifier: false,
  });
  return { cert, keys };
}

function bundleOf(root: TestCa, inter: TestCa): SigningBundle {
  // extractable test key: KeyObject.from is no DEP0204
  const keys = { signingKey: KeyObject.from(inter.keys.privateKey), privateKey: inter.keys.privateKey };
  return testSigningBundle(inter.cert, root.cert.toString("pem") + "\n", keys, "ECDSA_P256");
}

async function leafFor(
  issuer: TestCa,
  opts: { dns?: string[]; eku?: string[]; ca?: boolean; notAfter?: Date; notBefore?: Date },
): Promise<{ der: Buffer; keys: webcrypto.CryptoKeyPair }> {
  const keys = await generateKeyPair("ECDSA_P256", true);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: "0a",
    subject: "CN=leaf",
    issuer: issuer.cert.subject,
    notBefore: opts.notBefore ?? new Date(now - 600_000),
    notAfter: opts.notAfter ?? new Date(now + 600_000),
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(opts.ca ?? false, undefined, true),
      new x509.ExtendedKeyUsageExtension(opts.eku ?? [x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension((opts.dns ?? ["cluster1"]).map((value) => ({ type: "dns", value }))),
    ],
  });
  return { der: Buffer.from(cert.rawData), keys };
}

void describe("relay bootstrap config", () => {
  const vaultEnv = { VAULT_ADDR: "https://vault.example:8200" };

  void it("agent --bootstrap needs no Vault and ignores VAULT_* in the environment", () => {
    const c = run(["--role=agent", "--bootstrap=mgmt.example.com:9910", "--cluster=cluster1"], vaultEnv);
    assert.equal(c.bootstrap.address, "mgmt.example.com:9910");
    assert.equal(c.bootstrap.serverName, "gloo-mesh-mgmt-server.gloo-mesh");
    assert.equal(c.vault.address, "", "VAULT_ADDR is not read in bootstrap mode");
    const named = run([
      "--role=agent",
      "--bootstrap=10.0.0.1:9910",
      "--cluster=c",
      "--issuer-server-name=relay.example",
    ]);
    assert.equal(named.bootstrap.serverName, "relay.example");
  });

  void it("agent --bootstrap refuses every Vault flag, naming it", () => {
    const refused: Record<string, string> = {
      "--vault-addr": "https://vault:8200",
      "--token-path": "/t",
      "--auth-role": "relay",
      "--pki-mount": "pki",
      "--kv-path": "secret/data/x",
      "--ttl": "1h",
    };
    const vaultFlags = Object.entries(refused).map(([flag, value]) => `${flag}=${value}`);
    const p = problems(["--role=agent", "--bootstrap=mgmt:9910", "--cluster=cluster1", ...vaultFlags]);
    for (const flag of Object.keys(refused))
      assert.ok(
        p.some((m) => m.startsWith(`${flag}: not accepted with --bootstrap`)),
        `${flag} refused: ${p.join("\n")}`,
      );
  });

  void it("agent --bootstrap still needs --cluster and a host:port", () => {
    assert.ok(problems(["--role=agent", "--bootstrap=mgmt:9910"]).some((m) => m.startsWith("--cluster: missing")));
    assert.ok(
      problems(["--role=agent", "--bootstrap=https://mgmt", "--cluster=c"]).some((m) => m.startsWith("--bootstrap:")),
    );
  });

  void it("server --issuer flags", () => {
    const c = run(
      [
        "--role=server",
        "--issuer",
        "--issuer-addr=127.0.0.1:9999",
        "--token-overlap=2h",
        "--client-ttl=48h",
        "--issuer-rate=1.5",
        "--issuer-burst=3",
        "--issuer-peer-rate=4",
        "--issuer-peer-burst=8",
        "--token-refresh=5s",
        "--max-bootstrap-age=240h",
      ],
      vaultEnv,
    );
    assert.deepEqual(c.issuer, {
      enabled: true,
      address: "127.0.0.1:9999",
      tokenOverlapSeconds: 7200,
      clientTtlSeconds: 48 * 3600,
      ratePerSecond: 1.5,
      burst: 3,
      peerRatePerSecond: 4,
      peerBurst: 8,
      tokenRefreshSeconds: 5,
      maxBootstrapAgeSeconds: 240 * 3600,
    });
    const d = run(["--role=server", "--issuer", "--ttl=10h"], vaultEnv);
    assert.equal(d.issuer.tokenOverlapSeconds, 24 * 3600, "24h overlap by default");
    assert.equal(d.issuer.clientTtlSeconds, 10 * 3600, "client TTL defaults to --ttl");
    assert.equal(d.issuer.tokenRefreshSeconds, 30, "a deleted token is refused within 30 s by default");
    assert.equal(d.issuer.maxBootstrapAgeSeconds, 90 * 86400, "renewal without re-authorisation for 90 days at most");
  });

  void it("issuer flags are refused without --issuer, on agents, and with --once", () => {
    assert.ok(
      problems(["--role=server", "--token-overlap=1h"], vaultEnv).some((m) =>
        m.startsWith("--token-overlap: only used with --issuer"),
      ),
    );
    assert.ok(problems(["--role=agent", "--cluster=c", "--issuer"], vaultEnv).some((m) => m.startsWith("--issuer:")));
    assert.ok(problems(["--role=server", "--issuer", "--once"], vaultEnv).some((m) => m.startsWith("--once:")));
    assert.ok(
      problems(["--role=server", "--bootstrap=a:1"], vaultEnv).some((m) => m.startsWith("--bootstrap: only used")),
    );
  });
});

void describe("relay bootstrap CSR policy", () => {
  void it("accepts one DNS SAN equal to the cluster (CN optional, same name)", async () => {
    for (const opts of [
      { cn: "cluster1", dns: ["cluster1"] },
      { dns: ["cluster1"] },
      { cn: "Cluster1", dns: ["CLUSTER1"] },
    ]) {
      const { pem, keys } = await makeCsr(opts);
      const checked = await checkClusterCsr(pem, "cluster1");
      // What the issuer certifies is exactly the key that signed the CSR.
      const spki = Buffer.from(await webcrypto.subtle.exportKey("spki", keys.publicKey));
      assert.deepEqual(Buffer.from(checked.spki), spki, JSON.stringify(opts));
      assert.equal(checked.keyType, "EC");
      assert.deepEqual(Buffer.from(checked.subjectPublicKey), spki.subarray(spki.length - 65));
    }
  });

  void it("refuses weak or odd keys, CA key usages, other SAN types, extra blocks and non-strings", async () => {
    const withKeys = async (
      keys: webcrypto.CryptoKeyPair,
      signingAlgorithm: webcrypto.Algorithm | webcrypto.EcdsaParams,
      extensions: x509.Extension[] = [],
    ) =>
      (
        await x509.Pkcs10CertificateRequestGenerator.create({
          name: "CN=cluster1",
          keys,
          signingAlgorithm,
          extensions: [new x509.SubjectAlternativeNameExtension([{ type: "dns", value: "cluster1" }]), ...extensions],
        })
      ).toString("pem");
    const rsa1024 = await webcrypto.subtle.generateKey(
      { name: "RSASSA-PKCS1-v1_5", modulusLength: 1024, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
      false,
      ["sign", "verify"],
    );
    await refusal(
      checkClusterCsr(await withKeys(rsa1024, { name: "RSASSA-PKCS1-v1_5" }), "cluster1"),
      "INVALID_ARGUMENT",
      "key_too_weak",
    );
    const p521 = await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-521" }, false, ["sign", "verify"]);
    await refusal(
      checkClusterCsr(await withKeys(p521, { name: "ECDSA", hash: "SHA-512" }), "cluster1"),
      "INVALID_ARGUMENT",
      "key_unsupported",
    );
    const p256 = await generateKeyPair("ECDSA_P256", false);
    await refusal(
      checkClusterCsr(await withKeys(p256, { name: "ECDSA", hash: "SHA-1" }), "cluster1"),
      "INVALID_ARGUMENT",
      "csr_signature",
    );
    const keyCertSign = new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true);
    await refusal(
      checkClusterCsr(await withKeys(p256, SIGN, [keyCertSign]), "cluster1"),
      "PERMISSION_DENIED",
      "ca_requested",
    );
    await refusal(
      checkClusterCsr(
        (
          await x509.Pkcs10CertificateRequestGenerator.create({
            keys: p256,
            signingAlgorithm: SIGN,
            extensions: [
              new x509.SubjectAlternativeNameExtension([
                { type: "dns", value: "cluster1" },
                { type: "email", value: "a@cluster1" },
              ]),
            ],
          })
        ).toString("pem"),
        "cluster1",
      ),
      "PERMISSION_DENIED",
      "csr_extra_san",
    );
    // A second CN naming another cluster, after one naming this one.
    await refusal(
      checkClusterCsr(
        (
          await x509.Pkcs10CertificateRequestGenerator.create({
            name: "CN=cluster1, CN=cluster2",
            keys: p256,
            signingAlgorithm: SIGN,
            extensions: [new x509.SubjectAlternativeNameExtension([{ type: "dns", value: "cluster1" }])],
          })
        ).toString("pem"),
        "cluster1",
      ),
      "PERMISSION_DENIED",
      "csr_other_cluster",
    );
    const good = await withKeys(p256, SIGN);
    await refusal(checkClusterCsr(good + good, "cluster1"), "INVALID_ARGUMENT", "csr_malformed");
    await refusal(checkClusterCsr(`junk\n${good}`, "cluster1"), "INVALID_ARGUMENT", "csr_malformed");
    await refusal(checkClusterCsr(42, "cluster1"), "INVALID_ARGUMENT", "csr_malformed");
    assert.equal((await checkClusterCsr(good, "cluster1")).keyType, "EC");
  });

  void it("refuses other clusters, extra SANs, CAs, and malformed or forged CSRs", async () => {
    await refusal(
      checkClusterCsr((await makeCsr({ dns: ["cluster2"] })).pem, "cluster1"),
      "PERMISSION_DENIED",
      "csr_other_cluster",
    );
    await refusal(
      checkClusterCsr((await makeCsr({ dns: ["cluster1", "cluster2"] })).pem, "cluster1"),
      "PERMISSION_DENIED",
      "csr_other_cluster",
    );
    await refusal(
      checkClusterCsr((await makeCsr({ dns: ["cluster1", "cluster1"] })).pem, "cluster1"),
      "PERMISSION_DENIED",
      "csr_other_cluster",
    );
    await refusal(
      checkClusterCsr((await makeCsr({ cn: "cluster2", dns: ["cluster1"] })).pem, "cluster1"),
      "PERMISSION_DENIED",
      "csr_other_cluster",
    );
    for (const extra of [{ uri: ["spiffe://x/y"] }, { ip: ["10.0.0.1"] }])
      await refusal(
        checkClusterCsr((await makeCsr({ dns: ["cluster1"], ...extra })).pem, "cluster1"),
        "PERMISSION_DENIED",
        "csr_extra_san",
      );
    await refusal(
      checkClusterCsr((await makeCsr({ dns: ["cluster1"], ca: true })).pem, "cluster1"),
      "PERMISSION_DENIED",
      "ca_requested",
    );
    await refusal(checkClusterCsr((await makeCsr({})).pem, "cluster1"), "INVALID_ARGUMENT", "csr_no_cluster_name");
    await refusal(checkClusterCsr("garbage", "cluster1"), "INVALID_ARGUMENT", "csr_malformed");
    await refusal(checkClusterCsr("", "cluster1"), "INVALID_ARGUMENT", "csr_malformed");
    await refusal(checkClusterCsr("x".repeat(9000), "cluster1"), "INVALID_ARGUMENT", "csr_too_large");
    // Another CSR's signature under this CSR's key and names.
    const a = await makeCsr({ dns: ["cluster1"] });
    const derA = Buffer.from(a.pem.replace(/-----[^-]+-----|\s/g, ""), "base64");
    derA[derA.length - 3] = derA[derA.length - 3]! ^ 0xff;
    const forged = `-----BEGIN CERTIFICATE REQUEST-----\n${derA.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
    await refusal(checkClusterCsr(forged, "cluster1"), "INVALID_ARGUMENT", "csr_signature");
    // Trailing bytes after the DER SEQUENCE.
    const trailing = Buffer.concat([Buffer.from(a.pem.replace(/-----[^-]+-----|\s/g, ""), "base64"), Buffer.from([0])]);
    await refusal(
      checkClusterCsr(
        `-----BEGIN CERTIFICATE REQUEST-----\n${trailing.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`,
        "cluster1",
      ),
      "INVALID_ARGUMENT",
      "csr_malformed",
    );
  });

  void it("cluster names must be DNS names", async () => {
    assert.equal(checkClusterName("cluster-1.east"), "cluster-1.east");
    for (const bad of ["", "Cluster", "a_b", "-a", "x".repeat(254), 5])
      await refusal(
        Promise.resolve().then(() => checkClusterName(bad)),
        "INVALID_ARGUMENT",
        typeof bad === "string" && bad !== "" ? "cluster_name_invalid" : "cluster_name_missing",
      );
  });
});

/** A scripted KV: entry → versions (undefined = deleted or destroyed). Pure logic only; integration tests use OpenBao. */
function scriptedKv(entries: Map<string, (string | undefined)[]>): IdentityTokenSource {
  return {
    list: () => Promise.resolve([...entries.keys()]),
    latest: (e) => {
      const versions = entries.get(e) ?? [];
      const token = versions.at(-1);
      return Promise.resolve(token === undefined ? undefined : { version: versions.length, token, createdAt: 0 });
    },
    version: (e, v) => Promise.resolve(entries.get(e)?.[v - 1]),
  };
}

void describe("identity token registry (per cluster)", () => {
  void it("a cluster's token authorises that cluster only; deleted tokens and removed clusters are dropped", async () => {
    let now = 1_000_000;
    const kv = new Map<string, (string | undefined)[]>([
      ["cluster-a", ["token-a"]],
      ["cluster-b", ["token-b"]],
    ]);
    const reg = new IdentityTokenRegistry(false, 60_000, () => now);
    await reg.refresh(scriptedKv(kv));
    assert.equal(reg.match("cluster-a", "token-a"), "current");
    assert.equal(reg.match("cluster-b", "token-a"), undefined, "A's token does not authorise B");
    assert.equal(reg.match("gloo-mesh-mgmt-server.gloo-mesh", "token-a"), undefined);
    assert.equal(reg.match("cluster-unknown", "token-a"), undefined);
    // B's latest version is soft-deleted: refused at the next refresh, and B is no longer registered.
    kv.set("cluster-b", ["token-b", undefined]);
    kv.delete("cluster-a");
    const report = await reg.refresh(scriptedKv(kv));
    assert.deepEqual(report.removed.sort(), ["cluster-a", "cluster-b"]);
    assert.equal(reg.match("cluster-b", "token-b"), undefined);
    assert.equal(reg.isRegistered("cluster-a"), false);
    // Rewritten after a delete: the deleted value gets no overlap window (it is never accepted again).
    kv.set("cluster-c", ["c1"]);
    await reg.refresh(scriptedKv(kv));
    kv.set("cluster-c", [undefined, "c2"]);
    now += 1_000;
    await reg.refresh(scriptedKv(kv));
    assert.equal(reg.match("cluster-c", "c2"), "current");
    assert.equal(reg.match("cluster-c", "c1"), undefined, "a deleted version is not resurrected as 'previous'");
  });

  void it("with the opt-in shared token, any cluster name matches the one token", async () => {
    const reg = new IdentityTokenRegistry(true, 0);
    await reg.refresh(scriptedKv(new Map([["*", ["shared"]]])));
    assert.equal(reg.match("anything", "shared"), "current");
    assert.ok(reg.isRegistered("anything"));
  });
});

void describe("identity token set", () => {
  void it("accepts the current token, and the previous one only for the overlap after the change is seen", async () => {
    let now = 1_000_000;
    const set = new IdentityTokenSet(60_000, () => now);
    assert.equal(set.match("a"), undefined, "nothing before a token is loaded");
    assert.equal(await set.update({ version: 1, token: "a", createdAt: 0 }, () => assert.fail()), "loaded");
    assert.equal(set.match("a"), "current");
    assert.equal(set.match("b"), undefined);
    assert.equal(await set.update({ version: 1, token: "a", createdAt: 0 }, () => assert.fail()), "unchanged");
    now += 10_000;
    assert.equal(
      await set.update({ version: 2, token: "b", createdAt: 0 }, (v) => Promise.resolve(v === 1 ? "a" : undefined)),
      "rotated",
    );
    assert.equal(set.match("b"), "current");
    assert.equal(set.match("a"), "previous");
    assert.equal(set.previousValidUntil, now + 60_000);
    now += 60_001;
    assert.equal(set.match("a"), undefined, "the previous token expires with the overlap");
    assert.equal(set.match("b"), "current");
  });

  void it("after a restart, the previous KV version is accepted until created_time + overlap", async () => {
    const now = 1_000_000;
    const set = new IdentityTokenSet(60_000, () => now);
    await set.update({ version: 3, token: "new", createdAt: now - 30_000 }, (v) =>
      Promise.resolve(v === 2 ? "old" : undefined),
    );
    assert.equal(set.match("old"), "previous");
    assert.equal(set.previousValidUntil, now + 30_000);
    const late = new IdentityTokenSet(60_000, () => now);
    await late.update({ version: 3, token: "new", createdAt: now - 61_000 }, () => assert.fail("not read"));
    assert.equal(late.match("old"), undefined);
  });
});

void describe("token bucket limiter", () => {
  void it("allows a burst, then the refill rate, per key", () => {
    let now = 0;
    const l = new TokenBucketLimiter({ ratePerSecond: 2, burst: 3 }, () => now);
    assert.deepEqual(
      [1, 2, 3, 4].map(() => l.take("a")),
      [true, true, true, false],
    );
    assert.equal(l.take("b"), true, "another key has its own bucket");
    now += 500;
    assert.equal(l.take("a"), true);
    assert.equal(l.take("a"), false);
  });

  void it("stays bounded", () => {
    const l = new TokenBucketLimiter({ ratePerSecond: 1, burst: 2, maxKeys: 100 }, () => 0);
    for (let i = 0; i < 1000; i++) l.take(`k${i}`);
    assert.ok(l.size <= 100);
  });
});

void describe("Renew caller verification", () => {
  const now = new Date();
  const peer = (chain: Buffer[], authorized = true): PeerCertificateInfo => ({
    authorized,
    authorizationError: authorized ? undefined : "CERT_HAS_EXPIRED",
    chainDer: chain,
  });

  void it("a relay client certificate names its cluster; each failure has its own reason", async () => {
    const root = await makeRoot("relay root");
    const inter = await makeIntermediate(root, "relay-issuer-signing-ca");
    const { X509Certificate } = await import("node:crypto");
    const trust = {
      roots: [new X509Certificate(Buffer.from(root.cert.rawData))],
      intermediates: [new X509Certificate(Buffer.from(inter.cert.rawData))],
    };
    const interDer = Buffer.from(inter.cert.rawData);
    const good = await leafFor(inter, {});
    assert.equal(verifyClientCertificate(peer([good.der, interDer]), trust, now).cluster, "cluster1");
    assert.equal(verifyClientCertificate(peer([good.der]), trust, now).cluster, "cluster1", "known intermediate");

    const fail = (p: PeerCertificateInfo, code: string, reason: string) =>
      refusal(
        Promise.resolve().then(() => verifyClientCertificate(p, trust, now)),
        code,
        reason,
      );
    await fail(peer([]), "UNAUTHENTICATED", "no_client_certificate");
    const foreign = await makeRoot("foreign");
    await fail(peer([(await leafFor(foreign, {})).der]), "UNAUTHENTICATED", "client_cert_untrusted");
    const expired = await leafFor(inter, {
      notBefore: new Date(now.getTime() - 7200_000),
      notAfter: new Date(now.getTime() - 1000),
    });
    const r = await fail(peer([expired.der, interDer], false), "UNAUTHENTICATED", "client_cert_expired");
    assert.match(r.message, /bootstrap again with the identity token/);
    await fail(
      peer([(await leafFor(inter, { eku: [x509.ExtendedKeyUsage.serverAuth] })).der]),
      "PERMISSION_DENIED",
      "client_cert_not_relay_client",
    );
    await fail(
      peer([(await leafFor(inter, { dns: ["a", "b"] })).der]),
      "PERMISSION_DENIED",
      "client_cert_not_relay_client",
    );
    await fail(peer([good.der, interDer], false), "UNAUTHENTICATED", "client_cert_untrusted");
  });
});

void describe("issued client certificates", () => {
  void it("are leaves for the cluster only, capped by the intermediate, and pass the agent's check", async () => {
    const root = await makeRoot("relay root");
    const inter = await makeIntermediate(root, "relay-issuer-signing-ca");
    const bundle = bundleOf(root, inter);
    const { pem, keys } = await makeCsr({ cn: "cluster1", dns: ["cluster1"] });
    const csr = await checkClusterCsr(pem, "cluster1");
    const now = new Date();
    const signed = signClientCertificate(bundle, csr, "cluster1", 100 * 24 * 3600, now);
    assert.ok(signed.notAfter.getTime() <= inter.cert.notAfter.getTime(), "capped by the intermediate");
    const rootPem = root.cert.toString("pem") + "\n";
    const issued = { certChainPem: signed.chainPem, notAfterUnix: Math.floor(signed.notAfter.getTime() / 1000) };
    const checked = await validateIssued(issued, keys.publicKey, rootPem, "cluster1", now);
    assert.equal(checked.serialHex, signed.serialHex);
    const leaf = new x509.X509Certificate(signed.chainPem[0]!);
    assert.equal(leaf.subject, "CN=cluster1");
    assert.deepEqual(
      leaf.getExtension(x509.SubjectAlternativeNameExtension)?.names.items.map((n) => [n.type, n.value]),
      [["dns", "cluster1"]],
    );
    assert.equal(leaf.getExtension(x509.KeyUsagesExtension)?.usages, x509.KeyUsageFlags.digitalSignature);
    assert.ok(await leaf.verify({ publicKey: inter.cert, signatureOnly: true }), "signed by the intermediate");
    assert.equal(leaf.notBefore.getTime(), Math.floor((now.getTime() - 60_000) / 1000) * 1000, "backdated by the skew");
    assert.equal(leaf.getExtension(x509.BasicConstraintsExtension)?.ca, false);
    assert.deepEqual(
      [...(leaf.getExtension(x509.ExtendedKeyUsageExtension)?.usages ?? [])],
      [x509.ExtendedKeyUsage.clientAuth],
    );

    await assert.rejects(validateIssued(issued, keys.publicKey, rootPem, "cluster2", now), InvalidIssuedError);
    const other = await generateKeyPair("ECDSA_P256", true);
    await assert.rejects(validateIssued(issued, other.publicKey, rootPem, "cluster1", now), /not for the key/);
    const foreign = await makeRoot("foreign");
    await assert.rejects(
      validateIssued(issued, keys.publicKey, foreign.cert.toString("pem"), "cluster1", now),
      /not signed by the next/,
    );
  });

  void it("carry the bootstrap time the issuer reads back on Renew, and never outlive the chain's maximum age", async () => {
    const root = await makeRoot("relay root");
    const inter = await makeIntermediate(root, "relay-issuer-signing-ca");
    const key = await checkClusterCsr((await makeCsr({ dns: ["cluster1"] })).pem, "cluster1");
    const now = new Date();
    const bootstrappedAt = new Date(Math.floor(now.getTime() / 1000) * 1000 - 3600_000);
    const cap = new Date(now.getTime() + 7200_500);
    const signed = signClientCertificate(bundleOf(root, inter), key, "cluster1", 24 * 3600, now, {
      notAfterCap: cap,
      subjectAttributes: [bootstrapTimeAttribute(bootstrappedAt)],
    });
    const leaf = new x509.X509Certificate(signed.chainPem[0]!);
    assert.equal(readBootstrapTime(leaf)?.getTime(), bootstrappedAt.getTime());
    assert.equal(signed.notAfter.getTime(), Math.floor(cap.getTime() / 1000) * 1000, "capped, whole seconds");
    assert.equal(leaf.notAfter.getTime(), signed.notAfter.getTime());
    assert.throws(
      () => signClientCertificate(bundleOf(root, inter), key, "cluster1", 3600, now, { notAfterCap: now }),
      (err: unknown) => err instanceof IssuerRefusal && err.reason === "bootstrap_too_old",
    );
  });
});
