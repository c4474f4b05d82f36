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

// TEMPORARY until the shared kubeconfig loader lands (wt15-kube "KUBE-API"): the same signature, the smallest reader.
export interface KubeAccess {
  kubeconfig?: string | undefined;
  context?: string | undefined;
}

export async function kubeClusterInfo(
  access: KubeAccess,
): Promise<{ server: string; caPem?: string; context: string; cluster: string }> {
  const { readFileSync } = await import("node:fs");
  const nodePath = await import("node:path");
  const { parse } = await import("yaml");
  const path = access.kubeconfig ?? process.env.KUBECONFIG?.split(":")[0];
  if (!path) throw new ConfigError(["--kubeconfig: missing; expected a kubeconfig file"]);
  const doc = parse(readFileSync(path, "utf8")) as Record<string, { name: string; [k: string]: unknown }[]>;
  const contextName = access.context ?? (doc["current-context"] as unknown as string);
  const ctx = doc.contexts?.find((c) => c.name === contextName)?.context as { cluster: string } | undefined;
  if (!ctx) throw new ConfigError([`--context ${contextName}: no such context in ${path}`]);
  const cl = doc.clusters?.find((c) => c.name === ctx.cluster)?.cluster as Record<string, string> | undefined;
  if (!cl?.server) throw new ConfigError([`kubeconfig ${path}: cluster ${ctx.cluster} has no server`]);
  const caPem = cl["certificate-authority-data"]
    ? Buffer.from(cl["certificate-authority-data"], "base64").toString("utf8")
    : cl["certificate-authority"]
      ? readFileSync(nodePath.resolve(nodePath.dirname(path), cl["certificate-authority"]), "utf8")
      : undefined;
  return { server: cl.server, ...(caPem ? { caPem } : {}), context: contextName, cluster: ctx.cluster };
}
