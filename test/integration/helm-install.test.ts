// The Helm install path as CI runs it: helm (built from its Go module) lints and renders the project's chart and
// Istio's own istiod chart (from the pinned istio.io/istio module) with manifests/helm/istiod-values.yaml, for the
// default revision and a canary, and every rendered object is accepted by the real test apiserver
// (kubectl apply --dry-run=server). The relay Deployments' rendered args go through the CLI's own parser. The mesh-CA
// mode too: the project chart's meshCa/rootConfigMaps/rbac values render exactly their objects (and their RBAC, applied
// for real, answers kubectl auth can-i as the mode needs), and Istio's chart with manifests/helm/istiod-values-mesh-ca.yaml
// runs istiod without its CA server and the agent with the flags `inject --mode=mesh-ca` gives it.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { lstatSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { TestEnv, repoRoot } from "../env/harness.js";
import { parseInjectArgs } from "../../src/commands/inject.js";
import { injectPodSpec } from "../../src/inject/pod-template.js";
import { istiodDeployment } from "../env/istiod-deployment.js";
import { nodeBinary } from "../env/agent-process.js";
import { istiodChartDir, renderIstiod, shippedIstiodValues } from "../env/istio-install.js";
import {
  helm,
  projectChartDir,
  renderProjectChart,
  renderedObjects,
  toYamlStream,
  valuesArgs,
  type KubeObject,
} from "../env/project-chart.js";

const ISTIO_NS = "istio-system";
const RELAY_NS = "gloo-mesh";
const CRD_FILE = join(repoRoot(), "manifests/crd/roottrustpolicies.yaml");
const MESH_CA_VALUES = join(repoRoot(), "manifests/helm/istiod-values-mesh-ca.yaml");

/** Everything the chart can render, on: two revisions, policies, monitoring, the relay server and agent. */
const EVERYTHING: Record<string, unknown> = {
  revisions: ["default", "canary"],
  rbac: { tokenReview: true, nodeAuthorization: true, remoteClusterSecrets: true },
  rootTrustPolicies: {
    create: true,
    spec: {
      config: {
        agentCa: {
          vault: {
            server: "https://vault.vault.svc:8200",
            caPath: "pki/root/sign-intermediate",
            kubernetesAuth: { role: "istiod-agent", mountPath: "kubernetes" },
          },
        },
      },
    },
    overrides: { canary: { config: { agentCa: { vault: { kubernetesAuth: { role: "istiod-canary-agent" } } } } } },
  },
  monitoring: {
    serviceMonitor: { enabled: true },
    prometheusRule: { enabled: true },
    grafanaDashboard: { enabled: true },
  },
  relay: {
    namespace: RELAY_NS,
    vault: { address: "https://vault.vault.svc:8200", caConfigMap: "vault-ca" },
    server: {
      enabled: true,
      clusters: ["cluster1", "cluster2"],
      signingIntermediate: true,
      issuer: { enabled: true },
    },
    agent: { enabled: true, cluster: "cluster1" },
  },
};

/** The relay agent of a workload cluster without Vault (bootstrap mode: no Vault flags at all). */
const BOOTSTRAP_AGENT: Record<string, unknown> = {
  relay: {
    agent: {
      enabled: true,
      cluster: "cluster1",
      bootstrap: { address: "istiod-vault-agent-relay-server.gloo-mesh:9910", serverName: "relay.example.org" },
    },
  },
};

/**
 * Stand-ins for prometheus-operator's CRDs, written here: only the group, kinds and served version matter for a
 * dry-run apply, so the schema accepts any object.
 */
