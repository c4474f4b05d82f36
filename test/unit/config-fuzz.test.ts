// Seeded fuzzing of configuration loading: command-line flags (parseFlags → loadConfig), the environment, and
// RootTrustPolicy documents (ours and Gloo's admin.gloo.solo.io/v2), in memory and as YAML/JSON files. Every input
// must either give a valid Config or throw a ConfigError whose problems name the field at fault; nothing else may be
// thrown, DEFAULT_CONFIG must never change, and Object.prototype must never gain a key.
//
// Replay: IVA_CONFIG_FUZZ_SEED=<seed printed below>.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { stringify as toYaml } from "yaml";
import { ConfigError, DEFAULT_CONFIG, validateConfig, type Config } from "../../src/config/config.js";
import { AGENT_FLAGS, loadConfig, parseFlags, type FlagName, type FlagValues } from "../../src/config/load.js";
import { applyPolicyDocument, RTP_API_VERSION } from "../../src/config/root-trust-policy.js";
import { caseSeed, hostileSeed, Rng } from "../env/hostile.js";
import { glooVaultAgentCa, rootTrustPolicy } from "./policy-docs.js";

const SEED = hostileSeed(process.env, "IVA_CONFIG_FUZZ_SEED");
const FLAG_NAMES = Object.keys(AGENT_FLAGS);
const PRINTABLE = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).join("");
const PROTO_KEYS = ["__proto__", "constructor", "prototype", "toString", "valueOf", "hasOwnProperty", "toJSON"];
const CONFIG_PATHS = [
  "vault",
  "auth",
  "intermediate",
  "leaf",
  "serve",
  "cacerts",
  "istioCa",
  "istiodTls",
  "kube",
  "pod",
];

/**
 * A problem "names a field" when it starts with one: a flag, an environment variable, a policy document path, or a
 * Config path (as validateConfig writes them).
 */
const FIELD_RE = new RegExp(
  "^(" +
    [
      "--[a-z-]+[ :]",
      "flags:",
      "VAULT_[A-Z_]+:",
      "RootTrustPolicy:",
      "(Gloo )?spec[.:]",
      `(${CONFIG_PATHS.join("|")})\\.[A-Za-z]+:`,
      "trustAnchors:",
      "backoff:",
      "logLevel:",
      "vault CA file ",
    ].join("|") +
    ")",
);

// --- random values ---------------------------------------------------------------------------------------------------

/** Defines an own property even for "__proto__", the way JSON.parse and YAML parsers do. */
function setOwn(o: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true });
}

function hugeString(r: Rng): string {
  const sizes = maxNesting > 64 ? [4096, 65_536, 200_000] : [4096, 20_000];
  return r.pick(["a", "/", "9", "h", " ", "é", "\u0000", "-"]).repeat(r.pick(sizes));
}

function randomString(r: Rng): string {
  if (r.chance(0.02)) return hugeString(r);
  return r.pick<() => string>([
    () => "",
    () => " ",
    () => r.string(r.int(1, 40), PRINTABLE),
    () => r.string(r.int(1, 12), "abcdefghijklmnopqrstuvwxyz0123456789"),
    () => r.pick(["720h", "30d", "2h30m", "45", "0.5s", "200ms", "1h1m1s", "90d", "10s", "9s", "0", "00h"]),
    () => r.pick(["1x", "-5h", "h", "1e3h", "720H", " 1h", "1h ", "1.h", "NaN", "Infinity", "1_000h", "0x10s"]),
    () => r.pick(["https://vault:8200", "http://v", "ftp://v", "https://", "://", "vault:8200", "https://[::1]:8200"]),
    () => r.pick(["true", "false", "1", "0", "yes", "TRUE", "null", "undefined", "-0", "1e309", "9".repeat(400)]),
    () => r.pick(["ECDSA_P256", "ECDSA_P384", "RSA_2048", "RSA_3072", "RSA_4096", "DSA", "ecdsa_p256", "RSA_1024"]),
    () => r.pick(["cluster.local", "Cluster.Local", "a", "-a", "a-", "a..b", "x_y", "td/", "spiffe://cluster.local"]),
    () => r.pick(["/var/run/x.sock", "rel/path", "/" + "s".repeat(120), "/tmp/a b", "0.0.0.0:15300", ":0", "[::1]:1"]),
    () => r.pick(["pki/root/sign-intermediate", "pki_int/intermediate/generate/exported", "sign", "a b/sign"]),
    () => r.pick(PROTO_KEYS),
    () => String.fromCharCode(...Array.from({ length: r.int(1, 20) }, () => r.int(0, 0xffff))),
  ])();
}

