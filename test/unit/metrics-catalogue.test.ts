// Every series the project defines, in every mode, against a checked-in catalogue (metrics-catalogue.txt): a name,
// type, label set, bucket or help text that changes must change the catalogue in the same commit, because the Grafana
// dashboard, the alert rules (manifests/) and operators' queries name them. The relay and bootstrap series register
// beside the agent's, as they do in the relay.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { AgentMetrics } from "../../src/observability/metrics.js";
import { RelayMetrics } from "../../src/relay/metrics.js";
import { BootstrapAgentMetrics, IssuerMetrics } from "../../src/relay/bootstrap/metrics.js";

/** One line a series: `type name{label,...} [buckets] help`, sorted by name. */
function catalogue(): string {
  const m = new AgentMetrics({ processMetrics: false, vaultProbe: true });
  new RelayMetrics(m.registry);
  new IssuerMetrics(m.registry);
  new BootstrapAgentMetrics(m.registry);
  return m.registry
    .getMetricsAsArray()
    .map((metric) => {
      const { name, help, type, labelNames, buckets } = metric as unknown as {
        name: string;
        help: string;
        type: string;
        labelNames: readonly string[];
        buckets?: readonly number[];
      };
      const b = type === "histogram" ? ` [${buckets!.join(",")}]` : "";
      return `${type} ${name}{${[...labelNames].join(",")}}${b} ${help}`;
    })
    .sort()
    .join("\n");
}

describe("metrics catalogue", () => {
  it("defines exactly the series in metrics-catalogue.txt (names, types, labels, buckets, help)", () => {
    // Source tree path: the test runs from dist/test/unit.
    const want = readFileSync(new URL("../../../test/unit/metrics-catalogue.txt", import.meta.url), "utf8").trimEnd();
    assert.equal(catalogue(), want);
  });

  it("registers only the sidecar's groups it is asked for, build_info always", () => {
    const names = (groups: ConstructorParameters<typeof AgentMetrics>[0]) =>
      new AgentMetrics(groups).registry.getMetricsAsArray().map((x) => x.name);
    const vaultOnly = names({ processMetrics: false, groups: ["vault"] });
    assert.ok(vaultOnly.includes("istiod_vault_agent_build_info"));
    assert.ok(
      vaultOnly.every((n) => /^istiod_vault_agent_(build_info|vault_)/.test(n)),
      vaultOnly.join(" "),
    );
    assert.ok(!vaultOnly.includes("istiod_vault_agent_vault_up"), "the probe's series without vaultProbe");
  });
});
