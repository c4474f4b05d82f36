// A ready-to-use environment for agent tests: the real servers, the istiod service account, and a Vault configured by
// the same setupVault() the product's setup-vault command runs.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { TestEnv, type TestEnvOptions } from "./harness.js";
import { setupVault, DEFAULT_SETUP, type VaultSetupOptions } from "../../src/vault/setup.js";

export const ISTIO_NS = "istio-system";
export const ISTIOD_SA = "istiod";
const REVIEWER_NS = "vault-system";
const REVIEWER_SA = "vault-token-reviewer";
/** The apiserver's own audience (its service-account issuer), which the reviewer's token must carry. */
export const APISERVER_AUDIENCE = "https://kubernetes.default.svc.cluster.local";

/** Every check `doctor` reports for a good setup run from a laptop (a kubeconfig, Kubernetes auth), in order. */
export const DOCTOR_LAPTOP_CHECKS = [
  "vault reachable",
  "service-account token",
  "kubernetes login",
  "policy allows pki/root/sign-intermediate",
  "policy is least-privilege",
  "dry-run intermediate",
] as const;

/**
 * Vault's TokenReview credential, as in a real install: a dedicated service account allowed to review tokens
 * (`system:auth-delegator`). Returns its token for the apiserver's audience.
 */
export async function createTokenReviewer(env: TestEnv, ttlSeconds = 24 * 3600): Promise<string> {
  await env.createServiceAccount(REVIEWER_NS, REVIEWER_SA);
  await env.bindClusterRole("system:auth-delegator", REVIEWER_NS, REVIEWER_SA);
  return env.requestToken(REVIEWER_NS, REVIEWER_SA, APISERVER_AUDIENCE, ttlSeconds);
}

/**
 * What `setup-vault` needs to configure Kubernetes auth for this apiserver, written into `dir` as an operator would
 * have them (the apiserver CA and the reviewer's token), returned as its flags.
 */
export async function setupVaultKubernetesFlags(env: TestEnv, dir: string): Promise<string[]> {
  writeFileSync(join(dir, "kube-ca.crt"), env.kube.caPem);
  writeFileSync(join(dir, "reviewer.jwt"), await createTokenReviewer(env, 3600), { mode: 0o600 });
  return [
    `--kubernetes-host=${env.kube.url}`,
    `--kubernetes-ca-file=${join(dir, "kube-ca.crt")}`,
    `--token-reviewer-jwt-file=${join(dir, "reviewer.jwt")}`,
  ];
}

export interface AgentTestEnv {
  env: TestEnv;
  setup: VaultSetupOptions;
  /** What the first setupVault() run reported. */
  changes: string[];
}

export async function startAgentTestEnv(
  overrides: Partial<Omit<VaultSetupOptions, "kubernetes">> = {},
  envOpts: TestEnvOptions = {},
): Promise<AgentTestEnv> {
  const env = await TestEnv.start(envOpts);
  try {
    return await configureAgentTestEnv(env, overrides);
  } catch (err) {
    await env.stop();
    throw err;
  }
}

/**
 * The Kubernetes and Vault side of startAgentTestEnv on an environment already running (its apiserver and env.vault):
 * the istiod and TokenReview service accounts, then setupVault(). The OpenBao cluster harness calls it too.
 */
export async function configureAgentTestEnv(
  env: TestEnv,
  overrides: Partial<Omit<VaultSetupOptions, "kubernetes">> = {},
): Promise<AgentTestEnv> {
  await env.createServiceAccount(ISTIO_NS, ISTIOD_SA);
  const reviewerJwt = await createTokenReviewer(env);
  const setup: VaultSetupOptions = {
    ...DEFAULT_SETUP,
    intermediateMount: "pki_int",
    ...overrides,
    kubernetes: { mount: "kubernetes", host: env.kube.url, caPem: env.kube.caPem, reviewerJwt },
  };
  const changes = await setupVault(env.vault.client, env.vault.rootToken, setup);
  return { env, setup, changes };
}

/**
 * What a relay server needs in Vault, as an operator sets it up: KV v2 at secret/, the relay policy, and a Kubernetes
 * auth role `relay` for its service account. Writes that service account's token (audience vault) to `tokenPath`.
 */
export async function setupRelayVault(
  env: TestEnv,
  opts: { namespace: string; serviceAccount: string; policy: string; tokenPath: string },
): Promise<void> {
  const root = env.vault.rootToken;
  const v = env.vault.client;
  const mounts = (await v.read<Record<string, unknown>>("sys/mounts", root)).data;
  if (!mounts["secret/"]) await v.write("sys/mounts/secret", root, { type: "kv", options: { version: "2" } });
  await v.write("sys/policy/relay", root, { policy: opts.policy });
  await env.createServiceAccount(opts.namespace, opts.serviceAccount);
  await v.write("auth/kubernetes/role/relay", root, {
    bound_service_account_names: [opts.serviceAccount],
    bound_service_account_namespaces: [opts.namespace],
    audience: "vault",
    token_policies: ["relay"],
    token_ttl: 3600,
    token_max_ttl: 86400,
  });
  writeFileSync(opts.tokenPath, await env.requestToken(opts.namespace, opts.serviceAccount, "vault", 3600), {
    mode: 0o600,
  });
}

/**
 * The PKI roles relay leaves are issued from, as an operator writes them: `relay-server` for the server's one DNS
 * name, and with `client` a `relay-client` role for any hostname-shaped cluster name. ECDSA keys, so no
 * keyEncipherment (RFC 8813); the EKU comes from the role alone (server_flag/client_flag off); nothing stored.
 */
export async function writeRelayPkiRoles(
  env: TestEnv,
  mount: string,
  roles: { serverDns: string; client?: boolean },
): Promise<void> {
  const common = {
    key_type: "any",
    key_usage: ["DigitalSignature"],
    max_ttl: "72h",
    ttl: "24h",
    enforce_hostnames: true,
    allow_ip_sans: false,
    allow_localhost: false,
    server_flag: false,
    client_flag: false,
    no_store: true,
  };
  const root = env.vault.rootToken;
  await env.vault.client.write(`${mount}/roles/relay-server`, root, {
    ...common,
    allowed_domains: [roles.serverDns],
    allow_bare_domains: true,
    allow_subdomains: false,
    ext_key_usage: ["ServerAuth"],
  });
  if (roles.client) {
    await env.vault.client.write(`${mount}/roles/relay-client`, root, {
      ...common,
      allow_any_name: true,
      ext_key_usage: ["ClientAuth"],
    });
  }
}

/** Mounts a PKI engine at `mount` (10-year max TTL) with a new EC P-256 root CA; returns the root certificate. */
export async function mountPkiRoot(env: TestEnv, mount: string, commonName: string): Promise<string> {
  const root = env.vault.rootToken;
  await env.vault.client.write(`sys/mounts/${mount}`, root, { type: "pki", config: { max_lease_ttl: "87600h" } });
  const generated = await env.vault.client.write<{ certificate: string }>(`${mount}/root/generate/internal`, root, {
    common_name: commonName,
    ttl: "87600h",
    key_type: "ec",
    key_bits: 256,
  });
  return generated.data.certificate;
}
