// Each auth method against real OpenBao, through the real sidecar process: login (it obtains an intermediate), token
// renewal (roles and tokens with a 15 s TTL, so renew-self happens within the test) and re-login after the token is
// revoked behind the agent's back (the Rotate RPC then needs Vault: a 403, a new login, a new intermediate). What
// Vault received is counted from OpenBao's audit log. JWT auth checks the service-account token against the test
// apiserver's signing key (jwt_validation_pubkeys), without any call to the apiserver.
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpStatusError } from "../../src/net/http-json.js";
import { jwtAuthMethod } from "../../src/vault/kubernetes-auth.js";
import { agentSuite, getBundle, rotate, type AgentRun } from "../env/agent-process.js";
import { ISTIO_NS, ISTIOD_SA } from "../env/fixtures.js";
import { waitUntil } from "../env/process.js";

const ISSUER = "https://kubernetes.default.svc.cluster.local";
const POLICY = "istiod-agent";
const SHORT_TTL = 15;

describe("auth methods: login, renewal and re-login against real OpenBao", () => {
  const suite = agentSuite({}, { vaultAudit: true });
  const root = () => suite.env.vault.rootToken;
  const v = () => suite.env.vault.client;

  /** Successful responses Vault gave on `path` since `from`. */
  const ok = (from: number, path: string) =>
    suite.env.vaultAudit(from).filter((e) => e.type === "response" && e.request?.path === path && !e.error);
  /** The accessor of the last token Vault issued on `path` since `from` (accessors are logged in the clear). */
  const lastAccessor = (from: number, path: string) => {
    const a = ok(from, path).at(-1)?.response?.auth?.accessor;
    assert.ok(a, `no login answer on ${path} in the audit log`);
    return a;
  };
  const waitRenewal = (from: number, run: AgentRun) =>
    waitUntil("renew-self of the agent's token", () => Promise.resolve(ok(from, "auth/token/renew-self").length >= 1), {
      timeoutMs: 45_000,
      intervalMs: 500,
      process: run.process,
    });
  const revokeAccessor = (accessor: string) => v().write("auth/token/revoke-accessor", root(), { accessor });
  const dir = () => mkdtempSync(join(tmpdir(), "iva-auth-"));
  // Rotate with no rate limit, so each re-login case can make Vault sign again at once.
  const common = ["--rotate-min-interval=0s"];

  before(async () => {
    await v().write("sys/auth/jwt", root(), { type: "jwt" });
    await v().write("auth/jwt/config", root(), {
      jwt_validation_pubkeys: [readFileSync(join(suite.env.pkiDir, "sa.pub"), "utf8")],
      bound_issuer: ISSUER,
    });
    await v().write(`auth/jwt/role/${POLICY}`, root(), {
      role_type: "jwt",
      bound_audiences: ["vault"],
      bound_subject: `system:serviceaccount:${ISTIO_NS}:${ISTIOD_SA}`,
      user_claim: "sub",
      token_policies: [POLICY],
      token_ttl: SHORT_TTL,
      token_max_ttl: 3600,
    });
    // Kubernetes auth (mounted by setupVault) with a short-TTL role beside the standard one.
    await v().write(`auth/kubernetes/role/${POLICY}-short`, root(), {
      bound_service_account_names: [ISTIOD_SA],
      bound_service_account_namespaces: [ISTIO_NS],
      audience: "vault",
      token_policies: [POLICY],
      token_ttl: SHORT_TTL,
      token_max_ttl: 3600,
    });
    await v().write("sys/auth/approle", root(), { type: "approle" });
    await v().write(`auth/approle/role/${POLICY}`, root(), {
      token_policies: [POLICY],
      token_ttl: SHORT_TTL,
      token_max_ttl: 3600,
    });
  });

  it("kubernetes (the default): logs in, renews, and logs in again after revocation", async () => {
    const from = suite.env.vaultAuditOffset();
    const run = await suite.start("sidecar", [`--auth-role=${POLICY}-short`, ...common]);
    assert.equal((await getBundle(run.client)).generation, 1);
    assert.equal(ok(from, "auth/kubernetes/login").length, 1);
    await waitRenewal(from, run);
    await revokeAccessor(lastAccessor(from, "auth/kubernetes/login"));
    assert.equal((await rotate(run.client)).generation, 2, "a new intermediate after the revoked token");
    assert.equal(ok(from, "auth/kubernetes/login").length, 2, "the agent logged in again");
    await run.stop();
  });

  it("jwt: istiod's projected-style token logs in through the issuer's keys, renews, and logs in again after revocation", async () => {
    const from = suite.env.vaultAuditOffset();
    const run = await suite.start("sidecar", ["--auth-method=jwt", `--auth-role=${POLICY}`, ...common]);
    assert.equal((await getBundle(run.client)).generation, 1, "an intermediate through JWT auth");
    assert.equal(ok(from, "auth/jwt/login").length, 1);
    assert.match(run.log(), /logged in to Vault with JWT auth/);
    await waitRenewal(from, run);

    await revokeAccessor(lastAccessor(from, "auth/jwt/login"));
    assert.equal((await rotate(run.client)).generation, 2, "a new intermediate after the revoked token");
    assert.equal(ok(from, "auth/jwt/login").length, 2, "the agent logged in again");
    assert.ok(!run.log().includes(readFileSync(run.tokenPath, "utf8").trim()), "the JWT never reaches the log");
    await run.stop();
  });

  it("jwt: a token of another service account, or for another audience, is refused (and not echoed)", async () => {
    await suite.env.createServiceAccount(ISTIO_NS, "not-istiod");
    for (const [sa, audience] of [
      ["not-istiod", "vault"],
      [ISTIOD_SA, "istio-ca"],
    ] as const) {
      const file = join(dir(), "jwt");
      const jwt = await suite.env.requestToken(ISTIO_NS, sa, audience, 600);
      writeFileSync(file, jwt, { mode: 0o600 });
      const method = jwtAuthMethod({ mountPath: "jwt", role: POLICY, tokenPath: file });
      await assert.rejects(method.login(v()), (err: unknown) => {
        assert.ok(err instanceof HttpStatusError, String(err));
        assert.ok(err.status === 400 || err.status === 403, `${sa}/${audience}: ${err.message}`);
        assert.ok(!err.message.includes(jwt), "the JWT is not in the error");
        return true;
      });
    }
  });

  it("approle: role-id and secret-id from files; a rotated secret-id (old one destroyed) is used at the next login", async () => {
    const roleId = (await v().read<{ role_id: string }>(`auth/approle/role/${POLICY}/role-id`, root())).data.role_id;
    const newSecretId = async () =>
      (await v().write<{ secret_id: string }>(`auth/approle/role/${POLICY}/secret-id`, root(), {})).data.secret_id;
    const d = dir();
    const roleIdFile = join(d, "role-id");
    const secretIdFile = join(d, "secret-id");
    const first = await newSecretId();
    writeFileSync(roleIdFile, `${roleId}\n`, { mode: 0o600 });
    writeFileSync(secretIdFile, `${first}\n`, { mode: 0o600 });

    const from = suite.env.vaultAuditOffset();
    const run = await suite.start("sidecar", [
      "--auth-method=approle",
      `--role-id-file=${roleIdFile}`,
      `--secret-id-file=${secretIdFile}`,
      ...common,
    ]);
    assert.equal((await getBundle(run.client)).generation, 1, "an intermediate through AppRole auth");
    assert.equal(ok(from, "auth/approle/login").length, 1);
    await waitRenewal(from, run);

    // Rotation as a delivery mechanism does it: the new secret-id in the file, the old one destroyed.
    const second = await newSecretId();
    writeFileSync(secretIdFile, second, { mode: 0o600 });
    await v().write(`auth/approle/role/${POLICY}/secret-id/destroy`, root(), { secret_id: first });
    await assert.rejects(v().login("approle", { role_id: roleId, secret_id: first }), HttpStatusError);
    await revokeAccessor(lastAccessor(from, "auth/approle/login"));
    assert.equal((await rotate(run.client)).generation, 2, "a new intermediate after the revoked token");
    assert.equal(ok(from, "auth/approle/login").length, 2, "the second login used the new secret-id");
    for (const secret of [first, second]) assert.ok(!run.log().includes(secret), "no secret-id in the log");
    await run.stop();
  });

  it("token: a token from a file is renewed; revoked, it is a clear error until the file holds a new one", async () => {
    const create = async () =>
      (
        await v().write<unknown>("auth/token/create", root(), {
          policies: [POLICY],
          ttl: `${SHORT_TTL}s`,
          explicit_max_ttl: "1h",
          renewable: true,
          no_parent: true,
        })
      ).auth!.client_token;
    const tokenFile = join(dir(), "vault-token");
    const first = await create();
    writeFileSync(tokenFile, first, { mode: 0o600 });

    const from = suite.env.vaultAuditOffset();
    const run = await suite.start("sidecar", ["--auth-method=token", `--vault-token-file=${tokenFile}`, ...common]);
    assert.equal((await getBundle(run.client)).generation, 1, "an intermediate with the file's token");
    assert.equal(ok(from, "auth/token/lookup-self").length, 1);
    await waitRenewal(from, run);

    await v().write("auth/token/revoke", root(), { token: first });
    await assert.rejects(rotate(run.client), "Rotate fails while the file holds a revoked token");
    const message = new RegExp(
      `Vault refuses the token in ${tokenFile.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")} \\(HTTP 403: expired, revoked or unknown\\)`,
    );
    await waitUntil("the agent says which file holds a refused token", () => Promise.resolve(message.test(run.log())), {
      timeoutMs: 10_000,
    });

    const second = await create();
    writeFileSync(tokenFile, second, { mode: 0o600 });
    assert.ok((await rotate(run.client)).generation >= 2, "the new token in the file is picked up");
    for (const t of [first, second]) assert.ok(!run.log().includes(t), "no Vault token in the log");
    await run.stop();
    // The operator's token is not the agent's to revoke at shutdown.
    const looked = await v().write<{ policies: string[] }>("auth/token/lookup", root(), { token: second });
    assert.ok(looked.data.policies.includes(POLICY));
  });
});
