// The apiserver client of the commands that run in a pod: --kubeconfig, else the pod's service account.
import { KubeClient } from "../kube/client.js";
import { kubeClientFromKubeconfig } from "../kube/kubeconfig.js";
import { ConfigError } from "./errors.js";

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