function randomNumber(r: Rng): number {
  return r.pick([
    0,
    -0,
    1,
    -1,
    0.5,
    0.333,
    0.01,
    0.99,
    2048,
    4096,
    3072,
    1e300,
    -1e300,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    Number.MAX_SAFE_INTEGER + 2,
    r.int(-1e6, 1e6),
    r.float(),
  ]);
}

/**
 * Deepest nesting a random value may have. Documents that become YAML text are kept shallower and their strings
 * shorter: the yaml package is slow on deep or huge input, and parsing it is not what is under test.
 */
let maxNesting = 3000;

function randomJson(r: Rng, depth = 0): unknown {
  const kind = r.int(0, depth > 3 ? 4 : 8);
  switch (kind) {
    case 0:
      return null;
    case 1:
      return r.chance(0.5);
    case 2:
    case 3:
      return randomNumber(r);
    case 4:
      return randomString(r);
    case 5:
      return Array.from({ length: r.int(0, 4) }, () => randomJson(r, depth + 1));
    case 6:
      // An object that breaks String() and Number() (what YAML `{toString: 1}` parses to).
      return Object.fromEntries(
        r
          .shuffle(["toString", "valueOf"])
          .slice(0, r.int(1, 2))
          .map((k) => [k, randomJson(r, depth + 1)]),
      );
    case 7:
      return deepObject(r.int(Math.min(50, maxNesting), maxNesting));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = r.int(0, 5); i > 0; i--) {
        setOwn(o, r.chance(0.4) ? r.pick(PROTO_KEYS) : randomString(r).slice(0, 40), randomJson(r, depth + 1));
      }
      return o;
    }
  }
}

function deepObject(depth: number): unknown {
  let v: unknown = "bottom";
  for (let i = 0; i < depth; i++) v = { a: v };
  return v;
}

// --- RootTrustPolicy documents ---------------------------------------------------------------------------------------

function ourPolicy(r: Rng): Record<string, unknown> {
  return rootTrustPolicy("ours", {
    agentCa: {
      vault: {
        server: "https://vault.vault:8200",
        caBundle: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        namespace: "admin",
        caPath: r.pick(["pki/root/sign-intermediate", "pki_int/root/sign-intermediate"]),
        csrPath: "pki_int/intermediate/generate/exported",
        kubernetesAuth: { mountPath: "/v1/auth/kubernetes", role: "istiod-agent", serviceAccountTokenPath: "/t" },
      },
    },
    intermediateCertOptions: {
      ttl: r.pick(["720h", "48h", "30d"]),
      keyAlgorithm: r.pick(["ECDSA_P256", "RSA_3072"]),
      orgName: "Acme",
      commonName: "intermediate",
      secretRotationGracePeriodRatio: r.pick([0.25, 0.5]),
      maxPathLength: r.int(0, 3),
    },
    workloadCertOptions: { trustDomain: "cluster.local", defaultTtl: "12h", maxTtl: "48h" },
  });
}

function glooPolicy(r: Rng): Record<string, unknown> {
  return rootTrustPolicy("gloo", {
    agentCa: glooVaultAgentCa(),
    intermediateCertOptions: {
      ttlDays: r.pick([30, 365]),
      rsaKeySizeBytes: r.pick([2048, 4096]),
      orgName: "Solo",
      secretRotationGracePeriodRatio: 0.1,
    },
  });
}

/** Every [parent, key] pair in a document tree (own enumerable keys only). */
function slots(
  doc: unknown,
  out: Array<[Record<string, unknown>, string]> = [],
): Array<[Record<string, unknown>, string]> {
  if (typeof doc !== "object" || doc === null) return out;
  const o = doc as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    out.push([o, key]);
    if (out.length < 200) slots(o[key], out);
  }
  return out;
}

const objects = (doc: unknown): Array<Record<string, unknown>> => [
  ...(typeof doc === "object" && doc !== null && !Array.isArray(doc) ? [doc as Record<string, unknown>] : []),
  ...slots(doc)
    .map(([o, k]) => o[k])
    .filter((v): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)),
];

