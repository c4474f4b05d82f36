// Where the running code sits: tsc's output (dist/src/**, one file per module) or the esbuild bundle
// (dist/bundle/main.js and its other entries beside it; scripts/bundle.mjs defines IVA_BUNDLED there). Two things
// depend on it: the package root (package.json, the image's build-info.json) and the file a Worker starts from.
declare const IVA_BUNDLED: boolean | undefined;

/** True in the bundle, false under tsc's output. */
export const bundled: boolean = typeof IVA_BUNDLED !== "undefined" && IVA_BUNDLED;

/** The directory holding package.json (the image's /app): two levels above dist/bundle/main.js, three above this
 * file's dist/src/util/runtime-entry.js. In the bundle, import.meta.url is the bundle file's own URL. */
export function packageRoot(): URL {
  return new URL(bundled ? "../../" : "../../../", import.meta.url);
}

/**
 * The file a Worker runs: `self` (the caller's import.meta.url) under tsc's output; in the bundle, the entry that
 * scripts/bundle.mjs built from that source under `name` (its ENTRIES), next to the bundle file.
 */
export function runtimeEntry(self: string, name: string): URL {
  return bundled ? new URL(`./${name}.js`, import.meta.url) : new URL(self);
}
