// Kubernetes access: the precedence rule, kubectl's merge of several kubeconfig files, the user shapes refused up
// front, what the client sends (tokenFile re-read per request, a proxy used, insecure-skip-tls-verify warned about),
// and that the in-cluster path and the sidecar never import @kubernetes/client-node. The servers here are scripted
// stand-ins on loopback (plain HTTP, a CONNECT proxy); the real apiserver is in test/integration/kubeconfig.test.ts.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { resolveKubeSource } from "../../src/cli/kube.js";
import { ConfigError } from "../../src/cli/errors.js";
import { checkUser, kubeClientFromKubeconfig, selectContext } from "../../src/kube/kubeconfig.js";
import { repoRoot } from "../env/harness.js";
import { startCountingProxy, type CountingProxy } from "../env/counting-proxy.js";

const write = (path: string, doc: unknown) => writeFileSync(path, JSON.stringify(doc));

void describe("kube access: the precedence rule", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "iva-kube-unit-"));
    mkdirSync(join(dir, "home", ".kube"), { recursive: true });
    write(join(dir, "home", ".kube", "config"), {});
    write(join(dir, "a"), {});
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  void it("--kubeconfig, else $KUBECONFIG, else in-cluster (not with --context), else ~/.kube/config", () => {
    const home = join(dir, "home");
    const inPod = { KUBERNETES_SERVICE_HOST: "10.0.0.1" };
    const a = join(dir, "a");
    assert.deepEqual(resolveKubeSource({ kubeconfig: "/x:/y", context: "c" }, { ...inPod, KUBECONFIG: a }, home), {
      kind: "kubeconfig",
      files: ["/x", "/y"],
      context: "c",
    });
    // $KUBECONFIG: files that do not exist are skipped, as kubectl does.
    assert.deepEqual(resolveKubeSource({}, { ...inPod, KUBECONFIG: `/missing:${a}` }, home), {
      kind: "kubeconfig",
      files: [a],
      context: undefined,
    });
    assert.deepEqual(resolveKubeSource({}, inPod, home), { kind: "in-cluster" });
    assert.deepEqual(resolveKubeSource({ context: "c" }, inPod, home), {
      kind: "kubeconfig",
      files: [join(home, ".kube", "config")],
      context: "c",
    });
    assert.deepEqual(resolveKubeSource({}, {}, home), {
      kind: "kubeconfig",
      files: [join(home, ".kube", "config")],
      context: undefined,
    });
    assert.throws(
      () => resolveKubeSource({}, {}, join(dir, "nohome")),
      (e: Error) => {
        assert.ok(e instanceof ConfigError);
        assert.match(e.message, /no credentials; expected --kubeconfig, \$KUBECONFIG, ~\/.kube\/config, or a pod/);
        return true;
      },
    );
    assert.throws(() => resolveKubeSource({}, { KUBECONFIG: "/missing" }, home), /none of \/missing exists/);
  });
});

void describe("kube access: merged kubeconfig files", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "iva-kube-merge-"));
    mkdirSync(join(dir, "b"));
    write(join(dir, "a.yaml"), {
      "current-context": "one",
      clusters: [{ name: "c", cluster: { server: "https://a", "certificate-authority": "ca.pem" } }],
      contexts: [{ name: "one", context: { cluster: "c", user: "u" } }],
      users: [{ name: "u", user: { tokenFile: "tok" } }],
    });
    write(join(dir, "b", "b.yaml"), {
      "current-context": "two",
      clusters: [{ name: "c", cluster: { server: "https://b" } }],
      contexts: [
        { name: "one", context: { cluster: "nope", user: "nope" } },
        { name: "two", context: { cluster: "c", user: "v" } },
      ],
      users: [{ name: "v", user: { exec: { apiVersion: "client.authentication.k8s.io/v1", command: "./plug" } } }],
    });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  void it("the first file to define a name or current-context wins; relative paths follow their own file", () => {
    const files = [join(dir, "a.yaml"), join(dir, "b", "b.yaml")];
    const one = selectContext(files);
    assert.equal(one.context, "one");
    assert.equal(one.cluster.server, "https://a");
    assert.equal(one.cluster["certificate-authority"], join(dir, "ca.pem"));
    assert.equal(one.user.tokenFile, join(dir, "tok"));
    const two = selectContext(files, "two");
    assert.equal(two.cluster.server, "https://a", "cluster c of the first file");
    assert.equal((two.user.exec as { command: string }).command, join(dir, "b", "plug"));
    assert.throws(() => selectContext(files, "three"), /no context named "three"; expected one of: one, two/);
  });
});

void describe("kube access: user shapes", () => {
  const sel = (user: Record<string, unknown>) =>
    ({
      where: "kubeconfig k",
      context: "ctx",
      clusterName: "c",
      userName: "me",
      cluster: {},
      user,
      contexts: [],
    }) as ReturnType<typeof selectContext>;
  const exec = (apiVersion: string) => ({ exec: { apiVersion, command: "plugin" } });

  void it("accepts what client-node or this client can serve", () => {
    for (const user of [
      { token: "t" },
      { tokenFile: "/t" },
      { "client-certificate-data": "x", "client-key-data": "y" },
      { username: "u", password: "p" },
      exec("client.authentication.k8s.io/v1"),
      exec("client.authentication.k8s.io/v1beta1"),
      { "auth-provider": { name: "oidc", config: {} } },
    ])
      assert.doesNotThrow(() => checkUser(sel(user)), JSON.stringify(user));
  });

  void it("refuses the rest, naming the user, its context and what is expected", () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{}, /user "me" of context "ctx": has no credentials; expected a token, tokenFile/],
      [{ username: "u" }, /has no credentials/],
      [{ as: "someone" }, /has no credentials/],
      [{ "auth-provider": { name: "openstack" } }, /auth-provider "openstack" is not supported \(supported: oidc/],
      [{ "client-certificate": "/c" }, /has a client certificate but no key; expected both/],
      [exec("client.authentication.k8s.io/v1alpha1"), /exec apiVersion "client.authentication.k8s.io\/v1alpha1"/],
      [{ exec: { apiVersion: "client.authentication.k8s.io/v1" } }, /exec has no command/],
      [
        { exec: { apiVersion: "client.authentication.k8s.io/v1", command: "p", interactiveMode: "Always" } },
        /exec interactiveMode Always needs a terminal/,
      ],
    ];
    for (const [user, re] of cases) assert.throws(() => checkUser(sel(user)), re, JSON.stringify(user));
  });
});

