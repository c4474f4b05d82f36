// doctor's pure parts: its settings, which JWT it logs in with (file in a pod or with --token-path, a TokenRequest
// from a laptop), the flags refused when they cannot apply, the fix it gives for each of Vault's login refusals, and
// the report in both formats. The checks themselves run against real OpenBao and a real apiserver in
// test/integration/doctor-laptop.test.ts.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  DEFAULT_DOCTOR_SETTINGS,
  REQUESTED_TOKEN_SECONDS,
  doctorReport,
  doctorSettings,
  formatReport,
  loginFix,
  requestAudience,
  requestedServiceAccount,
  resolveTokenSource,
  type JwtSource,
} from "../../src/commands/doctor.js";
import { ConfigError } from "../../src/cli/errors.js";
import { DEFAULT_CONFIG } from "../../src/config/config.js";
import type { KubeClient } from "../../src/kube/client.js";
import { TokenRequestError, requestServiceAccountToken } from "../../src/kube/token-request.js";
import { HttpStatusError } from "../../src/net/http-json.js";

const problemsOf = (fn: () => unknown): string[] => {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  assert.fail("expected a ConfigError");
};

void describe("doctor: settings and the token source", () => {
  void it("defaults: text output, auto source, istio-system/istiod, audience vault", () => {
    assert.deepEqual(doctorSettings({}), DEFAULT_DOCTOR_SETTINGS);
    assert.equal(doctorSettings({ output: "json" }).output, "json");
    assert.equal(REQUESTED_TOKEN_SECONDS, 600);
  });

  void it("--revision names istiod-<rev>; default is istiod; it cannot be combined with --service-account", () => {
    assert.equal(requestedServiceAccount(doctorSettings({ revision: "canary" })), "istiod-canary");
    assert.equal(requestedServiceAccount(doctorSettings({ revision: "default" })), "istiod");
    assert.equal(requestedServiceAccount(doctorSettings({ "service-account": "istiod-blue" })), "istiod-blue");
    const p = problemsOf(() => doctorSettings({ revision: "canary", "service-account": "istiod" }));
    assert.match(p.join("\n"), /--revision and --service-account: give one/);
    assert.match(problemsOf(() => doctorSettings({ revision: "Canary_1" })).join("\n"), /--revision: "Canary_1"/);
    assert.match(problemsOf(() => doctorSettings({ audience: "a b" })).join("\n"), /--audience: "a b" is invalid/);
    assert.match(problemsOf(() => doctorSettings({ "token-source": "env" })).join("\n"), /one of auto, file, request/);
  });

  void it("auto: a kubeconfig outside a pod requests a token; a pod or --token-path reads the file", () => {
    const auto = doctorSettings({});
    const laptop = {};
    const pod = { KUBERNETES_SERVICE_HOST: "10.0.0.1" };
    assert.equal(resolveTokenSource(auto, { kubeconfig: "/k" }, laptop), "request");
    assert.equal(resolveTokenSource(auto, {}, laptop), "request");
    assert.equal(resolveTokenSource(auto, {}, pod), "file");
    assert.equal(resolveTokenSource(auto, { kubeconfig: "/k" }, pod), "request", "a kubeconfig is the operator asking");
    assert.equal(resolveTokenSource(auto, { context: "prod" }, pod), "request", "so is a context");
    assert.equal(resolveTokenSource(auto, { "token-path": "/t" }, laptop), "file");
    assert.equal(resolveTokenSource(auto, { "token-path": "/t", kubeconfig: "/k" }, laptop), "file");
    const request = doctorSettings({ "token-source": "request" });
    assert.equal(resolveTokenSource(request, {}, pod), "request", "asked for in a pod");
    const file = doctorSettings({ "token-source": "file" });
    assert.equal(resolveTokenSource(file, { kubeconfig: "/k" }, laptop), "file");
  });

  void it("flags that cannot apply to the source are refused, each named", () => {
    const request = doctorSettings({ "token-source": "request" });
    assert.match(
      problemsOf(() => resolveTokenSource(request, { "token-path": "/t" }, {})).join("\n"),
      /--token-path: not used when doctor requests a token/,
    );
    const flags = { "token-path": "/t", revision: "canary", audience: "other" };
    const p = problemsOf(() => resolveTokenSource(doctorSettings(flags), flags, {}));
    assert.equal(p.length, 2);
    assert.match(p[0]!, /^--revision: only shapes a requested token.*with --token-path/);
    assert.match(p[1]!, /^--audience: only shapes a requested token/);
    const inPod = { namespace: "istio-system" };
    assert.match(
      problemsOf(() => resolveTokenSource(doctorSettings(inPod), inPod, { KUBERNETES_SERVICE_HOST: "h" })).join(),
      /--namespace: .*in a pod/,
    );
  });
});

