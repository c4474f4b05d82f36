// The image as the repository declares it: one image reference, versioned like package.json, in every place that names
// it; one user (65532, group 1337) in the Dockerfile, the manifests and `inject`; a runtime stage with no base of its
// own; the build base's Node the one the tests run; the release scripts that pin that base by digest and write the
// SBOM. What the built image contains is checked on a real kubelet (test/e2e/real-node.test.ts).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parse as parseYaml } from "yaml";
import { AGENT_RESOURCES, AGENT_UID, DEFAULT_IMAGE, ISTIOD_GID } from "../../src/inject/pod-template.js";
import { repoRoot } from "../env/harness.js";

const root = repoRoot();
const read = (p: string) => readFileSync(join(root, p), "utf8");
const pkg = JSON.parse(read("package.json")) as {
  version: string;
  devDependencies: Record<string, string>;
  dependencies: Record<string, string>;
};
const dockerfile = read("Dockerfile");

interface AgentContainer {
  name: string;
  image: string;
  securityContext: { runAsUser?: number; runAsGroup?: number; runAsNonRoot?: boolean };
  resources?: unknown;
}

/** The istiod values files and kustomize agent patches that ship an agent container, cacerts mode and mesh-CA mode. */
const SHIPPED_VALUES = ["manifests/helm/istiod-values.yaml", "manifests/helm/istiod-values-mesh-ca.yaml"];
const SHIPPED_PATCHES = ["manifests/overlays/istiod/agent-patch.yaml", "manifests/overlays/mesh-ca/agent-patch.yaml"];

/** The agent containers of the shipped istiod values and the kustomize overlays (both modes). */
function shippedAgentContainers(): [string, AgentContainer][] {
  const all: [string, AgentContainer][] = [];
  for (const f of SHIPPED_VALUES) {
    const values = parseYaml(read(f)) as { initContainers: AgentContainer[] };
    all.push(...values.initContainers.map((c): [string, AgentContainer] => [`${f} ${c.name}`, c]));
  }
  for (const f of SHIPPED_PATCHES) {
    const overlay = parseYaml(read(f)) as {
      spec: { template: { spec: { initContainers: AgentContainer[]; containers: AgentContainer[] } } };
    };
    const pod = overlay.spec.template.spec;
    all.push(
      ...[...pod.initContainers, ...pod.containers]
        .filter((c) => c.name.startsWith("istiod-vault-agent"))
        .map((c): [string, AgentContainer] => [`${f} ${c.name}`, c]),
    );
  }
  assert.deepEqual(
    all.map(([where]) => where),
    [
      "manifests/helm/istiod-values.yaml istiod-vault-agent",
      "manifests/helm/istiod-values-mesh-ca.yaml istiod-vault-agent",
      "manifests/overlays/istiod/agent-patch.yaml istiod-vault-agent-init",
      "manifests/overlays/istiod/agent-patch.yaml istiod-vault-agent",
      "manifests/overlays/mesh-ca/agent-patch.yaml istiod-vault-agent",
    ],
    "both values files' sidecar, the cacerts overlay's init container and sidecar, the mesh-CA overlay's sidecar",
  );
  return all;
}

