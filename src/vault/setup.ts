// Configures a Vault (or OpenBao) for the agent, idempotently: PKI mounts with a root (and an intermediate mount for
// the multi-intermediate layout), Kubernetes auth, the agent's role and least-privilege policy; for many clusters,
// the root once and then each cluster's own auth mount, role, policy and optional intermediate mount. Shared by the
// tests' environment and the `setup-vault` command. Returns a line per change; a second run returns none.
import { HttpStatusError } from "../net/http-json.js";
import { describeGrants, istiodAgentGrants, istiodAgentPolicy } from "./policies.js";
import { trimSlashes, type VaultClient } from "./client.js";

export interface VaultSetupOptions {
  rootMount: string;
  rootCommonName: string;
  /** Optional second mount holding an intermediate signed by the root mount. */
  intermediateMount?: string | undefined;
  intermediateCommonName?: string | undefined;
  kubernetes: {
    mount: string;
    host: string;
    caPem: string;
    /** JWT Vault presents to TokenReview; without it Vault uses each login's own JWT (needs system:auth-delegator). */
    reviewerJwt?: string | undefined;
  };
  role: {
    name: string;
    serviceAccounts: string[];
    namespaces: string[];
    audience: string;
    tokenTtlSeconds: number;
    tokenMaxTtlSeconds: number;
  };
  policyName: string;
  /** The sign-intermediate path the agent's policy allows, e.g. pki/root/sign-intermediate. */
  signPath: string;
  /** PEM bundle (certificate + key) of an existing root to import instead of generating one. */
  importCaBundlePem?: string | undefined;
  /** Opt-in Gloo flow: the generate/exported path the policy also allows. */
  csrPath?: string | undefined;
  /** pki/config/auto-tidy on the mount that signs the intermediates; untouched when undefined. */
  autoTidy?: AutoTidyOptions | undefined;
}

/**
 * Automatic tidy of a PKI mount's certificate store: every sign-intermediate is stored (the agent's role cannot set
 * no_store on sign-intermediate), one per agent start and per renewal, so without tidy the store only grows.
 */
export interface AutoTidyOptions {
  /** How often Vault runs tidy (interval_duration). */
  intervalSeconds: number;
  /** How long past its expiry a certificate is kept before tidy removes it (safety_buffer). */
  safetyBufferSeconds: number;
}

/** Vault's own defaults: tidy every 12h, keep expired certificates 72h. */
export const DEFAULT_TIDY_INTERVAL_SECONDS = 12 * 3600;
export const MIN_TIDY_SAFETY_BUFFER_SECONDS = 72 * 3600;

/**
 * The default safety buffer: one intermediate lifetime, at least Vault's 72h. An expired intermediate then stays
 * readable (pki/cert/SERIAL) for as long as it was valid, long after every leaf it signed has expired too (leaves end
 * no later than their intermediate), so it is there for any investigation of those leaves; and the store is bounded
 * by the intermediates issued in about two lifetimes plus one tidy interval.
 */
export function defaultTidySafetyBufferSeconds(intermediateTtlSeconds: number): number {
  return Math.max(MIN_TIDY_SAFETY_BUFFER_SECONDS, intermediateTtlSeconds);
}

export const DEFAULT_SETUP: Omit<VaultSetupOptions, "kubernetes"> = {
  rootMount: "pki",
  rootCommonName: "istiod-vault-agent root CA",
  intermediateMount: undefined,
  role: {
    name: "istiod-agent",
    serviceAccounts: ["istiod"],
    namespaces: ["istio-system"],
    audience: "vault",
    tokenTtlSeconds: 3600,
    tokenMaxTtlSeconds: 86400,
  },
  policyName: "istiod-agent",
  signPath: "pki/root/sign-intermediate",
};

/** The root every cluster's chain ends in: one PKI mount, generated or imported once. */
export type VaultRootOptions = Pick<
  VaultSetupOptions,
  "rootMount" | "rootCommonName" | "importCaBundlePem" | "autoTidy"
>;

/**
 * One workload cluster's way to the PKI: its Kubernetes auth mount (configured with that cluster's apiserver, so
 * TokenReview asks that cluster and no other), its role, a policy limited to its sign path, and optionally its own
 * intermediate mount signed by the root.
 */
export interface ClusterAccessOptions {
  /** Prefix of this cluster's change lines, e.g. "cluster a: " ("" for the single-cluster setup). */
  label: string;
  intermediateMount?: string | undefined;
  intermediateCommonName?: string | undefined;
  kubernetes: VaultSetupOptions["kubernetes"];
  role: VaultSetupOptions["role"];
  policyName: string;
  signPath: string;
  csrPath?: string | undefined;
}

export async function setupVault(vault: VaultClient, token: string, opts: VaultSetupOptions): Promise<string[]> {
  return setupVaultClusters(vault, token, opts, [{ ...opts, label: "" }]);
}

