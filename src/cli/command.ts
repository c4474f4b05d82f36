// What every command is to main.ts: a flag table, its help, and a run function. runCommand gives them all the same
// --help/-h, --version and exit codes: 0 done, 1 a runtime failure, 2 a usage or configuration error.
import { readFileSync } from "node:fs";
import { ConfigError } from "./errors.js";
import { parseCommandLine, type FlagTable, type FlagValues } from "./flags.js";
import { packageRoot } from "../util/runtime-entry.js";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export interface Command {
  name: string;
  flags: FlagTable<never>;
  /** The full --help text (usage, description, flags with env vars and defaults). */
  help(): string;
  /** Positional arguments are refused unless the command takes them. */
  positionals?: boolean;
  /** Runs with the parsed flags; throws ConfigError for usage problems found later. Returns the exit code. */
  run(values: FlagValues, positionals: string[], argv: string[]): Promise<number>;
}

/** The version in package.json (next to dist/ in the image and in a checkout). */
export function version(): string {
  return readJsonBesideDist<{ version?: string }>("package.json")?.version ?? "unknown";
}

export interface BuildInfo {
  version: string;
  /** The source revision the image was built from (Dockerfile build arg REVISION); "unknown" outside an image. */
  commit: string;
  /** The Node runtime, e.g. v24.21.0. */
  node: string;
  /** os/arch, e.g. linux/x64. */
  platform: string;
}

/** What was built and what runs it: package.json's version, the image's build-info.json (written by the Dockerfile
 * next to package.json), and the Node runtime. */
export function buildInfo(): BuildInfo {
  const commit = readJsonBesideDist<{ commit?: unknown }>("build-info.json")?.commit;
  return {
    version: version(),
    commit: typeof commit === "string" && commit !== "" ? commit : "unknown",
    node: process.version,
    platform: `${process.platform}/${process.arch}`,
  };
}

/** The one line `--version` prints, for every command. */
export function versionLine(): string {
  const b = buildInfo();
  return `istiod-vault-agent ${b.version} (commit ${b.commit}, node ${b.node}, ${b.platform})`;
}

function readJsonBesideDist<T>(name: string): T | undefined {
  try {
    return JSON.parse(readFileSync(new URL(name, packageRoot()), "utf8")) as T;
  } catch {
    return undefined;
  }
}

export async function runCommand(cmd: Command, argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseCommandLine(cmd.flags, argv, { positionals: cmd.positionals === true });
  } catch (err) {
    return usageError(cmd.name, err);
  }
  if (parsed.values.help === true) {
    console.log(cmd.help());
    return EXIT_OK;
  }
  if (parsed.values.version === true) {
    console.log(versionLine());
    return EXIT_OK;
  }
  try {
    return await cmd.run(parsed.values, parsed.positionals, argv);
  } catch (err) {
    if (err instanceof ConfigError) return usageError(cmd.name, err);
    console.error(`istiod-vault-agent ${cmd.name}: ${(err as Error).message}`);
    return EXIT_FAILURE;
  }
}

function usageError(command: string, err: unknown): number {
  if (!(err instanceof ConfigError)) throw err;
  console.error(`istiod-vault-agent ${command}: ${err.message}`);
  return EXIT_USAGE;
}
