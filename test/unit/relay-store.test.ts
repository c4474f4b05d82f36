// The relay's two stores, against scripted fakes: Kubernetes Secrets (create/update, conflicts, ownership) and the
// identity token in Vault KV v2 (read, create with cas=0, losing the race).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { KubeClient } from "../../src/kube/client.js";
import { HttpStatusError } from "../../src/net/http-json.js";
import { createLogger } from "../../src/observability/logger.js";
import { AgentMetrics } from "../../src/observability/metrics.js";
import {
  IncompatibleSecretError,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  SecretStore,
  UnmanagedSecretError,
  type KubeSecret,
} from "../../src/kube/secret-store.js";
import { RelayVault } from "../../src/relay/vault.js";
import type { VaultClient } from "../../src/vault/client.js";
import type { KubernetesAuth } from "../../src/vault/kubernetes-auth.js";

interface Call {
  method: string;
  path: string;
  body: unknown;
}

/** A KubeClient whose answers are scripted per call. */
function fakeKube(answers: { status: number; body?: unknown }[]): { kube: KubeClient; calls: Call[] } {
  const calls: Call[] = [];
  const kube = {
    request(method: string, path: string, body?: unknown, opts: { acceptStatuses?: readonly number[] } = {}) {
      calls.push({ method, path, body });
      const a = answers.shift();
      if (!a) throw new Error(`unexpected ${method} ${path}`);
      if (a.status >= 300 && !opts.acceptStatuses?.includes(a.status))
        return Promise.reject(new HttpStatusError("kubernetes", method, path, a.status, []));
      return Promise.resolve({ status: a.status, body: a.body });
    },
  };
  return { kube: kube as unknown as KubeClient, calls };
}

const managed = (rv: string, data: Record<string, string> = {}): KubeSecret => ({
  metadata: { name: "s", namespace: "ns", resourceVersion: rv, labels: { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE } },
  type: "kubernetes.io/tls",
  data,
});
const desired = {
  type: "kubernetes.io/tls" as const,
  data: { "tls.crt": "CERT", "tls.key": "KEY", "ca.crt": "ROOT" },
  annotations: { "relay.istiod-vault-agent.io/serial": "01" },
};