/** The root once, then each cluster's access; a line per change, none on a second run. */
export async function setupVaultClusters(
  vault: VaultClient,
  token: string,
  root: VaultRootOptions,
  clusters: readonly ClusterAccessOptions[],
): Promise<string[]> {
  const changes: string[] = [];
  const mounts = (await vault.read<Record<string, { type: string }>>("sys/mounts", token)).data;

  await ensurePkiMount(vault, token, mounts, root.rootMount, changes);
  if (!(await hasIssuer(vault, token, root.rootMount)) && root.importCaBundlePem) {
    await vault.write(`${root.rootMount}/config/ca`, token, { pem_bundle: root.importCaBundlePem });
    changes.push(`imported the given root CA into ${root.rootMount}/`);
  } else if (!(await hasIssuer(vault, token, root.rootMount))) {
    await vault.write(`${root.rootMount}/root/generate/internal`, token, {
      common_name: root.rootCommonName,
      ttl: "87600h",
      key_type: "ec",
      key_bits: 256,
    });
    changes.push(`generated a root CA in ${root.rootMount}/ ("${root.rootCommonName}", 10 years)`);
  }
  for (const cluster of clusters) {
    const lines: string[] = [];
    await ensureClusterAccess(vault, token, root, mounts, cluster, lines);
    changes.push(...lines.map((l) => `${cluster.label}${l}`));
  }
  if (root.autoTidy) {
    // Tidy where the intermediates are stored: the mount of each cluster's sign path, once each.
    const signMounts = new Set(clusters.map((c) => signPathMount(c.signPath)));
    for (const mount of signMounts) await ensureAutoTidy(vault, token, mount, root.autoTidy, changes);
  }
  return changes;
}