void describe("doctor: the requested audience", () => {
  const policy = (audience: unknown) => ({
    spec: { config: { agentCa: { vault: { server: "https://v", kubernetesAuth: { audience } } } } },
  });

  void it("--audience, else the RootTrustPolicy's kubernetesAuth.audience, else vault", () => {
    const flags = { audience: "flag-aud" };
    assert.equal(requestAudience(doctorSettings(flags), flags, policy("policy-aud")), "flag-aud");
    assert.equal(requestAudience(doctorSettings({}), {}, policy("policy-aud")), "policy-aud");
    assert.equal(requestAudience(doctorSettings({}), {}, policy(42)), "vault");
    assert.equal(requestAudience(doctorSettings({}), {}, undefined), "vault");
    const dir = mkdtempSync(join(tmpdir(), "iva-doctor-"));
    try {
      const file = join(dir, "rtp.yaml");
      writeFileSync(file, JSON.stringify(policy("file-aud")));
      assert.equal(requestAudience(doctorSettings({}), { config: file }, undefined), "file-aud");
      assert.equal(requestAudience(doctorSettings({}), { config: join(dir, "none") }, undefined), "vault");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

void describe("doctor: the fix for each login refusal", () => {
  const request: JwtSource = {
    kind: "request",
    kube: {} as KubeClient,
    namespace: "istio-system",
    serviceAccount: "istiod",
    audience: "vault",
  };
  const refused = (message: string, status = 400) =>
    new HttpStatusError("vault", "POST", "/v1/auth/kubernetes/login", status, [message]);

  void it("names the missing role, the audience, or the unbound service account from Vault's reason", () => {
    assert.match(
      loginFix(DEFAULT_CONFIG, request, refused('invalid role name "istiod-agent"')),
      /role istiod-agent does not exist at auth\/kubernetes/,
    );
    assert.match(
      loginFix(DEFAULT_CONFIG, request, refused("invalid audience (aud) claim: audience claim does not match", 403)),
      /bound to another audience than the token's \(vault\)/,
    );
    assert.match(
      loginFix(DEFAULT_CONFIG, request, refused("service account name not authorized", 403)),
      /does not bind istio-system\/istiod/,
    );
    assert.match(loginFix(DEFAULT_CONFIG, request, refused("permission denied", 403)), /check that role istiod-agent/);
    const file: JwtSource = { kind: "file", path: "/var/run/t" };
    assert.match(
      loginFix(DEFAULT_CONFIG, file, Object.assign(new Error("ENOENT"), { code: "ENOENT" })),
      /the token file \/var\/run\/t/,
    );
  });
});

void describe("doctor: the report", () => {
  const checks = [
    { name: "vault reachable", ok: true, detail: "200" },
    { name: "kubernetes login", ok: false, detail: "HTTP 400", fix: "create the role" },
  ];

  void it("json: ok, the failing names, and each check's name, ok, detail (and fix)", () => {
    const r = doctorReport(checks);
    assert.equal(r.ok, false);
    assert.deepEqual(r.failed, ["kubernetes login"]);
    assert.deepEqual(r.checks[0], { name: "vault reachable", ok: true, detail: "200" });
    assert.deepEqual(r.checks[1], checks[1]);
    assert.equal(doctorReport(checks.slice(0, 1)).ok, true);
  });

  void it("text: each check, then a summary naming the failing ones", () => {
    const text = formatReport(checks);
    assert.match(text, /^ok {3}vault reachable: 200$/m);
    assert.match(text, /^FAIL kubernetes login: HTTP 400\n {7}fix: create the role$/m);
    assert.match(text, /1 check\(s\) failed: kubernetes login$/);
    assert.match(formatReport(checks.slice(0, 1)), /all checks passed$/);
  });
});

void describe("TokenRequest", () => {
  /** A stand-in apiserver client that records the one create() call and answers with `answer`. */
  const standIn = (answer: () => unknown) => {
    const calls: { path: string; body: unknown }[] = [];
    const kube = {
      create: (path: string, body: unknown) => {
        calls.push({ path, body });
        return Promise.resolve().then(answer);
      },
    } as unknown as KubeClient;
    return { kube, calls };
  };
  const spec = { namespace: "istio-system", serviceAccount: "istiod", audience: "vault", expirationSeconds: 600 };

  void it("posts one audience and the lifetime to the service account's token subresource", async () => {
    const { kube, calls } = standIn(() => ({
      status: { token: "header.payload.sig", expirationTimestamp: "2030-01-01T00:10:00Z" },
    }));
    const got = await requestServiceAccountToken(kube, spec);
    assert.equal(got.token, "header.payload.sig");
    assert.equal(got.expiresAt?.toISOString(), "2030-01-01T00:10:00.000Z");
    assert.equal(calls[0]!.path, "/api/v1/namespaces/istio-system/serviceaccounts/istiod/token");
    assert.deepEqual(calls[0]!.body, {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenRequest",
      spec: { audiences: ["vault"], expirationSeconds: 600 },
    });
  });

  void it("a missing service account, a refusal and an empty answer are each explained", async () => {
    const status = (code: number) => () => {
      throw new HttpStatusError("kubernetes", "POST", "/api/v1/…/token", code, ["nope"]);
    };
    const reasonOf = async (answer: () => unknown) =>
      requestServiceAccountToken(standIn(answer).kube, spec).then(
        () => assert.fail("expected a refusal"),
        (err: unknown) => {
          assert.ok(err instanceof TokenRequestError);
          return { reason: err.reason, message: err.message };
        },
      );
    assert.deepEqual((await reasonOf(status(404))).reason, "not_found");
    const forbidden = await reasonOf(status(403));
    assert.equal(forbidden.reason, "forbidden");
    assert.match(forbidden.message, /may create serviceaccounts\/token in istio-system/);
    assert.equal((await reasonOf(status(401))).reason, "unauthenticated");
    assert.match((await reasonOf(() => ({ status: {} }))).message, /answered without status\.token/);
  });
});