void describe("relay SecretStore", () => {
  void it("creates a missing Secret with the managed-by label, certificate and key in one request", async () => {
    const { kube, calls } = fakeKube([{ status: 201 }]);
    assert.equal(await new SecretStore(kube, "ns", false).write("s", desired, undefined), "created");
    assert.equal(calls.length, 1);
    const body = calls[0]!.body as KubeSecret;
    assert.equal(calls[0]!.method, "POST");
    assert.equal(calls[0]!.path, "/api/v1/namespaces/ns/secrets");
    assert.equal(body.metadata.labels?.[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
    assert.equal(body.type, "kubernetes.io/tls");
    assert.deepEqual(Object.keys(body.data ?? {}).sort(), ["ca.crt", "tls.crt", "tls.key"]);
    assert.equal(Buffer.from(body.data!["tls.key"]!, "base64").toString(), "KEY");
  });

  void it("updates with the resourceVersion it read, and on 409 reads again and retries", async () => {
    const { kube, calls } = fakeKube([{ status: 409 }, { status: 200, body: managed("8") }, { status: 200 }]);
    const outcome = await new SecretStore(kube, "ns", false).write("s", desired, managed("7", { extra: "eA==" }));
    assert.equal(outcome, "updated");
    assert.deepEqual(
      calls.map((c) => c.method),
      ["PUT", "GET", "PUT"],
    );
    assert.equal((calls[0]!.body as KubeSecret).metadata.resourceVersion, "7");
    assert.equal((calls[0]!.body as KubeSecret).data?.extra, "eA==", "other keys are kept");
    assert.equal((calls[2]!.body as KubeSecret).metadata.resourceVersion, "8");
  });

  void it("a create that loses to another writer (409) re-reads and updates instead", async () => {
    const { kube, calls } = fakeKube([{ status: 409 }, { status: 200, body: managed("3") }, { status: 200 }]);
    assert.equal(await new SecretStore(kube, "ns", false).write("s", desired, undefined), "updated");
    assert.deepEqual(
      calls.map((c) => c.method),
      ["POST", "GET", "PUT"],
    );
  });

  void it("never writes a Secret without the label unless adopting; re-checks after a conflict", async () => {
    const theirs: KubeSecret = { metadata: { name: "s", resourceVersion: "1", labels: { app: "x" } }, type: "Opaque" };
    const { kube, calls } = fakeKube([]);
    await assert.rejects(new SecretStore(kube, "ns", false).write("s", desired, theirs), UnmanagedSecretError);
    assert.equal(calls.length, 0);
    // Ours when read, someone else's after the conflict: refused.
    const second = fakeKube([{ status: 409 }, { status: 200, body: theirs }]);
    await assert.rejects(
      new SecretStore(second.kube, "ns", false).write("s", desired, managed("1")),
      (e: Error) => e instanceof UnmanagedSecretError && /ns\/s .*--adopt/.test(e.message),
    );
    const adopting = fakeKube([{ status: 200 }]);
    assert.equal(await new SecretStore(adopting.kube, "ns", true).write("s", desired, theirs), "adopted");
    const body = adopting.calls[0]!.body as KubeSecret;
    assert.deepEqual(body.metadata.labels, { app: "x", [MANAGED_BY_LABEL]: MANAGED_BY_VALUE });
    assert.equal(body.type, "Opaque", "a Secret's type is immutable: Opaque stays Opaque");
  });

  void it("refuses a Secret whose type cannot hold the data", async () => {
    const { kube } = fakeKube([]);
    const sa: KubeSecret = { ...managed("1"), type: "kubernetes.io/service-account-token" };
    await assert.rejects(new SecretStore(kube, "ns", true).write("s", desired, sa), IncompatibleSecretError);
  });

  void it("gives up after repeated conflicts", async () => {
    const answers = Array.from({ length: 6 }, () => [{ status: 409 }, { status: 200, body: managed("9") }]).flat();
    const { kube } = fakeKube(answers.slice(0, -1));
    await assert.rejects(new SecretStore(kube, "ns", false).write("s", desired, managed("1")), (e: Error) =>
      /kept changing/.test(e.message),
    );
  });
});

/** A Vault client whose KV answers are scripted. */
function fakeVault(script: { reads: { status: number; body: unknown }[]; write?: (body: unknown) => void }): {
  vault: VaultClient;
  writes: unknown[];
} {
  const writes: unknown[] = [];
  const vault = {
    call: () => {
      const r = script.reads.shift();
      if (!r) throw new Error("unexpected read");
      return Promise.resolve(r);
    },
    write: async (_path: string, _token: string, body: unknown) => {
      await Promise.resolve();
      writes.push(body);
      script.write?.(body);
      return { data: { version: 1 } };
    },
  };
  return { vault: vault as unknown as VaultClient, writes };
}

const auth = { withToken: <T>(fn: (t: string) => Promise<T>) => fn("vault-token") } as unknown as KubernetesAuth;
const log = createLogger({ level: "silent" });
const relayVault = (vault: VaultClient) =>
  new RelayVault(vault, auth, new AgentMetrics({ processMetrics: false }), log, {
    pkiMount: "pki",
  });
const KV = "secret/data/relay/identity-token";
const kvAnswer = (token: string) => ({ status: 200, body: { data: { data: { token }, metadata: { version: 1 } } } });
const missing = { status: 404, body: { errors: [] } };

void describe("relay identity token (KV v2)", () => {
  void it("uses the stored token", async () => {
    const { vault, writes } = fakeVault({ reads: [kvAnswer("shared")] });
    assert.deepEqual(await relayVault(vault).identityToken(KV), {
      token: "shared",
      created: false,
      replacedDeleted: false,
    });
    assert.equal(writes.length, 0);
  });

  void it("creates a random 32-byte base64url token with cas=0 when there is none", async () => {
    const { vault, writes } = fakeVault({ reads: [missing] });
    const got = await relayVault(vault).identityToken(KV);
    assert.equal(got.created, true);
    assert.match(got.token, /^[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(writes, [{ options: { cas: 0 }, data: { token: got.token } }]);
    const again = await relayVault(fakeVault({ reads: [missing] }).vault).identityToken(KV);
    assert.notEqual(again.token, got.token);
  });

  for (const status of [400, 403]) {
    void it(`losing the creation race (${status}) reads the winner's token`, async () => {
      const { vault } = fakeVault({
        reads: [missing, kvAnswer("winner")],
        write: () => {
          throw new HttpStatusError("vault", "POST", "/v1/secret/data/relay/identity-token", status, ["cas"]);
        },
      });
      assert.deepEqual(await relayVault(vault).identityToken(KV), {
        token: "winner",
        created: false,
        replacedDeleted: false,
      });
    });
  }

  void it("after a soft delete writes a fresh token with cas=<deleted version>, never the deleted value", async () => {
    const deleted = {
      status: 404,
      body: { data: { data: null, metadata: { version: 3, deletion_time: "2026-01-01T00:00:00Z" } } },
    };
    const { vault, writes } = fakeVault({ reads: [deleted] });
    const got = await relayVault(vault).identityToken(KV);
    assert.equal(got.created, true);
    assert.equal(got.replacedDeleted, true);
    assert.deepEqual(writes, [{ options: { cas: 3 }, data: { token: got.token } }]);
  });

  void it("explains a refused write, and a value without a token field", async () => {
    const deleted = {
      status: 404,
      body: { data: { data: null, metadata: { version: 2, deletion_time: "2026-01-01T00:00:00Z" } } },
    };
    const { vault } = fakeVault({
      reads: [deleted, deleted],
      write: () => {
        throw new HttpStatusError("vault", "POST", "/v1/secret/data/relay/identity-token", 403, ["denied"]);
      },
    });
    await assert.rejects(
      relayVault(vault).identityToken(KV),
      /cas=2\) was refused; the relay policy needs read, create and update/,
    );
    const wrong = fakeVault({ reads: [{ status: 200, body: { data: { data: { other: "x" } } } }] });
    await assert.rejects(relayVault(wrong.vault).identityToken(KV), /no non-empty string field "token"/);
  });
});
