// The apiserver client of the commands that run in a pod: --kubeconfig, else the pod's service account.
import { KubeClient } from "../kube/client.js";
import { kubeClientFromKubeconfig } from "../kube/kubeconfig.js";
import { ConfigError } from "./errors.js";
import type { FlagValues } from "./flags.js";
import { fetchPolicy, type PolicyObject, type PolicyRef } from "../kube/policy-controller.js";

/** Opens the client; a kubeconfig that cannot be read, or no service account, is a configuration error. */
export async function openKube(kubeconfig: string | undefined): Promise<KubeClient> {
  try {
    return kubeconfig ? kubeClientFromKubeconfig(kubeconfig) : await KubeClient.inCluster();
  } catch (err) {
    throw new ConfigError([
      `--kubeconfig: ${(err as Error).message}; expected a readable kubeconfig, or run in a pod with a service account`,
    ]);
  }
}

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
  const kube = await openKube(typeof flags.kubeconfig === "string" ? flags.kubeconfig : undefined);
  const ref = { namespace, name };
  try {
    return { kube, ref, label: `${namespace}/${name}`, initial: await fetchPolicy(kube, ref) };
  } catch (err) {
    await kube.close();
    throw err;
  }
}
