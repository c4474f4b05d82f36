// How every command reaches the apiserver: one precedence rule, one flag section (--kubeconfig, --context) and one
// client. Precedence:
//   1. --kubeconfig FILE[:FILE...]  (colon-separated files are merged, the first to define a name wins, as kubectl)
//   2. else $KUBECONFIG             (merged the same way)
//   3. else in-cluster, when KUBERNETES_SERVICE_HOST is set and --context is not given (the pod's service account)
//   4. else ~/.kube/config
// --context picks a context of the kubeconfig instead of its current-context. The in-cluster path stays on the lean
// client: the kubeconfig machinery (@kubernetes/client-node) is imported only when a kubeconfig is used, so the
// in-pod sidecar's start-up time and memory do not pay for it.
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { KubeClient, IN_CLUSTER_DIR } from "../kube/client.js";
import { ConfigError } from "./errors.js";
import type { KubeAccess } from "./kube-flags.js";

export type { KubeAccess } from "./kube-flags.js";
export { kubeAccessFlags } from "./kube-flags.js";

/** Where the precedence rule leads: the pod's service account, or these kubeconfig files (merged, first wins). */
export type KubeSource = { kind: "in-cluster" } | { kind: "kubeconfig"; files: string[]; context: string | undefined };

/** Applies the precedence rule. Throws ConfigError when nothing is available. */
export function resolveKubeSource(
  access: KubeAccess,
  env: NodeJS.ProcessEnv = process.env,
  home: string = homedir(),
): KubeSource {
  const split = (list: string) => list.split(":").filter((p) => p !== "");
  if (access.kubeconfig) return { kind: "kubeconfig", files: split(access.kubeconfig), context: access.context };
  if (env.KUBECONFIG && split(env.KUBECONFIG).length) {
    // kubectl skips files of $KUBECONFIG that do not exist; so do we, but not all of them.
    const files = split(env.KUBECONFIG);
    const present = files.filter((f) => existsSync(f));
    if (!present.length)
      throw new ConfigError([
        `KUBECONFIG: none of ${files.join(", ")} exists; expected one or more kubeconfig files separated by ':'`,
      ]);
    return { kind: "kubeconfig", files: present, context: access.context };
  }
  if (env.KUBERNETES_SERVICE_HOST && !access.context) return { kind: "in-cluster" };
  const fallback = join(home, ".kube", "config");
  if (existsSync(fallback)) return { kind: "kubeconfig", files: [fallback], context: access.context };
  throw new ConfigError([
    access.context
      ? `--context ${access.context}: no kubeconfig to find it in; expected --kubeconfig, $KUBECONFIG or ~/.kube/config`
      : "kubernetes access: no credentials; expected --kubeconfig, $KUBECONFIG, ~/.kube/config, or a pod with a service account",
  ]);
}

/** Opens the client; a kubeconfig that cannot be used, or no credentials at all, is a configuration error. */
export async function openKube(access: KubeAccess): Promise<KubeClient> {
  const source = resolveKubeSource(access);
  if (source.kind === "in-cluster") {
    try {
      return await KubeClient.inCluster();
    } catch (err) {
      throw new ConfigError([
        `kubernetes access (in-cluster): ${(err as Error).message}; expected a pod with a mounted service account, or --kubeconfig`,
      ]);
    }
  }
  const { kubeClientFromKubeconfig } = await import("../kube/kubeconfig.js");
  try {
    return await kubeClientFromKubeconfig(source.files, source.context, warn);
  } catch (err) {
    // The messages name the file, context or user and what is expected.
    throw new ConfigError([(err as Error).message]);
  }
}

/** The apiserver address and CA the chosen context (or the pod) uses, and the names of the context and its cluster. */
export async function kubeClusterInfo(
  access: KubeAccess,
): Promise<{ server: string; caPem?: string; context: string; cluster: string }> {
  const source = resolveKubeSource(access);
  if (source.kind === "in-cluster") {
    const host = process.env.KUBERNETES_SERVICE_HOST!;
    const port = process.env.KUBERNETES_SERVICE_PORT ?? "443";
    let caPem: string | undefined;
    try {
      caPem = readFileSync(`${IN_CLUSTER_DIR}/ca.crt`, "utf8");
    } catch {
      caPem = undefined;
    }
    const server = `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
    return { server, ...(caPem ? { caPem } : {}), context: "in-cluster", cluster: "in-cluster" };
  }
  const { kubeconfigClusterInfo } = await import("../kube/kubeconfig.js");
  try {
    return kubeconfigClusterInfo(source.files, source.context);
  } catch (err) {
    throw new ConfigError([(err as Error).message]);
  }
}

/** Loud, on stderr: insecure-skip-tls-verify and the like. */
function warn(message: string): void {
  process.stderr.write(`istiod-vault-agent: WARNING: ${message}\n`);
}
