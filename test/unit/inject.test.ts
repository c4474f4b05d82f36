// The pure pod-template surgery of `inject`: what it adds and replaces in an istiod Deployment shaped like the Istio
// Helm chart's, that it is idempotent, and that removal restores the original exactly.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { ConfigError } from "../../src/config/config.js";
import { AGENT_FLAGS, parseFlags } from "../../src/config/load.js";
import { shadowingProblems } from "../../src/config/shadowing.js";
import { repoRoot } from "../env/harness.js";
import { istiodDeployment } from "../env/istiod-deployment.js";
import { DEFAULT_INJECT_OPTIONS, injectHelp, parseInjectArgs } from "../../src/commands/inject.js";
import { describeChanges } from "../../src/inject/diff.js";
import {
  INJECTED_ANNOTATION,
  injectPodSpec,
  isInjected,
  removeInjection,
  type InjectOptions,
} from "../../src/inject/pod-template.js";

/** An istiod Deployment as the istio-discovery chart renders it (default revision, third-party JWT). */

const BASE_OPTS: InjectOptions = {
  namespace: "istio-system",
  name: "istiod",
  image: "registry.example/istiod-vault-agent:0.1.0",
  vaultAddress: "https://vault.vault:8200",
  role: "istiod-agent",
  audience: "vault",
  caPath: "pki_int/root/sign-intermediate",
  httpPort: 15300,
  nativeSidecar: true,
  remove: false,
  dryRun: false,
};

// Typed views of the patched object, for assertions (a missing field fails the test with a TypeError).
interface Probe {
  httpGet: { path: string; port: number; scheme?: string };
  successThreshold?: number;
}
interface Mount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
}
interface Container {
  name: string;
  image: string;
  args: string[];
  env: unknown[];
  resources: unknown;
  securityContext: unknown;
  restartPolicy?: string;
  startupProbe: Probe;
  readinessProbe: Probe;
  livenessProbe: Probe;
  volumeMounts: Mount[];
  terminationMessagePath?: string;
  terminationMessagePolicy?: string;
  imagePullPolicy?: string;
}
interface Volume {
  name: string;
  emptyDir?: unknown;
  projected?: { sources: { serviceAccountToken: { audience: string } }[]; defaultMode?: number };
  configMap?: { defaultMode?: number };
  secret?: { defaultMode?: number };
}
interface Pod {
  containers: Container[];
  initContainers: Container[];
  volumes: Volume[];
  securityContext: { fsGroup?: number; [k: string]: unknown };
  restartPolicy?: string;
  dnsPolicy?: string;
}
interface Dep {
  metadata: { annotations: Record<string, string> };
  spec: { template: { metadata: { annotations: Record<string, string> }; spec: Pod } };
}
const dep = (d: unknown) => d as Dep;
const pod = (d: unknown) => dep(d).spec.template.spec;
const names = (list: { name: string }[] | undefined) => (list ?? []).map((x) => x.name);
function byName<T extends { name: string }>(list: T[] | undefined, name: string): T {
  const hit = list?.find((x) => x.name === name);
  assert.ok(hit, `no entry named ${name}`);
  return hit;
}
const discovery = (d: unknown) => byName(pod(d).containers, "discovery");
/** Deletes a field the fixture has, to make variants. */
const drop = (obj: object, key: string) => Reflect.deleteProperty(obj, key);
const record = (d: unknown) =>
  JSON.parse(dep(d).metadata.annotations[INJECTED_ANNOTATION] ?? "null") as {
    cacertsVolume: unknown;
    fsGroup: number | null;
  };

const COMMON_ARGS = [
  "--cacerts-dir=/etc/cacerts",
  "--vault-addr=https://vault.vault:8200",
  "--auth-role=istiod-agent",
  "--ca-path=pki_int/root/sign-intermediate",
  "--token-path=/var/run/secrets/tokens/vault-token",
  "--socket=/var/run/istiod-vault-agent/agent.sock",
  "--http-addr=0.0.0.0:15300",
];

