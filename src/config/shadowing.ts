// The RootTrustPolicy read through the apiserver (--policy-name) is authoritative: a flag or environment variable
// that sets a configuration field the policy also sets would shadow the policy silently (flags win), so the two are
// compared here, field by field. Which fields a source sets is found by running that source's own setters (the flag
// table's, the policy reader's) against a recording copy of the configuration: no second list of field names to keep
// in step with the flags or the policy schema.
import { ConfigError, DEFAULT_CONFIG, type Config } from "./config.js";
import { applyFlags, type FlagTable, type FlagValues } from "../cli/flags.js";
import { applyPolicyDocument } from "./root-trust-policy.js";

/** Thrown by loadConfig when a flag or variable shadows a field of the authoritative policy (and maybe more). */
export class ShadowedByFlagError extends ConfigError {
  constructor(
    problems: string[],
    /** The shadowing problems alone (also in `problems`). */
    readonly shadowing: string[],
  ) {
    super(problems);
    this.name = "ShadowedByFlagError";
  }
}

/**
 * Configuration fields that are one setting under two names: the Vault CA comes from a file (--vault-cacert), a
 * directory (--vault-capath) or the policy's caBundle, and the file or directory loses silently to the bundle if both
 * are set.
 */
const SAME_SETTING: Record<string, string> = { "vault.caFile": "vault.caPem", "vault.caDir": "vault.caPem" };

/** Runs `write` against a copy of the defaults and reports each dotted field path it assigns. */
export function recordWrites(write: (c: Config) => void, onWrite: (path: string) => void): void {
  const wrap = (target: object, prefix: string[]): object =>
    new Proxy(target, {
      get(t, key, receiver) {
        const v: unknown = Reflect.get(t, key, receiver);
        if (typeof key !== "string" || typeof v !== "object" || v === null || Array.isArray(v)) return v;
        return wrap(v, [...prefix, key]);
      },
      set(t, key, value, receiver) {
        if (typeof key === "string") {
          const path = [...prefix, key].join(".");
          onWrite(SAME_SETTING[path] ?? path);
        }
        return Reflect.set(t, key, value, receiver);
      },
    });
  write(wrap(structuredClone(DEFAULT_CONFIG), []) as Config);
}

/** The configuration fields `doc` sets, each with the policy field (e.g. spec.config.agentCa.vault.server). */
export function policyFields(doc: unknown): Map<string, string> {
  const fields = new Map<string, string>();
  let field = "";
  recordWrites(
    (c) => void applyPolicyDocument(c, doc, (f) => (field = f)),
    (path) => fields.set(path, field),
  );
  return fields;
}

/**
 * Every flag or variable (given in `values` or `env`) that sets a field the policy `doc` also sets, as problems that
 * name both and say what to do. `policy` names the policy in the messages (namespace/name).
 */
export function shadowingProblems<C>(
  table: FlagTable<C>,
  values: FlagValues,
  env: NodeJS.ProcessEnv,
  doc: unknown,
  policy: string,
): string[] {
  const fields = policyFields(doc);
  if (fields.size === 0) return [];
  const problems: string[] = [];
  for (const [name, flag] of Object.entries(table)) {
    const fromEnv = values[name] === undefined && flag.env !== undefined && !!env[flag.env];
    const source = values[name] !== undefined ? `--${name}` : fromEnv ? flag.env : undefined;
    if (!source || !flag.apply) continue;
    const written = new Set<string>();
    // Invalid values are reported by the main pass; here only which fields the flag would set matters.
    recordWrites(
      (c) => void applyFlags({ [name]: flag } as unknown as FlagTable<Config>, values, env, c),
      (p) => written.add(p),
    );
    for (const path of written) {
      const field = fields.get(path);
      if (field === undefined) continue;
      problems.push(
        `${source}: ${fromEnv ? `(the variable of --${name}) ` : ""}sets what ${field} of RootTrustPolicy` +
          `${policy ? ` ${policy}` : ""} sets; the policy is authoritative, so a flag or variable may not shadow it: ` +
          `remove one of them (the ${fromEnv ? "variable" : "flag"}, or the field from the policy)`,
      );
    }
  }
  return problems;
}
