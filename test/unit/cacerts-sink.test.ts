// Unit tests of the cacerts sink in throwaway directories. PEM contents are fake blocks (base64 of a marker text): the
// sink only splits PEM blocks and compares their bodies, it does not parse certificates.
import { test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import * as fsp from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Worker } from "node:worker_threads";
import { execFileSync } from "node:child_process";
import { pathToFileURL } from "node:url";
import {
  CacertsDirError,
  CacertsRootChangeError,
  CacertsSink,
  planRootCertText,
  splitPemBlocks,
  type CacertsFiles,
} from "../../src/sinks/cacerts.js";

const NAMES = ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"] as const;
const DATA_DIR = /^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\./;
const isRoot = process.geteuid?.() === 0;

function fakePem(label: string, text: string, width = 64): string {
  const lines =
    Buffer.from(text)
      .toString("base64")
      .match(new RegExp(`.{1,${width}}`, "g")) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

const ROOT_A = fakePem("CERTIFICATE", "fake root certificate A, long enough to wrap over more than one line of base64");
const ROOT_B = fakePem("CERTIFICATE", "fake root certificate B");
const ROOT_C = fakePem("CERTIFICATE", "fake root certificate C");

/** A self-consistent set: every file except the shared root carries `marker`. */
function makeSet(marker: string, rootCertPem = ROOT_A): CacertsFiles {
  const caCertPem = fakePem("CERTIFICATE", `intermediate ${marker}`);
  return {
    caCertPem,
    caKeyPem: fakePem("PRIVATE KEY", `secret key material ${marker}`),
    certChainPem: caCertPem + rootCertPem,
    rootCertPem,
  };
}

function asArray(files: CacertsFiles): string[] {
  return [files.caCertPem, files.caKeyPem, files.certChainPem, files.rootCertPem];
}

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(tmpdir(), "cacerts-sink-"));
  t.after(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

async function dataDirs(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir)).filter((name) => DATA_DIR.test(name)).sort();
}

async function readTopLevel(dir: string): Promise<string[]> {
  return Promise.all(NAMES.map((name) => fsp.readFile(path.join(dir, name), "utf8")));
}

void test("writes the four files as links through ..data with the right modes and group", async (t) => {
  const dir = await tempDir(t);
  const sink = new CacertsSink({ dir });
  const files = makeSet("one");
  await sink.write(files);

  const target = await fsp.readlink(path.join(dir, "..data"));
  assert.match(target, DATA_DIR);
  assert.deepEqual(await dataDirs(dir), [target]);
  for (const name of NAMES) {
    assert.ok((await fsp.lstat(path.join(dir, name))).isSymbolicLink(), `${name} is a symlink`);
    assert.equal(await fsp.readlink(path.join(dir, name)), `..data/${name}`);
    const fileStat = await fsp.stat(path.join(dir, target, name));
    assert.equal(fileStat.mode & 0o777, 0o640, `${name} mode`);
    if (isRoot) assert.equal(fileStat.gid, 1337, `${name} group`);
  }
  assert.deepEqual(await readTopLevel(dir), asArray(files));
  const dirStat = await fsp.stat(path.join(dir, target));
  assert.equal(dirStat.mode & 0o777, 0o750);
  if (isRoot) assert.equal(dirStat.gid, 1337);
  assert.deepEqual(await sink.read(), files);
  // Without root (and not in group 1337) the real chown fails with EPERM: a warning, not an error.
  if (isRoot) assert.deepEqual(sink.warnings, []);
  else assert.match(sink.warnings[0] ?? "", /group 1337 \(EPERM\)/);
});

void test("read() is undefined before anything is published", async (t) => {
  const dir = await tempDir(t);
  assert.equal(await new CacertsSink({ dir }).read(), undefined);
});

