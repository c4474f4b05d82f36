// The project's own Helm chart (charts/istiod-vault-agent) as an operator runs it: helm built from its Go module
// (test/env/build.sh helm), rendered with values files, applied with kubectl.
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments, stringify } from "yaml";
import { repoRoot, serverBinaries } from "./harness.js";

export const PROJECT_CHART = "charts/istiod-vault-agent";

export function projectChartDir(): string {
  return join(repoRoot(), PROJECT_CHART);
}

export interface HelmResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the helm binary with its cache, config and data homes inside `dir` (nothing of the user's helm setup). */
export function helm(dir: string, args: string[]): HelmResult {
  const home = mkdtempSync(join(dir, "helm-home-"));
  const res = spawnSync(serverBinaries(["helm"]).helm, args, {
    encoding: "utf8",
    maxBuffer: 16 << 20,
    env: { ...process.env, HELM_CACHE_HOME: home, HELM_CONFIG_HOME: home, HELM_DATA_HOME: home },
  });
  return { status: res.status, stdout: res.stdout, stderr: res.stderr };
}

/** Writes each values object to a file in `dir` and returns the `-f FILE` arguments, in order (later ones win). */
export function valuesArgs(dir: string, values: Record<string, unknown>[]): string[] {
  const work = mkdtempSync(join(dir, "values-"));
  return values.flatMap((v, i) => {
    const file = join(work, `values-${i}.yaml`);
    writeFileSync(file, stringify(v));
    return ["-f", file];
  });
}

/** `helm template` of the project chart; throws with helm's message when it fails. */
export function renderProjectChart(
  dir: string,
  opts: { release?: string; namespace?: string; values?: Record<string, unknown>[]; includeCrds?: boolean },
): string {
  const args = [
    "template",
    opts.release ?? "istiod-vault-agent",
    projectChartDir(),
    "--namespace",
    opts.namespace ?? "istio-system",
    ...valuesArgs(dir, opts.values ?? []),
  ];
  if (opts.includeCrds) args.push("--include-crds");
  const res = helm(dir, args);
  if (res.status !== 0) throw new Error(`helm ${args.join(" ")} failed (${res.status}):\n${res.stderr}`);
  return res.stdout;
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

/** The objects of a rendered YAML stream (empty documents dropped). */
export function renderedObjects(yaml: string): KubeObject[] {
  return parseAllDocuments(yaml)
    .map((d) => d.toJSON() as KubeObject | null)
    .filter((o): o is KubeObject => !!o?.kind);
}

/** A YAML stream of `objects`. */
export function toYamlStream(objects: KubeObject[]): string {
  return objects.map((o) => stringify(o)).join("---\n");
}
