// The install path an Istio operator uses, run against the test cluster: Istio's own istiod Helm chart (from the
// istio.io/istio module the project pins, rendered by helm built from its Go module) with the project's values file,
// applied with kubectl. Only what this loopback node cannot provide is overridden for the test (see testOverrides).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml, parseAllDocuments, stringify } from "yaml";
import { repoRoot, serverBinaries, type TestEnv } from "./harness.js";
import { POD_GATEWAY } from "./node.js";

export interface Images {
  agent: string;
  istiod: string;
  /** Istio's workload agent (pilot-agent, no Envoy), for pods that are the mesh's workloads. */
  pilotAgent: string;
  pause: string;
  archives: string[];
  agentArchiveBytes: number;
  /** The docker-archive of the agent image, and the REVISION it was built with (what --version reports). */
  agentArchive: string;
  agentRevision: string;
}

/** Builds (or reuses) the images with test/env/images.sh. */
export function buildImages(): Images {
  const out = execFileSync("bash", [join(repoRoot(), "test/env/images.sh")], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 1 << 20,
  });
  const kv = Object.fromEntries(
    out
      .trim()
      .split("\n")
      .map((l) => l.split("=", 2) as [string, string]),
  );
  const need = (k: string) => {
    const v = kv[k];
    if (!v) throw new Error(`images.sh printed no ${k}=...:\n${out}`);
    return v;
  };
  return {
    agent: need("agent_IMAGE"),
    istiod: need("istiod_IMAGE"),
    pilotAgent: need("pilot_agent_IMAGE"),
    pause: need("pause_IMAGE"),
    archives: [need("base"), need("pause"), need("agent"), need("istiod"), need("pilot-agent")],
    agentArchiveBytes: Number(need("agent_SIZE")),
    agentArchive: need("agent"),
    agentRevision: need("agent_REVISION"),
  };
}

/** Istiod's chart directory inside the pinned istio.io/istio module (the module zip ships manifests/charts). */
export function istiodChartDir(): string {
  const wrapper = join(repoRoot(), "test/env/istiod");
  const info = JSON.parse(
    execFileSync("go", ["mod", "download", "-json", "istio.io/istio"], {
      cwd: wrapper,
      encoding: "utf8",
      env: { ...process.env, GOFLAGS: "-mod=readonly", GOTOOLCHAIN: "local" },
    }),
  ) as { Dir?: string };
  if (!info.Dir) throw new Error("go mod download istio.io/istio: no Dir");
  return join(info.Dir, "manifests/charts/istio-control/istio-discovery");
}

/** The two ways to run with Istio (README): istiod signs with the delivered intermediate, or the agent is the CA. */
export type IstioMode = "cacerts" | "mesh-ca";

/** The project's values for Istio's istiod chart for `mode`, as shipped. */
export function shippedIstiodValues(mode: IstioMode = "cacerts"): Record<string, unknown> {
  const file = mode === "cacerts" ? "istiod-values.yaml" : "istiod-values-mesh-ca.yaml";
  // The file is the product's: parse it as it ships.
  return parseYaml(readFileSync(join(repoRoot(), "manifests/helm", file), "utf8")) as Record<string, unknown>;
}

/**
 * What this test node needs beyond the shipped values, and nothing more: the locally built images (there is no
 * registry), the apiserver's address (no kube-proxy here, so the `kubernetes` Service's ClusterIP leads nowhere and
 * pods get the address explicitly) and small resource requests (one 2-core node runs several istiods).
 */
export function testOverrides(env: TestEnv, images: Images, agentMode: IstioMode | undefined): Record<string, unknown> {
  const apiserverEnv = {
    KUBERNETES_SERVICE_HOST: POD_GATEWAY,
    KUBERNETES_SERVICE_PORT: new URL(env.kube.url).port,
  };
  const withAgent = agentMode !== undefined;
  const shipped = shippedIstiodValues(agentMode) as { env: Record<string, string>; initContainers: unknown[] };
  const values: Record<string, unknown> = {
    image: images.istiod,
    global: { imagePullPolicy: "Never", logging: { level: "default:info" } },
    autoscaleEnabled: false,
    replicaCount: 1,
    resources: { requests: { cpu: "10m", memory: "64Mi" } },
    env: { ...(withAgent ? shipped.env : {}), ...apiserverEnv },
  };
  if (withAgent) {
    const init = structuredClone(shipped.initContainers) as {
      image: string;
      imagePullPolicy?: string;
      env?: { name: string; value?: string }[];
    }[];
    for (const c of init) {
      c.image = images.agent;
      c.imagePullPolicy = "Never";
      c.env = [...(c.env ?? []), ...Object.entries(apiserverEnv).map(([name, value]) => ({ name, value }))];
    }
    values.initContainers = init;
  }
  return values;
}

/** `helm template` of Istio's istiod chart with the given values files (later ones win), as a YAML stream. */
export function renderIstiod(
  dir: string,
  opts: { release: string; revision?: string; values: Record<string, unknown>[] },
): string {
  const helm = serverBinaries(["helm"]).helm;
  const work = mkdtempSync(join(dir, "helm-"));
  const args = ["template", opts.release, istiodChartDir(), "--namespace", "istio-system", "--kube-version", "v1.36.3"];
  opts.values.forEach((v, i) => {
    const file = join(work, `values-${i}.yaml`);
    writeFileSync(file, stringify(v));
    args.push("-f", file);
  });
  if (opts.revision) args.push("--set", `revision=${opts.revision}`);
  return execFileSync(helm, args, {
    encoding: "utf8",
    maxBuffer: 16 << 20,
    env: { ...process.env, HELM_CACHE_HOME: work, HELM_CONFIG_HOME: work, HELM_DATA_HOME: work },
  });
}

/** The Deployment documents of a rendered stream (for assertions on what the chart produced). */
export function renderedDeployments(yaml: string): { metadata: { name: string }; spec: unknown }[] {
  return parseAllDocuments(yaml)
    .map((d) => d.toJSON() as { kind?: string; metadata: { name: string }; spec: unknown } | null)
    .filter((d): d is { kind: string; metadata: { name: string }; spec: unknown } => d?.kind === "Deployment");
}

/** `kubectl apply` against the test apiserver with the admin kubeconfig. */
export function kubectl(env: TestEnv, args: string[], input?: string): string {
  return execFileSync("kubectl", ["--kubeconfig", env.kube.kubeconfigPath, ...args], {
    encoding: "utf8",
    input,
    maxBuffer: 16 << 20,
    stdio: ["pipe", "pipe", "pipe"],
  });
}
