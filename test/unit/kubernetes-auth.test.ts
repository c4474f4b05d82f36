// KubernetesAuth's token lifecycle on a fake clock with a scripted Vault: renew at 2/3 of the lease, log in again
// on a 403, on a non-renewable token, at the max TTL and when renewal is refused; the JWT file is read at every login.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpStatusError } from "../../src/net/http-json.js";
import { createLogger } from "../../src/observability/logger.js";
import { AgentMetrics } from "../../src/observability/metrics.js";
import type { VaultAuth, VaultClient } from "../../src/vault/client.js";
import { KubernetesAuth } from "../../src/vault/kubernetes-auth.js";
import { FakeClock, settle, until } from "./fake-clock.js";

const S = 1_000;

interface Script {
  /** Lease and renewability of each login's token. */
  login: { lease: number; renewable: boolean };
  /** Lease returned by each renew-self, or an Error to refuse it. */
  renewals: (number | Error)[];
  /** Vault never answers revoke-self. */
  revokeHangs?: boolean;
}

function setup(script: Script) {
  // Renewal may end without a next timer (the token is dropped): no waiting for one; the stand-ins answer at once.
  const clock = new FakeClock(undefined, 0);
  const dir = mkdtempSync(join(tmpdir(), "iva-kauth-"));
  const tokenPath = join(dir, "token");
  writeFileSync(tokenPath, "jwt-1\n");
  const seen = { jwts: [] as string[], renewed: [] as string[], revoked: [] as string[] };
  const auth = (token: string, lease: number, renewable: boolean): VaultAuth => ({
    client_token: token,
    accessor: `acc-${token}`,
    policies: ["p"],
    lease_duration: lease,
    renewable,
  });
  const vault = {
    login(_mount: string, body: Record<string, string>) {
      const jwt = body.jwt ?? "";
      seen.jwts.push(jwt);
      return Promise.resolve(auth(`tok-${seen.jwts.length}`, script.login.lease, script.login.renewable));
    },
    renewSelf(token: string) {
      seen.renewed.push(token);
      const next = script.renewals.shift();
      if (next === undefined) throw new Error("unexpected renew-self");
      if (next instanceof Error) return Promise.reject(next);
      return Promise.resolve(auth(token, next, true));
    },
    revokeSelf(token: string) {
      seen.revoked.push(token);
      return script.revokeHangs ? new Promise<void>(() => undefined) : Promise.resolve();
    },
  } as unknown as VaultClient;
  const ka = new KubernetesAuth(
    vault,
    { mountPath: "kubernetes", role: "r", tokenPath },
    createLogger({ level: "silent" }),
    new AgentMetrics({ processMetrics: false }),
    clock,
  );
  return { clock, ka, seen, tokenPath };
}

