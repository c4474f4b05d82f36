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

/** Reads a policy, its Ready condition and the Events about it (in istiod's namespace). */
export function policyReader(kube: () => KubeClient) {
  const get = (name = "istiod") => kube().get<RootTrustPolicyObject>(`${POLICY_BASE}/${name}`);
  return {
    get,
    status: async (name = "istiod") => (await get(name)).status ?? {},
    ready: async (name = "istiod") => (await get(name)).status?.conditions?.find((c) => c.type === "Ready"),
    events: async (name = "istiod") =>
      (
        await kube().get<{ items: KubeEvent[] }>(
          `/api/v1/namespaces/${ISTIO_NS}/events?fieldSelector=involvedObject.name%3D${name}`,
        )
      ).items,
  };
}