function mutatedPolicy(r: Rng): { note: string; doc: unknown } {
  if (r.chance(0.04)) {
    const doc = r.pick<unknown>([null, [], "RootTrustPolicy", 42, true, deepObject(maxNesting), randomJson(r)]);
    return { note: "not a policy object", doc };
  }
  const gloo = r.chance(0.45);
  const doc: unknown = gloo ? glooPolicy(r) : ourPolicy(r);
  const notes: string[] = [gloo ? "gloo" : "ours"];
  for (let i = r.int(0, 6); i > 0; i--) {
    const all = slots(doc);
    const op = r.int(0, 9);
    if (op <= 4 && all.length) {
      const [parent, key] = r.pick(all);
      parent[key] = randomJson(r);
      notes.push(`${key}=random`);
    } else if (op <= 6 && all.length) {
      const [parent, key] = r.pick(all);
      delete parent[key];
      notes.push(`-${key}`);
    } else if (op <= 8) {
      const target = r.pick(objects(doc));
      const key = r.chance(0.5) ? r.pick(PROTO_KEYS) : randomString(r).slice(0, 60);
      setOwn(target, key, randomJson(r));
      notes.push(`+${key.slice(0, 20)}`);
    } else if (all.length) {
      const [parent, key] = r.pick(all);
      parent[key] = r.chance(0.5) ? hugeString(r) : deepObject(r.int(Math.min(100, maxNesting), maxNesting));
      notes.push(`${key}=huge`);
    }
  }
  return { note: notes.join(" "), doc };
}

/** YAML or JSON text of a policy, sometimes broken or abusing YAML features. */
function policyText(r: Rng): { note: string; text: string } {
  maxNesting = 64;
  let mutated: { note: string; doc: unknown };
  try {
    mutated = mutatedPolicy(r);
  } finally {
    maxNesting = 3000;
  }
  const { note, doc } = mutated;
  let text: string;
  try {
    text = r.chance(0.7) ? toYaml(doc, { aliasDuplicateObjects: false }) : JSON.stringify(doc);
  } catch {
    text = "apiVersion: [";
  }
  const v = r.int(0, 12);
  if (v === 0) return { note: `${note}; truncated`, text: text.slice(0, r.int(0, text.length)) };
  if (v === 1)
    return { note: `${note}; garbage inserted`, text: insert(r, text, r.string(r.int(1, 20), `${PRINTABLE}\t\n`)) };
  if (v === 2) {
    // "Billion laughs": each anchor repeats the previous one four times.
    const bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"];
    for (let k = 1; k < 12; k++)
      bomb.push(
        `a${k}: &a${k} [${Array(4)
          .fill(`*a${k - 1}`)
          .join(", ")}]`,
      );
    return { note: "alias bomb", text: `${bomb.join("\n")}\napiVersion: ${RTP_API_VERSION}\n` };
  }
  if (v === 3) {
    const tag = r.pick([
      "!!binary aGVsbG8=",
      "!!set {a, b}",
      "!!omap [a: 1]",
      "!!timestamp 2001-12-14",
      "!!js/function 'f(){}'",
      "!<tag:x> 1",
      "!!str",
      "!!int x",
      "!!float y",
    ]);
    return {
      note: `tag ${tag}`,
      text: `apiVersion: ${RTP_API_VERSION}\nkind: RootTrustPolicy\nspec:\n  config:\n    intermediateCertOptions:\n      ttl: ${tag}\n`,
    };
  }
  if (v === 4) return { note: `${note}; two documents`, text: `${text}\n---\n${text}` };
  if (v === 5)
    return {
      note: "duplicate keys",
      text: `apiVersion: a\napiVersion: ${RTP_API_VERSION}\nkind: RootTrustPolicy\nspec: {config: {}}\n`,
    };
  if (v === 6)
    return {
      note: "merge key into __proto__",
      text: `base: &b {apiVersion: ${RTP_API_VERSION}, kind: RootTrustPolicy}\n__proto__:\n  <<: *b\nspec: {config: {}}\n`,
    };
  if (v === 7)
    return {
      note: "%YAML 1.1 with yes/no and sexagesimal",
      text: `%YAML 1.1\n---\napiVersion: ${RTP_API_VERSION}\nkind: RootTrustPolicy\nspec: {config: {intermediateCertOptions: {ttl: 1:30, maxPathLength: yes, secretRotationGracePeriodRatio: .5}}}\n`,
    };
  if (v === 8) return { note: "toString keys", text: `apiVersion: {toString: 1}\nkind: {valueOf: 2, toString: x}\n` };
  return { note, text };
}

