// --policy-name: the RootTrustPolicy the agent (sidecar, init) starts from. Apart from cli/kube.ts so that commands
// that only reach the apiserver (inject, setup-vault) do not load the policy reader and, through it, the X.509 stack.
import type { KubeClient } from "../kube/client.js";
import { fetchPolicy, type PolicyObject, type PolicyRef } from "../kube/policy-controller.js";
import type { FlagValues } from "./flags.js";
import { openKube } from "./kube.js";

/** --policy-name: the apiserver client, the policy's reference and the policy as it is now. */
export interface OpenedPolicy {
  kube: KubeClient;
  ref: PolicyRef;
  /** namespace/name, for messages. */
  label: string;
  initial: PolicyObject;
}

/** Reads the RootTrustPolicy named by --policy-name (undefined without it); a missing policy fails clearly. */
export async function openPolicy(flags: FlagValues): Promise<OpenedPolicy | undefined> {
  const name = typeof flags["policy-name"] === "string" && flags["policy-name"] ? flags["policy-name"] : undefined;
  if (!name) return undefined;
  const namespace =
    (typeof flags["policy-namespace"] === "string" && flags["policy-namespace"]) ||
    process.env.POD_NAMESPACE ||
    "istio-system";
  const str = (v: unknown) => (typeof v === "string" && v ? v : undefined);
  const kube = await openKube({ kubeconfig: str(flags.kubeconfig), context: str(flags.context) });
  const ref = { namespace, name };
  try {
    return { kube, ref, label: `${namespace}/${name}`, initial: await fetchPolicy(kube, ref) };
  } catch (err) {
    await kube.close();
    throw err;
  }
}
