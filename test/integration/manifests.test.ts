// The shipped manifests against the real apiserver (kubectl apply --dry-run=server), the kustomize overlay, the scripts
// (shellcheck) and what the Dockerfile ships (the built CLI runs on its own). The Helm values for Istio's istiod chart
// are proven on a real node by test/e2e/real-node.test.ts.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { isBuiltin } from "node:module";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { TestEnv, repoRoot } from "../env/harness.js";
import { nodeBinary } from "../env/agent-process.js";

const root = repoRoot();
const m = (p: string) => join(root, "manifests", p);

/** Packages required inside try/catch by a dependency, absent on purpose: debug's optional colour support. */
const OPTIONAL_REQUIRES = new Set(["supports-color"]);

describe("manifests, scripts and Dockerfile", () => {
  let env: TestEnv;
  const kubectl = (args: string[], input?: string) =>
    spawnSync("kubectl", [`--kubeconfig=${env.kube.kubeconfigPath}`, ...args], { encoding: "utf8", input });

  before(async () => {
    env = await TestEnv.start({ vault: false });
    await env.createNamespace("istio-system");
  });
  after(async () => env?.stop());

  it("the CRD, RBAC and example policy are accepted by the apiserver", async () => {
    const crd = kubectl(["apply", "--dry-run=server", "-f", m("crd/roottrustpolicies.yaml")]);
    assert.equal(crd.status, 0, crd.stderr);
    await env.installCrd(m("crd/roottrustpolicies.yaml"));
    for (const f of ["base/rbac.yaml", "base/istio-ca-tokenreview.yaml", "examples/root-trust-policy.yaml"]) {
      const res = kubectl(["apply", "--dry-run=server", "-f", m(f)]);
      assert.equal(res.status, 0, `${f}: ${res.stderr}`);
      assert.match(res.stdout, /\(server dry run\)/);
    }
  });

  it("a bad RootTrustPolicy is rejected by the schema with a readable message", () => {
    const bad = readFileSync(m("examples/root-trust-policy.yaml"), "utf8")
      .replace("keyAlgorithm: ECDSA_P256", "keyAlgorithm: DSA")
      .replace("server: https://vault.vault.svc:8200", "server: vault.vault.svc");
    const res = kubectl(["apply", "--dry-run=server", "-f", "-"], bad);
    assert.notEqual(res.status, 0);
    assert.match(res.stderr, /spec.config.intermediateCertOptions.keyAlgorithm: Unsupported value: "DSA"/);
    assert.match(res.stderr, /spec.config.agentCa.vault.server: Invalid value: "vault.vault.svc"/);
  });

  it("the kustomize base and the istiod overlay build, and the apiserver accepts the overlay", () => {
    const base = execFileSync("kubectl", ["kustomize", m("base")], { encoding: "utf8" });
    assert.deepEqual(
      parseAllDocuments(base)
        .map((d) => (d.toJSON() as { kind: string }).kind)
        .sort(),
      ["CustomResourceDefinition", "Role", "RoleBinding"],
    );
    const overlay = execFileSync("kubectl", ["kustomize", m("overlays/istiod")], { encoding: "utf8" });
    const dep = parseAllDocuments(overlay)[0]!.toJSON() as {
      spec: {
        template: {
          spec: {
            initContainers: { name: string }[];
            containers: { name: string }[];
            volumes: Record<string, unknown>[];
          };
        };
      };
    };
    const pod = dep.spec.template.spec;
    assert.deepEqual(
      pod.initContainers.map((c) => c.name),
      ["istiod-vault-agent-init"],
    );
    assert.deepEqual(
      pod.containers.map((c) => c.name),
      ["discovery", "istiod-vault-agent"],
    );
    const cacerts = pod.volumes.find((v) => v.name === "cacerts")!;
    assert.deepEqual(cacerts.emptyDir, { medium: "Memory" });
    assert.equal(cacerts.secret, undefined, "the cacerts Secret is replaced, not merged");
    const res = kubectl(["apply", "--dry-run=server", "-f", "-"], overlay);
    assert.equal(res.status, 0, res.stderr);
  });

  it("the mesh-CA overlay builds without any cacerts, and the apiserver accepts it and its RBAC", () => {
    const overlay = execFileSync("kubectl", ["kustomize", m("overlays/mesh-ca")], { encoding: "utf8" });
    assert.doesNotMatch(overlay, /cacerts|key-export/, "no cacerts directory and no key export in this mode");
    const docs = parseAllDocuments(overlay).map((d) => d.toJSON() as { kind: string; spec: Record<string, unknown> });
    assert.deepEqual(docs.map((d) => d.kind).sort(), ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service"]);
    const text = JSON.stringify(docs.find((d) => d.kind === "Deployment"));
    for (const s of [
      '{"name":"ENABLE_CA_SERVER","value":"false"}',
      "--tlsCertFile=/etc/istiod-vault-agent/istiod-tls/tls.crt",
      "--istiod-tls-dir=/etc/istiod-vault-agent/istiod-tls",
      "--istio-ca-addr=0.0.0.0:15013",
      "--root-configmaps",
    ])
      assert.ok(text.includes(s), s);
    const res = kubectl(["apply", "--dry-run=server", "-f", "-"], overlay);
    assert.equal(res.status, 0, res.stderr);
    const tokenReview = kubectl(["apply", "--dry-run=server", "-f", m("base/istio-ca-tokenreview.yaml")]);
    assert.equal(tokenReview.status, 0, tokenReview.stderr);
  });

  it("shell scripts pass shellcheck", () => {
    const scripts = [
      ".ci/run",
      "test/env/build.sh",
      "test/env/images.sh",
      "test/e2e/kind/run.sh",
      "scripts/pin-base-image.sh",
      "scripts/sbom.sh",
    ].map((p) => join(root, p));
    const res = spawnSync("shellcheck", scripts, { encoding: "utf8" });
    assert.equal(res.status, 0, res.stdout + res.stderr);
  });

  it("the Dockerfile ships only what the CLI needs, runs as a numeric non-root user, and the shipped CLI runs", () => {
    const dockerfile = readFileSync(join(root, "Dockerfile"), "utf8");
    // the public Node 24 image builds; the real-node test builds with a locally made equivalent. The runtime stage is
    // FROM scratch (test/unit/image.test.ts checks its contents line by line).
    assert.match(dockerfile, /^ARG NODE_IMAGE=node:24[^\n]*$/m);
    assert.match(dockerfile, /^FROM \$\{NODE_IMAGE\} AS build$/m);
    assert.match(dockerfile, /^FROM scratch$/m);
    assert.match(dockerfile, /^USER \d+:\d+$/m, "numeric non-root user");
    assert.match(
      dockerfile,
      /^ENTRYPOINT \["\/usr\/local\/bin\/node", [^\]]*"\/app\/dist\/bundle\/main\.js"\]$/m,
      "the image runs the bundle",
    );
    assert.doesNotMatch(dockerfile, /^ADD /m);
    assert.match(dockerfile, /cp -r dist\/bundle \/app\/dist\/bundle/);
    assert.doesNotMatch(dockerfile, /\/app\/node_modules/, "no node_modules in the image");
    // The runtime image has the bundle only, so it may load nothing but its own files and Node's built-ins: a package
    // left out of the bundle would be missing in the image. esbuild's metafile lists every import of every output.
    const bundle = join(root, "dist/bundle");
    const meta = JSON.parse(readFileSync(join(bundle, "meta.json"), "utf8")) as {
      outputs: Record<string, { imports: { path: string; kind: string; external?: boolean }[] }>;
    };
    const outputs = Object.keys(meta.outputs);
    assert.ok(outputs.includes("dist/bundle/main.js") && outputs.includes("dist/bundle/signing-worker.js"));
    for (const [out, { imports }] of Object.entries(meta.outputs))
      for (const i of imports) {
        if (!i.external) assert.ok(outputs.includes(i.path), `${out} imports ${i.path}, which is not in the bundle`);
        else
          assert.ok(
            isBuiltin(i.path) || OPTIONAL_REQUIRES.has(i.path),
            `${out} loads ${i.path} (${i.kind}), which is neither bundled nor built in`,
          );
      }
    for (const cmd of [
      "--help",
      "sidecar --help",
      "init --help",
      "status --help",
      "setup-vault --help",
      "doctor --help",
    ]) {
      const res = spawnSync(nodeBinary(), [join(bundle, "main.js"), ...cmd.split(" ")], { encoding: "utf8" });
      assert.equal(res.status, 0, `${cmd}: ${res.stderr}`);
      assert.match(res.stdout, /usage: istiod-vault-agent/);
    }
  });
});
