// The mesh-CA mode ships three ways: `inject --mode=mesh-ca --use-policy`, the kustomize overlay (manifests/overlays/
// mesh-ca) and Istio's chart values (manifests/helm/istiod-values-mesh-ca.yaml). They must run the same agent: the
// same flags with the same values (modulo the chart's revision templating), and the same istiod-side changes. A flag
// added to one and forgotten in another fails here. test/integration/helm-install.test.ts renders the values with
// helm itself and compares the result with inject's again.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { parse as parseYaml } from "yaml";
import { parseInjectArgs } from "../../src/commands/inject.js";
import { MESH_CA_DISCOVERY_ARGS, injectPodSpec } from "../../src/inject/pod-template.js";
import { repoRoot } from "../env/harness.js";
import { istiodDeployment } from "../env/istiod-deployment.js";

const NS = "istio-system";
const read = (p: string) => readFileSync(join(repoRoot(), p), "utf8");

interface Container {
  name: string;
  args: string[];
  env?: { name: string; value?: string }[];
  volumeMounts?: { name: string; mountPath: string }[];
}
interface Pod {
  initContainers: Container[];
  containers: Container[];
}

/**
 * The Helm expressions the values file uses, evaluated the way Istio's chart `tpl`s them for release namespace NS and
 * `revision` (undefined: the default revision). Any other expression is an error, so a new one is handled here
 * deliberately rather than compared as raw template text.
 */
