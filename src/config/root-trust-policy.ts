// Reads our RootTrustPolicy (istiod-vault-agent.io/v1alpha1) into a Config. Field names follow Gloo Mesh's
// RootTrustPolicy where one exists (agentCa.vault, intermediateCertOptions, secretRotationGracePeriodRatio).
import { parseDuration, type Config } from "./config.js";
import type { KeyAlgorithmName } from "../crypto/keys.js";

export const RTP_GROUP = "istiod-vault-agent.io";
export const RTP_API_VERSION = `${RTP_GROUP}/v1alpha1`;
export const GLOO_RTP_API_VERSION = "admin.gloo.solo.io/v2";

/**
 * Applies either our RootTrustPolicy or a Gloo Mesh admin.gloo.solo.io/v2 one (translated) to `c`. `onField` is told
 * each policy field just before its value is written into `c` (the shadowing check pairs fields this way).
 */
export function applyPolicyDocument(c: Config, doc: unknown, onField?: (field: string) => void): string[] {
  if (isObj(doc) && doc.apiVersion === GLOO_RTP_API_VERSION && doc.kind === "RootTrustPolicy") {
    const { translated, problems } = translateGlooRootTrustPolicy(doc);
    return problems.length ? problems : applyRootTrustPolicy(c, translated, onField);
  }
  return applyRootTrustPolicy(c, doc, onField);
}

/**
 * Fields that were once in the schema and are gone: the policy is chosen by its name (the istiod Deployment's), and
 * the relay mode is configured by its own flags. Refused with the reason, never silently ignored.
 */
const REMOVED_FIELDS: Record<string, string> = {
  "spec.applyTo":
    "removed; a policy applies to the istiod Deployment of the same name (istiod, istiod-<revision>), whose agent " +
    "names it with --policy-name; delete this field",
  "spec.config.relay":
    "removed; the relay mode is configured by its own flags (istiod-vault-agent relay --help); delete this field",
};
const SPEC_KEYS = ["config"];
const CONFIG_KEYS = ["agentCa", "intermediateCertOptions", "workloadCertOptions"];

/**
 * Gloo Mesh's RootTrustPolicy → ours. Supported: spec.config.agentCa.vault {caPath, csrPath, server, caBundle,
 * namespace, kubernetesAuth {path, role, mountedSaPath}} and intermediateCertOptions {ttlDays, rsaKeySizeBytes,
 * orgName, secretRotationGracePeriodRatio}. Everything else is reported, never silently ignored.
 */
