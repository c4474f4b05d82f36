// Reads a docker-archive image (what test/env/images.sh saves and containerd imports): its config (user, entrypoint,
// labels) and the paths its layers hold, so a test can say what the shipped image contains without running it.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface ImageConfig {
  User?: string;
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  WorkingDir?: string;
  Labels?: Record<string, string>;
}

export interface ImageArchive {
  config: ImageConfig;
  /** Every path in the image's filesystem (all layers, whiteouts applied), without a leading "./" or trailing "/". */
  paths: Set<string>;
  /** The paths that are not directories. */
  files: Set<string>;
  /** name@version of every package under `dir`/node_modules in the image (nested ones included). */
  packages(dir: string): Set<string>;
  /** The bytes of one file in the image (the topmost layer that holds it). */
  read(path: string): Buffer;
}

const sh = (script: string, ...args: string[]) =>
  execFileSync("bash", ["-c", script, "bash", ...args], { encoding: "utf8", maxBuffer: 64 << 20 });

export function readImageArchive(archive: string): ImageArchive {
  const [manifest] = JSON.parse(sh('tar -xOf "$1" manifest.json', archive)) as { Config: string; Layers: string[] }[];
  if (!manifest) throw new Error(`${archive}: no image in manifest.json`);
  const config = (JSON.parse(sh('tar -xOf "$1" "$2"', archive, manifest.Config)) as { config: ImageConfig }).config;
  const paths = new Set<string>();
  const dirs = new Set<string>();
  for (const layer of manifest.Layers) {
    for (const raw of sh('tar -xOf "$1" "$2" | tar -t', archive, layer).split("\n")) {
      const p = raw.replace(/^\.\//, "").replace(/\/$/, "");
      if (!p || p === ".") continue;
      const base = p.slice(p.lastIndexOf("/") + 1);
      if (base.startsWith(".wh.")) {
        const gone = p.slice(0, p.length - base.length) + base.slice(4);
        for (const q of [...paths]) if (q === gone || q.startsWith(`${gone}/`)) paths.delete(q);
      } else {
        paths.add(p);
        if (raw.endsWith("/")) dirs.add(p); // tar -t marks directories with a trailing slash
      }
    }
  }
  return {
    config,
    paths,
    files: new Set([...paths].filter((p) => !dirs.has(p))),
    read(path: string) {
      for (const layer of [...manifest.Layers].reverse()) {
        const out = execFileSync(
          "bash",
          [
            "-c",
            'tar -xOf "$1" "$2" | tar -xO "$3" 2>/dev/null || tar -xOf "$1" "$2" | tar -xO "./$3" 2>/dev/null || true',
            "bash",
            archive,
            layer,
            path,
          ],
          { maxBuffer: 256 << 20 },
        );
        if (out.length) return out;
      }
      throw new Error(`${archive}: no file ${path}`);
    },
    packages(dir: string) {
      const work = mkdtempSync(join(tmpdir(), "iva-image-"));
      try {
        for (const layer of manifest.Layers) {
          sh(
            'tar -xOf "$1" "$2" | tar -x -C "$3" --wildcards --no-anchored "$4/node_modules/*package.json" 2>/dev/null || true',
            archive,
            layer,
            work,
            dir,
          );
        }
        const found = new Set<string>();
        const walk = (modules: string) => {
          let entries: string[];
          try {
            entries = readdirSync(modules);
          } catch {
            return;
          }
          for (const e of entries) {
            const names = e.startsWith("@") ? readdirSync(join(modules, e)).map((n) => `${e}/${n}`) : [e];
            for (const name of names) {
              const pkgDir = join(modules, name);
              if (!statSync(pkgDir).isDirectory()) continue;
              try {
                const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")) as {
                  name?: string;
                  version?: string;
                };
                found.add(`${pkg.name ?? name}@${pkg.version}`);
              } catch {
                // a directory without package.json (a package's own data directory named like one): not a package
              }
              walk(join(pkgDir, "node_modules"));
            }
          }
        };
        walk(join(work, dir, "node_modules"));
        return found;
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    },
  };
}