void describe("KubernetesAuth (fake clock)", { timeout: 60_000 }, () => {
  void it("renews at 2/3 of the lease, and again at 2/3 of each renewed lease", async () => {
    const { clock, ka, seen } = setup({ login: { lease: 300, renewable: true }, renewals: [600, 600] });
    assert.equal(await ka.token(), "tok-1");
    assert.deepEqual(clock.pending(), [200 * S]);
    await clock.advance(200 * S - 1);
    assert.deepEqual(seen.renewed, []);
    await clock.advance(1);
    assert.deepEqual(seen.renewed, ["tok-1"]);
    assert.deepEqual(clock.pending(), [400 * S], "2/3 of the renewed 600 s lease");
    await clock.advance(400 * S);
    assert.equal(seen.renewed.length, 2);
    assert.equal(await ka.token(), "tok-1", "no new login while renewals succeed");
    assert.equal(seen.jwts.length, 1);
    ka.stop();
  });

  void it("logs in again (re-reading the token file) when Vault answers 403, and retries once", async () => {
    const { ka, seen, tokenPath } = setup({ login: { lease: 300, renewable: true }, renewals: [] });
    await ka.token();
    writeFileSync(tokenPath, "jwt-2\n"); // the kubelet rotated the projected token
    const used: string[] = [];
    const result = await ka.withToken((t) => {
      used.push(t);
      if (used.length === 1) return Promise.reject(new HttpStatusError("vault", "POST", "pki/x", 403, ["denied"]));
      return Promise.resolve("signed");
    });
    assert.equal(result, "signed");
    assert.deepEqual(used, ["tok-1", "tok-2"]);
    assert.deepEqual(seen.jwts, ["jwt-1", "jwt-2"], "the token file is read again at the new login");
    await assert.rejects(
      ka.withToken(() => Promise.reject(new HttpStatusError("vault", "POST", "pki/x", 403, []))),
      /403/,
      "a second 403 in a row is the caller's error (one retry only)",
    );
    ka.stop();
  });

  void it("does not log in again on other errors", async () => {
    const { ka, seen } = setup({ login: { lease: 300, renewable: true }, renewals: [] });
    await assert.rejects(
      ka.withToken(() => Promise.reject(new HttpStatusError("vault", "POST", "pki/x", 500, []))),
      /500/,
    );
    assert.equal(await ka.token(), "tok-1");
    assert.equal(seen.jwts.length, 1);
    ka.stop();
  });

  void it("drops a non-renewable token at 2/3 of its lease and logs in again on next use", async () => {
    const { clock, ka, seen } = setup({ login: { lease: 300, renewable: false }, renewals: [] });
    await ka.token();
    await clock.advance(200 * S);
    assert.deepEqual(seen.renewed, [], "renew-self is not attempted");
    assert.equal(await ka.token(), "tok-2");
    assert.equal(seen.jwts.length, 2);
    ka.stop();
  });

  void it("logs in again once the lease stops growing at the max TTL", async () => {
    const { clock, ka, seen } = setup({ login: { lease: 300, renewable: true }, renewals: [30, 5] });
    await ka.token();
    await clock.advance(200 * S); // renewed, but capped to 30 s
    assert.equal(await ka.token(), "tok-1");
    assert.deepEqual(clock.pending(), [20 * S]);
    await clock.advance(20 * S); // renewed to 5 s: the max TTL is reached
    assert.equal(seen.renewed.length, 2);
    assert.deepEqual(clock.pending(), [], "no further renewal is scheduled");
    assert.equal(await ka.token(), "tok-2", "a fresh login instead of a token about to die");
    ka.stop();
  });

  void it("logs in again when renewal is refused", async () => {
    const { clock, ka } = setup({
      login: { lease: 300, renewable: true },
      renewals: [new HttpStatusError("vault", "POST", "auth/token/renew-self", 403, [])],
    });
    await ka.token();
    await clock.advance(200 * S);
    assert.equal(await ka.token(), "tok-2");
    ka.stop();
  });

  void it("concurrent callers share one login", async () => {
    const { ka, seen } = setup({ login: { lease: 300, renewable: true }, renewals: [] });
    const tokens = await Promise.all([ka.token(), ka.token(), ka.token()]);
    assert.deepEqual(tokens, ["tok-1", "tok-1", "tok-1"]);
    assert.equal(seen.jwts.length, 1);
    ka.stop();
  });

  void it("revokes its token at shutdown, bounded by a timeout on the clock", async () => {
    const { clock, ka, seen } = setup({ login: { lease: 300, renewable: true }, renewals: [] });
    await ka.token();
    await ka.revokeAndStop();
    assert.deepEqual(seen.revoked, ["tok-1"]);
    assert.deepEqual(clock.pending(), [], "no renewal left behind");
    await settle();
  });

  void it("gives up revoking after 3 s on the clock when Vault does not answer, and stops anyway", async () => {
    const { clock, ka, seen } = setup({ login: { lease: 300, renewable: true }, renewals: [], revokeHangs: true });
    await ka.token();
    let done = false;
    const stopping = ka.revokeAndStop().then(() => (done = true));
    await clock.advance(2_999);
    assert.equal(done, false);
    await clock.advance(1);
    await until(() => done, "revokeAndStop to give up", 1_000);
    await stopping;
    assert.deepEqual(seen.revoked, ["tok-1"]);
  });
});