function insert(r: Rng, text: string, what: string): string {
  const at = r.int(0, text.length);
  return text.slice(0, at) + what + text.slice(at);
}

// --- flags and environment -------------------------------------------------------------------------------------------

interface Files {
  dir: string;
  pem: string;
  notPem: string;
  policies: string[];
  empty: string;
}

function pathValue(r: Rng, files: Files): string {
  return r.pick([
    join(files.dir, "missing", r.string(6, "abcdef")),
    files.dir,
    files.pem,
    files.notPem,
    files.empty,
    r.pick(files.policies),
    "",
    "/",
    "/proc/self/status",
  ]);
}

function flagValue(r: Rng, name: FlagName, files: Files): string {
  if (["config", "vault-cacert", "trust-anchors-file", "kubeconfig", "token-path"].includes(name) && r.chance(0.7))
    return pathValue(r, files);
  const v = randomString(r);
  return v.startsWith("/dev") || v.startsWith("/sys") ? "/nonexistent" : v;
}

function randomArgv(r: Rng, files: Files): string[] {
  const argv: string[] = [];
  for (let i = r.int(0, 8); i > 0; i--) {
    const name = r.pick(FLAG_NAMES);
    const kind = AGENT_FLAGS[name]!.kind;
    switch (r.int(0, 9)) {
      case 0:
        argv.push(`--${r.pick([...PROTO_KEYS, "TTL", "vault-adr", "-ttl", "", "ttl=", "=x"])}`);
        break;
      case 1:
        argv.push(r.pick(["-h", "-", "--", "x", "--=", "---", "-vault-addr=x"]));
        break;
      case 2:
        argv.push(`--${name}`); // a string flag without its value, or a boolean one
        break;
      case 3:
        argv.push(`--${name}`, flagValue(r, name, files)); // value as the next argument
        break;
      case 4:
        argv.push(kind === "boolean" ? `--${name}=${r.pick(["true", "false", ""])}` : `--${name}=`);
        break;
      default:
        argv.push(kind === "boolean" ? `--${name}` : `--${name}=${flagValue(r, name, files)}`);
    }
  }
  return argv;
}

function randomFlagValues(r: Rng, files: Files): FlagValues {
  const flags: FlagValues = {};
  for (const name of FLAG_NAMES) {
    if (!r.chance(0.25)) continue;
    flags[name] = r.chance(0.2) ? r.chance(0.5) : flagValue(r, name, files);
  }
  return flags;
}

function randomEnv(r: Rng, files: Files): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  const maybe = (key: string, value: () => string) => {
    if (r.chance(0.4)) env[key] = value();
  };
  maybe("VAULT_ADDR", () => (r.chance(0.6) ? "https://vault.example:8200" : randomString(r)));
  maybe("VAULT_CACERT", () => pathValue(r, files));
  maybe("VAULT_NAMESPACE", () => randomString(r));
  maybe("VAULT_SKIP_VERIFY", () =>
    r.pick(["true", "false", "1", "0", "", "yes", "no", "TRUE", " true", randomString(r)]),
  );
  maybe("POD_NAME", () => randomString(r));
  maybe("POD_NAMESPACE", () => randomString(r));
  return env;
}

// --- the checks ------------------------------------------------------------------------------------------------------

interface Failure {
  kind: string;
  index: number;
  what: string;
  input: string;
}

/** "TypeError: message (at function)", with the innermost frame in the product's code. */
function thrown(err: unknown): string {
  if (!(err instanceof Error)) return `a thrown ${typeof err}: ${String(err)}`;
  const frame = err.stack?.split("\n").find((l) => l.includes("/src/"));
  const at = frame ? ` (at ${/at (\S+)/.exec(frame.trim())?.[1] ?? "?"})` : "";
  return `${err.name}: ${err.message}${at}`;
}