/** What the apiserver adds to the containers and volumes it stores (a stored Deployment carries these). */
function simulateApiserverDefaults(d: unknown): unknown {
  const copy = structuredClone(d);
  const p = pod(copy);
  for (const c of [...p.containers, ...(p.initContainers ?? [])]) {
    c.terminationMessagePath ??= "/dev/termination-log";
    c.terminationMessagePolicy ??= "File";
    c.imagePullPolicy ??= "IfNotPresent";
    for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe]) if (probe) probe.successThreshold ??= 1;
  }
  for (const v of p.volumes ?? []) {
    if (v.projected) v.projected.defaultMode ??= 420;
    if (v.configMap) v.configMap.defaultMode ??= 420;
    if (v.secret) v.secret.defaultMode ??= 420;
  }
  p.restartPolicy ??= "Always";
  p.dnsPolicy ??= "ClusterFirst";
  return copy;
}

void describe("inject: injectPodSpec", () => {
  void it("replaces the cacerts Secret with an in-memory emptyDir in place and keeps discovery's mount", () => {
    const x = istiodDeployment();
    const y = injectPodSpec(x, BASE_OPTS);
    const original = pod(x).volumes;
    assert.deepEqual(pod(y).volumes.slice(0, original.length), [
      ...original.slice(0, 2),
      { name: "cacerts", emptyDir: { medium: "Memory" } },
      ...original.slice(3),
    ]);
    assert.deepEqual(byName(discovery(y).volumeMounts, "cacerts"), {
      name: "cacerts",
      mountPath: "/etc/cacerts",
      readOnly: true,
    });
    // Discovery's other mounts are untouched; the socket directory is added at the end.
    assert.deepEqual(discovery(y).volumeMounts.slice(0, -1), discovery(x).volumeMounts);
    assert.deepEqual(discovery(y).volumeMounts.at(-1), {
      name: "istiod-vault-agent-socket",
      mountPath: "/var/run/istiod-vault-agent",
    });
  });

  void it("adds the init container and a native sidecar (restartable init container with a startupProbe)", () => {
    const y = injectPodSpec(istiodDeployment(), BASE_OPTS);
    assert.deepEqual(names(pod(y).initContainers), ["istiod-vault-agent-init", "istiod-vault-agent"]);
    assert.deepEqual(names(pod(y).containers), ["discovery"]);
    const init = byName(pod(y).initContainers, "istiod-vault-agent-init");
    const sidecar = byName(pod(y).initContainers, "istiod-vault-agent");
    assert.deepEqual(init.args, ["init", ...COMMON_ARGS]);
    assert.deepEqual(sidecar.args, ["sidecar", ...COMMON_ARGS]);
    assert.equal(init.image, BASE_OPTS.image);
    assert.equal(sidecar.image, BASE_OPTS.image);
    assert.equal(init.restartPolicy, undefined);
    assert.equal(init.startupProbe, undefined);
    assert.equal(init.readinessProbe, undefined, "a regular init container may not have probes");
    assert.equal(sidecar.restartPolicy, "Always");
    assert.deepEqual(sidecar.startupProbe.httpGet, { path: "/readyz", port: 15300, scheme: "HTTP" });
    assert.deepEqual(sidecar.readinessProbe.httpGet, { path: "/readyz", port: 15300, scheme: "HTTP" });
    assert.deepEqual(sidecar.livenessProbe.httpGet, { path: "/healthz", port: 15300, scheme: "HTTP" });
  });

  void it("without native sidecars: the init container plus a regular sidecar container", () => {
    const y = injectPodSpec(istiodDeployment(), { ...BASE_OPTS, nativeSidecar: false });
    assert.deepEqual(names(pod(y).initContainers), ["istiod-vault-agent-init"]);
    assert.deepEqual(names(pod(y).containers), ["discovery", "istiod-vault-agent"]);
    const sidecar = byName(pod(y).containers, "istiod-vault-agent");
    assert.equal(sidecar.restartPolicy, undefined);
    assert.equal(sidecar.startupProbe, undefined);
    assert.equal(sidecar.readinessProbe.httpGet.path, "/readyz");
    assert.equal(sidecar.livenessProbe.httpGet.path, "/healthz");
    assert.deepEqual(sidecar.args, ["sidecar", ...COMMON_ARGS]);
  });

  void it("refuses an unresolved nativeSidecar: auto", () => {
    assert.throws(() => injectPodSpec(istiodDeployment(), { ...BASE_OPTS, nativeSidecar: "auto" }), /resolved/);
  });

  void it("mounts the Vault CA ConfigMap and passes --vault-cacert, --trust-domain and extra args", () => {
    const y = injectPodSpec(istiodDeployment(), {
      ...BASE_OPTS,
      vaultCaConfigMap: "vault-ca",
      trustDomain: "example.org",
      httpPort: 15301,
      extraArgs: ["--ttl=24h"],
    });
    const sidecar = byName(pod(y).initContainers, "istiod-vault-agent");
    assert.deepEqual(sidecar.args.slice(-4), [
      "--http-addr=0.0.0.0:15301",
      "--vault-cacert=/etc/istiod-vault-agent/vault-ca/ca.crt",
      "--trust-domain=example.org",
      "--ttl=24h",
    ]);
    assert.equal(sidecar.readinessProbe.httpGet.port, 15301);
    assert.deepEqual(byName(sidecar.volumeMounts, "istiod-vault-agent-vault-ca"), {
      name: "istiod-vault-agent-vault-ca",
      mountPath: "/etc/istiod-vault-agent/vault-ca",
      readOnly: true,
    });
    assert.deepEqual(byName(pod(y).volumes, "istiod-vault-agent-vault-ca"), {
      name: "istiod-vault-agent-vault-ca",
      configMap: { name: "vault-ca", items: [{ key: "ca.crt", path: "ca.crt" }] },
    });
    const init = byName(pod(y).initContainers, "istiod-vault-agent-init");
    assert.ok(init.args.includes("--vault-cacert=/etc/istiod-vault-agent/vault-ca/ca.crt"));
  });

  void it("gives the agent containers token, socket and cacerts mounts, downward-API env, limits and a locked-down securityContext", () => {
    const y = injectPodSpec(istiodDeployment(), BASE_OPTS);
    for (const c of pod(y).initContainers) {
      assert.deepEqual(c.volumeMounts, [
        { name: "cacerts", mountPath: "/etc/cacerts" },
        { name: "vault-token", mountPath: "/var/run/secrets/tokens", readOnly: true },
        { name: "istiod-vault-agent-socket", mountPath: "/var/run/istiod-vault-agent" },
      ]);
      assert.deepEqual(c.env, [
        { name: "POD_NAME", valueFrom: { fieldRef: { apiVersion: "v1", fieldPath: "metadata.name" } } },
        { name: "POD_NAMESPACE", valueFrom: { fieldRef: { apiVersion: "v1", fieldPath: "metadata.namespace" } } },
      ]);
      assert.deepEqual(c.resources, { requests: { cpu: "10m", memory: "160Mi" }, limits: { memory: "256Mi" } });
      assert.deepEqual(c.securityContext, {
        runAsNonRoot: true,
        runAsUser: 65532,
        runAsGroup: 1337,
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ["ALL"] },
      });
    }
    assert.deepEqual(byName(pod(y).volumes, "vault-token"), {
      name: "vault-token",
      projected: {
        sources: [{ serviceAccountToken: { audience: "vault", expirationSeconds: 3600, path: "vault-token" } }],
      },
    });
    assert.deepEqual(byName(pod(y).volumes, "istiod-vault-agent-socket"), {
      name: "istiod-vault-agent-socket",
      emptyDir: {},
    });
    // istiod's own token volume (audience istio-ca) is untouched.
    assert.deepEqual(byName(pod(y).volumes, "istio-token"), byName(pod(istiodDeployment()).volumes, "istio-token"));
    assert.equal(pod(y).securityContext.fsGroup, 1337);
    const other = injectPodSpec(istiodDeployment(), { ...BASE_OPTS, audience: "https://vault.example" });
    assert.deepEqual(byName(pod(other).volumes, "vault-token").projected?.sources[0]?.serviceAccountToken, {
      audience: "https://vault.example",
      expirationSeconds: 3600,
      path: "vault-token",
    });
  });

  void it("records the replaced originals in an annotation on the pod template and on the Deployment", () => {
    const x = istiodDeployment();
    const y = injectPodSpec(x, BASE_OPTS);
    const templateAnnotations = dep(y).spec.template.metadata.annotations;
    const raw = templateAnnotations[INJECTED_ANNOTATION];
    assert.ok(raw);
    assert.equal(dep(y).metadata.annotations[INJECTED_ANNOTATION], raw);
    assert.deepEqual(record(y).cacertsVolume, { name: "cacerts", secret: { secretName: "cacerts", optional: true } });
    assert.equal(record(y).fsGroup, 1337);
    // The chart's own annotations stay.
    assert.equal(templateAnnotations["sidecar.istio.io/inject"], "false");
    assert.ok(isInjected(y));
    assert.ok(!isInjected(x));
  });

  void it("does not modify its input", () => {
    const x = istiodDeployment();
    injectPodSpec(x, BASE_OPTS);
    assert.deepEqual(x, istiodDeployment());
    const y = injectPodSpec(x, BASE_OPTS);
    const snapshot = structuredClone(y);
    removeInjection(y);
    injectPodSpec(y, { ...BASE_OPTS, image: "other:1" });
    assert.deepEqual(y, snapshot);
  });

  void it("is idempotent: injecting twice equals injecting once, for both sidecar forms", () => {
    for (const nativeSidecar of [true, false]) {
      const opts = { ...BASE_OPTS, nativeSidecar, vaultCaConfigMap: "vault-ca" };
      const once = injectPodSpec(istiodDeployment(), opts);
      assert.deepEqual(injectPodSpec(once, opts), once);
    }
  });

  void it("is idempotent on a stored object that carries apiserver defaults", () => {
    const stored = simulateApiserverDefaults(injectPodSpec(simulateApiserverDefaults(istiodDeployment()), BASE_OPTS));
    assert.deepEqual(injectPodSpec(stored, BASE_OPTS), stored);
  });

  void it("updates the agent containers when options change, keeping the record of the originals", () => {
    // As through an apiserver: the original is stored with defaults, then the injected object is.
    const original = simulateApiserverDefaults(istiodDeployment());
    const stored = simulateApiserverDefaults(injectPodSpec(original, BASE_OPTS));
    const updated = injectPodSpec(stored, { ...BASE_OPTS, image: "registry.example/istiod-vault-agent:0.2.0" });
    assert.notDeepEqual(updated, stored);
    for (const c of pod(updated).initContainers) assert.equal(c.image, "registry.example/istiod-vault-agent:0.2.0");
    assert.deepEqual(dep(updated).metadata.annotations, dep(stored).metadata.annotations);
    // Switching the sidecar form moves the sidecar; removal still restores the stored original.
    const regular = injectPodSpec(simulateApiserverDefaults(updated), { ...BASE_OPTS, nativeSidecar: false });
    assert.deepEqual(names(pod(regular).containers), ["discovery", "istiod-vault-agent"]);
    assert.deepEqual(names(pod(regular).initContainers), ["istiod-vault-agent-init"]);
    assert.deepEqual(removeInjection(simulateApiserverDefaults(regular)), original);
  });

  void it("refuses to clobber a foreign volume or container with one of the agent's names", () => {
    const x = istiodDeployment();
    pod(x).volumes.push({ name: "vault-token", emptyDir: {} });
    assert.throws(() => injectPodSpec(x, BASE_OPTS), /already has a volume named "vault-token"/);
    const y = istiodDeployment();
    pod(y).containers.push({ ...discovery(y), name: "istiod-vault-agent" });
    assert.throws(() => injectPodSpec(y, BASE_OPTS), /already has a container named "istiod-vault-agent"/);
    const z = istiodDeployment();
    discovery(z).name = "pilot";
    assert.throws(() => injectPodSpec(z, BASE_OPTS), /no container named "discovery"/);
    assert.throws(() => injectPodSpec({ kind: "Service", metadata: {} }, BASE_OPTS), /not a Deployment/);
  });
});