/** The PKI mount of a sign path (pki_int/root/sign-intermediate -> pki_int; issuer paths included). */
export function signPathMount(signPath: string): string {
  const path = trimSlashes(signPath);
  const i = path.search(/\/(root|issuer)\//);
  return i < 0 ? (path.split("/")[0] ?? path) : path.slice(0, i);
}

/** The auto-tidy fields setup-vault owns; any other field of the mount's tidy config is left as it is. */
export function autoTidyConfig(o: AutoTidyOptions): Record<string, boolean | number> {
  return {
    enabled: true,
    interval_duration: o.intervalSeconds,
    tidy_cert_store: true,
    // Revoked intermediates (an operator revoking a compromised one) expire too; their CRL entries go with them.
    tidy_revoked_certs: true,
    safety_buffer: o.safetyBufferSeconds,
  };
}

async function ensureAutoTidy(
  vault: VaultClient,
  token: string,
  mount: string,
  o: AutoTidyOptions,
  changes: string[],
): Promise<void> {
  const want = autoTidyConfig(o);
  const have = await readOrUndefined<Record<string, unknown>>(vault, token, `${mount}/config/auto-tidy`);
  if (have && Object.entries(want).every(([k, v]) => have[k] === v)) return;
  await vault.write(`${mount}/config/auto-tidy`, token, want);
  changes.push(
    `enabled auto-tidy on ${mount}/ (every ${formatSeconds(o.intervalSeconds)}, removes certificates ` +
      `${formatSeconds(o.safetyBufferSeconds)} past expiry: tidy_cert_store, tidy_revoked_certs)`,
  );
}

function formatSeconds(s: number): string {
  if (s % 3600 === 0) return `${s / 3600}h`;
  if (s % 60 === 0) return `${s / 60}m`;
  return `${s}s`;
}

async function ensureClusterAccess(
  vault: VaultClient,
  token: string,
  root: VaultRootOptions,
  mounts: Record<string, { type: string }>,
  opts: ClusterAccessOptions,
  changes: string[],
): Promise<void> {
  if (opts.intermediateMount) {
    const mount = opts.intermediateMount;
    await ensurePkiMount(vault, token, mounts, mount, changes);
    if (!(await hasIssuer(vault, token, mount))) {
      const commonName = opts.intermediateCommonName ?? `${root.rootCommonName} intermediate`;
      const csr = await vault.write<{ csr: string }>(`${mount}/intermediate/generate/internal`, token, {
        common_name: commonName,
        key_type: "ec",
        key_bits: 256,
      });
      const signed = await vault.write<{ certificate: string; issuing_ca: string }>(
        `${root.rootMount}/root/sign-intermediate`,
        token,
        { csr: csr.data.csr, common_name: commonName, ttl: "43800h", max_path_length: 1, format: "pem" },
      );
      // Import the certificate together with its root so the mount's issuer carries the full chain.
      await vault.write(`${mount}/intermediate/set-signed`, token, {
        certificate: `${signed.data.certificate}\n${signed.data.issuing_ca}`,
      });
      changes.push(`created an intermediate CA in ${mount}/ signed by ${root.rootMount}/`);
    }
  }

  const auths = (await vault.read<Record<string, { type: string }>>("sys/auth", token)).data;
  const k8sMount = trimSlashes(opts.kubernetes.mount);
  const existing = auths[`${k8sMount}/`];
  if (existing && existing.type !== "kubernetes")
    throw new Error(`auth mount ${k8sMount}/ exists with type ${existing.type}; expected a kubernetes auth mount`);
  if (!existing) {
    await vault.write(`sys/auth/${k8sMount}`, token, { type: "kubernetes" });
    changes.push(`enabled kubernetes auth at auth/${k8sMount}/`);
  }
  // disable_local_ca_jwt: a Vault running in some pod must never review with its own pod's token and CA, which
  // belong to the cluster Vault runs in, not to the cluster this mount serves. Without a reviewer JWT each login's
  // own JWT is the TokenReview credential, so the review always happens as that cluster's service account.
  const wantConfig = {
    kubernetes_host: opts.kubernetes.host,
    kubernetes_ca_cert: opts.kubernetes.caPem,
    disable_local_ca_jwt: true,
    ...(opts.kubernetes.reviewerJwt ? { token_reviewer_jwt: opts.kubernetes.reviewerJwt } : {}),
  };
  const haveConfig = await readOrUndefined<{
    kubernetes_host?: string;
    kubernetes_ca_cert?: string;
    disable_local_ca_jwt?: boolean;
    token_reviewer_jwt_set?: boolean;
  }>(vault, token, `auth/${k8sMount}/config`);
  if (
    !haveConfig ||
    haveConfig.kubernetes_host !== wantConfig.kubernetes_host ||
    (haveConfig.kubernetes_ca_cert ?? "").trim() !== wantConfig.kubernetes_ca_cert.trim() ||
    haveConfig.disable_local_ca_jwt !== true ||
    (opts.kubernetes.reviewerJwt !== undefined && !haveConfig.token_reviewer_jwt_set)
  ) {
    await vault.write(`auth/${k8sMount}/config`, token, wantConfig);
    changes.push(`configured auth/${k8sMount}/config for ${opts.kubernetes.host}`);
  }

  const policy = istiodAgentPolicy(opts.signPath, opts.csrPath);
  const havePolicy = await readOrUndefined<{ policy?: string; rules?: string }>(
    vault,
    token,
    `sys/policy/${opts.policyName}`,
  );
  if ((havePolicy?.policy ?? havePolicy?.rules) !== policy) {
    await vault.write(`sys/policy/${opts.policyName}`, token, { policy });
    changes.push(
      `wrote policy ${opts.policyName} (grants exactly: ${describeGrants(istiodAgentGrants(opts.signPath, opts.csrPath))})`,
    );
  }

  const wantRole = {
    bound_service_account_names: opts.role.serviceAccounts,
    bound_service_account_namespaces: opts.role.namespaces,
    audience: opts.role.audience,
    token_policies: [opts.policyName],
    token_ttl: opts.role.tokenTtlSeconds,
    token_max_ttl: opts.role.tokenMaxTtlSeconds,
  };
  const haveRole = await readOrUndefined<Record<string, unknown>>(
    vault,
    token,
    `auth/${k8sMount}/role/${opts.role.name}`,
  );
  if (!haveRole || !roleMatches(haveRole, wantRole)) {
    await vault.write(`auth/${k8sMount}/role/${opts.role.name}`, token, wantRole);
    changes.push(
      `wrote role ${opts.role.name}: ${opts.role.namespaces.join(",")}/${opts.role.serviceAccounts.join(",")}, audience ${opts.role.audience}, policy ${opts.policyName}`,
    );
  }
}

async function ensurePkiMount(
  vault: VaultClient,
  token: string,
  mounts: Record<string, { type: string }>,
  mount: string,
  changes: string[],
): Promise<void> {
  const existing = mounts[`${mount}/`];
  if (existing && existing.type !== "pki") {
    throw new Error(`mount ${mount}/ exists with type ${existing.type}; expected a pki mount`);
  }
  if (!existing) {
    await vault.write(`sys/mounts/${mount}`, token, { type: "pki", config: { max_lease_ttl: "87600h" } });
    // Later clusters sharing this mount must see it as present.
    mounts[`${mount}/`] = { type: "pki" };
    changes.push(`mounted pki at ${mount}/ (max TTL 10 years)`);
  }
}

async function hasIssuer(vault: VaultClient, token: string, mount: string): Promise<boolean> {
  const res = await vault.call<{ data?: { keys?: string[] } }>("GET", `${mount}/issuers?list=true`, {
    token,
    acceptStatuses: [404],
  });
  return res.status === 200 && (res.body?.data?.keys?.length ?? 0) > 0;
}

async function readOrUndefined<T>(vault: VaultClient, token: string, path: string): Promise<T | undefined> {
  try {
    return (await vault.read<T>(path, token)).data;
  } catch (err) {
    if (err instanceof HttpStatusError && err.status === 404) return undefined;
    throw err;
  }
}

function roleMatches(have: Record<string, unknown>, want: Record<string, unknown>): boolean {
  return Object.entries(want).every(([k, v]) => JSON.stringify(have[k]) === JSON.stringify(v));
}