function summarize(v: unknown): string {
  let s: string;
  try {
    s =
      JSON.stringify(v, (_k, x: unknown) => (typeof x === "number" && !Number.isFinite(x) ? String(x) : x)) ??
      "undefined";
  } catch (err) {
    s = `(unprintable: ${(err as Error).message})`;
  }
  return s.length > 300 ? `${s.slice(0, 300)}… (${s.length} chars)` : s;
}

describe(`configuration fuzzing (IVA_CONFIG_FUZZ_SEED=${SEED})`, () => {
  const snapshot = structuredClone(DEFAULT_CONFIG);
  const protoKeys = Object.getOwnPropertyNames(Object.prototype).sort();
  const failures: Failure[] = [];
  const counts = { cases: 0, valid: 0, configErrors: 0, problems: 0, problemsNamingNoField: 0 };
  let files: Files;

  // The yaml package reports unresolved tags through process.emitWarning, each as a multi-line block on stderr.
  const originalEmitWarning = Object.getOwnPropertyDescriptor(process, "emitWarning")!;
  let yamlWarnings = 0;

  before(() => {
    console.log(`# config-fuzz seed ${SEED} (replay with IVA_CONFIG_FUZZ_SEED=${SEED})`);
    const emit = originalEmitWarning.value as (warning: string | Error, ...rest: unknown[]) => void;
    process.emitWarning = (warning: string | Error, ...rest: unknown[]) => {
      if (warning instanceof Error && warning.name === "YAMLWarning") yamlWarnings++;
      else Reflect.apply(emit, process, [warning, ...rest]);
    };
    const dir = mkdtempSync(join(tmpdir(), "iva-config-fuzz-"));
    mkdirSync(join(dir, "policies"));
    const write = (name: string, text: string): string => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    const r = new Rng(caseSeed(SEED, -1));
    files = {
      dir,
      pem: write("ca.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
      notPem: write("junk.pem", r.string(200, PRINTABLE)),
      empty: write("empty", ""),
      policies: Array.from({ length: 40 }, (_, i) => write(`policies/${i}.yaml`, policyText(r).text)),
    };
  });
  after(() => {
    Object.defineProperty(process, "emitWarning", originalEmitWarning);
    rmSync(files.dir, { recursive: true, force: true });
  });

  /** Runs one input; any exception but a ConfigError, or a state change, is a failure. */
  function check(kind: string, index: number, input: () => unknown, load: () => Config, needVault: boolean): void {
    counts.cases++;
    try {
      const c = load();
      counts.valid++;
      const problems = validateConfig(c, { needVault });
      if (problems.length)
        failures.push({
          kind,
          index,
          what: `a Config with problems: ${problems.join("; ")}`,
          input: summarize(input()),
        });
      // The result owns its objects: changing it must not reach DEFAULT_CONFIG.
      c.istioCa.servingNames.push("mutated.example");
      c.trustAnchors.pem.push("mutated");
      c.vault.address = "mutated";
      c.leaf.trustDomain = "mutated";
    } catch (err) {
      if (!(err instanceof ConfigError)) {
        failures.push({
          kind,
          index,
          what: thrown(err),
          input: summarize(input()),
        });
      } else {
        counts.configErrors++;
        const bad = err.problems.filter((p) => typeof p !== "string" || !FIELD_RE.test(p));
        counts.problems += err.problems.length;
        counts.problemsNamingNoField += bad.length;
        if (err.problems.length === 0 || bad.length === err.problems.length)
          failures.push({
            kind,
            index,
            what: `a ConfigError naming no field: ${summarize(err.problems)}`,
            input: summarize(input()),
          });
      }
    }
    // Messages are built only on failure: summarizing every input would cost more than the checks.
    if (!isDeepStrictEqual(DEFAULT_CONFIG, snapshot))
      assert.fail(`${kind} #${index} changed DEFAULT_CONFIG; input ${summarize(input())}`);
    if (!isDeepStrictEqual(Object.getOwnPropertyNames(Object.prototype).sort(), protoKeys))
      assert.fail(`${kind} #${index} added to Object.prototype; input ${summarize(input())}`);
  }

  /**
   * 2,500 seeded cases of `kind`: `draw` makes the flag input (what to print on failure and how to turn it into
   * FlagValues), then a random environment and needVault go with it into loadConfig.
   */
  function fuzzLoadConfig(
    kind: string,
    seedBase: number,
    draw: (r: Rng) => { input: Record<string, unknown>; flags: () => FlagValues },
  ): void {
    for (let i = 0; i < 2500; i++) {
      const r = new Rng(caseSeed(SEED, seedBase + i));
      const { input, flags } = draw(r);
      const env = randomEnv(r, files);
      const needVault = r.chance(0.7);
      check(
        kind,
        i,
        () => ({ ...input, env }),
        () => loadConfig(flags(), env, { needVault }),
        needVault,
      );
    }
  }

  it("command lines: parseFlags then loadConfig, with a random environment", () => {
    fuzzLoadConfig("argv", 0, (r) => {
      const argv = randomArgv(r, files);
      return { input: { argv }, flags: () => parseFlags(argv) };
    });
  });

  it("flag values of any kind straight into loadConfig", () => {
    fuzzLoadConfig("flags", 10_000, (r) => {
      const flags = randomFlagValues(r, files);
      return { input: { flags }, flags: () => flags };
    });
  });

  it("RootTrustPolicy documents (ours and Gloo's) with random types, missing and extra keys", () => {
    for (let i = 0; i < 3500; i++) {
      const r = new Rng(caseSeed(SEED, 20_000 + i));
      const { note, doc } = mutatedPolicy(r);
      const env = r.chance(0.5) ? { VAULT_ADDR: "https://vault.example:8200" } : randomEnv(r, files);
      const needVault = r.chance(0.7);
      const flags = r.chance(0.3) ? randomFlagValues(r, files) : {};
      check(
        "policy",
        i,
        () => ({ note, doc, flags, env }),
        () => loadConfig(flags, env, { needVault, policyDoc: doc }),
        needVault,
      );
      // applyPolicyDocument itself never throws, and every problem it reports names a field.
      counts.cases++;
      try {
        const problems = applyPolicyDocument(structuredClone(DEFAULT_CONFIG), doc);
        const bad = problems.filter((p) => typeof p !== "string" || !FIELD_RE.test(p));
        if (bad.length)
          failures.push({
            kind: "applyPolicyDocument",
            index: i,
            what: `problems naming no field: ${summarize(bad)}`,
            input: summarize({ note, doc }),
          });
      } catch (err) {
        failures.push({
          kind: "applyPolicyDocument",
          index: i,
          what: thrown(err),
          input: summarize({ note, doc }),
        });
      }
      if (!isDeepStrictEqual(DEFAULT_CONFIG, snapshot)) assert.fail(`applyPolicyDocument #${i} changed DEFAULT_CONFIG`);
    }
  });

  it("RootTrustPolicy files: YAML and JSON, broken, with tags, aliases, duplicate and __proto__ keys", () => {
    for (let i = 0; i < 600; i++) {
      const r = new Rng(caseSeed(SEED, 30_000 + i));
      const { note, text } = policyText(r);
      const file = join(files.dir, `policy-${i}.yaml`);
      writeFileSync(file, text);
      const env = { VAULT_ADDR: "https://vault.example:8200" };
      check(
        "file",
        i,
        () => ({ note, text }),
        () => loadConfig({ config: file }, env, { needVault: true }),
        true,
      );
    }
  });

  it("every input gave a valid Config or a ConfigError naming a field; nothing else was thrown", (tc) => {
    tc.diagnostic(
      `${counts.cases} cases: ${counts.valid} valid configs, ${counts.configErrors} ConfigErrors ` +
        `(${counts.problems} problems, ${counts.problemsNamingNoField} not starting with a field name), ` +
        `${failures.length} failures; ${yamlWarnings} YAML warnings muted`,
    );
    const byWhat = new Map<string, Failure[]>();
    for (const f of failures) {
      const key = `${f.kind}: ${f.what.replace(/\d+/g, "N").slice(0, 120)}`;
      byWhat.set(key, [...(byWhat.get(key) ?? []), f]);
    }
    for (const [key, list] of byWhat) {
      tc.diagnostic(`FAILURE x${list.length} ${key}`);
      for (const f of list.slice(0, 2))
        tc.diagnostic(`  ${f.kind} #${f.index}: ${f.what.slice(0, 200)}; input ${f.input}`);
    }
    assert.equal(
      failures.length,
      0,
      `${failures.length} inputs broke the contract (IVA_CONFIG_FUZZ_SEED=${SEED}); see above`,
    );
  });
});
