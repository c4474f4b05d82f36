// Out-of-cluster access from a kubeconfig file (current context; inline or file-referenced certificate data, or a
// bearer token). In a pod the agent uses KubeClient.inCluster() instead.
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { KubeClient } from "./client.js";

interface NamedEntry<T> {
  name: string;
  [key: string]: unknown;
  value?: T;
}

/** Interim (first commit of the KUBE-API): the first file only; --context honoured. */
export function kubeClientFromKubeconfig(
  files: string | string[],
  contextOverride?: string,
  _warn?: (message: string) => void,
): KubeClient {
  const path = typeof files === "string" ? files : files[0]!;
  const { server, caPem, user } = load(path, contextOverride);
  return new KubeClient({
    server,
    tls: { caPem, certPem: user.certPem, keyPem: user.keyPem },
    token: user.token,
  });
}

export function kubeconfigClusterInfo(
  files: string[],
  contextOverride?: string,
): { server: string; caPem?: string; context: string; cluster: string } {
  const { server, caPem, context, cluster } = load(files[0]!, contextOverride);
  return { server, ...(caPem ? { caPem } : {}), context, cluster };
}

function load(path: string, contextOverride: string | undefined) {
  let doc: Record<string, unknown>;
  try {
    doc = parseYaml(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`kubeconfig ${path}: cannot read or parse it (${(err as Error).message.split("\n")[0]})`, {
      cause: err,
    });
  }
  const base = dirname(path);
  const contextName = contextOverride ?? doc["current-context"];
  const context = find<{ cluster: string; user: string }>(doc.contexts, contextName, "context", path);
  const cluster = find<Record<string, string>>(doc.clusters, context.cluster, "cluster", path);
  const user = find<Record<string, string>>(doc.users, context.user, "user", path);
  const data = (obj: Record<string, string>, key: string): string | undefined => {
    if (obj[`${key}-data`]) return Buffer.from(obj[`${key}-data`]!, "base64").toString("utf8");
    if (obj[key]) return readFileSync(resolve(base, obj[key]), "utf8");
    return undefined;
  };
  if (!cluster.server) throw new Error(`kubeconfig ${path}: cluster ${context.cluster} has no server`);
  return {
    server: cluster.server,
    caPem: data(cluster, "certificate-authority"),
    context: String(contextName),
    cluster: context.cluster,
    user: { certPem: data(user, "client-certificate"), keyPem: data(user, "client-key"), token: user.token },
  };
}

function find<T>(list: unknown, name: unknown, what: string, path: string): T {
  const entries = Array.isArray(list) ? (list as NamedEntry<T>[]) : [];
  const hit = entries.find((e) => e.name === name);
  const value = hit?.[what] as T | undefined;
  if (!value) throw new Error(`kubeconfig ${path}: no ${what} named "${String(name)}"`);
  return value;
}