void describe("inject: removeInjection", () => {
  void it("remove(inject(x)) deep-equals x for both sidecar forms and with every option", () => {
    for (const nativeSidecar of [true, false]) {
      for (const extra of [{}, { vaultCaConfigMap: "vault-ca", trustDomain: "example.org", extraArgs: ["--ttl=1h"] }]) {
        const x = istiodDeployment();
        assert.deepEqual(removeInjection(injectPodSpec(x, { ...BASE_OPTS, nativeSidecar, ...extra })), x);
      }
    }
  });

  void it("restores a pod that had no cacerts volume, no securityContext and no annotations", () => {
    const x = istiodDeployment();
    const p = pod(x);
    p.volumes = p.volumes.filter((v) => v.name !== "cacerts");
    discovery(x).volumeMounts = discovery(x).volumeMounts.filter((m) => m.name !== "cacerts");
    drop(p, "securityContext");
    drop(dep(x).spec.template.metadata, "annotations");
    const y = injectPodSpec(x, BASE_OPTS);
    assert.deepEqual(pod(y).volumes.at(-3), { name: "cacerts", emptyDir: { medium: "Memory" } });
    assert.deepEqual(discovery(y).volumeMounts.slice(-2), [
      { name: "cacerts", mountPath: "/etc/cacerts", readOnly: true },
      { name: "istiod-vault-agent-socket", mountPath: "/var/run/istiod-vault-agent" },
    ]);
    assert.deepEqual(pod(y).securityContext, { fsGroup: 1337 });
    assert.equal(record(y).cacertsVolume, null);
    assert.equal(record(y).fsGroup, null);
    assert.deepEqual(injectPodSpec(y, BASE_OPTS), y);
    assert.deepEqual(removeInjection(y), x);
  });

  void it("restores a pod with no volumes and a discovery container with no mounts", () => {
    const x = istiodDeployment();
    drop(pod(x), "volumes");
    drop(discovery(x), "volumeMounts");
    const y = injectPodSpec(x, BASE_OPTS);
    assert.deepEqual(names(pod(y).volumes), ["cacerts", "vault-token", "istiod-vault-agent-socket"]);
    assert.deepEqual(names(discovery(y).volumeMounts), ["cacerts", "istiod-vault-agent-socket"]);
    assert.deepEqual(removeInjection(y), x);
  });

  void it("restores a different original fsGroup and keeps the rest of the pod securityContext", () => {
    const x = istiodDeployment();
    pod(x).securityContext = { fsGroup: 2000, runAsNonRoot: true };
    const y = injectPodSpec(x, BASE_OPTS);
    assert.deepEqual(pod(y).securityContext, { fsGroup: 1337, runAsNonRoot: true });
    assert.deepEqual(removeInjection(y), x);
  });

  void it("keeps annotations others added after injection", () => {
    const y = injectPodSpec(istiodDeployment(), BASE_OPTS);
    dep(y).metadata.annotations["deployment.kubernetes.io/revision"] = "2";
    assert.deepEqual(dep(removeInjection(y)).metadata.annotations, { "deployment.kubernetes.io/revision": "2" });
  });

  void it("leaves a Deployment that was never injected unchanged", () => {
    const x = istiodDeployment();
    assert.deepEqual(removeInjection(x), x);
  });

  void it("describeChanges names the changed paths, matching named list entries by name", () => {
    const x = istiodDeployment();
    const y = injectPodSpec(x, BASE_OPTS);
    const lines = describeChanges(x, y);
    assert.ok(lines.includes(`+ spec.template.spec.initContainers: ${JSON.stringify(pod(y).initContainers)}`));
    assert.ok(lines.some((l) => l.startsWith("+ spec.template.spec.volumes[name=vault-token]: ")));
    assert.ok(
      lines.includes('- spec.template.spec.volumes[name=cacerts].secret: {"secretName":"cacerts","optional":true}'),
    );
    assert.ok(lines.includes('+ spec.template.spec.volumes[name=cacerts].emptyDir: {"medium":"Memory"}'));
    // fsGroup was already 1337 in the chart: no line for it.
    assert.ok(!lines.some((l) => l.includes("securityContext.fsGroup")), lines.join("\n"));
    assert.deepEqual(describeChanges(x, structuredClone(x)), []);
  });
});

