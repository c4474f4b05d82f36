// Reads our RootTrustPolicy (istiod-vault-agent.io/v1alpha1) into a Config. Field names follow Gloo Mesh's
// RootTrustPolicy where one exists (agentCa.vault, intermediateCertOptions, secretRotationGracePeriodRatio).
import { parseDuration, type Config } from "./config.js";
import type { KeyAlgorithmName } from "../crypto/keys.js";

export const RTP_GROUP = "istiod-vault-agent.io";
export const RTP_API_VERSION = `${RTP_GROUP}/v1alpha1`;
export const GLOO_RTP_API_VERSION = "admin.gloo.solo.io/v2";

/** Applies either our RootTrustPolicy or a Gloo Mesh admin.gloo.solo.io/v2 one (translated) to `c`. */
export function applyPolicyDocument(c: Config, doc: unknown): string[] {
  if (isObj(doc) && doc.apiVersion === GLOO_RTP_API_VERSION && doc.kind === "RootTrustPolicy") {
    const { translated, problems } = translateGlooRootTrustPolicy(doc);
    return problems.length ? problems : applyRootTrustPolicy(c, translated);
  }
  return applyRootTrustPolicy(c, doc);
}

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
      problems.push(`Gloo spec.${key}: not supported; this agent is configured per istiod Deployment (spec.applyTo)`);
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
        const why = key === "tokenSecretRef" ? " (static tokens are not supported; use kubernetesAuth)" : "";
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
export function applyRootTrustPolicy(c: Config, doc: unknown): string[] {
  const problems: string[] = [];
  if (!isObj(doc)) return ["RootTrustPolicy: expected a YAML/JSON object"];
  if (doc.apiVersion !== RTP_API_VERSION || doc.kind !== "RootTrustPolicy") {
    return [
      `RootTrustPolicy: apiVersion/kind is ${text(doc.apiVersion)}/${text(doc.kind)}; expected ${RTP_API_VERSION}/RootTrustPolicy`,
    ];
  }
  const config = path(doc, "spec.config", problems);
  if (!config) return problems;
  const reader = new FieldReader(problems);

  const vault = reader.obj(config, "spec.config.agentCa.vault", ["agentCa", "vault"]);
  if (vault) {
    reader.string(vault, "server", "spec.config.agentCa.vault.server", (v) => (c.vault.address = v));
    reader.string(vault, "caBundle", "spec.config.agentCa.vault.caBundle", (v) => (c.vault.caPem = v));
    reader.string(vault, "namespace", "spec.config.agentCa.vault.namespace", (v) => (c.vault.namespace = v));
    reader.string(vault, "caPath", "spec.config.agentCa.vault.caPath", (v) => (c.intermediate.caPath = v));
    reader.string(vault, "csrPath", "spec.config.agentCa.vault.csrPath", (v) => (c.intermediate.csrPath = v));
    const ka = reader.obj(vault, "spec.config.agentCa.vault.kubernetesAuth", ["kubernetesAuth"]);
    if (ka) {
      reader.string(
        ka,
        "mountPath",
        "spec.config.agentCa.vault.kubernetesAuth.mountPath",
        (v) => (c.auth.mountPath = v.replace(/^\/?v1\/auth\//, "")),
      );
      reader.string(ka, "role", "spec.config.agentCa.vault.kubernetesAuth.role", (v) => (c.auth.role = v));
      reader.string(
        ka,
        "serviceAccountTokenPath",
        "spec.config.agentCa.vault.kubernetesAuth.serviceAccountTokenPath",
        (v) => (c.auth.tokenPath = v),
      );
      reader.string(ka, "audience", "spec.config.agentCa.vault.kubernetesAuth.audience", () => undefined);
    }
  }
  const ico = reader.obj(config, "spec.config.intermediateCertOptions", ["intermediateCertOptions"]);
  if (ico) {
    reader.duration(ico, "ttl", "spec.config.intermediateCertOptions.ttl", (v) => (c.intermediate.ttlSeconds = v));
    reader.string(
      ico,
      "keyAlgorithm",
      "spec.config.intermediateCertOptions.keyAlgorithm",
      (v) => (c.intermediate.keyAlgorithm = v as KeyAlgorithmName),
    );
    reader.string(
      ico,
      "orgName",
      "spec.config.intermediateCertOptions.orgName",
      (v) => (c.intermediate.organization = v),
    );
    reader.string(
      ico,
      "commonName",
      "spec.config.intermediateCertOptions.commonName",
      (v) => (c.intermediate.commonName = v),
    );
    reader.number(
      ico,
      "secretRotationGracePeriodRatio",
      "spec.config.intermediateCertOptions.secretRotationGracePeriodRatio",
      (v) => (c.intermediate.rotationGraceRatio = v),
    );
    reader.number(
      ico,
      "maxPathLength",
      "spec.config.intermediateCertOptions.maxPathLength",
      (v) => (c.intermediate.maxPathLength = v),
    );
  }
  const leaf = reader.obj(config, "spec.config.workloadCertOptions", ["workloadCertOptions"]);
  if (leaf) {
    reader.string(leaf, "trustDomain", "spec.config.workloadCertOptions.trustDomain", (v) => (c.leaf.trustDomain = v));
    reader.duration(
      leaf,
      "defaultTtl",
      "spec.config.workloadCertOptions.defaultTtl",
      (v) => (c.leaf.defaultTtlSeconds = v),
    );
    reader.duration(leaf, "maxTtl", "spec.config.workloadCertOptions.maxTtl", (v) => (c.leaf.maxTtlSeconds = v));
    reader.duration(leaf, "minTtl", "spec.config.workloadCertOptions.minTtl", (v) => (c.leaf.minTtlSeconds = v));
  }
  return problems;
}

class FieldReader {
  constructor(private readonly problems: string[]) {}

  obj(parent: Obj, where: string, keys: string[]): Obj | undefined {
    let cur: unknown = parent;
    for (const k of keys) {
      if (!isObj(cur) || cur[k] === undefined) return undefined;
      cur = cur[k];
    }
    if (!isObj(cur)) {
      this.problems.push(`${where}: expected an object`);
      return undefined;
    }
    return cur;
  }

  string(o: Obj, key: string, where: string, assign: (v: string) => void): void {
    const v = o[key];
    if (v === undefined) return;
    if (typeof v !== "string" || v.length === 0) this.problems.push(`${where}: expected a non-empty string`);
    else assign(v);
  }

  number(o: Obj, key: string, where: string, assign: (v: number) => void): void {
    const v = o[key];
    if (v === undefined) return;
    if (typeof v !== "number" || !Number.isFinite(v)) this.problems.push(`${where}: expected a number`);
    else assign(v);
  }

  duration(o: Obj, key: string, where: string, assign: (v: number) => void): void {
    const v = o[key];
    if (v === undefined) return;
    const s = typeof v === "string" || typeof v === "number" ? parseDuration(v) : Number.NaN;
    if (!Number.isFinite(s))
      this.problems.push(`${where}: ${JSON.stringify(v)} is not a duration; expected e.g. 720h or 30d`);
    else assign(s);
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
