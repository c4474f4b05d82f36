// The Vault client in an HA cluster, against scripted HTTP(S) stand-ins for the nodes: standby redirects (followed
// once, same method/body/token/TLS settings; refused across schemes or paths), retries of 412/429/472/473/5xx with
// Retry-After, several addresses tried in order, and what is never retried.
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { HttpStatusError, HttpTransportError, retryAfterMs } from "../../src/net/http-json.js";
import { VaultClient, vaultAddressList, type VaultRetryEvent } from "../../src/vault/client.js";
import { vaultUrlProblem } from "../../src/cli/validate.js";
import { ConfigError } from "../../src/config/config.js";
import { loadConfig, parseFlags } from "../../src/config/load.js";
import { makeTestCa } from "../env/pki.js";
import { freePort } from "../env/harness.js";

interface Seen {
  method: string;
  url: string;
  token: string | undefined;
  namespace: string | undefined;
  body: string;
}

interface Answer {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

interface Node {
  url: string;
  seen: Seen[];
  close(): Promise<void>;
}

const servers: Server[] = [];
after(async () => {
  for (const s of servers) await new Promise((r) => s.close(r));
});

/** A scripted node: answers the n-th request with script(n, request). */
async function node(
  script: (n: number, seen: Seen) => Answer,
  tls?: { certPem: string; keyPem: string },
): Promise<Node> {
  const seen: Seen[] = [];
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString("utf8")));
    req.on("end", () => {
      const s: Seen = {
        method: req.method ?? "",
        url: req.url ?? "",
        token: req.headers["x-vault-token"] as string | undefined,
        namespace: req.headers["x-vault-namespace"] as string | undefined,
        body,
      };
      seen.push(s);
      const a = script(seen.length - 1, s);
      res.writeHead(a.status, { "content-type": "application/json", ...a.headers });
      res.end(a.body === undefined ? "" : JSON.stringify(a.body));
    });
  };
  const server = tls ? createHttpsServer({ cert: tls.certPem, key: tls.keyPem }, handler) : createHttpServer(handler);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `${tls ? "https" : "http"}://127.0.0.1:${port}`,
    seen,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

const ok = (data: unknown = { ok: true }): Answer => ({ status: 200, body: { data } });
const fail = (status: number, headers: Record<string, string> = {}): Answer => ({
  status,
  headers,
  body: { errors: [`scripted ${status}`] },
});
const FAST = { maxRetries: 2, minWaitMs: 1, maxWaitMs: 2, maxRetryAfterMs: 5 };

function client(address: string, events: VaultRetryEvent[] = [], caPem?: string): VaultClient {
  return new VaultClient({
    address,
    namespace: "team-a",
    retry: FAST,
    onRetry: (e) => events.push(e),
    ...(caPem ? { tls: { caPem } } : {}),
  });
}