void describe("inject: parseInjectArgs", () => {
  void it("applies the defaults", () => {
    assert.deepEqual(parseInjectArgs(["--vault-addr=https://vault.vault:8200"]), {
      ...DEFAULT_INJECT_OPTIONS,
      name: "istiod",
      vaultAddress: "https://vault.vault:8200",
    });
  });

  void it("documents in --help the defaults it applies", () => {
    const o = parseInjectArgs(["--vault-addr=https://vault.vault:8200"]);
    const help = injectHelp();
    // The defaults the README and the chart rely on, as parsing applies them and as --help states them.
    const documented: [string, keyof InjectOptions, string][] = [
      ["--namespace", "namespace", "istio-system"],
      ["--name", "name", "istiod"],
      ["--image", "image", "ghcr.io/istiod-vault-agent/istiod-vault-agent:0.1.0"],
      ["--auth-role", "role", "istiod-agent"],
      ["--audience", "audience", "vault"],
      ["--ca-path", "caPath", "pki/root/sign-intermediate"],
      ["--http-port", "httpPort", "15300"],
      ["--native-sidecar", "nativeSidecar", "auto"],
    ];
    for (const [flag, field, value] of documented) {
      assert.equal(String(o[field]), value, field);
      const paragraph = help
        .slice(help.indexOf(`  ${flag} VALUE\n`))
        .split("\n")
        .slice(0, 2)
        .join("\n");
      assert.ok(paragraph.endsWith(`[default: ${value}]`), `${flag} in --help: ${paragraph}`);
    }
  });

  void it("parses every flag", () => {
    // Each flag with the fields it sets; every other field keeps its default (and --revision clears --name's).
    const cases: [string, Partial<InjectOptions>][] = [
      ["--namespace=istio-canary", { namespace: "istio-canary" }],
      ["--revision=1-24-0", { revision: "1-24-0", name: undefined }],
      ["--image=reg/agent:1", { image: "reg/agent:1" }],
      ["--vault-addr=https://v:8200", { vaultAddress: "https://v:8200" }],
      ["--vault-ca-configmap=vault-ca", { vaultCaConfigMap: "vault-ca" }],
      ["--auth-role=r", { role: "r" }],
      ["--audience=aud", { audience: "aud" }],
      ["--ca-path=pki_int/root/sign-intermediate", { caPath: "pki_int/root/sign-intermediate" }],
      ["--trust-domain=example.org", { trustDomain: "example.org" }],
      ["--http-port=15301", { httpPort: 15301 }],
      ["--native-sidecar=false", { nativeSidecar: false }],
      ["--agent-arg=--ttl=24h", {}],
      ["--agent-arg=--log-level=debug", { extraArgs: ["--ttl=24h", "--log-level=debug"] }],
      ["--dry-run", { dryRun: true }],
      ["--kubeconfig=/tmp/kc", { kubeconfig: "/tmp/kc" }],
    ];
    assert.deepEqual(
      parseInjectArgs(cases.map(([flag]) => flag)),
      Object.assign({ ...DEFAULT_INJECT_OPTIONS }, ...cases.map(([, fields]) => fields)),
    );
    assert.equal(parseInjectArgs(["--vault-addr=https://v", "--native-sidecar=true"]).nativeSidecar, true);
  });

  void it("needs --vault-addr unless --remove", () => {
    assert.throws(
      () => parseInjectArgs([]),
      (e: unknown) => e instanceof ConfigError && /--vault-addr: missing/.test(e.message),
    );
    const o = parseInjectArgs(["--remove"]);
    assert.equal(o.remove, true);
    assert.equal(o.vaultAddress, "");
    assert.equal(parseInjectArgs(["--help"]).help, true);
  });

  void it("reports every problem at once", () => {
    assert.throws(
      () =>
        parseInjectArgs([
          "--vault-addr=vault:8200",
          "--native-sidecar=maybe",
          "--http-port=15017",
          "--name=istiod",
          "--revision=canary",
          "--namespace=Istio_System",
          "--ca-path=pki/issue/x",
        ]),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.equal(e.problems.length, 6, e.message);
        assert.match(e.message, /--native-sidecar: "maybe" is invalid; expected true, false or auto/);
        assert.match(e.message, /--http-port: "15017" is invalid; expected a port .* not used by istiod/);
        assert.match(e.message, /--name and --revision/);
        assert.match(e.message, /--namespace: "Istio_System"/);
        assert.match(e.message, /--ca-path: "pki\/issue\/x"/);
        assert.match(e.message, /--vault-addr: "vault:8200" is invalid; expected an https:\/\//);
        return true;
      },
    );
    assert.throws(() => parseInjectArgs(["--bogus"]), ConfigError);
    assert.throws(() => parseInjectArgs(["--remove", "positional"]), ConfigError);
    assert.throws(
      () => parseInjectArgs(["--remove", "--http-port=70000"]),
      /--http-port: "70000" is invalid; expected a port from 1 to 65535/,
    );
  });

  void it("--use-policy injects --policy-name (the Deployment's name) and only pod-layout flags, none shadowing", () => {
    const o = parseInjectArgs(["--use-policy", "--revision=canary"]);
    assert.equal(o.usePolicy, true);
    const x = istiodDeployment();
    (x as { metadata: { name: string } }).metadata.name = "istiod-canary";
    const y = injectPodSpec(x, { ...o, nativeSidecar: true });
    const example: unknown = parseYaml(
      readFileSync(join(repoRoot(), "manifests/examples/root-trust-policy.yaml"), "utf8"),
    );
    for (const c of [
      byName(pod(y).initContainers, "istiod-vault-agent-init"),
      byName(pod(y).initContainers, "istiod-vault-agent"),
    ]) {
      assert.deepEqual(c.args.slice(1), [
        "--policy-name=istiod-canary",
        "--cacerts-dir=/etc/cacerts",
        "--token-path=/var/run/secrets/tokens/vault-token",
        "--socket=/var/run/istiod-vault-agent/agent.sock",
        "--http-addr=0.0.0.0:15300",
      ]);
      assert.deepEqual(shadowingProblems(AGENT_FLAGS, parseFlags(c.args.slice(1)), {}, example, "example"), []);
    }
    assert.throws(
      () => parseInjectArgs(["--use-policy", "--vault-addr=https://v:8200", "--auth-role=r"]),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.match(e.message, /--vault-addr: not with --use-policy; the RootTrustPolicy sets this/);
        assert.match(e.message, /--auth-role: not with --use-policy/);
        return true;
      },
    );
  });
});

