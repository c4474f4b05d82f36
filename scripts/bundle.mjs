// `npm run bundle`: the agent as the image and `npm start` run it. esbuild bundles the TypeScript sources and the
// production dependencies into dist/bundle/main.js (ESM, Node 24) with source maps, plus every other runtime entry (a
// file Node loads by URL at run time, such as the signing worker) beside it. Reading a few large files is much
// cheaper than resolving and reading tsc's output and its ~900 dependency modules one by one.
// Code splitting: what main.js reaches only through import() (each command, the kubeconfig machinery) goes into
// chunks next to it, loaded when used: the sidecar then parses 3.9 MB rather than the whole 5.7 MB, which measured
// 350 vs 460 ms of CPU to ready and 88 vs 99 MiB idle RSS (bench/RESULTS.md). CommonJS packages inside a chunk are
// evaluated on their first require() only.
// dist/bundle/meta.json is esbuild's metafile: which input files (and so which npm packages) each output contains;
// scripts/sbom.sh lists those packages. It is a build record, not shipped in the image.
//   node scripts/bundle.mjs [OUTDIR] [--bench]      (--bench: also bench/agent-harness.ts, for bench/socket-load.ts)
import { build } from "esbuild";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * Output name (without .js) → source. src/util/runtime-entry.ts finds an entry by this name next to main.js when
 * bundled; a file that starts a Worker from its own URL must be listed here.
 */
export const ENTRIES = {
  main: "src/main.ts",
  "signing-worker": "src/signing/worker-pool.ts",
};

/**
 * @kubernetes/client-node's index re-exports its whole generated API (16 MB), and the package does not declare its
 * modules free of side effects, so a bundler keeps every one of them. The agent uses only KubeConfig
 * (src/kube/client-node.ts). Declaring the package's modules side-effect free lets esbuild drop what KubeConfig does
 * not reach (the bundle goes from 21 MB to 6 MB). polyfill.js is the one module kept for its side effect
 * (globalThis.File on old Nodes).
 */
const clientNodeSideEffectFree = {
  name: "client-node-side-effect-free",
  setup(b) {
    const pkg = "/node_modules/@kubernetes/client-node/";
    b.onResolve({ filter: /.*/ }, async (args) => {
      if (args.pluginData === "resolved" || !(args.importer.includes(pkg) || args.path.startsWith("@kubernetes/"))) {
        return undefined;
      }
      const { path, kind, importer, resolveDir, with: attributes } = args;
      const r = await b.resolve(path, { kind, importer, resolveDir, with: attributes, pluginData: "resolved" });
      if (r.errors.length || !r.path.includes(pkg) || r.path.endsWith("/polyfill.js")) return r;
      return { ...r, sideEffects: false };
    });
  },
};

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** Source map v3 "mappings" → per generated line, segments of absolute [column, source, line, column, name?]. */
function decodeMappings(mappings) {
  const state = [0, 0, 0, 0];
  return mappings.split(";").map((line) => {
    let col = 0;
    return line
      .split(",")
      .filter(Boolean)
      .map((seg) => {
        const values = [];
        for (let i = 0, shift = 0, v = 0; i < seg.length; i++) {
          const d = B64.indexOf(seg[i]);
          v += (d & 31) << shift;
          if (d & 32) shift += 5;
          else {
            values.push(v & 1 ? -(v >>> 1) : v >>> 1);
            v = shift = 0;
          }
        }
        col += values[0];
        const out = [col];
        for (let k = 1; k < values.length; k++) out.push((state[k - 1] += values[k]));
        return out;
      });
  });
}

function encodeMappings(lines) {
  const vlq = (n) => {
    let v = n < 0 ? (-n << 1) | 1 : n << 1;
    let s = "";
    do {
      let d = v & 31;
      v >>>= 5;
      if (v) d |= 32;
      s += B64[d];
    } while (v);
    return s;
  };
  const state = [0, 0, 0, 0];
  return lines
    .map((segs) => {
      let col = 0;
      return segs
        .map((seg) => {
          let s = vlq(seg[0] - col);
          col = seg[0];
          for (let k = 1; k < seg.length; k++) {
            s += vlq(seg[k] - state[k - 1]);
            state[k - 1] = seg[k];
          }
          return s;
        })
        .join(",");
    })
    .join(";");
}

