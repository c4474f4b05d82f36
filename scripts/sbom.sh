#!/usr/bin/env bash
# The release SBOM: a CycloneDX document of the production dependencies the image ships, made by npm itself from
# package-lock.json alone (no network, no node_modules needed).
#   scripts/sbom.sh [OUT]      (npm run sbom)    OUT defaults to dist/sbom/istiod-vault-agent-<version>.cdx.json
#
# Not `npm sbom --omit=dev`: it drops production packages that a devDependency also uses (npm/cli#7909; here it
# loses @bufbuild/protobuf). npm lists the whole lockfile instead, and the devDependency-only packages are taken out
# by the lockfile's own `dev` flags, which are what `npm ci --omit=dev` (the Dockerfile's prune) goes by.
# The Node runtime and the glibc libraries the image also carries come from the Dockerfile's build base, not from
# the lockfile, and are not listed here.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
version=$(node -p 'require("./package.json").version')
out=${1:-$repo/dist/sbom/istiod-vault-agent-$version.cdx.json}
mkdir -p "$(dirname "$out")"

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
npm sbom --offline --package-lock-only --sbom-format=cyclonedx --sbom-type=application >"$tmp"
# shellcheck disable=SC2016 # JavaScript, not shell, expands inside
node -e '
  const fs = require("node:fs");
  const [file, out] = process.argv.slice(1);
  const pkg = JSON.parse(fs.readFileSync("package.json", "utf8"));
  const lock = JSON.parse(fs.readFileSync("package-lock.json", "utf8"));
  const bom = JSON.parse(fs.readFileSync(file, "utf8"));
  const ref = (path, e) => `${e.name ?? path.slice(path.lastIndexOf("node_modules/") + "node_modules/".length)}@${e.version}`;
  const shipped = new Set();
  for (const [path, e] of Object.entries(lock.packages)) if (path !== "" && !e.dev && !e.link) shipped.add(ref(path, e));
  bom.components = bom.components.filter((c) => shipped.has(c["bom-ref"]));
  const kept = new Set([bom.metadata.component["bom-ref"], ...bom.components.map((c) => c["bom-ref"])]);
  bom.dependencies = (bom.dependencies ?? [])
    .filter((d) => kept.has(d.ref))
    .map((d) => ({ ...d, dependsOn: (d.dependsOn ?? []).filter((r) => kept.has(r)) }));
  const missing = [...shipped].filter((r) => !kept.has(r));
  if (missing.length) throw new Error(`npm sbom left out production packages: ${missing.join(", ")}`);
  // npm names the root component after the checkout directory; package.json names the product.
  Object.assign(bom.metadata.component, { name: pkg.name, version: pkg.version });
  fs.writeFileSync(out, JSON.stringify(bom, null, 2) + "\n");
' "$tmp" "$out"
echo "$out"
