// Reads our RootTrustPolicy (istiod-vault-agent.io/v1alpha1) into a Config. Field names follow Gloo Mesh's
// RootTrustPolicy where one exists (agentCa.vault, intermediateCertOptions, secretRotationGracePeriodRatio).
import { parseDuration, type Config } from "./config.js";
import type { KeyAlgorithmName } from "../crypto/keys.js";

export const RTP_API_VERSION = "istiod-vault-agent.io/v1alpha1";

type Obj = Record<string, unknown>;

/** Applies `doc` to `c` and returns the problems found (field path + what is expected). */
export function applyRootTrustPolicy(c: Config, doc: unknown): string[] {
  const problems: string[] = [];
  if (!isObj(doc)) return ["RootTrustPolicy: expected a YAML/JSON object"];
  if (doc.apiVersion !== RTP_API_VERSION || doc.kind !== "RootTrustPolicy") {
    return [
      `RootTrustPolicy: apiVersion/kind is ${String(doc.apiVersion)}/${String(doc.kind)}; expected ${RTP_API_VERSION}/RootTrustPolicy`,
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