/**
 * Keeps the mappings of the project's own sources only. Node parses every map of every file it loads when source maps
 * are on, and the dependencies' mappings are ~85% of them (measured: ~35 ms of CPU at start-up for the sidecar).
 * Frames in our code still name src/*.ts; a frame inside a package shows its place in the bundle (where esbuild's
 * `// node_modules/<package>/<file>` comments name it): each run of a package's code starts with an unmapped segment,
 * so no lookup there falls back onto a neighbouring mapping of ours.
 */
function ownMappingsOnly(map) {
  const ours = map.sources.map((src) => !src.includes("node_modules/"));
  const lines = decodeMappings(map.mappings).map((segs) => {
    const kept = [];
    for (const seg of segs) {
      if (seg.length === 1 || ours[seg[1]]) kept.push(seg);
      else if (kept.length === 0 || kept.at(-1).length !== 1) kept.push([seg[0]]);
    }
    return kept;
  });
  return { ...map, mappings: encodeMappings(lines) };
}

/** The Node that package.json pins (devDependency `node`): the image's and the tests' runtime. */
function nodeTarget() {
  const pkg = JSON.parse(readFileSync(join(repo, "package.json"), "utf8"));
  return `node${pkg.devDependencies.node}`;
}

/** The benches' server (bench/socket-load.ts --server-script) bundled like the agent, for memory figures of the bundle. */
export const BENCH_ENTRIES = { ...ENTRIES, "agent-harness": "bench/agent-harness.ts" };

export async function bundle(outdir = join(repo, "dist/bundle"), entries = ENTRIES) {
  rmSync(outdir, { recursive: true, force: true });
  mkdirSync(outdir, { recursive: true });
  const result = await build({
    absWorkingDir: repo,
    entryPoints: Object.entries(entries).map(([out, src]) => ({ out, in: src })),
    outdir,
    bundle: true,
    format: "esm",
    platform: "node",
    target: nodeTarget(),
    // Mappings only: stack traces need them, the sources themselves are in the repository (a third of the size).
    sourcemap: "linked",
    sourcesContent: false,
    metafile: true,
    splitting: true,
    // Beside main.js: src/util/runtime-entry.ts resolves entries and the package root from any of these files.
    chunkNames: "[name]-[hash]",
    legalComments: "linked",
    logLevel: "warning",
    plugins: [clientNodeSideEffectFree],
    // IVA_BUNDLED tells src/util/runtime-entry.ts where it runs from (dist/bundle/ rather than tsc's dist/src/...).
    define: { IVA_BUNDLED: "true" },
    // The CommonJS packages (grpc-js, prom-client, undici, pino, ...) call require() for Node's built-in modules,
    // which an ES module does not have; this gives them the real one.
    banner: {
      js: 'import { createRequire as __ivaCreateRequire } from "node:module"; const require = __ivaCreateRequire(import.meta.url);',
    },
  });
  for (const file of Object.keys(result.metafile.outputs).filter((f) => f.endsWith(".js.map"))) {
    const path = join(repo, file);
    writeFileSync(path, JSON.stringify(ownMappingsOnly(JSON.parse(readFileSync(path, "utf8")))));
  }
  writeFileSync(join(outdir, "meta.json"), JSON.stringify(result.metafile));
  return result;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const outdir = args.find((a) => !a.startsWith("--"));
  const result = await bundle(
    outdir && join(process.cwd(), outdir),
    args.includes("--bench") ? BENCH_ENTRIES : ENTRIES,
  );
  for (const w of result.warnings) process.stderr.write(`${w.text}\n`);
  for (const [file, out] of Object.entries(result.metafile.outputs)) {
    if (out.entryPoint) process.stdout.write(`${file}  ${(out.bytes / 1024).toFixed(0)} KiB\n`);
  }
}
