// One declarative flag table per command: each flag's kind, help, environment variable, and how it reads into and
// out of the command's configuration object. The same table drives parsing (node:util parseArgs, strict), applying
// values (environment, then flag) with errors that name the flag and what is expected, and --help, whose defaults
// are read from the command's default configuration through the same accessor the parser writes.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ConfigError } from "./errors.js";
import { Expected, formatDuration } from "./validate.js";

export type FlagKind = "string" | "boolean" | "multiple";

export interface Flag<C> {
  kind: FlagKind;
  help: string;
  /** Environment variable read when the flag is absent. */
  env?: string;
  /** Placeholder in help, e.g. URL, DURATION. */
  arg?: string;
  /** Reads a raw value into `c`; throws Expected when the value is not usable. */
  apply?: (c: C, raw: string) => void;
  /** Reads the value the flag sets back out of a configuration: help prints it from the defaults. */
  show?: (c: C) => string | undefined;
  /** Printed as the default when it is not a plain value of the defaults (e.g. "--ttl"). */
  defaultText?: string;
  /** A one-letter alias (e.g. "o" for -o), for the few flags that conventionally have one. */
  short?: string;
}

export type FlagTable<C> = Record<string, Flag<C>>;

/** A string flag whose parsed value `parse(raw)` is stored by `set`, and read back by `get` for help. */
export function valueFlag<C, T>(spec: {
  help: string;
  parse: (raw: string) => T;
  set: (c: C, v: T) => void;
  get?: (c: C) => (T & Shown) | undefined;
  env?: string;
  arg?: string;
  defaultText?: string;
  /** How `get`'s value prints; durations print as 720h, lists comma-separated. */
  format?: "duration" | "ms";
}): Flag<C> {
  const { get, format } = spec;
  return {
    kind: "string",
    help: spec.help,
    env: spec.env,
    arg: spec.arg,
    defaultText: spec.defaultText,
    apply: (c, raw) => spec.set(c, spec.parse(raw)),
    show: get ? (c) => showValue(get(c), format) : undefined,
  };
}

/** A boolean switch. `set` turns it on; `get` reads it back. */
export function switchFlag<C>(spec: {
  help: string;
  set: (c: C) => void;
  get?: (c: C) => boolean;
  env?: string;
}): Flag<C> {
  const { get } = spec;
  return {
    kind: "boolean",
    help: spec.help,
    env: spec.env,
    apply: (c) => spec.set(c),
    show: get ? (c) => (get(c) ? "on" : undefined) : undefined,
  };
}

type Shown = string | number | boolean | string[];

/** The property path `at` reads (e.g. ["issuer", "address"]), found by running it on a recording proxy. */
function pathOf<C>(at: (c: C) => unknown): string[] {
  const path: string[] = [];
  const recorder: object = new Proxy({}, { get: (_t, key) => (path.push(String(key)), recorder) });
  at(recorder as C);
  return path;
}

function setAt(c: unknown, path: string[], v: unknown): void {
  let o = c as Record<string, unknown>;
  for (const key of path.slice(0, -1)) o = o[key] as Record<string, unknown>;
  o[path.at(-1)!] = v;
}

/**
 * Flag builders bound to one configuration type: `option` parses into the field `at` reads (and help prints that
 * field of the defaults), `toggle` turns a boolean field on.
 */
export function fieldFlags<C>() {
  type More = { env?: string; arg?: string; defaultText?: string };
  const option = <T extends Shown>(
    help: string,
    parse: (raw: string) => T,
    at: (c: C) => T | undefined,
    more: { env?: string; arg?: string; defaultText?: string; format?: "duration" | "ms" } = {},
  ): Flag<C> => {
    const path = pathOf(at);
    return valueFlag<C, T>({ help, parse, set: (c, v) => setAt(c, path, v), get: at, ...more });
  };
  return {
    option,
    /** A duration in seconds (help prints it as 720h). */
    seconds: (help: string, parse: (raw: string) => number, at: (c: C) => number | undefined, more: More = {}) =>
      option(help, parse, at, { arg: "DURATION", format: "duration", ...more }),
    /** A duration kept in milliseconds. */
    millis: (help: string, parse: (raw: string) => number, at: (c: C) => number | undefined) =>
      option(help, parse, at, { arg: "DURATION", format: "ms" }),
    toggle: (help: string, at: (c: C) => boolean, env?: string): Flag<C> => {
      const path = pathOf(at);
      return switchFlag<C>({ help, set: (c) => setAt(c, path, true), get: at, env });
    },
  };
}

/** A flag the command reads itself before (or instead of) applying the table: --config, --role, --policy-name. */
export function commandFlag<C>(
  help: string,
  more: { arg?: string; defaultText?: string; kind?: FlagKind } = {},
): Flag<C> {
  return { kind: more.kind ?? "string", help, arg: more.arg, defaultText: more.defaultText };
}

export function showValue(
  v: string | number | boolean | string[] | undefined,
  format?: "duration" | "ms",
): string | undefined {
  if (v === undefined || v === "" || v === false) return undefined;
  if (Array.isArray(v)) return v.length ? v.join(",") : undefined;
  if (typeof v === "number" && format === "duration") return formatDuration(v);
  if (typeof v === "number" && format === "ms") return formatDuration(v / 1000);
  if (typeof v === "number") return String(Math.round(v * 1000) / 1000);
  return String(v);
}

