// The metrics contract end to end: a real sidecar against real (persistent) OpenBao is scraped, its series are checked
// by name and type, the chart's alert rules and Grafana dashboard are checked to reference only series the agent
// exports, promtool (built from the Prometheus module) checks and unit-tests the rendered rules, and the sys/health
// probe's vault_up follows OpenBao going away and coming back.
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml, stringify as toYaml } from "yaml";
import { agentSuite, type AgentRun } from "../env/agent-process.js";
import { freePort, repoRoot } from "../env/harness.js";
import { waitUntil } from "../env/process.js";
import { DASHBOARD_SOURCE, RULES_SOURCE, promtool, renderRules } from "../env/promtool.js";

const P = "istiod_vault_agent_";

/** Every series the sidecar must export, with its Prometheus type. */
const SIDECAR_SERIES: Record<string, "gauge" | "counter" | "histogram"> = {
  [`${P}build_info`]: "gauge",
  [`${P}intermediate_not_after_timestamp_seconds`]: "gauge",
  [`${P}intermediate_last_rotation_timestamp_seconds`]: "gauge",
  [`${P}intermediate_next_renewal_timestamp_seconds`]: "gauge",
  [`${P}intermediate_generation`]: "gauge",
  [`${P}intermediate_rotations_total`]: "counter",
  [`${P}vault_up`]: "gauge",
  [`${P}vault_probe_duration_seconds`]: "gauge",
  [`${P}vault_requests_total`]: "counter",
  [`${P}vault_request_duration_seconds`]: "histogram",
  [`${P}vault_logins_total`]: "counter",
  [`${P}vault_token_renewals_total`]: "counter",
  [`${P}vault_token_revocations_total`]: "counter",
  [`${P}vault_key_deletions_total`]: "counter",
  [`${P}leaves_signed_total`]: "counter",
  [`${P}leaves_refused_total`]: "counter",
  [`${P}limit_hits_total`]: "counter",
  [`${P}token_reviews_total`]: "counter",
  [`${P}cacerts_writes_total`]: "counter",
  [`${P}root_configmaps_written_total`]: "counter",
  [`${P}root_configmaps_unowned`]: "gauge",
  process_resident_memory_bytes: "gauge",
  process_cpu_seconds_total: "counter",
  nodejs_heap_size_used_bytes: "gauge",
};

interface Scrape {
  text: string;
  /** Metric family name → type, from the # TYPE lines. */
  types: Map<string, string>;
}

function parseScrape(text: string): Scrape {
  const types = new Map<string, string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) types.set(m[1]!, m[2]!);
  return { text, types };
}

/** The value of one sample (exact name and label text), or undefined. */
function sample(s: Scrape, name: string, labels = ""): number | undefined {
  const line = s.text.split("\n").find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ""} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

/** Series names an expression uses: the project's, Node's process_/nodejs_ ones. */
function namesIn(expr: string): string[] {
  return [...expr.matchAll(/\b(istiod_vault_agent_\w+|process_\w+|nodejs_\w+)/g)].map((m) => m[1]!);
}

/** A name a query uses, as the family the scrape declares (histogram _bucket/_sum/_count belong to their base). */
function family(s: Scrape, name: string): string | undefined {
  if (s.types.has(name)) return name;
  const base = name.replace(/_(bucket|sum|count)$/, "");
  return s.types.get(base) === "histogram" ? base : undefined;
}

interface RuleFile {
  groups: { name: string; rules: { alert?: string; expr: string; labels?: Record<string, string> }[] }[];
}

function dashboardExprs(): string[] {
  const dash = JSON.parse(readFileSync(join(repoRoot(), DASHBOARD_SOURCE), "utf8")) as {
    panels: { title: string; targets: { expr: string }[] }[];
    templating: { list: { query?: unknown }[] };
  };
  const exprs = dash.panels.flatMap((p) => p.targets.map((t) => t.expr));
  for (const v of dash.templating.list)
    if (v.query && typeof v.query === "object") exprs.push(String((v.query as { query: string }).query));
  return exprs;
}