export function translateGlooRootTrustPolicy(doc: Obj): { translated: Obj; problems: string[] } {
  const problems: string[] = [];
  const spec = isObj(doc.spec) ? doc.spec : {};
  const config = isObj(spec.config) ? spec.config : {};
  for (const key of Object.keys(spec)) {
    if (key !== "config")
      problems.push(
        `Gloo spec.${key}: not supported; a policy applies to the istiod Deployment of the same name (--policy-name)`,
      );
  }
  const unsupported: Record<string, string> = {
    mgmtServerCa: "the root stays in Vault; use agentCa.vault",
    autoRestartPods: "not needed: istiod reloads the cacerts directory without restarts",
  };
  for (const key of Object.keys(config)) {
    if (Object.hasOwn(unsupported, key)) problems.push(`Gloo spec.config.${key}: not supported (${unsupported[key]})`);
    else if (key !== "agentCa" && key !== "intermediateCertOptions")
      problems.push(`Gloo spec.config.${key}: not supported`);
  }
  const agentCa = isObj(config.agentCa) ? config.agentCa : {};
  const vault = isObj(agentCa.vault) ? agentCa.vault : undefined;
  if (!vault) problems.push("Gloo spec.config.agentCa.vault: missing; only the Vault agent CA is supported");
  const out: Obj = {};
  if (vault) {
    for (const key of Object.keys(vault)) {
      if (!["caPath", "csrPath", "server", "caBundle", "namespace", "kubernetesAuth"].includes(key)) {
        const why =
          key === "tokenSecretRef"
            ? " (a token in a Secret; use kubernetesAuth, or mount the token as a file and run the agent with " +
              "--auth-method=token --vault-token-file)"
            : "";
        problems.push(`Gloo spec.config.agentCa.vault.${key}: not supported${why}`);
      }
    }
    const { kubernetesAuth, ...rest } = vault;
    const v: Obj = { ...rest };
    if (isObj(kubernetesAuth)) {
      const ka: Obj = {};
      for (const key of Object.keys(kubernetesAuth)) {
        if (key === "path")
          ka.mountPath = text(kubernetesAuth.path)
            .replace(/^\/?v1\/auth\//, "")
            .replace(/\/+$/, "");
        else if (key === "role") ka.role = kubernetesAuth.role;
        else if (key === "mountedSaPath")
          ka.serviceAccountTokenPath = `${text(kubernetesAuth.mountedSaPath).replace(/\/+$/, "")}/token`;
        else
          problems.push(
            `Gloo spec.config.agentCa.vault.kubernetesAuth.${key}: not supported (the agent uses its own projected token)`,
          );
      }
      v.kubernetesAuth = ka;
    }
    out.agentCa = { vault: v };
  }
  const ico = isObj(config.intermediateCertOptions) ? config.intermediateCertOptions : undefined;
  if (ico) {
    const o: Obj = {};
    for (const [key, value] of Object.entries(ico)) {
      if (key === "ttlDays") o.ttl = typeof value === "number" ? `${value}d` : `${text(value)}`;
      else if (key === "rsaKeySizeBytes") {
        // Gloo names it bytes, but its values (2048, 4096) are bits.
        if (typeof value === "number" && [2048, 3072, 4096].includes(value)) o.keyAlgorithm = `RSA_${value}`;
        else
          problems.push(
            `Gloo spec.config.intermediateCertOptions.rsaKeySizeBytes: ${JSON.stringify(value)}; expected 2048, 3072 or 4096`,
          );
      } else if (key === "orgName" || key === "secretRotationGracePeriodRatio") o[key] = value;
      else problems.push(`Gloo spec.config.intermediateCertOptions.${key}: not supported`);
    }
    out.intermediateCertOptions = o;
  }
  return { translated: { apiVersion: RTP_API_VERSION, kind: "RootTrustPolicy", spec: { config: out } }, problems };
}

type Obj = Record<string, unknown>;

/** Applies `doc` to `c` and returns the problems found (field path + what is expected). */
export function applyRootTrustPolicy(c: Config, doc: unknown, onField?: (field: string) => void): string[] {
  const problems: string[] = [];
  if (!isObj(doc)) return ["RootTrustPolicy: expected a YAML/JSON object"];
  if (doc.apiVersion !== RTP_API_VERSION || doc.kind !== "RootTrustPolicy") {
    return [
      `RootTrustPolicy: apiVersion/kind is ${text(doc.apiVersion)}/${text(doc.kind)}; expected ${RTP_API_VERSION}/RootTrustPolicy`,
    ];
  }
  unknownKeys(doc.spec, "spec", SPEC_KEYS, problems);
  const config = path(doc, "spec.config", problems);
  if (!config) return problems;
  unknownKeys(config, "spec.config", CONFIG_KEYS, problems);
  const reader = new FieldReader(problems, config, "spec.config", onField);

  const vault = reader.obj(["agentCa", "vault"]);
  if (vault) {
    vault.string("server", (v) => (c.vault.address = v));
    vault.string("caBundle", (v) => (c.vault.caPem = v));
    vault.string("namespace", (v) => (c.vault.namespace = v));
    vault.string("caPath", (v) => (c.intermediate.caPath = v));
    vault.string("csrPath", (v) => (c.intermediate.csrPath = v));
    const ka = vault.obj(["kubernetesAuth"]);
    if (ka) {
      // The block names the method too: a policy with kubernetesAuth logs in with Kubernetes auth, so an
      // --auth-method flag beside an authoritative policy is refused as shadowing it (src/config/shadowing.ts).
      onField?.("spec.config.agentCa.vault.kubernetesAuth");
      c.auth.method = "kubernetes";
      ka.string("mountPath", (v) => (c.auth.mountPath = v.replace(/^\/?v1\/auth\//, "")));
      ka.string("role", (v) => (c.auth.role = v));
      ka.string("serviceAccountTokenPath", (v) => (c.auth.tokenPath = v));
      ka.string("audience", () => undefined);
    }
  }
  const ico = reader.obj(["intermediateCertOptions"]);
  if (ico) {
    ico.duration("ttl", (v) => (c.intermediate.ttlSeconds = v));
    ico.string("keyAlgorithm", (v) => (c.intermediate.keyAlgorithm = v as KeyAlgorithmName));
    ico.string("orgName", (v) => (c.intermediate.organization = v));
    ico.string("commonName", (v) => (c.intermediate.commonName = v));
    ico.number("secretRotationGracePeriodRatio", (v) => (c.intermediate.rotationGraceRatio = v));
    ico.number("maxPathLength", (v) => (c.intermediate.maxPathLength = v));
  }
  const leaf = reader.obj(["workloadCertOptions"]);
  if (leaf) {
    leaf.string("trustDomain", (v) => (c.leaf.trustDomain = v));
    leaf.duration("defaultTtl", (v) => (c.leaf.defaultTtlSeconds = v));
    leaf.duration("maxTtl", (v) => (c.leaf.maxTtlSeconds = v));
    leaf.duration("minTtl", (v) => (c.leaf.minTtlSeconds = v));
  }
  return problems;
}

/** Reports the keys of `o` (at `where`) that are not in `known`: removed fields with their reason. */
function unknownKeys(o: unknown, where: string, known: string[], problems: string[]): void {
  if (!isObj(o)) return;
  for (const key of Object.keys(o)) {
    if (known.includes(key)) continue;
    const at = `${where}.${key}`;
    problems.push(`${at}: ${REMOVED_FIELDS[at] ?? `unknown field; expected only ${known.join(", ")} here`}`);
  }
}

/** Reads the fields of one object of the document; problems name the field's path. */
class FieldReader {
  constructor(
    private readonly problems: string[],
    private readonly o: Obj,
    private readonly where: string,
    private readonly onField?: (field: string) => void,
  ) {}

  /** The object at `keys` below this one; undefined when absent (or not an object: a problem). */
  obj(keys: string[]): FieldReader | undefined {
    let cur: unknown = this.o;
    for (const k of keys) {
      if (!isObj(cur) || cur[k] === undefined) return undefined;
      cur = cur[k];
    }
    const where = [this.where, ...keys].join(".");
    if (!isObj(cur)) {
      this.problems.push(`${where}: expected an object`);
      return undefined;
    }
    return new FieldReader(this.problems, cur, where, this.onField);
  }

  string(key: string, assign: (v: string) => void): void {
    this.read(
      key,
      assign,
      (v) => (typeof v === "string" && v.length > 0 ? v : undefined),
      "expected a non-empty string",
    );
  }

  number(key: string, assign: (v: number) => void): void {
    this.read(key, assign, (v) => (typeof v === "number" && Number.isFinite(v) ? v : undefined), "expected a number");
  }

  duration(key: string, assign: (v: number) => void): void {
    const seconds = (v: unknown) => {
      const s = typeof v === "string" || typeof v === "number" ? parseDuration(v) : Number.NaN;
      return Number.isFinite(s) ? s : undefined;
    };
    this.read(key, assign, seconds, (v) => `${JSON.stringify(v)} is not a duration; expected e.g. 720h or 30d`);
  }

  private read<T>(
    key: string,
    assign: (v: T) => void,
    parse: (v: unknown) => T | undefined,
    expected: string | ((v: unknown) => string),
  ): void {
    const v = this.o[key];
    if (v === undefined) return;
    const parsed = parse(v);
    if (parsed === undefined)
      this.problems.push(`${this.where}.${key}: ${typeof expected === "string" ? expected : expected(v)}`);
    else {
      this.onField?.(`${this.where}.${key}`);
      assign(parsed);
    }
  }
}

function path(doc: Obj, dotted: string, problems: string[]): Obj | undefined {
  let cur: unknown = doc;
  for (const k of dotted.split(".")) {
    if (!isObj(cur) || !isObj(cur[k])) {
      problems.push(`${dotted}: missing; expected an object`);
      return undefined;
    }
    cur = cur[k];
  }
  return cur as Obj;
}

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A value from a document, for messages and string fields: strings as they are, anything else as JSON. */
function text(v: unknown): string {
  if (typeof v === "string") return v;
  try {
    return JSON.stringify(v) ?? typeof v;
  } catch {
    return typeof v;
  }
}