export type FlagValues = Record<string, string | boolean | string[] | undefined>;

/** --help and --version are on every command. */
const COMMON: FlagTable<unknown> = {
  help: { kind: "boolean", help: "show this help and exit" },
  version: { kind: "boolean", help: "print the version and exit" },
};

/** Parses argv strictly against `table` (plus --help/-h and --version). Unknown flags are a ConfigError. */
export function parseCommandLine(
  table: FlagTable<never>,
  argv: string[],
  opts: { positionals?: boolean } = {},
): { values: FlagValues; positionals: string[] } {
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }> = {};
  for (const [name, f] of Object.entries({ ...table, ...COMMON }))
    options[name] = {
      ...(f.kind === "multiple"
        ? { type: "string", multiple: true }
        : { type: f.kind === "boolean" ? "boolean" : "string" }),
      ...(f.short ? { short: f.short } : {}),
    };
  options.help = { type: "boolean", short: "h" };
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options,
      strict: true,
      allowPositionals: opts.positionals === true,
    });
    return { values: values as FlagValues, positionals };
  } catch (err) {
    throw new ConfigError([`flags: ${(err as Error).message}; run with --help for the list of flags`]);
  }
}

/**
 * Applies every flag in `table` present in `values` (or, when absent, in its environment variable) to `c`. Returns
 * the problems, each naming the flag (or variable), the raw value and what was expected.
 */
export function applyFlags<C>(table: FlagTable<C>, values: FlagValues, env: NodeJS.ProcessEnv, c: C): string[] {
  const problems: string[] = [];
  for (const [name, f] of Object.entries(table)) {
    const given = values[name];
    let raw: string | undefined;
    let source = `--${name}`;
    if (given !== undefined) {
      if (f.kind === "boolean") {
        if (given === true) f.apply?.(c, "true");
        continue;
      }
      if (f.kind === "multiple") {
        try {
          f.apply?.(c, (given as string[]).join("\n"));
        } catch (err) {
          problems.push(`${source}: ${(err as Error).message}`);
        }
        continue;
      }
      raw = given as string;
    } else if (f.env && env[f.env] !== undefined && env[f.env] !== "") {
      raw = env[f.env]!;
      source = f.env;
      if (f.kind === "boolean") {
        // Read as Vault's own client reads VAULT_SKIP_VERIFY (Go's strconv.ParseBool), so a value Vault's CLI
        // accepts works here too; anything else is an error rather than a guess.
        const on = goParseBool(raw);
        if (on === true) f.apply?.(c, "true");
        else if (on === undefined)
          problems.push(
            `${source}: "${raw}" must be a boolean as Vault reads it: 1, t, T, TRUE, true, True (on) or 0, f, F, FALSE, false, False (off)`,
          );
        continue;
      }
    }
    if (raw === undefined || !f.apply) continue;
    try {
      f.apply(c, raw);
    } catch (err) {
      if (!(err instanceof Expected)) throw err;
      problems.push(`${source}: "${raw}" is invalid; expected ${err.message}`);
    }
  }
  return problems;
}

/** Go's strconv.ParseBool: the spellings Vault's client accepts for its boolean variables; undefined otherwise. */
export function goParseBool(raw: string): boolean | undefined {
  if (["1", "t", "T", "TRUE", "true", "True"].includes(raw)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(raw)) return false;
  return undefined;
}

/** The help of one command: usage lines, description, then every flag with its env var and default. */
export function renderHelp<C>(usage: string[], description: string, table: FlagTable<C>, defaults: C): string {
  const head = [...usage.map((u, i) => `${i === 0 ? "usage: " : "       "}${u}`), "", description, "", "flags:"];
  return [...head, renderFlags({ ...table, ...(COMMON as FlagTable<C>) }, defaults)].join("\n");
}

/** Two lines per flag: its name and placeholder, then its help with its environment variable and default. */
export function renderFlags<C>(table: FlagTable<C>, defaults: C): string {
  const lines: string[] = [];
  for (const [name, f] of Object.entries(table)) {
    const arg = f.kind === "boolean" ? "" : ` ${f.arg ?? "VALUE"}`;
    const notes: string[] = [];
    if (f.env) notes.push(`env ${f.env}`);
    const def = f.defaultText ?? f.show?.(defaults);
    if (def !== undefined) notes.push(`default: ${def}`);
    const alias = f.short ? ` (or -${f.short}${arg})` : "";
    lines.push(`  --${name}${arg}${f.kind === "multiple" ? " (repeatable)" : ""}${alias}`);
    lines.push(`      ${f.help}${notes.length ? ` [${notes.join("; ")}]` : ""}`);
  }
  return lines.join("\n");
}

/** Reads a file for a flag, or records a problem naming the flag. */
export function readFlagFile(flag: string, path: string, expected: string, problems: string[]): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    problems.push(
      `${flag}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? "error"}); expected ${expected}`,
    );
    return undefined;
  }
}
