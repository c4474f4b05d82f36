// A ready-to-use environment for agent tests: the real servers, the istiod service account, and a Vault configured by
// the same setupVault() the product's setup-vault command runs.
import { TestEnv, type TestEnvOptions } from "./harness.js";
import { setupVault, DEFAULT_SETUP, type VaultSetupOptions } from "../../src/vault/setup.js";

export const ISTIO_NS = "istio-system";
export const ISTIOD_SA = "istiod";
const REVIEWER_NS = "vault-system";
const REVIEWER_SA = "vault-token-reviewer";
/** The apiserver's own audience (its service-account issuer), which the reviewer's token must carry. */
export const APISERVER_AUDIENCE = "https://kubernetes.default.svc.cluster.local";

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
    await env.createServiceAccount(ISTIO_NS, ISTIOD_SA);
    // Vault's TokenReview credential: a dedicated service account allowed to review tokens, as in a real install.
    await env.createServiceAccount(REVIEWER_NS, REVIEWER_SA);
    await env.bindClusterRole("system:auth-delegator", REVIEWER_NS, REVIEWER_SA);
    const reviewerJwt = await env.requestToken(REVIEWER_NS, REVIEWER_SA, APISERVER_AUDIENCE, 24 * 3600);
    const setup: VaultSetupOptions = {
      ...DEFAULT_SETUP,
      intermediateMount: "pki_int",
      ...overrides,
      kubernetes: { mount: "kubernetes", host: env.kube.url, caPem: env.kube.caPem, reviewerJwt },
    };
    const changes = await setupVault(env.vault.client, env.vault.rootToken, setup);
    return { env, setup, changes };
  } catch (err) {
    await env.stop();
    throw err;
  }
}
