// --trust-anchors-file: the one check (start and reload alike), the reload decision, and the reloader's watch
// throttling and outcomes on a fake clock with a scripted file and directory watch. No real files, no sleeping.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { webcrypto } from "node:crypto";
import { x509 } from "../../src/crypto/x509.js";
import { createLogger } from "../../src/observability/logger.js";
import { checkTrustAnchorsText, readTrustAnchors } from "../../src/config/trust-anchors.js";
import {
  TrustAnchorsReloader,
  concernsFile,
  decideTrustAnchorsReload,
  type TrustAnchorsOutcome,
  type TrustAnchorsTrigger,
} from "../../src/config/trust-anchors-reload.js";
import { ECDSA_SHA256, caCertificate } from "../env/ca-certs.js";
import { FakeClock, settle } from "./fake-clock.js";

const EC = { name: "ECDSA", namedCurve: "P-256" } as const;
const DAY = 24 * 3600_000;
const NOW = new Date(Date.UTC(2026, 0, 1));
const FILE = "/etc/anchors/roots.pem";

async function root(cn: string, notAfter = new Date(NOW.getTime() + 30 * DAY)): Promise<string> {
  const keys = await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"]);
  const cert = await caCertificate({ subject: `CN=${cn}`, keys, notBefore: new Date(NOW.getTime() - DAY), notAfter });
  return cert.toString("pem") + "\n";
}

async function leafOnly(cn: string): Promise<string> {
  const keys = await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"]);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=${cn}`,
    keys,
    notBefore: new Date(NOW.getTime() - DAY),
    notAfter: new Date(NOW.getTime() + DAY),
    signingAlgorithm: ECDSA_SHA256,
    extensions: [new x509.BasicConstraintsExtension(false, undefined, true)],
  });
  return cert.toString("pem") + "\n";
}