describe("metrics: names, alert rules, dashboard and the Vault probe against a real sidecar", () => {
  const suite = agentSuite({}, { vault: "persistent" });
  let run: AgentRun;
  let port: number;
  const scrape = async () => parseScrape(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());

  before(async () => {
    port = await freePort();
    run = await suite.start("sidecar", [`--http-addr=127.0.0.1:${port}`, "--vault-probe-interval=1s"]);
  });

  it("exports every series under its conventional name and type, build_info, and no old iva_ name", async () => {
    const s = await scrape();
    for (const [name, type] of Object.entries(SIDECAR_SERIES))
      assert.equal(s.types.get(name), type, `${name} is exported as a ${type}`);
    for (const name of s.types.keys()) {
      assert.doesNotMatch(name, /^iva_/, "no series keeps the old prefix");
      assert.match(name, /^(istiod_vault_agent_|process_|nodejs_)/, `${name}: one prefix, or Node's standard names`);
      if (s.types.get(name) === "counter") assert.match(name, /_total$/, `counter ${name} ends in _total`);
    }
    const pkg = JSON.parse(readFileSync(join(repoRoot(), "package.json"), "utf8")) as { version: string };
    assert.equal(
      sample(s, `${P}build_info`, `version="${pkg.version}",node_version="${process.version}"`),
      1,
      "build_info carries package.json's version (as --version prints it)",
    );
    const now = Date.now() / 1000;
    const notAfter = sample(s, `${P}intermediate_not_after_timestamp_seconds`)!;
    const last = sample(s, `${P}intermediate_last_rotation_timestamp_seconds`)!;
    const next = sample(s, `${P}intermediate_next_renewal_timestamp_seconds`)!;
    assert.ok(last <= now && now - last < 300, `last rotation is recent (${last})`);
    assert.ok(last < next && next < notAfter, "renewal is planned between the rotation and NotAfter");
    assert.equal(sample(s, `${P}vault_up`), 1);
    assert.ok(sample(s, `${P}vault_probe_duration_seconds`)! > 0);
  });

  it("every series the rendered alert rules and the dashboard query is one the agent exports", async () => {
    const s = await scrape();
    const rules = parseYaml(renderRules()) as RuleFile;
    const alerts = rules.groups.flatMap((g) => g.rules);
    assert.deepEqual(alerts.map((r) => r.alert).sort(), [
      "IstiodVaultAgentIntermediateExpiringSoon",
      "IstiodVaultAgentLeafRefusalsSpiking",
      "IstiodVaultAgentRotationOverdue",
      "IstiodVaultAgentVaultLoginFailing",
      "IstiodVaultAgentVaultUnreachable",
    ]);
    const exprs = [...alerts.map((r) => r.expr), ...dashboardExprs()];
    const used = new Set(exprs.flatMap(namesIn));
    assert.ok(used.size >= 10, `the rules and dashboard query the agent's series (${[...used].join(", ")})`);
    for (const name of used) assert.ok(family(s, name), `${name} (queried by the rules or dashboard) is exported`);
  });

  it("promtool check rules passes on the rendered rules, and promtool test rules shows when each alert fires", () => {
    const dir = mkdtempSync(join(tmpdir(), "iva-promtool-"));
    try {
      writeFileSync(join(dir, "prometheus-rules.yaml"), renderRules());
      const check = promtool(["check", "rules", "prometheus-rules.yaml"], dir);
      assert.equal(check.status, 0, check.output);
      assert.match(check.output, /SUCCESS: 5 rules found/);
      writeFileSync(
        join(dir, "rules-test.yaml"),
        readFileSync(join(repoRoot(), "test/integration/prometheus-rules.promtool.yaml")),
      );
      const test = promtool(["test", "rules", "rules-test.yaml"], dir);
      assert.equal(test.status, 0, test.output);
      assert.match(test.output, /SUCCESS/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("every dashboard query is valid PromQL (promtool checks them as recording rules)", () => {
    const dir = mkdtempSync(join(tmpdir(), "iva-promtool-"));
    try {
      // Grafana's interval variable becomes a fixed range; $namespace/$pod sit inside regex strings as they are.
      const exprs = dashboardExprs()
        .filter((e) => !e.startsWith("label_values("))
        .map((e) => e.replaceAll("$__rate_interval", "5m"));
      const rules = {
        groups: [{ name: "dashboard", rules: exprs.map((expr, i) => ({ record: `dashboard:q${i}`, expr })) }],
      };
      writeFileSync(join(dir, "dashboard-queries.yaml"), toYaml(rules));
      const check = promtool(["check", "rules", "dashboard-queries.yaml"], dir);
      assert.equal(check.status, 0, check.output);
      assert.match(check.output, new RegExp(`SUCCESS: ${exprs.length} rules found`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("bad values and a broken expression are refused: helm names the value, promtool the rule", () => {
    assert.throws(
      () =>
        renderRules({
          values: { monitoring: { prometheusRule: { intermediateExpiryWindow: "3 days", rotationOverdueFor: "15m" } } },
        }),
      /intermediateExpiryWindow: "3 days" is not a duration/,
    );
    const broken = readFileSync(join(repoRoot(), RULES_SOURCE), "utf8").replace(
      "expr: istiod_vault_agent_vault_up == 0",
      "expr: istiod_vault_agent_vault_up == ",
    );
    const dir = mkdtempSync(join(tmpdir(), "iva-promtool-"));
    try {
      writeFileSync(join(dir, "prometheus-rules.yaml"), renderRules({ source: broken }));
      const check = promtool(["check", "rules", "prometheus-rules.yaml"], dir);
      assert.notEqual(check.status, 0, "promtool refuses a rule file with a broken expression");
      assert.match(check.output, /FAILED/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("vault_up turns 0 when OpenBao stops and 1 once it is back, with one log line per change", async () => {
    const vaultUp = async () => sample(await scrape(), `${P}vault_up`);
    assert.equal(await vaultUp(), 1);
    const transitions = () => run.log().match(/"msg":"Vault (became unreachable|is reachable)"/g) ?? [];
    const before = transitions().length;
    await suite.env.stopVault();
    try {
      await waitUntil("vault_up 0 after OpenBao stopped", async () => (await vaultUp()) === 0, {
        timeoutMs: 30_000,
        process: run.process,
      });
      // Several more probes fail (1 s interval) without adding a line each.
      await new Promise((r) => setTimeout(r, 4_000));
      assert.equal(await vaultUp(), 0);
    } finally {
      await suite.env.startVaultAgain();
    }
    await waitUntil("vault_up 1 after OpenBao is back", async () => (await vaultUp()) === 1, {
      timeoutMs: 30_000,
      process: run.process,
    });
    const lines = transitions().slice(before);
    assert.deepEqual(
      lines.map((l) => l.replace(/^"msg":/, "")),
      ['"Vault became unreachable"', '"Vault is reachable"'],
      "one line when Vault went away and one when it came back, none per probe",
    );
  });
});
