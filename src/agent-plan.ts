// What applying a new configuration to a running agent changes, computed before anything is touched (pure, so it is
// unit-tested on plain objects). Configurations are compared field by field; the agent holds frozen snapshots.
import type { Config } from "./config/config.js";
import type { IntermediateAuthorityOptions } from "./authority/intermediate-authority.js";
import { DEFAULT_MAX_CSR_BYTES, type LeafPolicy } from "./signing/leaf-policy.js";

/** The intermediate authority's options from a configuration. */
export function authorityOptions(c: Config): IntermediateAuthorityOptions {
  return {
    ...c.intermediate,
    // istiod reads the key from the cacerts files, so the sink needs it exportable.
    keyExport: c.serve.keyExport || c.cacerts.dir !== undefined,
    backoff: c.backoff,
    extraRootsPem: c.trustAnchors.pem,
  };
}

/** The policy leaves are signed under, as a new frozen object (replaced, never mutated, on reconfiguration). */
export function leafPolicy(c: Config): Readonly<LeafPolicy> {
  return Object.freeze({ ...c.leaf, maxCsrBytes: DEFAULT_MAX_CSR_BYTES });
}

/** Settings read only at start: a change is reported, and takes effect at the next restart. */
export const RESTART_SETTINGS = ["serve", "cacerts", "istioCa", "istiodTls", "rootConfigMaps", "kube"] as const;
export type RestartSetting = (typeof RESTART_SETTINGS)[number];

export interface AgentPlan {
  /** Vault address, TLS, namespace or auth changed: a new Vault client and login; the old token is revoked. */
  newVaultBackend: boolean;
  /** The intermediate's options changed (path, TTL, key, renewal, roots, ...): the authority gets them. */
  newAuthorityOptions: boolean;
  /** A new intermediate is obtained at once (from the new Vault, or with new options other than the extra roots). */
  newIntermediate: boolean;
  /**
   * Only the extra roots (trust anchors) changed: the held intermediate is served on with the new roots, published
   * to every consumer as a rotation is, without a Vault signing. False when a new intermediate carries them anyway.
   */
  newRoots: boolean;
  /** The leaf policy is replaced; the next request is signed under it. */
  newLeafPolicy: boolean;
  /** Changed settings that need a restart (listeners, socket, cacerts directory, apiserver access). */
  needsRestart: RestartSetting[];
}

/** Field-wise structural equality of configuration values (plain objects, arrays, primitives; undefined = absent). */
export function sameValue(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((v, i) => sameValue(v, b[i]));
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  const keys = new Set([...Object.keys(ra), ...Object.keys(rb)]);
  for (const k of keys) if (!sameValue(ra[k], rb[k])) return false;
  return true;
}

/** What applying `next` over `prev` does (pure). */
export function planApply(prev: Config, next: Config): AgentPlan {
  const newVaultBackend = !sameValue(prev.vault, next.vault) || !sameValue(prev.auth, next.auth);
  const newAuthorityOptions = !sameValue(authorityOptions(prev), authorityOptions(next));
  const withoutRoots = (c: Config) => ({ ...authorityOptions(c), extraRootsPem: [] });
  const newIntermediate = newVaultBackend || !sameValue(withoutRoots(prev), withoutRoots(next));
  return {
    newVaultBackend,
    newAuthorityOptions,
    newIntermediate,
    newRoots: !newIntermediate && !sameValue(prev.trustAnchors.pem, next.trustAnchors.pem),
    newLeafPolicy: !sameValue(leafPolicy(prev), leafPolicy(next)),
    needsRestart: RESTART_SETTINGS.filter((k) => !sameValue(prev[k], next[k])),
  };
}

/** The plan as the short list of what changed live ("vault", "intermediate", "leaf policy"). */
export function planSummary(p: AgentPlan): string[] {
  return [
    ...(p.newVaultBackend ? ["vault"] : []),
    ...(p.newIntermediate && p.newAuthorityOptions ? ["intermediate"] : []),
    ...(p.newRoots ? ["trust anchors"] : []),
    ...(p.newLeafPolicy ? ["leaf policy"] : []),
  ];
}

/** A deep, frozen copy of a configuration: the agent's snapshot cannot be changed under it. */
export function freezeConfig(c: Config): Readonly<Config> {
  return deepFreeze(structuredClone(c));
}

function deepFreeze<T>(v: T): T {
  if (typeof v === "object" && v !== null && !Object.isFrozen(v)) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}