function tplValues(text: string, revision: string | undefined): string {
  const out = text
    .replace(/\{\{ if \.Values\.revision \}\}(.*?)\{\{ end \}\}/g, (_, inner: string) => (revision ? inner : ""))
    .replace(/\{\{ \.Values\.revision \| default "default" \}\}/g, revision ?? "default")
    .replace(/\{\{ \.Values\.revision \}\}/g, revision ?? "")
    .replace(/\{\{ \.Release\.Namespace \}\}/g, NS);
  assert.doesNotMatch(out, /\{\{/, "an unhandled template expression in the values' args");
  return out;
}

/** What each shipping of the mesh-CA mode runs for a revision: the agent sidecar and istiod's discovery changes. */
function shippings(
  revision: string | undefined,
): { where: string; agent: Container; discoveryArgs: string[]; caServer: string | undefined }[] {
  const caServer = (c: Container) => c.env?.find((e) => e.name === "ENABLE_CA_SERVER")?.value;
  const name = revision ? `istiod-${revision}` : "istiod";
  const injected = injectPodSpec(
    istiodDeployment(name, revision ?? "default"),
    parseInjectArgs(["--use-policy", "--mode=mesh-ca", "--native-sidecar=true"]),
  ) as { spec: { template: { spec: Pod } } };
  const ip = injected.spec.template.spec;
  const values = parseYaml(read("manifests/helm/istiod-values-mesh-ca.yaml")) as {
    initContainers: Container[];
    extraContainerArgs: string[];
    env: Record<string, string>;
  };
  const result = [
    {
      where: "inject --mode=mesh-ca",
      agent: ip.initContainers.find((c) => c.name === "istiod-vault-agent")!,
      discoveryArgs: ip.containers.find((c) => c.name === "discovery")!.args,
      caServer: caServer(ip.containers.find((c) => c.name === "discovery")!),
    },
    {
      where: "istiod-values-mesh-ca.yaml",
      agent: { ...values.initContainers[0]!, args: values.initContainers[0]!.args.map((a) => tplValues(a, revision)) },
      discoveryArgs: values.extraContainerArgs,
      caServer: values.env.ENABLE_CA_SERVER,
    },
  ];
  // The overlay patches the Deployment named istiod (the default revision); a revision's overlay is the user's copy.
  if (!revision) {
    const overlay = parseYaml(read("manifests/overlays/mesh-ca/agent-patch.yaml")) as {
      spec: { template: { spec: Pod } };
    };
    const op = overlay.spec.template.spec;
    result.push({
      where: "overlays/mesh-ca",
      agent: op.initContainers.find((c) => c.name === "istiod-vault-agent")!,
      discoveryArgs: op.containers.find((c) => c.name === "discovery")!.args,
      caServer: caServer(op.containers.find((c) => c.name === "discovery")!),
    });
  }
  for (const s of result) assert.ok(s.agent, `${s.where}: an istiod-vault-agent container`);
  return result;
}

/**
 * The agent's flags as a map. `--revision=default` is dropped: the agent treats it as no revision (the default
 * istiod DNS name), and the chart cannot leave a list item out per revision.
 */
function flagMap(args: string[]): Map<string, string | true> {
  const m = new Map<string, string | true>();
  for (const a of args.slice(1)) {
    const [, flag, value] = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(a) ?? assert.fail(`not a --flag[=value]: ${a}`);
    if (flag === "revision" && value === "default") continue;
    assert.ok(!m.has(flag!), `--${flag} given twice`);
    m.set(flag!, value ?? true);
  }
  return m;
}

/** Pod-layout paths: each shipping mounts its volumes where it likes, as long as the flag points into the mount. */
const LAYOUT_FLAGS: Record<string, (v: string) => string> = {
  "token-path": dirname,
  socket: dirname,
  "istiod-tls-dir": (v) => v,
};

void describe("the mesh-CA mode's three shippings agree", () => {
  for (const revision of [undefined, "canary"]) {
    void it(`same agent flags and istiod changes for ${revision ?? "the default revision"}`, () => {
      const all = shippings(revision);
      assert.equal(all.length, revision ? 2 : 3);
      const [ref, ...others] = all.map((s) => ({ ...s, flags: flagMap(s.agent.args) }));
      assert.equal(ref!.agent.args[0], "sidecar");
      const service = revision ? `istiod-vault-agent-${revision}` : "istiod-vault-agent";
      // What the mode needs, from inject (the reference), stated here so inject's own drift fails too.
      for (const [flag, value] of Object.entries({
        "policy-name": revision ? `istiod-${revision}` : "istiod",
        "istio-ca-addr": "0.0.0.0:15013",
        "istio-ca-names": `${service}.${NS}.svc`,
        "root-configmaps": true,
        ...(revision ? { revision } : {}),
      }))
        assert.equal(ref!.flags.get(flag), value, `inject: --${flag}`);
      for (const absent of ["cacerts-dir", "key-export", ...(revision ? [] : ["revision"])])
        assert.ok(!ref!.flags.has(absent), `inject: no --${absent}`);

      for (const s of [ref!, ...others]) {
        assert.equal(s.agent.args[0], "sidecar", `${s.where}: the sidecar command`);
        // every layout path points into one of the container's own mounts
        const mounts = (s.agent.volumeMounts ?? []).map((m) => m.mountPath);
        for (const [flag, dir] of Object.entries(LAYOUT_FLAGS)) {
          const v = s.flags.get(flag);
          assert.equal(typeof v, "string", `${s.where}: --${flag}`);
          assert.ok(mounts.includes(dir(v as string)), `${s.where}: --${flag}=${v as string} is not in a mount`);
        }
        // istiod reads its serving certificate from the agent's --istiod-tls-dir, and signs nothing itself
        const tlsDir = s.flags.get("istiod-tls-dir") as string;
        assert.deepEqual(
          s.discoveryArgs.filter((a) => /^--(tlsCertFile|tlsKeyFile|caCertFile)=/.test(a)),
          [`--tlsCertFile=${tlsDir}/tls.crt`, `--tlsKeyFile=${tlsDir}/tls.key`, `--caCertFile=${tlsDir}/ca.crt`],
          `${s.where}: discovery's TLS flags`,
        );
        assert.equal(s.caServer, "false", `${s.where}: ENABLE_CA_SERVER`);
      }
      assert.deepEqual(MESH_CA_DISCOVERY_ARGS, all[0]!.discoveryArgs.slice(-3));

      for (const o of others) {
        assert.deepEqual([...o.flags.keys()].sort(), [...ref!.flags.keys()].sort(), `${o.where}: the same flags`);
        for (const [flag, value] of ref!.flags)
          if (!(flag in LAYOUT_FLAGS) || flag === "istiod-tls-dir")
            assert.equal(o.flags.get(flag), value, `${o.where}: --${flag}`);
      }
    });
  }

  void it("the values' revision templating is what this test evaluates (an unknown expression is refused)", () => {
    assert.equal(
      tplValues("--istio-ca-names=istiod-vault-agent{{ if .Values.revision }}-{{ .Values.revision }}{{ end }}", "x"),
      "--istio-ca-names=istiod-vault-agent-x",
    );
    assert.throws(() => tplValues("--revision={{ .Values.revision | upper }}", "x"), /unhandled template expression/);
  });
});
