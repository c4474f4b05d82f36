// Adoption of an intermediate an earlier agent of the pod published: the checks (checkAdoptable), the strict reader
// of our own cacerts generation, and the authority's keep-or-renew on a fake clock with a scripted Vault.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { chmod, mkdtemp, readlink, rm, symlink, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  IntermediateAuthority,
  type IntermediateAuthorityOptions,
} from "../../src/authority/intermediate-authority.js";
import {
  checkAdoptable,
  originRecordJson,
  settingsFingerprint,
  type AdoptableFiles,
  type AdoptionSettings,
} from "../../src/authority/adopt.js";
import { cacertsFiles } from "../../src/agent.js";
import { CacertsSink, ORIGIN_FILE } from "../../src/sinks/cacerts.js";
import { createLogger } from "../../src/observability/logger.js";
import { AgentMetrics } from "../../src/observability/metrics.js";
import type { VaultClient } from "../../src/vault/client.js";
import type { KubernetesAuth } from "../../src/vault/kubernetes-auth.js";
import { FakeClock, until } from "./fake-clock.js";
import { UNIT_TTL_S, scriptedCa, unitAuthorityOptions } from "./scripted-vault.js";

const S = 1_000;
const pkcs8 = (k: KeyObject) => k.export({ type: "pkcs8", format: "pem" }).toString();
const TTL_S = UNIT_TTL_S;

const SETTINGS: AdoptionSettings = {
  vaultAddress: "https://vault.example:8200",
  vaultNamespace: null,
  caPath: "pki/root/sign-intermediate",
  csrPath: null,
  keyAlgorithm: "ECDSA_P256",
  commonName: "unit intermediate",
  organization: null,
  ttlSeconds: TTL_S,
  maxPathLength: 0,
  trustDomain: "cluster.local",
  trustAnchors: [],
};

const options = (o: Partial<IntermediateAuthorityOptions> = {}) => unitAuthorityOptions({ keyExport: true, ...o });

/** Two agents of one pod against one scripted Vault: `first` publishes, a later one may adopt. */
async function pod() {
  const clock = new FakeClock();
  const ca = await scriptedCa(clock.now());
  const state = { writes: 0 };
  const vault = {
    async write(_path: string, _token: string, body: { csr: string; ttl: string }) {
      state.writes++;
      return { data: await ca.sign(body.csr, clock.now(), parseInt(body.ttl, 10) * S, { ca: true }) };
    },
  } as unknown as VaultClient;
  const auth = { withToken: <T>(fn: (t: string) => Promise<T>) => fn("unit-token") } as unknown as KubernetesAuth;
  const authority = () =>
    new IntermediateAuthority(
      options(),
      vault,
      auth,
      createLogger({ level: "silent" }),
      new AgentMetrics({ processMetrics: false }),
      clock,
      () => 0.5,
    );
  const first = authority();
  const b = await first.rotate("start");
  first.stop();
  const files: AdoptableFiles = {
    ...cacertsFiles(b),
    originJson: originRecordJson(SETTINGS, b.signingCertPem, new Date(clock.now())),
  };
  return { clock, ca, state, authority, published: b, files };
}