void describe("inject --mode=mesh-ca", () => {
  const MESH = { ...BASE_OPTS, mode: "mesh-ca" as const };

  void it("adds only the native sidecar (CA listener, istiod's TLS files, root ConfigMaps) and no cacerts", () => {
    const x = istiodDeployment();
    const out = injectPodSpec(x, MESH);
    const p = pod(out);
    assert.deepEqual(
      names(p.initContainers).filter((n) => n.startsWith("istiod-vault-agent")),
      ["istiod-vault-agent"],
    );
    const sidecar = byName(p.initContainers, "istiod-vault-agent");
    assert.equal(sidecar.restartPolicy, "Always");
    for (const a of [
      "--istio-ca-addr=0.0.0.0:15013",
      "--istio-ca-names=istiod-vault-agent.istio-system.svc",
      "--istiod-tls-dir=/etc/istiod-vault-agent/istiod-tls",
      "--root-configmaps",
    ])
      assert.ok(sidecar.args.includes(a), `${a} in ${sidecar.args.join(" ")}`);
    assert.ok(!sidecar.args.some((a) => a.startsWith("--cacerts-dir") || a === "--key-export"));
    assert.deepEqual(byName(p.volumes, "istiod-vault-agent-istiod-tls").emptyDir, {
      medium: "Memory",
      sizeLimit: "1Mi",
    });
    // Istio's own optional cacerts Secret is left as it was.
    assert.deepEqual(byName(p.volumes, "cacerts"), byName(pod(x).volumes, "cacerts"));
    const d = discovery(out) as unknown as Container & { env: { name: string; value?: string }[] };
    assert.deepEqual(byName(d.env, "ENABLE_CA_SERVER"), { name: "ENABLE_CA_SERVER", value: "false" });
    for (const a of ["--tlsCertFile=", "--tlsKeyFile=", "--caCertFile="])
      assert.ok(
        d.args.some((x) => x.startsWith(a + "/etc/istiod-vault-agent/istiod-tls/")),
        a,
      );
    assert.deepEqual(byName(d.volumeMounts, "istiod-vault-agent-istiod-tls"), {
      name: "istiod-vault-agent-istiod-tls",
      mountPath: "/etc/istiod-vault-agent/istiod-tls",
      readOnly: true,
    });
  });

  void it("names the CA Service and the revision after a revisioned Deployment", () => {
    const x = istiodDeployment();
    (x as { metadata: { name: string } }).metadata.name = "istiod-canary";
    const sidecar = byName(pod(injectPodSpec(x, MESH)).initContainers, "istiod-vault-agent");
    assert.ok(sidecar.args.includes("--istio-ca-names=istiod-vault-agent-canary.istio-system.svc"));
    assert.ok(sidecar.args.includes("--revision=canary"));
  });

  void it("remove(inject(x)) deep-equals x, and switching modes round-trips", () => {
    const x = istiodDeployment();
    assert.deepEqual(removeInjection(injectPodSpec(x, MESH)), x);
    assert.deepEqual(removeInjection(injectPodSpec(injectPodSpec(x, BASE_OPTS), MESH)), x);
    assert.deepEqual(injectPodSpec(injectPodSpec(x, MESH), MESH), injectPodSpec(x, MESH), "idempotent");
  });

  void it("refuses a regular sidecar: istiod must wait for its TLS files", () => {
    assert.throws(() => injectPodSpec(istiodDeployment(), { ...MESH, nativeSidecar: false }), /native sidecar/);
    assert.throws(
      () => parseInjectArgs(["--vault-addr=https://v:8200", "--mode=mesh-ca", "--native-sidecar=false"]),
      /--native-sidecar=false: not with --mode=mesh-ca/,
    );
    assert.equal(parseInjectArgs(["--vault-addr=https://v:8200"]).mode, "cacerts");
    assert.throws(() => parseInjectArgs(["--vault-addr=https://v:8200", "--mode=istio-csr"]), /cacerts or mesh-ca/);
  });
});