void describe("trust-anchors file check", () => {
  void it("accepts CA certificates and refuses each kind of bad input naming the file and what is expected", async () => {
    const a = await root("Anchor A");
    const b = await root("Anchor B");
    const good = checkTrustAnchorsText(`# roots\n${a}${b}`, FILE, NOW);
    assert.ok(good.ok);
    assert.equal(good.pem.length, 2);

    const cases: [string, string, RegExp][] = [
      ["garbage", "not a certificate at all\n", /holds no PEM certificate/],
      ["only a key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", /holds no PEM certificate/],
      ["broken PEM", "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n", /malformed/],
      ["not DER", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", /not a parsable X\.509/],
      ["CA-less", await leafOnly("Leaf"), /certificate 1 \(CN=Leaf\) is not a CA/],
      ["expired", a + (await root("Old", new Date(NOW.getTime() - 1))), /certificate 2 \(CN=Old\) expired at/],
    ];
    for (const [name, text, why] of cases) {
      const r = checkTrustAnchorsText(text, FILE, NOW);
      assert.equal(r.ok, false, name);
      if (r.ok) continue;
      assert.match(r.problem, why, name);
      assert.ok(r.problem.startsWith(`--trust-anchors-file ${FILE}: `), `${name}: names the file: ${r.problem}`);
      assert.match(r.problem, /expected a PEM file of one or more CA certificates/, name);
    }
    const unreadable = readTrustAnchors(FILE, NOW, () => {
      throw Object.assign(new Error("gone"), { code: "ENOENT" });
    });
    assert.equal(unreadable.ok, false);
    if (!unreadable.ok) assert.match(unreadable.problem, /cannot read it \(ENOENT\)/);
  });

  void it("decides apply, unchanged or reject against the roots in force", async () => {
    const a = await root("A");
    const b = await root("B");
    assert.deepEqual(decideTrustAnchorsReload([a], { ok: true, pem: [a] }), { action: "unchanged" });
    assert.deepEqual(decideTrustAnchorsReload([a], { ok: true, pem: [a, b] }), { action: "apply", pem: [a, b] });
    assert.deepEqual(decideTrustAnchorsReload([a, b], { ok: true, pem: [b, a] }), { action: "apply", pem: [b, a] });
    assert.deepEqual(decideTrustAnchorsReload([a], { ok: false, problem: "p" }), { action: "reject", problem: "p" });
  });

  void it("a change of the file's own name, of ..data (the kubelet's swap) or an unnamed one concerns the file", () => {
    assert.ok(concernsFile(FILE, "roots.pem"));
    assert.ok(concernsFile(FILE, "..data"));
    assert.ok(concernsFile(FILE, null));
    assert.ok(!concernsFile(FILE, "..data_tmp"));
    assert.ok(!concernsFile(FILE, "agent.log"));
  });
});

/** A reloader over a scripted file and directory watch; `inForce` is what apply() last put in force. */
function harness(initial: string[], refusal?: (pem: string[]) => Promise<string | undefined>) {
  const clock = new FakeClock(NOW.getTime(), 0);
  const state = {
    text: initial.join(""),
    inForce: initial,
    applied: [] as string[][],
    counts: [] as { trigger: TrustAnchorsTrigger; outcome: TrustAnchorsOutcome }[],
    reads: 0,
    errors: [] as string[],
    emit: (_name: string | null) => undefined as void,
    watchedDir: "",
    closed: false,
  };
  const log = createLogger({ level: "silent" });
  const spyLog = Object.assign(Object.create(log) as typeof log, {
    error: (fields: { err?: string }, msg: string) => void state.errors.push(`${msg}: ${fields.err ?? ""}`),
  });
  const reloader = new TrustAnchorsReloader({
    file: FILE,
    inForce: () => state.inForce,
    apply: (pem) => {
      state.applied.push(pem);
      state.inForce = pem;
      return Promise.resolve();
    },
    log: spyLog,
    count: (l) => void state.counts.push(l),
    ...(refusal && { refusal }),
    clock,
    debounceMs: 500,
    read: () => {
      state.reads++;
      return state.text;
    },
    watchDirectory: (dir, onChange) => {
      state.watchedDir = dir;
      state.emit = onChange;
      return { close: () => void (state.closed = true) };
    },
  });
  return { clock, state, reloader };
}

void describe("TrustAnchorsReloader (fake clock, scripted file)", () => {
  void it("watches the directory; a burst of events is one read after the debounce; good new roots are applied", async () => {
    const a = await root("A");
    const b = await root("B");
    const { clock, state, reloader } = harness([a]);
    reloader.start();
    assert.equal(state.watchedDir, "/etc/anchors", "the directory, not the file");
    state.text = a + b;
    state.emit("..data_tmp"); // ignored: the kubelet's staging link
    state.emit("..data");
    state.emit("roots.pem");
    state.emit(null);
    assert.deepEqual(clock.pending(), [500], "one read scheduled for the burst");
    await clock.advance(499);
    assert.equal(state.reads, 0);
    await clock.advance(1);
    await reloader.settled();
    await settle(0);
    assert.equal(state.reads, 1);
    assert.deepEqual(state.applied, [[a, b]]);
    assert.deepEqual(state.counts, [{ trigger: "watch", outcome: "applied" }]);
    state.emit("unrelated.txt");
    assert.deepEqual(clock.pending(), [], "an unrelated file schedules nothing");
    reloader.stop();
    assert.ok(state.closed);
    state.emit("..data");
    assert.deepEqual(clock.pending(), [], "nothing after stop()");
  });

  void it("bad input keeps the last good roots, logs the file and what is expected, and counts it", async () => {
    const a = await root("A");
    const { state, reloader } = harness([a]);
    for (const text of ["garbage\n", await leafOnly("Leaf"), ""]) {
      state.text = text;
      assert.equal(await reloader.reload("signal"), "rejected");
    }
    assert.deepEqual(state.applied, [], "nothing applied");
    assert.deepEqual(state.inForce, [a], "the last good roots stay in force: never zero");
    assert.equal(state.errors.length, 3);
    for (const e of state.errors) {
      assert.match(e, /still serving the last good roots/);
      assert.match(e, new RegExp(`--trust-anchors-file ${FILE}: .*expected a PEM file of one or more CA`));
    }
    assert.deepEqual(
      state.counts.map((c) => c.outcome),
      ["rejected", "rejected", "rejected"],
    );
    state.text = a;
    assert.equal(await reloader.reload("signal"), "unchanged", "the same roots again change nothing");
    assert.deepEqual(state.applied, []);
  });

  void it("roots a consumer would refuse (istiod via the cacerts sink) are rejected before anything serves them", async () => {
    const a = await root("A");
    const b = await root("B");
    const asked: string[][] = [];
    const { state, reloader } = harness([a], (pem) => {
      asked.push(pem);
      return Promise.resolve(pem.includes(a) ? undefined : "refusing to change the root: neither contains the other");
    });
    state.text = b;
    assert.equal(await reloader.reload("watch"), "rejected");
    assert.deepEqual(state.applied, []);
    assert.match(
      state.errors[0]!,
      new RegExp(`--trust-anchors-file ${FILE}: these roots would be refused \\(refusing`),
    );
    state.text = a + b;
    assert.equal(await reloader.reload("watch"), "applied", "adding is fine");
    assert.deepEqual(asked, [[b], [a, b]]);
  });
});
