#!/usr/bin/env bash
# The release SBOM: a CycloneDX document of the npm packages the image ships. The image carries no node_modules: its
# packages are the ones esbuild put into dist/bundle (scripts/bundle.mjs), which the bundle's metafile
# (dist/bundle/meta.json) records file by file. npm writes the document from package-lock.json (no network), and it is
# cut down to exactly those packages, at the versions the lockfile installed where the bundled files came from.
#   scripts/sbom.sh [OUT]      (npm run sbom)    OUT defaults to dist/sbom/istiod-vault-agent-<version>.cdx.json
# Run `npm run bundle` first (the metafile must match the bundle being released; META=FILE names another one).
#
# A bundled package must be a production one: the script fails if the metafile names a package the lockfile marks as
# devDependency-only (it would ship without being declared), or one npm's SBOM does not list.
# The Node runtime and the glibc libraries the image also carries come from the Dockerfile's build base, not from
# the lockfile, and are not listed here.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
version=$(node -p 'require("./package.json").version')
out=${1:-$repo/dist/sbom/istiod-vault-agent-$version.cdx.json}
meta=${META:-$repo/dist/bundle/meta.json}
[ -s "$meta" ] || { echo "sbom.sh: $meta missing: run 'npm run bundle' first" >&2; exit 1; }
mkdir -p "$(dirname "$out")"

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
npm sbom --offline --package-lock-only --sbom-format=cyclonedx --sbom-type=application >"$tmp"
# shellcheck disable=SC2016 # JavaScript, not shell, expands inside
node -e '
  const fs = require("node:fs");
  const [file, out, metaFile] = process.argv.slice(1);
  const pkg = JSON.parse(fs.readFileSync("package.json", "utf8"));
  const lock = JSON.parse(fs.readFileSync("package-lock.json", "utf8"));
  const bom = JSON.parse(fs.readFileSync(file, "utf8"));
  const meta = JSON.parse(fs.readFileSync(metaFile, "utf8"));
  const ref = (path, e) => `${e.name ?? path.slice(path.lastIndexOf("node_modules/") + "node_modules/".length)}@${e.version}`;
  // Every input file that put code into an output, to its package: the innermost node_modules/<name> (or
  // node_modules/@scope/<name>) of its path, which is that package`s key in the lockfile.
  const shipped = new Set();
  for (const o of Object.values(meta.outputs)) {
    for (const [input, { bytesInOutput }] of Object.entries(o.inputs)) {
      const m = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
      if (!m || bytesInOutput === 0) continue;
      const e = lock.packages[m[1]];
      if (!e) throw new Error(`bundled ${input}: ${m[1]} is not in package-lock.json`);
      if (e.dev) throw new Error(`bundled ${input}: ${m[1]} is a devDependency-only package`);
      shipped.add(ref(m[1], e));
    }
  }
  if (shipped.size === 0) throw new Error(`${metaFile} names no npm package`);
  bom.components = bom.components.filter((c) => shipped.has(c["bom-ref"]));
  const kept = new Set([bom.metadata.component["bom-ref"], ...bom.components.map((c) => c["bom-ref"])]);
  bom.dependencies = (bom.dependencies ?? [])
    .filter((d) => kept.has(d.ref))
    .map((d) => ({ ...d, dependsOn: (d.dependsOn ?? []).filter((r) => kept.has(r)) }));
  const missing = [...shipped].filter((r) => !kept.has(r));
  if (missing.length) throw new Error(`npm sbom left out bundled packages: ${missing.join(", ")}`);
  // npm names the root component after the checkout directory; package.json names the product.
  Object.assign(bom.metadata.component, { name: pkg.name, version: pkg.version });
  fs.writeFileSync(out, JSON.stringify(bom, null, 2) + "\n");
' "$tmp" "$out" "$meta"
echo "$out"