function standInCrd(kind: string, plural: string): KubeObject {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: `${plural}.monitoring.coreos.com` },
    spec: {
      group: "monitoring.coreos.com",
      scope: "Namespaced",
      names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List` },
      versions: [
        {
          name: "v1",
          served: true,
          storage: true,
          schema: { openAPIV3Schema: { type: "object", "x-kubernetes-preserve-unknown-fields": true } },
        },
      ],
    },
  };
}

interface Container {
  name: string;
  image: string;
  restartPolicy?: string;
  args?: string[];
  env?: { name: string; value?: string }[];
  ports?: { name?: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  resources?: unknown;
  securityContext?: Record<string, unknown>;
}
interface PodSpec {
  serviceAccountName?: string;
  initContainers?: Container[];
  containers: Container[];
  volumes?: ({ name: string } & Record<string, unknown>)[];
  securityContext?: Record<string, unknown>;
}
type Deployment = KubeObject & {
  spec: { template: { metadata: { labels: Record<string, string> }; spec: PodSpec } };
};
type RoleBinding = KubeObject & {
  roleRef: { kind: string; name: string };
  subjects: { kind: string; name: string; namespace: string }[];
};
type Service = KubeObject & {
  spec: {
    selector: Record<string, string>;
    ports: { name: string; port: number; targetPort: number; protocol: string }[];
  };
};
type Role = KubeObject & { rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[] };

const ofKind = <T extends KubeObject>(objects: KubeObject[], kind: string) =>
  objects.filter((o) => o.kind === kind) as T[];

/** The project chart's values for the Istio CA listener and the mesh-CA mode; each on alone, then all together. */
interface MeshCaCase {
  meshCa?: boolean;
  rootConfigMaps?: boolean;
  nodeAuthorization?: boolean;
  remoteClusterSecrets?: boolean;
}
const MESH_CA_CASES: MeshCaCase[] = [
  {},
  { meshCa: true },
  { rootConfigMaps: true },
  { nodeAuthorization: true },
  { remoteClusterSecrets: true },
  { meshCa: true, rootConfigMaps: true, nodeAuthorization: true, remoteClusterSecrets: true },
];
const meshCaValues = (c: MeshCaCase, revisions = ["default", "canary"]): Record<string, unknown> => ({
  revisions,
  meshCa: { enabled: !!c.meshCa },
  rootConfigMaps: { enabled: !!c.rootConfigMaps },
  rbac: { nodeAuthorization: !!c.nodeAuthorization, remoteClusterSecrets: !!c.remoteClusterSecrets },
});

/** Exactly the objects a case must render (for the default and canary revisions): anything more or less fails. */
function expectedMeshCaObjects(c: MeshCaCase): string[] {
  const names = ["Role/istiod-vault-agent", "RoleBinding/istiod-vault-agent", "RoleBinding/istiod-vault-agent-canary"];
  if (c.meshCa)
    names.push(
      "Service/istiod-vault-agent",
      "Service/istiod-vault-agent-canary",
      `ClusterRoleBinding/istiod-vault-agent-tokenreview-${ISTIO_NS}`,
    );
  if (c.meshCa || c.rootConfigMaps)
    names.push(
      `ClusterRole/istiod-vault-agent-root-configmaps-${ISTIO_NS}`,
      `ClusterRoleBinding/istiod-vault-agent-root-configmaps-${ISTIO_NS}`,
    );
  if (c.nodeAuthorization)
    names.push(
      `ClusterRole/istiod-vault-agent-pod-reader-${ISTIO_NS}`,
      `ClusterRoleBinding/istiod-vault-agent-pod-reader-${ISTIO_NS}`,
    );
  if (c.remoteClusterSecrets)
    names.push("Role/istiod-vault-agent-remote-secrets", "RoleBinding/istiod-vault-agent-remote-secrets");
  return names.sort();
}

/** An agent's flags as a map (`--revision=default` is no revision to the agent: the default istiod DNS name). */
function flagMap(args: string[]): Map<string, string | true> {
  const m = new Map<string, string | true>();
  for (const a of args.slice(1)) {
    const [, flag, value] = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(a) ?? assert.fail(`not a --flag[=value]: ${a}`);
    if (flag === "revision" && value === "default") continue;
    m.set(flag!, value ?? true);
  }
  return m;
}

describe("Helm: the project chart and Istio's istiod chart lint, render and are accepted by the apiserver", () => {
  let env: TestEnv;
  let dir: string;

  /** kubectl against the test apiserver; fails the test with kubectl's message. */
  const kubectl = (args: string[], input?: string): string => {
    const res = spawnSync("kubectl", [`--kubeconfig=${env.kube.kubeconfigPath}`, ...args], {
      encoding: "utf8",
      input,
      maxBuffer: 16 << 20,
    });
    assert.equal(res.status, 0, `kubectl ${args.join(" ")}: ${res.stderr}`);
    return res.stdout;
  };

  /** Every object of `objects` through a server-side dry run; returns kubectl's per-object lines. */
  const dryRun = (objects: KubeObject[]): string[] => {
    const out = kubectl(["apply", "--dry-run=server", "-f", "-"], toYamlStream(objects));
    const lines = out.trim().split("\n");
    assert.equal(lines.length, objects.length, `one line per object:\n${out}`);
    for (const l of lines) assert.match(l, /\(server dry run\)$/);
    return lines;
  };

  before(async () => {
    env = await TestEnv.start({ vault: false });
    dir = mkdtempSync(join(env.dir, "helm-install-"));
    await env.createNamespace(ISTIO_NS);
    await env.createNamespace(RELAY_NS);
    // What must exist for real before a dry run: the namespaces above and the CRDs (the project's from the chart).
    for (const crd of [
      standInCrd("ServiceMonitor", "servicemonitors"),
      standInCrd("PrometheusRule", "prometheusrules"),
    ]) {
      const file = join(dir, `${crd.metadata.name}.json`);
      writeFileSync(file, JSON.stringify(crd));
      await env.installCrd(file);
    }
    const crds = ofKind(renderedObjects(renderProjectChart(dir, { includeCrds: true })), "CustomResourceDefinition");
    assert.equal(crds.length, 1, "the chart ships the RootTrustPolicy CRD");
    const file = join(dir, "rtp-crd.json");
    writeFileSync(file, JSON.stringify(crds[0]));
    await env.installCrd(file);
  });
  after(async () => env?.stop());

  it("the chart's CRD is the canonical manifests/crd file itself (a symlink), in templates and in the package", () => {
    const link = join(projectChartDir(), "crds/roottrustpolicies.yaml");
    assert.ok(lstatSync(link).isSymbolicLink(), "crds/roottrustpolicies.yaml is a symlink, not a copy");
    const canonical = parseYaml(readFileSync(CRD_FILE, "utf8")) as unknown;
    const [rendered] = ofKind(
      renderedObjects(renderProjectChart(dir, { includeCrds: true })),
      "CustomResourceDefinition",
    );
    assert.deepEqual(rendered, canonical);
    // A packaged chart carries the file's content (helm resolves the link), so a published chart is complete.
    const pkgDir = mkdtempSync(join(dir, "package-"));
    const pkg = helm(dir, ["package", projectChartDir(), "--destination", pkgDir]);
    assert.equal(pkg.status, 0, pkg.stderr);
    const packaged = execFileSync(
      "tar",
      ["-xzf", join(pkgDir, "istiod-vault-agent-0.1.0.tgz"), "-O", "istiod-vault-agent/crds/roottrustpolicies.yaml"],
      { encoding: "utf8" },
    );
    assert.deepEqual(parseYaml(packaged), canonical);
    // kustomize users still build the same file from its own directory.
    const kustomized = execFileSync("kubectl", ["kustomize", join(repoRoot(), "manifests/crd")], { encoding: "utf8" });
    assert.deepEqual(parseYaml(kustomized), canonical);
  });

  it("helm lint --strict passes for the project chart (defaults and everything on) and Istio's chart with our values", () => {
    for (const values of [[], [EVERYTHING], [BOOTSTRAP_AGENT], ...MESH_CA_CASES.map((c) => [meshCaValues(c)])]) {
      const res = helm(dir, ["lint", "--strict", projectChartDir(), ...valuesArgs(dir, values)]);
      assert.equal(res.status, 0, `project chart ${JSON.stringify(values)}: ${res.stdout}${res.stderr}`);
      assert.match(res.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
    }
    const istioValues = join(repoRoot(), "manifests/helm/istiod-values.yaml");
    for (const file of [istioValues, MESH_CA_VALUES]) {
      for (const extra of [[], ["--set", "revision=canary"]]) {
        const res = helm(dir, ["lint", "--strict", istiodChartDir(), "-f", file, ...extra]);
        assert.equal(res.status, 0, `istiod chart -f ${file} ${extra.join(" ")}: ${res.stdout}${res.stderr}`);
        assert.match(res.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
      }
    }
  });

  it("the project chart's default render is the per-revision RBAC, and the apiserver accepts it", () => {
    const objects = renderedObjects(renderProjectChart(dir, {}));
    assert.deepEqual(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort(), [
      "Role/istiod-vault-agent",
      "RoleBinding/istiod-vault-agent",
    ]);
    const [binding] = ofKind<RoleBinding>(objects, "RoleBinding");
    assert.deepEqual(binding!.subjects, [{ kind: "ServiceAccount", name: "istiod", namespace: ISTIO_NS }]);
    dryRun(objects);
  });

  it("everything on (default + canary, policies, monitoring, relay) renders objects the apiserver accepts", () => {
    const objects = renderedObjects(renderProjectChart(dir, { values: [EVERYTHING] }));
    const lines = dryRun(objects);
    const kinds = [...new Set(objects.map((o) => o.kind))].sort();
    assert.deepEqual(kinds, [
      "ClusterRole",
      "ClusterRoleBinding",
      "ConfigMap",
      "Deployment",
      "PrometheusRule",
      "Role",
      "RoleBinding",
      "RootTrustPolicy",
      "Service",
      "ServiceAccount",
      "ServiceMonitor",
    ]);
    assert.ok(
      lines.some((l) => /^roottrustpolicy\.istiod-vault-agent\.io\/istiod-canary created \(server dry run\)$/.test(l)),
    );

    // RBAC per revision: the agent's Role has the rules it needs (the status Lease included), bound to both
    // revisions' service accounts.
    const role = ofKind<Role>(objects, "Role").find((r) => r.metadata.name === "istiod-vault-agent")!;
    assert.deepEqual(
      role.rules.find((r) => r.apiGroups.includes("coordination.k8s.io")),
      { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get", "create", "update"] },
    );
    const subjects = ofKind<RoleBinding>(objects, "RoleBinding")
      .filter((b) => b.metadata.namespace === ISTIO_NS && !b.metadata.name.endsWith("-remote-secrets"))
      .flatMap((b) => b.subjects.map((s) => s.name))
      .sort();
    assert.deepEqual(subjects, ["istiod", "istiod-canary"]);
    const tokenReview = ofKind<RoleBinding>(objects, "ClusterRoleBinding").find((b) =>
      b.metadata.name.includes("tokenreview"),
    )!;
    assert.deepEqual(tokenReview.subjects.map((s) => s.name).sort(), ["istiod", "istiod-canary"]);
    // The Istio CA listener's node authorisation reads pods cluster-wide; its ClusterID reads the remote-cluster
    // Secrets in the release namespace only.
    const podReader = ofKind<Role>(objects, "ClusterRole").find((r) => r.metadata.name.includes("pod-reader"))!;
    assert.deepEqual(podReader.rules, [{ apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"] }]);
    const podBinding = ofKind<RoleBinding>(objects, "ClusterRoleBinding").find((b) =>
      b.metadata.name.includes("pod-reader"),
    )!;
    assert.deepEqual(podBinding.subjects.map((s) => s.name).sort(), ["istiod", "istiod-canary"]);
    const secrets = ofKind<Role>(objects, "Role").find((r) => r.metadata.name.endsWith("-remote-secrets"))!;
    assert.equal(secrets.metadata.namespace, ISTIO_NS);
    assert.deepEqual(secrets.rules, [{ apiGroups: [""], resources: ["secrets"], verbs: ["get", "list", "watch"] }]);

    // Policies per revision, named after the Deployment; the canary's override merged over the shared spec.
    const policies = ofKind<KubeObject & { spec: { config: { agentCa: { vault: Record<string, unknown> } } } }>(
      objects,
      "RootTrustPolicy",
    );
    assert.deepEqual(policies.map((p) => p.metadata.name).sort(), ["istiod", "istiod-canary"]);
    const canary = policies.find((p) => p.metadata.name === "istiod-canary")!.spec.config.agentCa.vault;
    assert.deepEqual(canary.kubernetesAuth, {
      role: "istiod-canary-agent",
      mountPath: "kubernetes",
    });
    assert.equal(canary.server, "https://vault.vault.svc:8200");

    // The PrometheusRule's spec is the rules file rendered with the chart's values: a promtool-style `groups` list.
    const rule = ofKind<KubeObject & { spec: { groups: { rules: unknown[] }[] } }>(objects, "PrometheusRule")[0]!;
    assert.ok(rule.spec.groups.length > 0 && rule.spec.groups.every((g) => g.rules.length > 0));
    // Helm's template text is gone; Prometheus's own ({{ $labels.pod }}, {{ $value }} in annotations) must remain.
    const ruleText = JSON.stringify(rule.spec);
    assert.doesNotMatch(ruleText, /\.Values|\{\{-|-\}\}|\{\{ *(tpl|include|if|end)\b/, "no Helm template text left");
    assert.match(ruleText, /\{\{ \$labels\.pod \}\}/, "Prometheus's annotation templates survive the render");
    const dashboard = ofKind<KubeObject & { data: Record<string, string> }>(objects, "ConfigMap")[0]!;
    assert.equal(dashboard.metadata.labels?.grafana_dashboard, "1");
    assert.doesNotThrow(() => JSON.parse(dashboard.data["istiod-vault-agent.json"]!));

    // The relay pods run as the one UID, read-only, without capabilities, with the default image.
    for (const d of ofKind<Deployment>(objects, "Deployment")) {
      const pod = d.spec.template.spec;
      assert.equal(d.metadata.namespace, RELAY_NS);
      assert.deepEqual(pod.securityContext, {
        runAsNonRoot: true,
        runAsUser: 65532,
        runAsGroup: 1337,
        seccompProfile: { type: "RuntimeDefault" },
      });
      const [c] = pod.containers;
      assert.equal(c!.image, "ghcr.io/istiod-vault-agent/istiod-vault-agent:0.1.0");
      assert.equal(c!.securityContext?.readOnlyRootFilesystem, true);
      assert.deepEqual(c!.securityContext?.capabilities, { drop: ["ALL"] });
    }
  });

  it("the relay Deployments' rendered args are accepted by the CLI's relay parser (a renamed flag fails here)", () => {
    const main = join(repoRoot(), "dist/src/main.js");
    const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("VAULT_")));
    /** `relay ARGS --print-policy`: parses and cross-checks every flag without contacting Vault or the apiserver. */
    const check = (args: string[]) =>
      spawnSync(nodeBinary(), [main, ...args, "--print-policy"], { encoding: "utf8", env: cleanEnv });
    const deployments = [EVERYTHING, BOOTSTRAP_AGENT].flatMap((v) =>
      ofKind<Deployment>(renderedObjects(renderProjectChart(dir, { values: [v] })), "Deployment"),
    );
    assert.deepEqual(deployments.map((d) => d.metadata.name).sort(), [
      "istiod-vault-agent-relay-agent",
      "istiod-vault-agent-relay-agent",
      "istiod-vault-agent-relay-server",
    ]);
    for (const d of deployments) {
      const args = d.spec.template.spec.containers[0]!.args!;
      assert.equal(args[0], "relay");
      const res = check(args);
      assert.equal(res.status, 0, `${d.metadata.name}: relay ${args.join(" ")}\n${res.stderr}`);
      assert.match(res.stdout, /^path "/m, "the parser got as far as printing the policy");
    }
    // The check itself can fail: one unknown flag is refused with a usage error.
    const bad = check([...deployments[0]!.spec.template.spec.containers[0]!.args!, "--no-such-flag=1"]);
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(bad.stderr, /no-such-flag/);
  });

  it("Istio's istiod chart with our values renders the agent for the default and a canary revision, and the apiserver accepts it", () => {
    const rbac = renderedObjects(renderProjectChart(dir, { values: [{ revisions: ["default", "canary"] }] }));
    const bound = new Set(ofKind<RoleBinding>(rbac, "RoleBinding").flatMap((b) => b.subjects.map((s) => s.name)));
    for (const [release, revision, deployment] of [
      ["istiod", undefined, "istiod"],
      ["istiod-canary", "canary", "istiod-canary"],
    ] as const) {
      const objects = renderedObjects(
        renderIstiod(dir, { release, ...(revision ? { revision } : {}), values: [shippedIstiodValues()] }),
      );
      const dep = ofKind<Deployment>(objects, "Deployment").find((d) => d.metadata.name === deployment);
      assert.ok(dep, `${release}: a Deployment named ${deployment}`);
      const pod = dep.spec.template.spec;
      const agent = pod.initContainers?.find((c) => c.name === "istiod-vault-agent");
      assert.ok(agent, `${deployment}: the agent container`);
      assert.equal(agent.restartPolicy, "Always", "a native sidecar");
      assert.ok(agent.args?.includes(`--policy-name=${deployment}`), `${deployment}: ${agent.args?.join(" ")}`);
      // The service account Istio's chart runs this revision as is one the project chart's RBAC binds.
      assert.ok(bound.has(pod.serviceAccountName!), `${pod.serviceAccountName} has the agent's RBAC`);
      dryRun(objects);
    }
  });

  it("mesh-CA values (meshCa, rootConfigMaps, nodeAuthorization, remoteClusterSecrets; alone and together) render exactly their objects, and the apiserver accepts them", () => {
    const subjects = (b: RoleBinding) => b.subjects.map((s) => `${s.kind}/${s.namespace}/${s.name}`).sort();
    const bothAccounts = [`ServiceAccount/${ISTIO_NS}/istiod`, `ServiceAccount/${ISTIO_NS}/istiod-canary`];
    for (const c of MESH_CA_CASES) {
      const what = JSON.stringify(c);
      const objects = renderedObjects(renderProjectChart(dir, { values: [meshCaValues(c)] }));
      // Presence and absence at once: each value adds its objects and nothing else.
      assert.deepEqual(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort(), expectedMeshCaObjects(c), what);
      const byName = <T extends KubeObject>(kind: string, name: string) =>
        ofKind<T>(objects, kind).find((o) => o.metadata.name === name)!;

      // The Lease that elects the one ConfigMap writer (and the status writer) is in the base Role in every case.
      const role = byName<Role>("Role", "istiod-vault-agent");
      assert.deepEqual(
        role.rules.find((r) => r.apiGroups.includes("coordination.k8s.io")),
        { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get", "create", "update"] },
        what,
      );
      // Nothing but the base Role grants anything namespaced unless remoteClusterSecrets is on, and no Role grants
      // Secrets otherwise (the agent must not read istio-system's Secrets for nothing).
      const secretsRules = ofKind<Role>(objects, "Role").flatMap((r) =>
        r.rules.filter((x) => x.resources.includes("secrets")),
      );
      assert.equal(secretsRules.length, c.remoteClusterSecrets ? 1 : 0, `${what}: Secrets rules`);

      if (c.meshCa) {
        // One CA Service per revision, selecting that revision's istiod pods, 15012 (Istio's CA port) to the agent's 15013.
        for (const [name, rev] of [
          ["istiod-vault-agent", "default"],
          ["istiod-vault-agent-canary", "canary"],
        ] as const) {
          const svc = byName<Service>("Service", name);
          assert.equal(svc.metadata.namespace, ISTIO_NS);
          assert.deepEqual(svc.spec.selector, { app: "istiod", "istio.io/rev": rev }, name);
          assert.deepEqual(
            svc.spec.ports,
            [{ name: "grpc-istio-ca", port: 15012, targetPort: 15013, protocol: "TCP" }],
            name,
          );
        }
        // TokenReview for the CA listener's callers: system:auth-delegator, bound to both revisions.
        const tr = byName<RoleBinding>("ClusterRoleBinding", `istiod-vault-agent-tokenreview-${ISTIO_NS}`);
        assert.deepEqual(tr.roleRef, {
          apiGroup: "rbac.authorization.k8s.io",
          kind: "ClusterRole",
          name: "system:auth-delegator",
        });
        assert.deepEqual(subjects(tr), bothAccounts, what);
      }
      if (c.meshCa || c.rootConfigMaps) {
        // Root distribution: watch namespaces, keep ConfigMaps (create/update, never delete), bound to both revisions.
        const cr = byName<Role>("ClusterRole", `istiod-vault-agent-root-configmaps-${ISTIO_NS}`);
        assert.deepEqual(cr.rules, [
          { apiGroups: [""], resources: ["namespaces"], verbs: ["get", "list", "watch"] },
          { apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list", "watch", "create", "update"] },
        ]);
        const crb = byName<RoleBinding>("ClusterRoleBinding", `istiod-vault-agent-root-configmaps-${ISTIO_NS}`);
        assert.equal(crb.roleRef.name, cr.metadata.name);
        assert.deepEqual(subjects(crb), bothAccounts, what);
      }
      if (c.nodeAuthorization) {
        const cr = byName<Role>("ClusterRole", `istiod-vault-agent-pod-reader-${ISTIO_NS}`);
        assert.deepEqual(cr.rules, [{ apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"] }]);
        const crb = byName<RoleBinding>("ClusterRoleBinding", `istiod-vault-agent-pod-reader-${ISTIO_NS}`);
        assert.equal(crb.roleRef.name, cr.metadata.name);
        assert.deepEqual(subjects(crb), bothAccounts, what);
      }
      if (c.remoteClusterSecrets) {
        const r = byName<Role>("Role", "istiod-vault-agent-remote-secrets");
        assert.equal(r.metadata.namespace, ISTIO_NS, "Secrets of the release namespace only");
        assert.deepEqual(r.rules, [{ apiGroups: [""], resources: ["secrets"], verbs: ["get", "list", "watch"] }]);
        const rb = byName<RoleBinding>("RoleBinding", "istiod-vault-agent-remote-secrets");
        assert.deepEqual(rb.roleRef, { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: r.metadata.name });
        assert.deepEqual(subjects(rb), bothAccounts, what);
      }
      dryRun(objects);
    }

    // "" and "default" are one revision (values.yaml): one CA Service and one binding, not two objects of one name.
    const dup = renderedObjects(renderProjectChart(dir, { values: [meshCaValues({ meshCa: true }, ["", "default"])] }));
    assert.deepEqual(
      ofKind(dup, "Service").map((o) => o.metadata.name),
      ["istiod-vault-agent"],
    );
    dryRun(dup);
  });

  it("the mesh-CA RBAC, applied for real, lets each revision's agent do what the mode needs and no more (kubectl auth can-i)", () => {
    const all = MESH_CA_CASES.at(-1)!;
    kubectl(
      ["apply", "-f", "-"],
      toYamlStream(renderedObjects(renderProjectChart(dir, { values: [meshCaValues(all)] }))),
    );
    const can = (sa: string, verb: string, resource: string, ns?: string) =>
      spawnSync(
        "kubectl",
        [
          `--kubeconfig=${env.kube.kubeconfigPath}`,
          "auth",
          "can-i",
          verb,
          resource,
          `--as=system:serviceaccount:${ISTIO_NS}:${sa}`,
          ...(ns ? ["-n", ns] : []),
        ],
        { encoding: "utf8" },
      ).stdout.trim();
    for (const sa of ["istiod", "istiod-canary"]) {
      for (const [verb, resource, ns, answer] of [
        ["create", "tokenreviews.authentication.k8s.io", undefined, "yes"],
        ["watch", "namespaces", undefined, "yes"],
        ["create", "configmaps", "default", "yes"],
        ["update", "configmaps", "default", "yes"],
        ["delete", "configmaps", "default", "no"],
        ["create", "leases.coordination.k8s.io", ISTIO_NS, "yes"],
        ["update", "leases.coordination.k8s.io", ISTIO_NS, "yes"],
        ["create", "leases.coordination.k8s.io", "default", "no"],
        ["list", "pods", "default", "yes"],
        ["create", "pods", "default", "no"],
        ["get", "secrets", ISTIO_NS, "yes"],
        ["get", "secrets", "default", "no"],
        ["create", "secrets", ISTIO_NS, "no"],
      ] as const)
        assert.equal(can(sa, verb, resource, ns), answer, `${sa} ${verb} ${resource} -n ${ns ?? "(cluster)"}`);
    }
    // An account the chart does not bind gets none of it (the check can say no).
    assert.equal(can("istiod-other", "create", "configmaps", "default"), "no");
  });

  it("Istio's istiod chart with istiod-values-mesh-ca.yaml: no agent cacerts, CA server off, istiod's TLS from the agent, the agent inject would add; the apiserver accepts it", () => {
    const project = renderedObjects(renderProjectChart(dir, { values: [meshCaValues({ meshCa: true })] }));
    const bound = new Set(ofKind<RoleBinding>(project, "RoleBinding").flatMap((b) => b.subjects.map((s) => s.name)));
    const meshValues = parseYaml(readFileSync(MESH_CA_VALUES, "utf8")) as Record<string, unknown>;
    for (const [release, revision, deployment, service] of [
      ["istiod", undefined, "istiod", "istiod-vault-agent"],
      ["istiod-canary", "canary", "istiod-canary", "istiod-vault-agent-canary"],
    ] as const) {
      const host = `${service}.${ISTIO_NS}.svc`;
      // A revision's proxies find their own revision's CA Service (README: global.caAddress per revision).
      const values = [meshValues, ...(revision ? [{ global: { caAddress: `${host}:15012` } }] : [])];
      const objects = renderedObjects(renderIstiod(dir, { release, ...(revision ? { revision } : {}), values }));
      const dep = ofKind<Deployment>(objects, "Deployment").find((d) => d.metadata.name === deployment);
      assert.ok(dep, `${release}: a Deployment named ${deployment}`);
      const pod = dep.spec.template.spec;
      const agent = pod.initContainers?.find((c) => c.name === "istiod-vault-agent");
      assert.ok(agent, `${deployment}: the agent container`);
      assert.equal(agent.restartPolicy, "Always", "a native sidecar: istiod starts after its TLS files exist");
      const discovery = pod.containers.find((c) => c.name === "discovery")!;
      const args = agent.args!;
      const flags = flagMap(args);

      // The agent: the mode's flags, per revision; no cacerts directory and no key export.
      assert.equal(args[0], "sidecar");
      assert.equal(flags.get("policy-name"), deployment);
      assert.equal(flags.get("istio-ca-addr"), "0.0.0.0:15013");
      assert.equal(flags.get("istio-ca-names"), host, "the certificate names the CA Service proxies dial");
      assert.equal(flags.get("istiod-tls-dir"), "/etc/istiod-vault-agent/istiod-tls");
      assert.equal(flags.get("root-configmaps"), true);
      assert.ok(args.includes(`--revision=${revision ?? "default"}`), args.join(" "));
      for (const a of args) assert.doesNotMatch(a, /^--(cacerts-dir|key-export)\b/, a);
      // The same flags inject --mode=mesh-ca --use-policy gives this Deployment (pod-layout paths may differ).
      const injected = injectPodSpec(
        istiodDeployment(deployment, revision ?? "default"),
        parseInjectArgs(["--use-policy", "--mode=mesh-ca", "--native-sidecar=true"]),
      ) as Deployment;
      const injectedAgent = injected.spec.template.spec.initContainers!.find((c) => c.name === "istiod-vault-agent")!;
      const injectedFlags = flagMap(injectedAgent.args!);
      assert.deepEqual([...flags.keys()].sort(), [...injectedFlags.keys()].sort(), "the flags inject sets");
      for (const f of [
        "policy-name",
        "istio-ca-addr",
        "istio-ca-names",
        "istiod-tls-dir",
        "revision",
        "root-configmaps",
      ])
        assert.equal(flags.get(f), injectedFlags.get(f), `--${f} as inject sets it`);
      assert.deepEqual(agent.resources, injectedAgent.resources, "inject's resources");
      assert.ok(
        agent.ports?.some((p) => p.name === "grpc-istio-ca" && p.containerPort === 15013),
        "the CA port is declared",
      );

      // istiod: CA server off, no plugged-in CA directory, its serving certificate from the agent's in-memory volume.
      assert.deepEqual(
        discovery.env?.find((e) => e.name === "ENABLE_CA_SERVER"),
        { name: "ENABLE_CA_SERVER", value: "false" },
      );
      assert.ok(!discovery.env?.some((e) => e.name === "ROOT_CA_DIR"), "no ROOT_CA_DIR");
      const tlsDir = flags.get("istiod-tls-dir") as string;
      assert.deepEqual(
        discovery.args!.filter((a) => /^--(tlsCertFile|tlsKeyFile|caCertFile)=/.test(a)),
        [`--tlsCertFile=${tlsDir}/tls.crt`, `--tlsKeyFile=${tlsDir}/tls.key`, `--caCertFile=${tlsDir}/ca.crt`],
      );
      const tlsMount = (c: Container) => c.volumeMounts?.find((m) => m.mountPath === tlsDir);
      assert.equal(tlsMount(discovery)?.name, "istiod-vault-agent-istiod-tls");
      assert.equal(tlsMount(discovery)?.readOnly, true, "istiod only reads its TLS files");
      assert.equal(tlsMount(agent)?.name, "istiod-vault-agent-istiod-tls");
      const tlsVolume = pod.volumes!.find((v) => v.name === "istiod-vault-agent-istiod-tls")!;
      assert.deepEqual(tlsVolume.emptyDir, { medium: "Memory", sizeLimit: "1Mi" }, "istiod's key only in memory");
      // No cacerts volume of ours: the only one is Istio's own optional Secret, which istiod reads only with its CA
      // server on (pilot/pkg/bootstrap maybeCreateCA); the agent mounts nothing of it.
      const cacerts = pod.volumes!.filter((v) => /cacerts/.test(v.name));
      assert.deepEqual(cacerts, [{ name: "cacerts", secret: { secretName: "cacerts", optional: true } }]);
      assert.ok(!agent.volumeMounts!.some((m) => /cacerts/.test(m.name + m.mountPath)), "the agent mounts no cacerts");
      assert.doesNotMatch(JSON.stringify(agent), /cacerts|key-export/);

      // The pieces meet: the project chart binds this service account, its CA Service selects this pod and reaches
      // the agent's port, and the injection template hands proxies that Service as CA_ADDR.
      assert.ok(bound.has(pod.serviceAccountName!), `${pod.serviceAccountName} has the agent's RBAC`);
      const svc = ofKind<Service>(project, "Service").find((s) => s.metadata.name === service)!;
      for (const [k, v] of Object.entries(svc.spec.selector))
        assert.equal(dep.spec.template.metadata.labels[k], v, `${service} selects ${deployment}'s pods (${k})`);
      assert.equal(svc.spec.ports[0]!.targetPort, Number((flags.get("istio-ca-addr") as string).split(":")[1]));
      const injector = ofKind<KubeObject & { data: Record<string, string> }>(objects, "ConfigMap").find((c) =>
        c.metadata.name.startsWith("istio-sidecar-injector"),
      )!;
      const injectorValues = JSON.parse(injector.data.values!) as { global: { caAddress: string } };
      assert.equal(injectorValues.global.caAddress, `${host}:${svc.spec.ports[0]!.port}`, "proxies' CA_ADDR");

      dryRun(objects);
    }
  });

  it("values.schema.json refuses a wrongly typed value and an unknown key, naming them", () => {
    for (const [set, message] of [
      ["image.tag=1", /\/image\/tag.*got number, want string/],
      ["imageTag=0.1.0", /additional properties 'imageTag' not allowed/],
      ["revisions[0]=Canary", /\/revisions\/0.*does not match pattern/],
      ["monitoring.prometheusRule.intermediateExpiryWindow=3 days", /intermediateExpiryWindow.*does not match pattern/],
      // the alert rules compute with one number and one unit; a compound duration would only fail at tpl time
      ["monitoring.prometheusRule.rotationOverdueFor=1h30m", /rotationOverdueFor.*does not match pattern/],
      ["relay.server.issuer.enabled=yes", /\/relay\/server\/issuer\/enabled.*got string, want boolean/],
    ] as const) {
      const res = helm(dir, ["template", "x", projectChartDir(), "--set", set]);
      assert.notEqual(res.status, 0, `--set ${set} was accepted`);
      assert.match(res.stderr, /values don't meet the specifications of the schema/);
      assert.match(res.stderr, message);
    }
  });

  it("values that pass the schema but cannot work are refused by the templates, saying what is expected", () => {
    const vault = { address: "https://vault.vault.svc:8200" };
    for (const [values, message] of [
      [{ rootTrustPolicies: { create: true } }, /rootTrustPolicies.spec is empty; expected the policy spec/],
      [
        { rootTrustPolicies: { create: true, spec: { config: {} }, overrides: { canary: {} } } },
        /rootTrustPolicies.overrides.canary: not a revision in `revisions` \(default\)/,
      ],
      [
        { relay: { agent: { enabled: true }, vault } },
        /relay.agent.cluster: missing; expected this workload cluster's name/,
      ],
      [
        { relay: { server: { enabled: true } } },
        /relay.vault.address: missing; expected the Vault URL the relay server uses/,
      ],
    ] as const) {
      const res = helm(dir, ["template", "x", projectChartDir(), ...valuesArgs(dir, [values])]);
      assert.notEqual(res.status, 0, `${JSON.stringify(values)} was accepted`);
      assert.match(res.stderr, message);
    }
  });
});
