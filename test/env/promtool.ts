// promtool (github.com/prometheus/prometheus/cmd/promtool, built from test/env/promtool by build.sh) and the project's
// Prometheus rule file rendered the way the chart renders it: a Helm `tpl` of charts/istiod-vault-agent/files/
// prometheus-rules.yaml with the chart's values.
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify as toYaml } from "yaml";
import { repoRoot, serverBinaries } from "./harness.js";

export const RULES_SOURCE = "charts/istiod-vault-agent/files/prometheus-rules.yaml";
export const DASHBOARD_SOURCE = "charts/istiod-vault-agent/files/grafana-dashboard.json";

/** The monitoring values the rules read, as the shared chart decisions set their defaults. */
export const DEFAULT_RULE_VALUES = {
  monitoring: {
    prometheusRule: { intermediateExpiryWindow: "72h", rotationOverdueFor: "15m", leafRefusalRatePerSecond: 1 },
  },
};

/** Path of the promtool binary, built on first use (cached by build.sh under ~/.cache/istiod-vault-agent). */
export function promtoolBinary(): string {
  return serverBinaries(["promtool"]).promtool;
}

/**
 * `helm template` of a throwaway chart holding only the rules file and a template that `tpl`s it, as the project
 * chart does. `values` defaults to the chart's values.yaml when the chart has one, else DEFAULT_RULE_VALUES; `source`
 * replaces the rules file's text (to render a deliberately broken copy). Returns the rendered rule file, or throws
 * with helm's error.
 */
export function renderRules(opts: { values?: unknown; source?: string } = {}): string {
  const dir = mkdtempSync(join(tmpdir(), "iva-rules-chart-"));
  try {
    mkdirSync(join(dir, "templates"));
    mkdirSync(join(dir, "files"));
    writeFileSync(join(dir, "Chart.yaml"), "apiVersion: v2\nname: rules-render\nversion: 0.0.0\n");
    const chartValues = join(repoRoot(), "charts/istiod-vault-agent/values.yaml");
    if (opts.values !== undefined) writeFileSync(join(dir, "values.yaml"), toYaml(opts.values));
    else if (existsSync(chartValues)) copyFileSync(chartValues, join(dir, "values.yaml"));
    else writeFileSync(join(dir, "values.yaml"), toYaml(DEFAULT_RULE_VALUES));
    const source = opts.source ?? readFileSync(join(repoRoot(), RULES_SOURCE), "utf8");
    writeFileSync(join(dir, "files/prometheus-rules.yaml"), source);
    writeFileSync(join(dir, "templates/rules.yaml"), '{{ tpl (.Files.Get "files/prometheus-rules.yaml") . }}\n');
    const helm = serverBinaries(["helm"]).helm;
    const res = spawnSync(helm, ["template", "rules", dir, "--show-only", "templates/rules.yaml"], {
      encoding: "utf8",
    });
    if (res.status !== 0) throw new Error(`helm template failed: ${res.stderr.trim()}`);
    // One document: drop helm's "---" and "# Source:" header lines.
    return res.stdout.replace(/^---\n# Source: [^\n]*\n/, "");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs promtool with `args` in `cwd`; returns its exit code and combined output. */
export function promtool(args: string[], cwd: string): { status: number; output: string } {
  const res = spawnSync(promtoolBinary(), args, { cwd, encoding: "utf8" });
  return { status: res.status ?? -1, output: `${res.stdout}${res.stderr}` };
}