void test("fileMode and group options are applied", async (t) => {
  const dir = await tempDir(t);
  const group = isRoot ? 4242 : (process.getegid?.() ?? 0);
  await new CacertsSink({ dir, fileMode: 0o600, group }).write(makeSet("opts"));
  const fileStat = await fsp.stat(path.join(dir, "ca-key.pem"));
  assert.equal(fileStat.mode & 0o777, 0o600);
  assert.equal(fileStat.gid, group);
});

void test("a second write swaps ..data and removes the previous data directory", async (t) => {
  const dir = await tempDir(t);
  const sink = new CacertsSink({ dir });
  await sink.write(makeSet("first"));
  const first = await fsp.readlink(path.join(dir, "..data"));

  const second = makeSet("second");
  await sink.write(second);
  const current = await fsp.readlink(path.join(dir, "..data"));
  assert.notEqual(current, first);
  assert.deepEqual(await dataDirs(dir), [current]);
  assert.deepEqual(await readTopLevel(dir), asArray(second));
  for (const name of NAMES) assert.equal(await fsp.readlink(path.join(dir, name)), `..data/${name}`);
  assert.equal((await fsp.readdir(dir)).includes("..data_tmp"), false);
});

// The reader runs in a worker thread so it truly reads in parallel with the writes. Reading four files by separate
// open() calls can straddle a swap however the writer works, so the reader brackets each round with fsp.readlink(..data)
// (as a seqlock): a round during which ..data did not change must be exactly one complete written set. Rounds that
// straddled a swap are counted and skipped, like a reader that retries.
const READER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const fs = require("node:fs");
const path = require("node:path");
const { dir, names, sets, flag } = workerData;
const stop = new Int32Array(flag);
const byCaCert = new Map(sets.map((set, index) => [set[0], index]));
const dataLink = path.join(dir, "..data");
let consistent = 0, straddled = 0, ready = false;
const violations = [], seen = new Set();
while (Atomics.load(stop, 0) === 0) {
  if (!ready) { ready = true; parentPort.postMessage({ type: "ready" }); }
  const before = fs.readlinkSync(dataLink);
  let contents, failure;
  try {
    contents = names.map((name) => fs.readFileSync(path.join(dir, name), "utf8"));
  } catch (err) {
    failure = err.code || String(err);
  }
  if (fs.readlinkSync(dataLink) !== before) { straddled++; continue; }
  if (failure) { violations.push("read failed while ..data stayed " + before + ": " + failure); continue; }
  const index = byCaCert.get(contents[0]);
  if (index === undefined || contents.some((text, i) => text !== sets[index][i])) {
    violations.push("mixed or partial set while ..data stayed " + before);
    continue;
  }
  consistent++;
  seen.add(index);
}
parentPort.postMessage({ type: "done", consistent, straddled, distinct: seen.size, violations });
`;

interface ReaderReport {
  type: "done";
  consistent: number;
  straddled: number;
  distinct: number;
  violations: string[];
}

void test("a concurrent reader never sees a mixed or partial set during 50 writes", { timeout: 60_000 }, async (t) => {
  const dir = await tempDir(t);
  const sink = new CacertsSink({ dir });
  const sets = Array.from({ length: 51 }, (_, i) => makeSet(`set-${i}`));
  const [firstSet, ...laterSets] = sets;
  assert.ok(firstSet);
  await sink.write(firstSet);

  const flag = new SharedArrayBuffer(4);
  const worker = new Worker(READER_SOURCE, {
    eval: true,
    workerData: { dir, names: NAMES, sets: sets.map(asArray), flag },
  });
  try {
    await once(worker, "message"); // ready: the reader is in its loop
    for (const set of laterSets) await sink.write(set);
    const done = once(worker, "message");
    Atomics.store(new Int32Array(flag), 0, 1);
    const [report] = (await done) as [ReaderReport];
    t.diagnostic(`consistent=${report.consistent} straddled=${report.straddled} distinct=${report.distinct}`);
    assert.deepEqual(report.violations, []);
    assert.ok(report.consistent > 0);
    assert.ok(report.distinct >= 2, "the reader observed the contents change");
  } finally {
    Atomics.store(new Int32Array(flag), 0, 1);
    await worker.terminate();
  }
  assert.deepEqual(await readTopLevel(dir), asArray(laterSets[laterSets.length - 1] ?? firstSet));
  assert.equal((await dataDirs(dir)).length, 1);
});

void test("a root change is refused without multiRoot and the published set stays", async (t) => {
  const dir = await tempDir(t);
  const sink = new CacertsSink({ dir });
  const original = makeSet("a");
  await sink.write(original);
  await assert.rejects(sink.write(makeSet("b", ROOT_B)), (err: unknown) => {
    assert.ok(err instanceof CacertsRootChangeError);
    assert.match(err.message, /ISTIO_MULTIROOT_MESH=true/);
    assert.match(err.message, /old \+ new roots/);
    return true;
  });
  assert.deepEqual(await readTopLevel(dir), asArray(original));
  assert.equal((await dataDirs(dir)).length, 1);
});

void test("the same root in different PEM formatting is not a change, and the on-disk bytes are kept", async (t) => {
  const dir = await tempDir(t);
  const sink = new CacertsSink({ dir });
  await sink.write(makeSet("a"));
  const rewrapped = fakePem(
    "CERTIFICATE",
    "fake root certificate A, long enough to wrap over more than one line of base64",
    40,
  );
  assert.notEqual(rewrapped, ROOT_A);
  const next = makeSet("b", rewrapped);
  await sink.write(next);
  // istiod compares root-cert.pem byte for byte, so the bytes it loaded stay.
  assert.equal(await fsp.readFile(path.join(dir, "root-cert.pem"), "utf8"), ROOT_A);
  assert.equal(await fsp.readFile(path.join(dir, "ca-cert.pem"), "utf8"), next.caCertPem);
});

void test("multiRoot: adding a root (old + new) is accepted, dropping the old one afterwards too", async (t) => {
  const dir = await tempDir(t);
  const sink = new CacertsSink({ dir, multiRoot: true });
  await sink.write(makeSet("a", ROOT_A));

  await sink.write(makeSet("b", ROOT_A + ROOT_B));
  const both = await fsp.readFile(path.join(dir, "root-cert.pem"), "utf8");
  assert.ok(both.includes(ROOT_A), "istiod's bytes.Contains(new, old) holds");
  assert.deepEqual(splitPemBlocks(both), [ROOT_A, ROOT_B]);

  // New root listed first by the caller: the old bytes still come first so that they stay a literal substring.
  const sink2Dir = await tempDir(t);
  const sink2 = new CacertsSink({ dir: sink2Dir, multiRoot: true });
  await sink2.write(makeSet("a", ROOT_A));
  await sink2.write(makeSet("b", ROOT_B + ROOT_A));
  assert.equal(await fsp.readFile(path.join(sink2Dir, "root-cert.pem"), "utf8"), ROOT_A + ROOT_B);

  await sink.write(makeSet("c", ROOT_B));
  const dropped = await fsp.readFile(path.join(dir, "root-cert.pem"), "utf8");
  assert.equal(dropped, ROOT_B);
  assert.ok(both.includes(dropped), "istiod's bytes.Contains(old, new) holds");
});

void test("multiRoot: a disjoint root bundle is refused", async (t) => {
  const dir = await tempDir(t);
  const sink = new CacertsSink({ dir, multiRoot: true });
  const original = makeSet("a", ROOT_A);
  await sink.write(original);
  await assert.rejects(sink.write(makeSet("b", ROOT_B)), (err: unknown) => {
    assert.ok(err instanceof CacertsRootChangeError);
    assert.match(err.message, /neither bundle contains the other/);
    return true;
  });
  await assert.rejects(sink.write(makeSet("c", ROOT_B + ROOT_C)), CacertsRootChangeError);
  assert.deepEqual(await readTopLevel(dir), asArray(original));
});

void test("multiRoot: dropping a root from the middle is refused (istiod needs a byte-for-byte part)", () => {
  assert.throws(() => planRootCertText(ROOT_A + ROOT_B + ROOT_C, ROOT_A + ROOT_C, true), CacertsRootChangeError);
  assert.equal(planRootCertText(ROOT_A + ROOT_B + ROOT_C, ROOT_C + ROOT_B, true), ROOT_B + ROOT_C);
  assert.equal(planRootCertText(undefined, ROOT_B, false), ROOT_B);
});

void test("a missing directory is an error naming the path and the permission needed", async (t) => {
  const dir = path.join(await tempDir(t), "does-not-exist");
  await assert.rejects(new CacertsSink({ dir }).write(makeSet("a")), (err: unknown) => {
    assert.ok(err instanceof CacertsDirError);
    assert.ok(err.message.includes(dir), err.message);
    assert.match(err.message, /does not exist/);
    assert.match(err.message, /write and search \(w\+x\) permission/);
    return true;
  });
});

void test("a path that is a file is refused", async (t) => {
  const file = path.join(await tempDir(t), "plain-file");
  await fsp.writeFile(file, "x");
  await assert.rejects(new CacertsSink({ dir: file }).write(makeSet("a")), /is not a directory/);
});

void test("a read-only directory is refused", async (t) => {
  const dir = path.join(await tempDir(t), "read-only");
  await fsp.mkdir(dir, { mode: 0o555 });
  if (!isRoot) {
    await assert.rejects(new CacertsSink({ dir }).write(makeSet("a")), (err: unknown) => {
      assert.ok(err instanceof CacertsDirError);
      assert.ok(err.message.includes(dir));
      assert.match(err.message, /not writable/);
      return true;
    });
    return;
  }
  // Root bypasses directory permissions, so check as an unprivileged user (as istiod's pod would run the agent).
  await fsp.chmod(path.dirname(dir), 0o755);
  // The checkout may not be readable by that user: give it a copy of the compiled sink modules and their one import.
  const modules = path.join(path.dirname(dir), "modules");
  const sinkCopy = path.join(modules, "sinks", "cacerts.js");
  for (const rel of ["sinks/cacerts.js", "sinks/projected-dir.js", "crypto/pem.js"]) {
    const copy = path.join(modules, rel);
    await fsp.mkdir(path.dirname(copy), { recursive: true, mode: 0o755 });
    await fsp.copyFile(new URL(`../../src/${rel}`, import.meta.url), copy);
    await fsp.chmod(copy, 0o644);
  }
  await fsp.writeFile(path.join(modules, "package.json"), '{"type":"module"}\n', { mode: 0o644 });
  const sinkModule = pathToFileURL(sinkCopy).href;
  const files = JSON.stringify(makeSet("a"));
  const script = `import(${JSON.stringify(sinkModule)}).then(async ({ CacertsSink }) => {
    try { await new CacertsSink({ dir: ${JSON.stringify(dir)} }).write(${files}); console.log("WROTE"); }
    catch (e) { console.log(e.name + ": " + e.message); }
  });`;
  const out = execFileSync(
    "setpriv",
    ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, "--input-type=module", "-e", script],
    {
      encoding: "utf8",
    },
  );
  assert.match(out, /^CacertsDirError: /);
  assert.ok(out.includes(dir), out);
  assert.match(out, /not writable/);
});

void test("leftovers of a crashed writer are removed on the first write; unrelated files stay", async (t) => {
  const dir = await tempDir(t);
  await new CacertsSink({ dir }).write(makeSet("before-crash"));
  const published = await fsp.readlink(path.join(dir, "..data"));
  // A writer killed after creating its data directory and ..data_tmp, before the rename.
  const stray = "..2020_01_01_00_00_00.000_crash1";
  await fsp.mkdir(path.join(dir, stray), { mode: 0o750 });
  await fsp.writeFile(path.join(dir, stray, "ca-key.pem"), "half");
  await fsp.symlink(stray, path.join(dir, "..data_tmp"));
  await fsp.writeFile(path.join(dir, "README"), "not ours\n", { mode: 0o644 });
  await fsp.mkdir(path.join(dir, "..other-tool"));

  // A new sink instance, as after a restart.
  const files = makeSet("after-crash");
  await new CacertsSink({ dir }).write(files);

  const names = await fsp.readdir(dir);
  assert.equal(names.includes(stray), false);
  assert.equal(names.includes(published), false);
  assert.equal(names.includes("..data_tmp"), false);
  assert.equal(await fsp.readFile(path.join(dir, "README"), "utf8"), "not ours\n");
  assert.equal((await fsp.stat(path.join(dir, "README"))).mode & 0o777, 0o644);
  assert.ok(names.includes("..other-tool"));
  assert.deepEqual(await dataDirs(dir), [await fsp.readlink(path.join(dir, "..data"))]);
  assert.deepEqual(await readTopLevel(dir), asArray(files));
});

void test("plain files at the four names (e.g. a copied secret) are replaced by links", async (t) => {
  const dir = await tempDir(t);
  for (const name of NAMES) await fsp.writeFile(path.join(dir, name), name === "root-cert.pem" ? ROOT_A : "old\n");
  const files = makeSet("a");
  await new CacertsSink({ dir }).write(files);
  for (const name of NAMES) assert.equal(await fsp.readlink(path.join(dir, name)), `..data/${name}`);
  assert.deepEqual(await readTopLevel(dir), asArray(files));
});

// Tests run as root, where chown to any gid works; EPERM is simulated by injecting the chown function.
void test("chown EPERM does not fail the write; it is reported in sink.warnings", async (t) => {
  const dir = await tempDir(t);
  const calls: string[] = [];
  let deny = true;
  const sink = new CacertsSink({
    dir,
    group: 4343,
    chown: async (target, uid, gid) => {
      calls.push(`${path.basename(target)}:${uid}:${gid}`);
      if (deny) throw Object.assign(new Error(`EPERM: operation not permitted, chown '${target}'`), { code: "EPERM" });
      await fsp.chown(target, uid, gid);
    },
  });
  const files = makeSet("a");
  await sink.write(files);
  assert.deepEqual(await readTopLevel(dir), asArray(files));
  assert.equal(sink.warnings.length, 1);
  assert.match(sink.warnings[0] ?? "", /group 4343 \(EPERM\)/);
  assert.ok((sink.warnings[0] ?? "").includes(dir));
  assert.ok(calls.includes("ca-key.pem:-1:4343"), "uid is kept (-1)");
  assert.notEqual((await fsp.stat(path.join(dir, "ca-key.pem"))).gid, 4343);
  assert.equal((await fsp.stat(path.join(dir, "ca-key.pem"))).mode & 0o777, 0o640);

  if (!isRoot) return; // the real chown below needs root
  deny = false;
  await sink.write(makeSet("b"));
  assert.deepEqual(sink.warnings, [], "warnings describe the latest write only");
  assert.equal((await fsp.stat(path.join(dir, "ca-key.pem"))).gid, 4343);
});

void test("any other chown error fails the write and leaves the published set and no new directory", async (t) => {
  const dir = await tempDir(t);
  const original = makeSet("a");
  await new CacertsSink({ dir, group: 4444 }).write(original);
  const before = await dataDirs(dir);
  const failing = new CacertsSink({
    dir,
    group: 4545,
    chown: () => Promise.reject(Object.assign(new Error("EIO: i/o error"), { code: "EIO" })),
  });
  await assert.rejects(failing.write(makeSet("b")), /EIO/);
  assert.deepEqual(await dataDirs(dir), before);
  assert.deepEqual(await readTopLevel(dir), asArray(original));
});

void test("malformed input is refused without echoing key material", async (t) => {
  const dir = await tempDir(t);
  const sink = new CacertsSink({ dir });
  const secret = "c2VjcmV0LWtleS1ib2R5";
  const badKey = `-----BEGIN PRIVATE KEY-----\n${secret}!!\n-----END PRIVATE KEY-----\n`;
  await assert.rejects(sink.write({ ...makeSet("a"), caKeyPem: badKey }), (err: unknown) => {
    assert.ok(err instanceof Error);
    assert.match(err.message, /ca-key\.pem: PEM block 1 is malformed/);
    assert.equal(err.message.includes(secret), false);
    return true;
  });
  const swapped = makeSet("b");
  await assert.rejects(sink.write({ ...swapped, caCertPem: swapped.caKeyPem }), (err: unknown) => {
    assert.ok(err instanceof Error);
    assert.match(err.message, /ca-cert\.pem: holds a "PRIVATE KEY" PEM block/);
    assert.equal(err.message.includes(swapped.caKeyPem.split("\n")[1] ?? "-"), false);
    return true;
  });
  assert.deepEqual(await fsp.readdir(dir), []);
});

void test("splitPemBlocks normalizes wrapping, CRLF and surrounding text", () => {
  const messy = `subject=fake\r\n${ROOT_B.replace(/\n/g, "\r\n")}\n\n  ${fakePem("CERTIFICATE", "fake root certificate A, long enough to wrap over more than one line of base64", 20)}`;
  assert.deepEqual(splitPemBlocks(messy), [ROOT_B, ROOT_A]);
  assert.deepEqual(splitPemBlocks("no pem here"), []);
  assert.throws(() => splitPemBlocks("-----BEGIN CERTIFICATE-----\nAAAA\n"), /no matching END/);
});

// A second writer of the volume swaps the fresh data directory for a symlink to a directory it controls, right after
// the sink created it (the chown seam runs at that moment). Writing by name would put the files, the CA key among
// them, into the attacker's directory and publish that directory as `..data`.
void test("a data directory swapped for a symlink mid-write does not redirect the files; the write is refused", async (t) => {
  const dir = await tempDir(t);
  const attacker = await tempDir(t);
  const original = makeSet("a");
  await new CacertsSink({ dir, group: 4646 }).write(original);
  let planted = false;
  const sink = new CacertsSink({
    dir,
    group: 4747,
    chown: async (target) => {
      if (planted || !DATA_DIR.test(path.basename(target))) return;
      planted = true;
      await fsp.rename(target, `${target}.moved`);
      await fsp.symlink(attacker, target);
    },
  });
  await assert.rejects(sink.write(makeSet("b")), (err: unknown) => {
    assert.ok(err instanceof CacertsDirError, String(err));
    assert.match(err.message, /was replaced while the cacerts files were being written \(now a symlink\); refusing/);
    return true;
  });
  assert.ok(planted, "the race was planted");
  assert.deepEqual(await fsp.readdir(attacker), [], "nothing was written through the symlink");
  assert.deepEqual(await readTopLevel(dir), asArray(original), "the published set is unchanged");
  assert.equal((await fsp.lstat(path.join(dir, "..data"))).isSymbolicLink(), true);
  assert.ok(DATA_DIR.test(await fsp.readlink(path.join(dir, "..data"))), "..data still names our own directory");
});

void test("rootChangeProblem answers what write() would refuse, without writing", async (t) => {
  const dir = await tempDir(t);
  const sink = new CacertsSink({ dir, multiRoot: true });
  assert.equal(await sink.rootChangeProblem(ROOT_B), undefined, "nothing published yet: anything goes");
  await sink.write(makeSet("a", ROOT_A + ROOT_B + ROOT_C));
  assert.equal(await sink.rootChangeProblem(ROOT_A + ROOT_B + ROOT_C), undefined, "same roots");
  assert.equal(await sink.rootChangeProblem(ROOT_A + ROOT_B), undefined, "drop at the end");
  assert.match((await sink.rootChangeProblem(ROOT_A + ROOT_C))!, /refusing to drop roots/, "drop from the middle");
  assert.match((await sink.rootChangeProblem(fakePem("CERTIFICATE", "other")))!, /neither bundle contains the other/);
  assert.equal(await fsp.readFile(path.join(dir, "root-cert.pem"), "utf8"), ROOT_A + ROOT_B + ROOT_C, "untouched");
});