void describe("image: reference, user, Dockerfile, release scripts", () => {
  void it("the default image is fully qualified and tagged with package.json's version wherever it is named", () => {
    const expected = `ghcr.io/istiod-vault-agent/istiod-vault-agent:${pkg.version}`;
    assert.equal(DEFAULT_IMAGE, expected, "inject's DEFAULT_IMAGE");
    for (const [where, c] of shippedAgentContainers()) assert.equal(c.image, expected, where);
    assert.ok(read("README.md").includes(expected), "README names the image");
    const chart = parseYaml(read("charts/istiod-vault-agent/values.yaml")) as {
      image: { repository: string; tag: string };
    };
    assert.equal(`${chart.image.repository}:${chart.image.tag}`, expected, "the chart's default image");
    // The OCI version label's default, for a build without --build-arg VERSION.
    assert.match(dockerfile, new RegExp(`^ARG VERSION=${pkg.version.replace(/\./g, "\\.")}$`, "m"));
    // Every other mention of the image anywhere shipped uses the same tag (none is left behind at an old version).
    for (const f of ["README.md", ...SHIPPED_VALUES, ...SHIPPED_PATCHES]) {
      for (const [ref] of read(f).matchAll(/ghcr\.io\/istiod-vault-agent\/istiod-vault-agent:[\w.-]+/g)) {
        assert.equal(ref, expected, `${f} names ${ref}`);
      }
    }
  });

  void it("one user everywhere: the image's USER 65532:1337 is what the manifests and inject run", () => {
    assert.equal(AGENT_UID, 65532);
    assert.equal(ISTIOD_GID, 1337, "istiod's group: it reads the 0640 cacerts files through it");
    assert.match(dockerfile, new RegExp(`^USER ${AGENT_UID}:${ISTIOD_GID}$`, "m"));
    for (const [where, c] of shippedAgentContainers()) {
      assert.equal(c.securityContext.runAsUser, AGENT_UID, `${where} runAsUser`);
      assert.equal(c.securityContext.runAsGroup, ISTIOD_GID, `${where} runAsGroup`);
      assert.equal(c.securityContext.runAsNonRoot, true, `${where} runAsNonRoot`);
    }
    // the chart's relay Deployments (their securityContext comes from one helper template)
    const helpers = read("charts/istiod-vault-agent/templates/_helpers.tpl");
    for (const [, user] of helpers.matchAll(/runAsUser: (\d+)/g))
      assert.equal(Number(user), AGENT_UID, "chart runAsUser");
    for (const [, group] of helpers.matchAll(/runAsGroup: (\d+)/g))
      assert.equal(Number(group), ISTIOD_GID, "chart runAsGroup");
    assert.match(helpers, /runAsUser: /, "the chart sets runAsUser");
    // the image's passwd/group name them (tools that map ids to names, and runAsNonRoot with a named user)
    assert.match(dockerfile, /istiod-vault-agent:x:65532:1337:/);
    assert.match(dockerfile, /istio-proxy:x:1337:/);
  });

  void it("one memory request and limit everywhere: inject's, the overlays' and the istiod values' (both modes)", () => {
    for (const [where, c] of shippedAgentContainers()) assert.deepEqual(c.resources, AGENT_RESOURCES, where);
  });

  void it("the runtime stage has no base image, no shell and no npm; the build base is the Node the tests run", () => {
    const froms = [...dockerfile.matchAll(/^FROM (\S+)(?: AS (\S+))?$/gm)].map((m) => m[1]);
    assert.deepEqual(froms, ["${NODE_IMAGE}", "scratch"], "a build stage on NODE_IMAGE, then FROM scratch");
    const runtime = dockerfile.slice(dockerfile.lastIndexOf("\nFROM scratch"));
    assert.doesNotMatch(runtime, /^RUN /m, "nothing runs in the runtime stage (there is no shell to run it)");
    assert.deepEqual(
      [...runtime.matchAll(/^COPY (.*)$/gm)].map((m) => m[1]),
      ["--from=build /rootfs /"],
      "the runtime stage is the staged root filesystem only",
    );
    const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(runtime);
    assert.ok(entrypoint, "an exec-form ENTRYPOINT");
    const argv = JSON.parse(entrypoint[1]!) as string[];
    assert.equal(argv[0], "/usr/local/bin/node");
    assert.equal(argv.at(-1), "/app/dist/bundle/main.js", "the image runs the bundle");
    assert.ok(argv.includes("--enable-source-maps"), "stack traces name the TypeScript files");
    assert.ok(
      argv.some((a) => a.startsWith("--max-old-space-size=")),
      "a bounded heap",
    );
    assert.doesNotMatch(runtime, /^ENV NODE_OPTIONS/m, "Node's flags are the ENTRYPOINT's");
    // The compile cache is made in the build stage with the same flags (V8 refuses a cache made under other flags).
    const cacheFlags = /^ARG ENTRYPOINT_FLAGS="([^"]*)"$/m.exec(dockerfile)?.[1];
    assert.equal(cacheFlags, argv.slice(1, -1).join(" "), "ENTRYPOINT_FLAGS are the ENTRYPOINT's flags");
    assert.match(runtime, /NODE_COMPILE_CACHE=\/app\/compile-cache/);
    for (const label of ["title", "description", "source", "licenses", "version", "revision"]) {
      assert.match(runtime, new RegExp(`org\\.opencontainers\\.image\\.${label}=`), `OCI label ${label}`);
    }
    // An exact version tag (a release adds @sha256:... with scripts/pin-base-image.sh), and the same Node as the
    // devDependency `node` the tests and the local stand-in base run.
    const base = /^ARG NODE_IMAGE=node:(\d+\.\d+\.\d+)-bookworm-slim(@sha256:[0-9a-f]{64})?$/m.exec(dockerfile);
    assert.ok(base, "NODE_IMAGE is node:<exact version>-bookworm-slim[@sha256:...]");
    assert.equal(base[1], pkg.devDependencies.node, "the build base's Node is package.json's devDependency node");
  });

  void it("pin-base-image.sh rewrites NODE_IMAGE to tag@digest and --check compares it with the registry's", () => {
    const dir = mkdtempSync(join(tmpdir(), "iva-pin-"));
    try {
      const file = join(dir, "Dockerfile");
      copyFileSync(join(root, "Dockerfile"), file);
      const tag = /^ARG NODE_IMAGE=(\S+)$/m.exec(dockerfile)![1]!.replace(/@.*/, "");
      // A scripted stand-in for the registry tool: answers the digest in $DIGEST and records what it was asked.
      const bin = join(dir, "bin");
      spawnSync("mkdir", [bin]);
      writeFileSync(join(bin, "crane"), `#!/bin/sh\necho "$@" >>"${dir}/asked"\necho "$DIGEST"\n`);
      chmodSync(join(bin, "crane"), 0o755);
      const pin = (digest: string, ...args: string[]) =>
        spawnSync("bash", [join(root, "scripts/pin-base-image.sh"), ...args], {
          encoding: "utf8",
          env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, DOCKERFILE: file, DIGEST: digest },
        });
      const d1 = `sha256:${"a".repeat(64)}`;
      const d2 = `sha256:${"b".repeat(64)}`;

      const unpinned = pin(d1, "--check");
      assert.equal(unpinned.status, 1);
      assert.match(unpinned.stderr, /is not pinned by digest/);

      assert.equal(pin(d1).status, 0);
      const pinned = readFileSync(file, "utf8");
      assert.match(pinned, new RegExp(`^ARG NODE_IMAGE=${tag}@${d1}$`, "m"));
      assert.equal(pinned.replace(`@${d1}`, ""), dockerfile, "only that line changes");
      assert.match(readFileSync(join(dir, "asked"), "utf8"), new RegExp(`^digest docker\\.io/library/${tag}$`, "m"));

      assert.equal(pin(d1, "--check").status, 0, "pinned and current");
      const moved = pin(d2, "--check");
      assert.equal(moved.status, 1);
      assert.match(moved.stderr, /now resolves to sha256:b/);

      assert.equal(pin(d2).status, 0, "re-pinning replaces the old digest");
      assert.match(readFileSync(file, "utf8"), new RegExp(`^ARG NODE_IMAGE=${tag}@${d2}$`, "m"));

      const bad = pin("sha256:nothex");
      assert.notEqual(bad.status, 0);
      assert.match(bad.stderr, /not a sha256 digest/);
      assert.match(readFileSync(file, "utf8"), new RegExp(`@${d2}$`, "m"), "a bad answer leaves the file alone");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  void it("sbom.sh lists exactly the npm packages bundled into dist/bundle, each a production package", () => {
    const dir = mkdtempSync(join(tmpdir(), "iva-sbom-"));
    try {
      const out = join(dir, "sbom.json");
      const res = spawnSync("bash", [join(root, "scripts/sbom.sh"), out], { encoding: "utf8" });
      assert.equal(res.status, 0, res.stderr);
      const bom = JSON.parse(readFileSync(out, "utf8")) as {
        bomFormat: string;
        metadata: { component: { name: string; version: string } };
        components: { name: string; group?: string; version: string; purl: string }[];
      };
      assert.equal(bom.bomFormat, "CycloneDX");
      assert.deepEqual(
        { name: bom.metadata.component.name, version: bom.metadata.component.version },
        { name: "istiod-vault-agent", version: pkg.version },
      );
      const listed = new Set(bom.components.map((c) => `${c.group ? `${c.group}/` : ""}${c.name}@${c.version}`));

      // What the bundle holds, worked out here from the files on disk: each bundled input file's nearest
      // package.json upwards (its name and version), not from the lockfile the script reads.
      const meta = JSON.parse(read("dist/bundle/meta.json")) as {
        outputs: Record<string, { inputs: Record<string, { bytesInOutput: number }> }>;
      };
      const bundled = new Set<string>();
      for (const o of Object.values(meta.outputs)) {
        for (const [input, { bytesInOutput }] of Object.entries(o.inputs)) {
          if (!input.includes("node_modules/") || bytesInOutput === 0) continue;
          for (let d = dirname(join(root, input)); d.includes("/node_modules/"); d = dirname(d)) {
            const file = join(d, "package.json");
            if (!existsSync(file)) continue;
            const p = JSON.parse(readFileSync(file, "utf8")) as { name?: string; version?: string };
            if (!p.name || !p.version) continue; // a nested package.json that only sets "type"
            bundled.add(`${p.name}@${p.version}`);
            break;
          }
        }
      }
      assert.ok(bundled.has(`@grpc/grpc-js@${pkg.dependencies["@grpc/grpc-js"]}`), "grpc-js is bundled");
      assert.deepEqual([...listed].sort(), [...bundled].sort(), "the SBOM lists exactly the bundled packages");

      // What production needs, worked out here independently of npm's flags: walk package.json's dependencies
      // through the lockfile the way Node resolves them (nearest node_modules upwards).
      const lock = JSON.parse(read("package-lock.json")) as {
        packages: Record<
          string,
          {
            name?: string;
            version: string;
            dev?: boolean;
            dependencies?: Record<string, string>;
            optionalDependencies?: Record<string, string>;
            peerDependencies?: Record<string, string>;
          }
        >;
      };
      const nameOf = (path: string) => lock.packages[path]!.name ?? path.slice(path.lastIndexOf("node_modules/") + 13);
      const resolve = (from: string, dep: string): string | undefined => {
        for (let dir = from; ; dir = dir.slice(0, Math.max(0, dir.lastIndexOf("/node_modules/")))) {
          const candidate = `${dir === "" ? "" : `${dir}/`}node_modules/${dep}`;
          if (lock.packages[candidate]) return candidate;
          if (dir === "") return undefined;
        }
      };
      const prod = new Set<string>();
      const walk = (path: string, deps: string[]) => {
        for (const dep of deps) {
          const found = resolve(path, dep);
          if (!found || prod.has(found)) continue;
          prod.add(found);
          const e = lock.packages[found]!;
          walk(found, Object.keys({ ...e.dependencies, ...e.optionalDependencies, ...e.peerDependencies }));
        }
      };
      walk("", Object.keys(pkg.dependencies));
      assert.ok(prod.size > Object.keys(pkg.dependencies).length, "transitive dependencies were found");
      const prodRefs = new Set([...prod].map((p) => `${nameOf(p)}@${lock.packages[p]!.version}`));
      for (const ref of listed) assert.ok(prodRefs.has(ref), `${ref} is bundled but not a production dependency`);
      const devOnly = Object.entries(lock.packages).filter(([path, e]) => path !== "" && !prod.has(path) && e.dev);
      assert.ok(devOnly.length > 0, "the lockfile has devDependency-only packages to leave out");
      for (const [path, e] of devOnly) {
        const ref = `${nameOf(path)}@${e.version}`;
        if (!prodRefs.has(ref)) assert.ok(!listed.has(ref), `devDependency-only package ${ref} is in the SBOM`);
      }
      for (const c of bom.components) assert.match(c.purl, /^pkg:npm\//);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
