// The RootTrustPolicy objects as tests read them back from the apiserver: the policy with its status, its
// conditions, and the Events the agent records about it.
import type { KubeClient } from "../../src/kube/client.js";
import { ISTIO_NS } from "./fixtures.js";

export const POLICY_BASE = `/apis/istiod-vault-agent.io/v1alpha1/namespaces/${ISTIO_NS}/roottrustpolicies`;

export interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
  lastTransitionTime: string;
}

export interface PolicyStatus {
  observedGeneration?: number;
  generation?: number;
  intermediateSerial?: string;
  intermediateNotAfter?: string;
  lastError?: string;
  writer?: string;
  conditions?: Condition[];
}

export interface RootTrustPolicyObject {
  metadata: { generation: number };
  spec: Record<string, unknown>;
  status?: PolicyStatus;
}

export interface KubeEvent {
  reason: string;
  type: string;
  message: string;
  count?: number;
  reportingInstance?: string;
  source?: { host?: string };
}

/** A RootTrustPolicy in istiod's namespace: `vault` is its agentCa.vault, `config` more of spec.config, `spec` more of spec. */
export function rootTrustPolicy<C extends Record<string, unknown> = Record<string, never>>(
  name: string,
  vault: Record<string, unknown>,
  config: C = {} as C,
  spec: Record<string, unknown> = {},
) {
  return {
    apiVersion: "istiod-vault-agent.io/v1alpha1",
    kind: "RootTrustPolicy",
    metadata: { name, namespace: ISTIO_NS },
    spec: { config: { agentCa: { vault }, ...config }, ...spec },
  };
}

/** Reads a policy, its Ready condition and the Events about it (in istiod's namespace). */
export function policyReader(kube: () => KubeClient) {
  const get = (name = "istiod") => kube().get<RootTrustPolicyObject>(`${POLICY_BASE}/${name}`);
  const ready = async (name = "istiod") => (await get(name)).status?.conditions?.find((c) => c.type === "Ready");
  return {
    get,
    status: async (name = "istiod") => (await get(name)).status ?? {},
    ready,
    /** Whether istiod's policy is Ready=`status` for `reason` (a waitUntil condition). */
    readyIs: async (status: "True" | "False", reason: string) => {
      const c = await ready();
      return c?.status === status && c.reason === reason;
    },
    events: async (name = "istiod") =>
      (
        await kube().get<{ items: KubeEvent[] }>(
          `/api/v1/namespaces/${ISTIO_NS}/events?fieldSelector=involvedObject.name%3D${name}`,
        )
      ).items,
  };
}
