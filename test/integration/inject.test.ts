// `inject` against the real kube-apiserver (1.36): the apiserver accepts both sidecar forms, a second run writes
// nothing, --dry-run writes nothing, conflicts are retried, and --remove restores the pod template exactly as the
// apiserver stored it before injection.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { TestEnv } from "../env/harness.js";
import { istiodDeployment } from "../env/istiod-deployment.js";
import { KubeClient } from "../../src/kube/client.js";
import { kubeClientFromKubeconfig } from "../../src/kube/kubeconfig.js";
import { runInject } from "../../src/commands/inject.js";
import { INJECTED_ANNOTATION, type InjectOptions } from "../../src/inject/pod-template.js";

const NS = "istio-system";
const DEPLOYMENTS = `/apis/apps/v1/namespaces/${NS}/deployments`;

interface Container {
  name: string;
  image: string;
  restartPolicy?: string;
  args: string[];
}
interface StoredDeployment {
  metadata: {
    name: string;
    resourceVersion: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec: {
    template: {
      metadata: { annotations?: Record<string, string> };
      spec: {
        containers: Container[];
        initContainers?: Container[];
        volumes: { name: string; emptyDir?: unknown; secret?: unknown }[];
        securityContext?: { fsGroup?: number };
      };
    };
  };
}

/** An istiod Deployment as the istio-discovery Helm chart renders it (revision "" → name istiod, rev default). */

const OPTS: InjectOptions = {
  namespace: NS,
  name: "istiod",
  image: "registry.example/istiod-vault-agent:0.1.0",
  vaultAddress: "https://vault.vault:8200",
  vaultCaConfigMap: "vault-ca",
  role: "istiod-agent",
  audience: "vault",
  caPath: "pki_int/root/sign-intermediate",
  httpPort: 15300,
  nativeSidecar: "auto",
  remove: false,
  dryRun: false,
};

const names = (list: { name: string }[] | undefined) => (list ?? []).map((x) => x.name);

void describe("inject (real kube-apiserver)", () => {
  let env: TestEnv;
  let kube: KubeClient;
  /** The Deployment exactly as the apiserver stored it before any injection. */
  let original: StoredDeployment;
  let lines: string[] = [];
  const out = (l: string) => lines.push(l);
  const read = (name = "istiod") => kube.get<StoredDeployment>(`${DEPLOYMENTS}/${name}`);

  before(async () => {
    env = await TestEnv.start({ vault: false });
    kube = env.kube.admin;
    await env.createNamespace(NS);
    original = await kube.create<StoredDeployment>(DEPLOYMENTS, istiodDeployment());
  });
  after(async () => {
    await env?.stop();
  });

  void it("injects the agent as a native sidecar on Kubernetes 1.36 (auto), and the apiserver accepts it", async () => {
    lines = [];
    const res = await runInject(kube, OPTS, out);
    assert.deepEqual(res, { changed: true, deployments: [`${NS}/istiod`] });
    assert.ok(
      lines.some((l) => /supports native sidecars/.test(l)),
      lines.join("\n"),
    );
    assert.ok(
      lines.some((l) => /istiod: injected the agent/.test(l)),
      lines.join("\n"),
    );
    const stored = await read();
    assert.notEqual(stored.metadata.resourceVersion, original.metadata.resourceVersion);
    const pod = stored.spec.template.spec;
    assert.deepEqual(names(pod.initContainers), ["istiod-vault-agent-init", "istiod-vault-agent"]);
    assert.deepEqual(names(pod.containers), ["discovery"]);
    const sidecar = pod.initContainers?.find((c) => c.name === "istiod-vault-agent");
    assert.equal(sidecar?.restartPolicy, "Always");
    assert.equal(sidecar?.args[0], "sidecar");
    assert.ok(sidecar?.args.includes("--vault-cacert=/etc/istiod-vault-agent/vault-ca/ca.crt"));
    assert.deepEqual(
      pod.volumes.find((v) => v.name === "cacerts"),
      { name: "cacerts", emptyDir: { medium: "Memory" } },
    );
    assert.ok(names(pod.volumes).includes("vault-token"));
    assert.ok(names(pod.volumes).includes("istiod-vault-agent-socket"));
    assert.equal(pod.securityContext?.fsGroup, 1337);
    const annotation = stored.spec.template.metadata.annotations?.[INJECTED_ANNOTATION];
    assert.ok(annotation);
    assert.equal(stored.metadata.annotations?.[INJECTED_ANNOTATION], annotation);
    // The record holds the Secret volume as the apiserver stored it (with its defaulted mode).
    assert.deepEqual(
      (JSON.parse(annotation) as { cacertsVolume: unknown }).cacertsVolume,
      original.spec.template.spec.volumes.find((v) => v.name === "cacerts"),
    );
  });

  void it("a second run changes nothing: same resourceVersion", async () => {
    const before = await read();
    lines = [];
    const res = await runInject(kube, OPTS, out);
    assert.equal(res.changed, false);
    assert.ok(
      lines.some((l) => /already injected and up to date/.test(l)),
      lines.join("\n"),
    );
    assert.equal((await read()).metadata.resourceVersion, before.metadata.resourceVersion);
  });

  void it("--dry-run prints the change and writes nothing", async () => {
    const before = await read();
    lines = [];
    const res = await runInject(
      kube,
      { ...OPTS, image: "registry.example/istiod-vault-agent:0.2.0", dryRun: true },
      out,
    );
    assert.equal(res.changed, true, "a dry run reports that a change is needed");
    assert.ok(
      lines.some((l) => /would inject the agent \(dry run; nothing written\)/.test(l)),
      lines.join("\n"),
    );
    assert.ok(
      lines.some((l) =>
        l.includes(
          '~ spec.template.spec.initContainers[name=istiod-vault-agent].image: "registry.example/istiod-vault-agent:0.1.0" → "registry.example/istiod-vault-agent:0.2.0"',
        ),
      ),
      lines.join("\n"),
    );
    assert.equal((await read()).metadata.resourceVersion, before.metadata.resourceVersion);

    lines = [];
    const removal = await runInject(kube, { ...OPTS, remove: true, dryRun: true }, out);
    assert.equal(removal.changed, true);
    assert.ok(
      lines.some((l) => l.includes("- spec.template.spec.initContainers")),
      lines.join("\n"),
    );
    assert.equal((await read()).metadata.resourceVersion, before.metadata.resourceVersion);
  });

  void it("changed options update the agent; the regular-sidecar form is accepted too", async () => {
    lines = [];
    const res = await runInject(kube, { ...OPTS, nativeSidecar: false, vaultCaConfigMap: undefined }, out);
    assert.equal(res.changed, true);
    assert.ok(
      lines.some((l) => /istiod: updated the agent/.test(l)),
      lines.join("\n"),
    );
    const pod = (await read()).spec.template.spec;
    assert.deepEqual(names(pod.initContainers), ["istiod-vault-agent-init"]);
    assert.deepEqual(names(pod.containers), ["discovery", "istiod-vault-agent"]);
    assert.ok(!names(pod.volumes).includes("istiod-vault-agent-vault-ca"));
    const again = await runInject(kube, { ...OPTS, nativeSidecar: false, vaultCaConfigMap: undefined }, out);
    assert.equal(again.changed, false);
  });

  void it("retries after a conflicting write (409) with the re-read object", async () => {
    // A client whose first PUT races with another writer that changes the Deployment just before it.
    const racing = await kubeClientFromKubeconfig(env.kube.kubeconfigPath);
    const realRequest = racing.request.bind(racing);
    let raced = false;
    racing.request = async (...args: Parameters<KubeClient["request"]>) => {
      if (args[0] === "PUT" && !raced) {
        raced = true;
        const current = await read();
        current.metadata.labels = { ...current.metadata.labels, "example.com/touched": "yes" };
        await kube.request("PUT", `${DEPLOYMENTS}/istiod`, current);
      }
      return realRequest(...args);
    };
    try {
      lines = [];
      const res = await runInject(racing, { ...OPTS, image: "registry.example/istiod-vault-agent:0.3.0" }, out);
      assert.equal(res.changed, true);
      assert.ok(raced);
      assert.ok(
        lines.some((l) => /conflict/.test(l)),
        lines.join("\n"),
      );
      const stored = await read();
      assert.equal(stored.metadata.labels?.["example.com/touched"], "yes", "the other writer's change is kept");
      assert.deepEqual(
        stored.spec.template.spec.initContainers?.map((c) => c.image),
        ["registry.example/istiod-vault-agent:0.3.0", "registry.example/istiod-vault-agent:0.3.0"],
      );
    } finally {
      await racing.close();
    }
  });

  void it("--remove restores the pod template exactly as the apiserver stored it before injection", async () => {
    lines = [];
    const res = await runInject(kube, { ...OPTS, remove: true, vaultAddress: "" }, out);
    assert.equal(res.changed, true);
    assert.ok(
      lines.some((l) => /removed the agent/.test(l)),
      lines.join("\n"),
    );
    const stored = await read();
    assert.deepEqual(stored.spec.template, original.spec.template);
    assert.deepEqual(stored.metadata.annotations, original.metadata.annotations);
    const again = await runInject(kube, { ...OPTS, remove: true }, out);
    assert.equal(again.changed, false);
  });

  void it("--revision selects every istiod of that revision and skips other Deployments with the label", async () => {
    const canary = await kube.create<StoredDeployment>(DEPLOYMENTS, istiodDeployment("istiod-canary", "canary"));
    const gateway = istiodDeployment("istio-ingressgateway-canary", "canary") as unknown as StoredDeployment;
    gateway.spec.template.spec.containers[0]!.name = "istio-proxy";
    await kube.create(DEPLOYMENTS, gateway);
    lines = [];
    const res = await runInject(kube, { ...OPTS, name: undefined, revision: "canary", nativeSidecar: true }, out);
    assert.deepEqual(res, { changed: true, deployments: [`${NS}/istiod-canary`] });
    assert.ok(
      lines.some((l) => /istio-ingressgateway-canary: skipped/.test(l)),
      lines.join("\n"),
    );
    assert.ok((await read("istiod-canary")).spec.template.metadata.annotations?.[INJECTED_ANNOTATION]);
    assert.equal(
      (await read("istio-ingressgateway-canary")).spec.template.metadata.annotations?.[INJECTED_ANNOTATION],
      undefined,
    );
    // The default revision's istiod was not touched.
    assert.equal((await read()).spec.template.metadata.annotations?.[INJECTED_ANNOTATION], undefined);
    await runInject(kube, { ...OPTS, name: undefined, revision: "canary", remove: true }, out);
    assert.deepEqual((await read("istiod-canary")).spec.template, canary.spec.template);
    await assert.rejects(
      runInject(kube, { ...OPTS, name: undefined, revision: "nope" }, out),
      /no istiod Deployment in namespace istio-system has the label istio.io\/rev=nope/,
    );
    await assert.rejects(
      runInject(kube, { ...OPTS, name: "missing" }, out),
      /Deployment istio-system\/missing not found/,
    );
  });
});