void describe("Vault client in an HA cluster", () => {
  void it("follows a standby's 307 to the active node once, re-sending method, body, token and namespace", async () => {
    const active = await node(() => ok({ signed: "yes" }));
    const standby = await node(() => ({ status: 307, headers: { location: `${active.url}/v1/pki/sign/x?q=1` } }));
    const events: VaultRetryEvent[] = [];
    const c = client(standby.url, events);
    const res = await c.write<{ signed: string }>("pki/sign/x?q=1", "tok-1", { csr: "CSR" });
    assert.equal(res.data.signed, "yes");
    assert.equal(standby.seen.length, 1);
    assert.deepEqual(active.seen, [
      { method: "POST", url: "/v1/pki/sign/x?q=1", token: "tok-1", namespace: "team-a", body: '{"csr":"CSR"}' },
    ]);
    assert.deepEqual(
      events.map((e) => [e.action, e.reason]),
      [["redirect", `HTTP 307 to ${active.url}`]],
    );
    // A 308 is the same answer for this purpose; the next request starts at the configured address again.
    const standby308 = await node(() => ({ status: 308, headers: { location: `${active.url}/v1/sys/mounts` } }));
    await client(standby308.url).read("sys/mounts", "tok-2");
    assert.equal(active.seen.at(-1)?.url, "/v1/sys/mounts");
    await c.close();
  });

  void it("refuses a redirect to another scheme or path, without contacting the target", async () => {
    const target = await node(() => ok());
    const https = target.url.replace("http:", "https:");
    for (const [location, why] of [
      [`${https}/v1/auth/token/renew-self`, /changes the scheme to https; expected http/],
      [`${target.url}/v1/sys/raw/other`, /changes the path; expected \/v1\/auth\/token\/renew-self/],
      [`http://user:pw@127.0.0.1:1/v1/auth/token/renew-self`, /carries credentials/],
    ] as const) {
      const standby = await node(() => ({ status: 307, headers: { location } }));
      const c = client(standby.url);
      await assert.rejects(c.renewSelf("s3cr3t-token-value"), (err: Error) => {
        assert.ok(err instanceof HttpStatusError);
        assert.match(err.message, why);
        assert.doesNotMatch(err.message, /s3cr3t|pw@/);
        return true;
      });
      assert.equal(standby.seen.length, 1, "a refused redirect is not retried");
      await c.close();
    }
    const noLocation = await node(() => ({ status: 307 }));
    await assert.rejects(client(noLocation.url).read("sys/mounts", "t"), /no Location header/);
    assert.equal(target.seen.length, 0);
  });

  void it("follows one redirect, not two", async () => {
    const second = await node(() => ({ status: 307, headers: { location: "/v1/sys/mounts" } }));
    const first = await node(() => ({ status: 307, headers: { location: `${second.url}/v1/sys/mounts` } }));
    await assert.rejects(client(first.url).read("sys/mounts", "t"), /redirected again by http:\/\/127\.0\.0\.1/);
    assert.equal(second.seen.length, 1);
  });

  void it("follows a redirect over TLS with the same CA, and fails on a target the CA does not vouch for", async () => {
    const ca = await makeTestCa("unit-ha-ca");
    const cert = await ca.issue({ commonName: "vault", ips: ["127.0.0.1"] });
    const active = await node(() => ok({ n: 1 }), cert);
    const standby = await node(() => ({ status: 307, headers: { location: `${active.url}/v1/sys/mounts` } }), cert);
    assert.deepEqual((await client(standby.url, [], ca.certPem).read("sys/mounts", "t")).data, { n: 1 });
    assert.equal(active.seen[0]?.token, "t");
    const other = await makeTestCa("unit-ha-other-ca");
    const impostor = await node(() => ok({ n: 2 }), await other.issue({ commonName: "x", ips: ["127.0.0.1"] }));
    const lying = await node(() => ({ status: 307, headers: { location: `${impostor.url}/v1/sys/mounts` } }), cert);
    await assert.rejects(client(lying.url, [], ca.certPem).read("sys/mounts", "t"), (err: Error) => {
      assert.ok(err instanceof HttpTransportError, String(err));
      return true;
    });
    assert.equal(impostor.seen.length, 0, "the token never reached a server the CA does not vouch for");
    assert.equal(lying.seen.length, 1, "a certificate failure is not retried");
  });

  for (const status of [412, 429, 472, 473, 500, 502, 503]) {
    void it(`retries HTTP ${status} with backoff and succeeds`, async () => {
      const n = await node((i) => (i < 2 ? fail(status) : ok({ i })));
      const events: VaultRetryEvent[] = [];
      assert.deepEqual((await client(n.url, events).read("sys/mounts", "t")).data, { i: 2 });
      assert.equal(n.seen.length, 3);
      assert.deepEqual(
        events.map((e) => [e.action, e.reason]),
        [
          ["retry", `HTTP ${status}`],
          ["retry", `HTTP ${status}`],
        ],
      );
      // Vault's linear backoff: retry n waits between n*min and n*max.
      assert.ok(events[0]!.waitMs! >= 1 && events[0]!.waitMs! <= 2, String(events[0]!.waitMs));
      assert.ok(events[1]!.waitMs! >= 2 && events[1]!.waitMs! <= 4, String(events[1]!.waitMs));
    });
  }

  void it("gives up after maxRetries with the last answer", async () => {
    const n = await node(() => fail(503));
    await assert.rejects(client(n.url).read("sys/mounts", "t"), (err: Error) => {
      assert.ok(err instanceof HttpStatusError);
      assert.equal(err.status, 503);
      assert.match(err.message, /scripted 503/);
      return true;
    });
    assert.equal(n.seen.length, 3, "1 + maxRetries attempts");
  });

  void it("waits what Retry-After says on 429/503, capped", async () => {
    const n = await node((i) =>
      i === 0 ? fail(429, { "retry-after": "0" }) : i === 1 ? fail(503, { "retry-after": "120" }) : ok(),
    );
    const events: VaultRetryEvent[] = [];
    await client(n.url, events).read("sys/mounts", "t");
    assert.deepEqual(
      events.map((e) => e.waitMs),
      [0, 5],
      "Retry-After 0 s, then 120 s capped at maxRetryAfterMs",
    );
    const now = Date.UTC(2026, 0, 1);
    assert.equal(retryAfterMs("7", now), 7000);
    assert.equal(retryAfterMs(new Date(now + 3000).toUTCString(), now), 3000);
    assert.equal(retryAfterMs("soon", now), undefined);
  });

  void it("does not retry client errors, 501, or statuses the caller accepts", async () => {
    for (const status of [400, 403, 404, 501]) {
      const n = await node(() => fail(status));
      await assert.rejects(client(n.url).read("sys/mounts", "t"), new RegExp(`HTTP ${status}`));
      assert.equal(n.seen.length, 1, `HTTP ${status} is an answer`);
    }
    const n = await node(() => fail(503));
    const res = await client(n.url).call("GET", "sys/mounts", { acceptStatuses: [503] });
    assert.equal(res.status, 503);
    assert.equal(n.seen.length, 1);
  });

  void it("a redirect to a dead node is retried from the configured address", async () => {
    const deadPort = await freePort();
    const active = await node(() => ok({ leader: "new" }));
    // During an election the standby still points at the old leader, then at the new one.
    const standby = await node((i) => ({
      status: 307,
      headers: { location: `${i === 0 ? `http://127.0.0.1:${deadPort}` : active.url}/v1/sys/mounts` },
    }));
    const events: VaultRetryEvent[] = [];
    assert.deepEqual((await client(standby.url, events).read("sys/mounts", "t")).data, { leader: "new" });
    assert.deepEqual(
      events.map((e) => [e.action, e.reason]),
      [
        ["redirect", `HTTP 307 to http://127.0.0.1:${deadPort}`],
        ["retry", "ECONNREFUSED"],
        ["redirect", `HTTP 307 to ${active.url}`],
      ],
    );
  });

  void it("tries several addresses in order, then keeps to the one that answered", async () => {
    const deadPort = await freePort();
    const sealed = await node(() => fail(503));
    const good = await node(() => ok());
    const events: VaultRetryEvent[] = [];
    const c = client(` http://127.0.0.1:${deadPort}, ${sealed.url} ,${good.url}`, events);
    assert.deepEqual(c.addresses, [`http://127.0.0.1:${deadPort}`, sealed.url, good.url]);
    await c.read("sys/mounts", "t");
    assert.deepEqual(
      events.map((e) => [e.action, e.address, e.reason]),
      [
        ["next-address", `http://127.0.0.1:${deadPort}`, "ECONNREFUSED"],
        ["next-address", sealed.url, "HTTP 503"],
      ],
    );
    await c.read("sys/mounts", "t");
    assert.equal(sealed.seen.length, 1, "the second request went straight to the address that answered");
    assert.equal(good.seen.length, 2);
    assert.equal(events.length, 2);
    // All down: one round per attempt, then the last error.
    await good.close();
    await assert.rejects(c.read("sys/mounts", "t"), /HTTP 503|ECONNREFUSED/);
    assert.equal(sealed.seen.length, 1 + 3);
  });

  void it("health: the first node that is up answers; sealed or unreachable nodes are skipped", async () => {
    const deadPort = await freePort();
    const sealed = await node(() => ({ status: 503, body: { initialized: true, sealed: true, version: "2.4.0" } }));
    const standby = await node(() => ({ status: 429, body: { initialized: true, sealed: false, version: "2.4.0" } }));
    const c = client(`http://127.0.0.1:${deadPort},${sealed.url},${standby.url}`);
    assert.equal((await c.health()).status, 429);
    assert.equal((await client(`http://127.0.0.1:${deadPort},${sealed.url}`).health()).status, 503);
    await assert.rejects(client(`http://127.0.0.1:${deadPort}`).health(), /ECONNREFUSED/);
  });

  void it("address lists: parsed and validated as one value", () => {
    assert.deepEqual(vaultAddressList("https://a:8200, https://b:8200,,"), ["https://a:8200", "https://b:8200"]);
    assert.equal(vaultUrlProblem("https://a:8200,https://b:8200"), undefined);
    assert.match(vaultUrlProblem("https://a:8200,b:8200") ?? "", /"b:8200" must be an https:\/\//);
    assert.match(vaultUrlProblem("https://a:8200,http://b:8200") ?? "", /mixes http:\/\/ and https:\/\//);
    assert.match(vaultUrlProblem(" , ") ?? "", /is not a URL/);
    assert.throws(() => new VaultClient({ address: "https://a:8200,http://b:8200" }), /same scheme/);
    // Through the configuration (flag and VAULT_ADDR alike): accepted as one value, a bad entry named.
    assert.equal(
      loadConfig(parseFlags(["--vault-addr=https://a:8200,https://b:8200"]), {}).vault.address,
      "https://a:8200,https://b:8200",
    );
    assert.throws(
      () => loadConfig({}, { VAULT_ADDR: "https://a:8200,vault-b:8200" }),
      (err: Error) => err instanceof ConfigError && /"vault-b:8200" must be an https:\/\//.test(err.message),
    );
  });
});