void describe("kube access: what the client sends", () => {
  let dir: string;
  let server: Server;
  let proxy: CountingProxy;
  let url: string;
  const seen: (string | undefined)[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "iva-kube-send-"));
    server = createServer((req, res) => {
      seen.push(req.headers.authorization);
      res.setHeader("content-type", "application/json");
      res.end("{}");
    });
    proxy = await startCountingProxy();
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await proxy.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const kubeconfig = (name: string, cluster: Record<string, unknown>, user: Record<string, unknown>) => {
    const path = join(dir, name);
    write(path, {
      "current-context": "x",
      clusters: [{ name: "c", cluster: { server: url, "insecure-skip-tls-verify": true, ...cluster } }],
      contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
      users: [{ name: "u", user }],
    });
    return path;
  };

  void it("re-reads tokenFile at every request, and warns loudly about insecure-skip-tls-verify", async () => {
    writeFileSync(join(dir, "tok"), "first\n");
    const warnings: string[] = [];
    const kube = await kubeClientFromKubeconfig(kubeconfig("k1", {}, { tokenFile: "tok" }), undefined, (m) =>
      warnings.push(m),
    );
    try {
      seen.length = 0;
      await kube.get("/api");
      writeFileSync(join(dir, "tok"), "second\n");
      await kube.get("/api");
      assert.deepEqual(seen, ["Bearer first", "Bearer second"]);
      assert.equal(warnings.length, 1);
      assert.match(
        warnings[0]!,
        /cluster "c" sets insecure-skip-tls-verify: the apiserver's certificate is NOT verified/,
      );
    } finally {
      await kube.close();
    }
  });

  void it("goes through the cluster's proxy-url, and refuses a SOCKS proxy it cannot use", async () => {
    const kube = await kubeClientFromKubeconfig(kubeconfig("k2", { "proxy-url": proxy.url }, { token: "t" }));
    try {
      const before = proxy.forwarded();
      seen.length = 0;
      await kube.get("/api");
      assert.equal(proxy.forwarded(), before + 1, "the request went through the proxy");
      assert.deepEqual(seen, ["Bearer t"]);
    } finally {
      await kube.close();
    }
    await assert.rejects(
      kubeClientFromKubeconfig(kubeconfig("k3", { "proxy-url": "socks5://127.0.0.1:1" }, { token: "t" })),
      /proxy-url socks5:\/\/127.0.0.1:1 is not supported; expected an http:\/\/ or https:\/\/ proxy/,
    );
  });
});

void describe("kube access: the in-pod paths never import @kubernetes/client-node", () => {
  /** The module URLs resolved while `body` runs (after importing `imports`), in a fresh Node process. */
  const traced = (body: string, env: NodeJS.ProcessEnv = {}) => {
    const script = `
      import { registerHooks } from "node:module";
      const loaded = [];
      registerHooks({ resolve(s, c, next) { const r = next(s, c); loaded.push(r.url); return r; } });
      const root = ${JSON.stringify(pathToFileURL(join(repoRoot(), "dist/src")).href)};
      console.log = () => {};
      try { ${body} } catch {}
      process.stderr.write("\\n" + JSON.stringify(loaded));`;
    const res = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
      encoding: "utf8",
      env: { PATH: process.env.PATH, ...env },
    });
    assert.equal(res.status, 0, res.stderr);
    return JSON.parse(res.stderr.trim().split("\n").at(-1) ?? "[]") as string[];
  };
  const clientNode = (loaded: string[]) => loaded.some((u) => u.includes("@kubernetes/client-node"));

  void it("the sidecar command (and the agent it runs) does not import it", () => {
    const loaded = traced(`const { main } = await import(root + "/main.js"); await main(["sidecar", "--help"]);`);
    assert.ok(
      loaded.some((u) => u.endsWith("/src/agent.js")),
      "the agent's module graph is loaded",
    );
    assert.ok(!clientNode(loaded), "sidecar loaded @kubernetes/client-node");
    assert.ok(!loaded.some((u) => u.endsWith("/kube/kubeconfig.js")), "sidecar loaded the kubeconfig module");
  });

  void it("openKube in a pod (in-cluster) does not import it; with a kubeconfig it does", () => {
    const open = (access: string) =>
      `const { openKube } = await import(root + "/cli/kube.js"); await openKube(${access});`;
    assert.ok(!clientNode(traced(open("{}"), { KUBERNETES_SERVICE_HOST: "10.0.0.1" })), "in-cluster imported it");
    const dir = mkdtempSync(join(tmpdir(), "iva-kube-trace-"));
    try {
      write(join(dir, "k"), {
        "current-context": "x",
        clusters: [{ name: "c", cluster: { server: "https://127.0.0.1:1" } }],
        contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
        users: [{ name: "u", user: { token: "t" } }],
      });
      assert.ok(clientNode(traced(open(JSON.stringify({ kubeconfig: join(dir, "k") })))), "kubeconfig path loads it");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
