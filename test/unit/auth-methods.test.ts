// The auth methods with a scripted Vault: what each sends, that credentials are re-read at every login, that errors
// name files but never their contents, and that a token handed in through a file is never revoked by the agent.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpStatusError } from "../../src/net/http-json.js";
import { createLogger } from "../../src/observability/logger.js";
import { AgentMetrics } from "../../src/observability/metrics.js";
import { CredentialFileError } from "../../src/vault/auth.js";
import { createAuthMethod, createAuthSession } from "../../src/vault/auth-methods.js";
import type { VaultAuth, VaultClient } from "../../src/vault/client.js";
import { DEFAULT_CONFIG } from "../../src/config/config.js";

const answer = (token: string): VaultAuth => ({
  client_token: token,
  accessor: "acc",
  policies: ["p"],
  lease_duration: 60,
  renewable: true,
});

function scriptedVault() {
  const seen = { logins: [] as { mount: string; body: Record<string, string> }[], lookups: [] as string[], revoked: 0 };
  let refuse = false;
  const vault = {
    login(mount: string, body: Record<string, string>) {
      seen.logins.push({ mount, body });
      return Promise.resolve(answer(`tok-${seen.logins.length}`));
    },
    lookupSelf(token: string) {
      seen.lookups.push(token);
      if (refuse)
        return Promise.reject(new HttpStatusError("vault", "GET", "/v1/auth/token/lookup-self", 403, ["bad token"]));
      return Promise.resolve({ accessor: "acc", ttl: 30, renewable: false, policies: ["p"] });
    },
    revokeSelf() {
      seen.revoked++;
      return Promise.resolve();
    },
    renewSelf(token: string) {
      return Promise.resolve(answer(token));
    },
  };
  return { vault: vault as unknown as VaultClient, seen, refuseLookups: () => (refuse = true) };
}

const auth = (over: Partial<typeof DEFAULT_CONFIG.auth>) => ({ ...DEFAULT_CONFIG.auth, ...over });
const dir = () => mkdtempSync(join(tmpdir(), "iva-auth-unit-"));

void describe("auth methods (scripted Vault)", () => {
  void it("jwt posts {role, jwt} to its own mount; approle re-reads both files at every login", async () => {
    const d = dir();
    writeFileSync(join(d, "jwt"), "the-jwt\n");
    writeFileSync(join(d, "rid"), "role-1\n");
    writeFileSync(join(d, "sid"), "secret-1\n");
    const { vault, seen } = scriptedVault();
    await createAuthMethod(auth({ method: "jwt", mountPath: "jwt-east", tokenPath: join(d, "jwt") })).login(vault);
    assert.deepEqual(seen.logins[0], { mount: "jwt-east", body: { role: "istiod-agent", jwt: "the-jwt" } });
    const approle = createAuthMethod(
      auth({ method: "approle", mountPath: "approle", roleIdFile: join(d, "rid"), secretIdFile: join(d, "sid") }),
    );
    await approle.login(vault);
    writeFileSync(join(d, "sid"), "secret-2");
    await approle.login(vault);
    assert.deepEqual(
      seen.logins.slice(1).map((l) => l.body),
      [
        { role_id: "role-1", secret_id: "secret-1" },
        { role_id: "role-1", secret_id: "secret-2" },
      ],
    );
  });

  void it("a missing or empty credential file is a CredentialFileError naming the file, never a content", async () => {
    const d = dir();
    writeFileSync(join(d, "rid"), "role-1");
    writeFileSync(join(d, "empty"), "  \n");
    const { vault } = scriptedVault();
    const approle = (secretIdFile: string) =>
      createAuthMethod(auth({ method: "approle", roleIdFile: join(d, "rid"), secretIdFile })).login(vault);
    await assert.rejects(approle(join(d, "missing")), (err: unknown) => {
      assert.ok(err instanceof CredentialFileError);
      assert.match(err.message, /cannot read the AppRole secret-id file .*missing \(ENOENT\)/);
      assert.ok(!err.message.includes("role-1"));
      return true;
    });
    await assert.rejects(approle(join(d, "empty")), /the AppRole secret-id file .*empty is empty/);
  });

  void it("token: the file is re-read at each login; a refused token names the file, not the token", async () => {
    const d = dir();
    const file = join(d, "vault-token");
    writeFileSync(file, "hvs.first\n");
    const { vault, seen, refuseLookups } = scriptedVault();
    const m = createAuthMethod(auth({ method: "token", vaultTokenFile: file }));
    const got = await m.login(vault);
    assert.equal(got.client_token, "hvs.first");
    assert.equal(got.lease_duration, 30);
    writeFileSync(file, "hvs.second");
    assert.equal((await m.login(vault)).client_token, "hvs.second");
    assert.deepEqual(seen.lookups, ["hvs.first", "hvs.second"]);
    refuseLookups();
    await assert.rejects(m.login(vault), (err: unknown) => {
      assert.match((err as Error).message, /Vault refuses the token in .*vault-token \(HTTP 403/);
      assert.ok(!(err as Error).message.includes("hvs."));
      return true;
    });
  });

  void it("a token from a file is not revoked at shutdown; a token the agent logged in for is", async () => {
    const d = dir();
    writeFileSync(join(d, "vault-token"), "hvs.op");
    writeFileSync(join(d, "jwt"), "the-jwt");
    const log = createLogger({ level: "silent" });
    for (const [settings, revoked] of [
      [auth({ method: "token", vaultTokenFile: join(d, "vault-token") }), 0],
      [auth({ method: "jwt", mountPath: "jwt", tokenPath: join(d, "jwt") }), 1],
    ] as const) {
      const { vault, seen } = scriptedVault();
      const s = createAuthSession(vault, settings, log, new AgentMetrics());
      await s.token();
      await s.revokeAndStop();
      assert.equal(seen.revoked, revoked, settings.method);
    }
  });
});