void describe("adoption", { timeout: 60_000 }, () => {
  void it("adopts a valid intermediate without a Vault call and renews it at the point decided from its issue time", async () => {
    const { clock, state, authority, published, files } = await pod();
    await clock.advance(100 * S);
    const later = authority();
    later.adoptAtStart(() => checkAdoptable(files, SETTINGS, [], new Date(clock.now())));
    const b = await later.start();
    assert.equal(state.writes, 1, "only the first agent's signing");
    assert.equal(b.serialHex, published.serialHex);
    assert.equal(later.adopted, b);
    assert.equal(b.privateKeyPem, files.caKeyPem.replace(/\r\n/g, "\n"), "key export keeps working on the adopted key");
    // Signed at t0 with 3000 s: renewal at t0 + 2000 s (jitter 0), i.e. 1900 s after this start, as for the signer.
    assert.deepEqual(clock.pending(), [1_900 * S]);
    await clock.advance(1_900 * S);
    await until(() => later.current()?.generation === 2, "the scheduled renewal");
    assert.equal(state.writes, 2);
    assert.equal(later.adopted?.serialHex, published.serialHex, "adopted stays the first bundle");
    later.stop();
  });

  void it("signs a new one when the adopted intermediate is already due for renewal", async () => {
    const { clock, state, authority, published, files } = await pod();
    await clock.advance(2_001 * S);
    const later = authority();
    later.adoptAtStart(() => checkAdoptable(files, SETTINGS, [], new Date(clock.now())));
    const b = await later.start();
    assert.equal(state.writes, 2);
    assert.notEqual(b.serialHex, published.serialHex);
    assert.equal(later.adopted, undefined);
    later.stop();
  });

  void it("refuses, naming why: other settings, another key, foreign roots, a broken chain, no or a wrong record", async () => {
    const { clock, files } = await pod();
    const now = new Date(clock.now());
    const refused = async (f: AdoptableFiles, s: AdoptionSettings = SETTINGS, extra: string[] = []) => {
      const r = await checkAdoptable(f, s, extra, now);
      assert.equal(r.ok, false);
      return r.ok ? "" : r.reason;
    };
    assert.equal((await checkAdoptable(files, SETTINGS, [], now)).ok, true, "the untouched set is adoptable");
    assert.match(await refused(files, { ...SETTINGS, ttlSeconds: 60 }), /other settings \(ttlSeconds: 3000 → 60\)/);
    assert.match(
      await refused(files, { ...SETTINGS, keyAlgorithm: "ECDSA_P384" }),
      /keyAlgorithm: ECDSA_P256 → ECDSA_P384/,
    );
    assert.match(
      await refused(files, { ...SETTINGS, vaultAddress: "https://other:8200" }),
      /vaultAddress: https:\/\/vault.example:8200 → https:\/\/other:8200/,
    );
    const otherKey = pkcs8(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey);
    assert.match(await refused({ ...files, caKeyPem: otherKey }), /does not match the certificate/);
    const rsaKey = pkcs8(generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey);
    assert.match(await refused({ ...files, caKeyPem: rsaKey }), /RSA_2048, not the configured ECDSA_P256/);
    const strangerRoot = (await scriptedCa(clock.now())).rootPem;
    assert.match(
      await refused({ ...files, rootCertPem: files.rootCertPem + strangerRoot }),
      /root-cert.pem does not hold exactly/,
    );
    assert.match(await refused(files, SETTINGS, [strangerRoot]), /root-cert.pem does not hold exactly/);
    assert.match(
      await refused({ ...files, certChainPem: files.caCertPem + strangerRoot }),
      /not signed by the next|cert-chain.pem/,
    );
    const { originJson: _, ...noRecord } = files;
    assert.match(await refused(noRecord), /no origin record/);
    assert.match(await refused({ ...files, originJson: "{}" }), /not a version-1/);
    const record = JSON.parse(files.originJson!) as Record<string, unknown>;
    assert.match(
      await refused({ ...files, originJson: JSON.stringify({ ...record, certSha256: "00" }) }),
      /names another certificate/,
    );
    // A record whose settings were edited to match but whose fingerprint was not (or the other way round).
    assert.match(
      await refused({
        ...files,
        originJson: JSON.stringify({ ...record, fingerprint: settingsFingerprint({ ...SETTINGS, ttlSeconds: 1 }) }),
      }),
      /other settings/,
    );
    const expired = await checkAdoptable(files, SETTINGS, [], new Date(clock.now() + (TTL_S + 1) * S));
    assert.match(expired.ok ? "" : expired.reason, /the certificate expired at/);
  });
});

void describe("CacertsSink.readOwnGeneration", () => {
  const ORIGIN = '{"kind":"test"}\n';
  async function published() {
    const dir = await mkdtemp(path.join(tmpdir(), "iva-adopt-unit-"));
    const { files } = await podFiles();
    const sink = new CacertsSink({ dir, group: process.getegid?.() ?? 0 });
    await sink.write({ ...files, originJson: ORIGIN });
    return { dir, sink, files };
  }
  let cached: AdoptableFiles | undefined;
  async function podFiles() {
    cached ??= (await pod()).files;
    return { files: cached };
  }

  void it("reads back exactly the generation our sink wrote, origin record included", async (t) => {
    const { dir, sink, files } = await published();
    t.after(() => rm(dir, { recursive: true, force: true }));
    const r = await sink.readOwnGeneration();
    assert.ok(r.ok, r.ok ? "" : r.reason);
    assert.equal(r.generation.files.caCertPem, files.caCertPem);
    assert.equal(r.generation.files.caKeyPem, files.caKeyPem);
    assert.equal(r.generation.files.originJson, ORIGIN);
    assert.equal(r.generation.name, await readlink(path.join(dir, "..data")));
  });

  void it("refuses what our sink did not write: a replaced top-level name, a foreign ..data, a changed mode, a link", async (t) => {
    const refusal = async (change: (dir: string, data: string) => Promise<void>) => {
      const { dir, sink } = await published();
      t.after(() => rm(dir, { recursive: true, force: true }));
      await change(dir, path.join(dir, await readlink(path.join(dir, "..data"))));
      const r = await sink.readOwnGeneration();
      assert.equal(r.ok, false);
      return r.ok ? "" : r.reason;
    };
    assert.match(
      await refusal(async (dir) => {
        await unlink(path.join(dir, "ca-key.pem"));
        await writeFile(path.join(dir, "ca-key.pem"), "planted");
      }),
      /ca-key.pem is not the link/,
    );
    assert.match(
      await refusal(async (dir) => {
        await unlink(path.join(dir, "..data"));
        await symlink("/etc", path.join(dir, "..data"));
      }),
      /points to "\/etc"/,
    );
    assert.match(
      await refusal((_dir, data) => chmod(path.join(data, "ca-cert.pem"), 0o644)),
      /ca-cert.pem has mode 644/,
    );
    assert.match(
      await refusal(async (_dir, data) => {
        await unlink(path.join(data, ORIGIN_FILE));
        await symlink("/etc/hostname", path.join(data, ORIGIN_FILE));
      }),
      new RegExp(`${ORIGIN_FILE}: cannot open it`),
    );
    assert.match(
      await refusal((_dir, data) => unlink(path.join(data, ORIGIN_FILE))),
      new RegExp(`${ORIGIN_FILE}: cannot open it \\(ENOENT\\)`),
    );
  });
});
