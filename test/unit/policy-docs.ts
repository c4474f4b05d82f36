// RootTrustPolicy documents for unit tests: ours (istiod-vault-agent.io) and Gloo Mesh's (admin.gloo.solo.io/v2),
// built fresh on every call so a test may mutate what it gets.
import { GLOO_RTP_API_VERSION, RTP_API_VERSION } from "../../src/config/root-trust-policy.js";

/** A RootTrustPolicy of either API with `config` as spec.config and `extraSpec` beside it. */
export function rootTrustPolicy(
  api: "ours" | "gloo",
  config: Record<string, unknown>,
  extraSpec: Record<string, unknown> = {},
): Record<string, unknown> {
  const ours = api === "ours";
  return {
    apiVersion: ours ? RTP_API_VERSION : GLOO_RTP_API_VERSION,
    kind: "RootTrustPolicy",
    metadata: ours ? { name: "istiod", namespace: "istio-system" } : { name: "root-trust", namespace: "gloo-mesh" },
    spec: { config, ...extraSpec },
  };
}

/** spec.config.agentCa of a Gloo policy using every Vault field the agent supports. */
export function glooVaultAgentCa(): Record<string, unknown> {
  return {
    vault: {
      caPath: "pki/root/sign-intermediate",
      csrPath: "pki_int/intermediate/generate/exported",
      server: "https://vault.vault:8200",
      kubernetesAuth: {
        path: "/v1/auth/kube-cluster1",
        role: "gloo-mesh-istiod",
        mountedSaPath: "/var/run/secrets/kubernetes.io/serviceaccount",
      },
    },
  };
}
