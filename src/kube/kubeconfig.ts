// Out-of-cluster access from kubeconfig files, as kubectl reads them: several files merged (the first to define a
// name, and the first current-context, win; relative paths resolve against the file that holds them), a context
// chosen by --context or current-context, and the user's credentials through @kubernetes/client-node's KubeConfig
// (exec credential plugins, re-run when their credential expires; the oidc, gcp and azure auth providers; tokens,
// client certificates, basic auth, impersonation). kubectl's `tokenFile` is re-read at every request, as the token
// behind it may rotate. client-node is imported here only, and this module only when a kubeconfig is used (see
// src/cli/kube.ts), so the in-pod sidecar never loads it.
//
// What client-node would accept but then send no credentials for (a user with none, an auth provider it does not know)
// is refused up front with the user's name and what is expected, never left to become a bare 401.
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { KubeClient } from "./client.js";

type Raw = Record<string, unknown>;

/** The chosen context, its cluster and user, from the merged files (paths made absolute). */
export interface SelectedContext {
  /** e.g. `kubeconfig a.yaml:b.yaml`, for errors. */
  where: string;
  context: string;
  clusterName: string;
  userName: string;
  cluster: Raw;
  user: Raw;
  contexts: string[];
}

/** Auth providers @kubernetes/client-node serves (its oidc, gcp and azure authenticators). */
const AUTH_PROVIDERS = ["oidc", "gcp", "azure"];
const EXEC_API_VERSIONS = ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"];
const EXPECTED_AUTH =
  "expected a token, tokenFile, client-certificate and client-key, username and password, an exec credential plugin " +
  "(e.g. aws eks get-token, gke-gcloud-auth-plugin, kubelogin), or the oidc auth-provider";

/** Reads, merges and selects; throws an Error naming the file, context, cluster or user that is wrong. */
export function selectContext(files: string[], contextOverride?: string): SelectedContext {
  const docs = files.map((file) => {
    let doc: unknown;
    try {
      doc = parseYaml(readFileSync(file, "utf8")) ?? {};
    } catch (err) {
      throw new Error(`kubeconfig ${file}: cannot read or parse it (${(err as Error).message.split("\n")[0]})`, {
        cause: err,
      });
    }
    return { name: file, doc, base: dirname(resolve(file)) };
  });
  return selectFromDocuments(docs, `kubeconfig ${files.join(":")}`, contextOverride);
}

/** selectContext over documents already read: `name` names each in errors, `base` resolves its relative paths. */
function selectFromDocuments(
  docs: { name: string; doc: unknown; base: string }[],
  where: string,
  contextOverride?: string,
): SelectedContext {
  const clusters = new Map<string, Raw>();
  const users = new Map<string, Raw>();
  const contexts = new Map<string, Raw>();
  let current: string | undefined;
  for (const { name: file, doc: parsed, base } of docs) {
    const doc = parsed as Raw;
    if (typeof doc !== "object" || doc === null || Array.isArray(doc))
      throw new Error(`kubeconfig ${file}: not a kubeconfig document`);
    const add = (into: Map<string, Raw>, list: unknown, key: string, fix: (v: Raw) => Raw) => {
      for (const entry of Array.isArray(list) ? (list as Raw[]) : []) {
        const name = entry?.name;
        const value = entry?.[key];
        if (typeof name !== "string" || !value || typeof value !== "object") continue;
        if (!into.has(name)) into.set(name, fix(value as Raw));
      }
    };
    add(clusters, doc.clusters, "cluster", (c) => absolute(c, base, ["certificate-authority"]));
    add(users, doc.users, "user", (u) => {
      const out = absolute(u, base, ["client-certificate", "client-key", "tokenFile"]);
      // An exec command given as a relative path (./plugin) is relative to its kubeconfig, as in kubectl.
      const exec = out.exec as Raw | undefined;
      if (exec && typeof exec.command === "string" && /^\.\.?\//.test(exec.command))
        out.exec = { ...exec, command: resolve(base, exec.command) };
      return out;
    });
    add(contexts, doc.contexts, "context", (c) => c);
    if (current === undefined && typeof doc["current-context"] === "string" && doc["current-context"])
      current = doc["current-context"];
  }
  const names = [...contexts.keys()];
  const contextName = contextOverride ?? current;
  if (!contextName)
    throw new Error(`${where}: no current-context; expected --context NAME (contexts: ${names.join(", ") || "none"})`);
  const context = contexts.get(contextName);
  if (!context)
    throw new Error(
      `${where}: no context named "${contextName}"; expected one of: ${names.join(", ") || "(the files define none)"}`,
    );
  const clusterName = typeof context.cluster === "string" ? context.cluster : "";
  const userName = typeof context.user === "string" ? context.user : "";
  const cluster = clusters.get(clusterName);
  if (!cluster)
    throw new Error(`${where}: context "${contextName}" names cluster "${clusterName}", which is not defined`);
  if (typeof cluster.server !== "string" || !cluster.server)
    throw new Error(`${where}: cluster "${clusterName}" has no server; expected its https:// URL`);
  // kubectl allows a context without a user (no credentials); so do we, and refuse it below with a clear message.
  const user = userName ? users.get(userName) : {};
  if (!user) throw new Error(`${where}: context "${contextName}" names user "${userName}", which is not defined`);
  return { where, context: contextName, clusterName, userName, cluster, user, contexts: names };
}

function absolute(entry: Raw, base: string, keys: string[]): Raw {
  const out = { ...entry };
  for (const k of keys) if (typeof out[k] === "string" && out[k] && !isAbsolute(out[k])) out[k] = resolve(base, out[k]);
  return out;
}

/** Inline *-data (base64) or the file the key names; undefined when neither is set. */
function pemOf(entry: Raw, key: string, what: string): string | undefined {
  const data = entry[`${key}-data`];
  if (typeof data === "string" && data) return Buffer.from(data, "base64").toString("utf8");
  const file = entry[key];
  if (typeof file !== "string" || !file) return undefined;
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new Error(`${what}: cannot read ${key} ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`, {
      cause: err,
    });
  }
}

/** The shapes of user this client can authenticate as; anything else is refused with what is expected. */
export function checkUser(sel: SelectedContext): void {
  const u = sel.user;
  const who = describeUser(sel);
  const has = (k: string) => (typeof u[k] === "string" && u[k] !== "") || (k === "exec" && !!u.exec);
  const cert = has("client-certificate") || has("client-certificate-data");
  const key = has("client-key") || has("client-key-data");
  if (cert !== key)
    throw new Error(
      `${who}: has a client ${cert ? "certificate but no key" : "key but no certificate"}; expected both`,
    );
  const provider = u["auth-provider"] as Raw | undefined;
  if (provider) {
    const name = typeof provider.name === "string" ? provider.name : "(unnamed)";
    if (!AUTH_PROVIDERS.includes(name))
      throw new Error(
        `${who}: auth-provider "${name}" is not supported (supported: ${AUTH_PROVIDERS.join(", ")}); ${EXPECTED_AUTH}`,
      );
  }
  const exec = u.exec as Raw | undefined;
  if (exec) {
    if (typeof exec.command !== "string" || !exec.command)
      throw new Error(`${who}: exec has no command; expected the credential plugin to run`);
    // The plugin runs without a terminal: one that must prompt would wait forever.
    if (exec.interactiveMode === "Always")
      throw new Error(
        `${who}: exec interactiveMode Always needs a terminal, which this command does not give the plugin; expected ` +
          "a plugin that can run non-interactively (log in with it once beforehand, then interactiveMode IfAvailable)",
      );
    if (!EXEC_API_VERSIONS.includes(String(exec.apiVersion)))
      throw new Error(
        `${who}: exec apiVersion "${String(exec.apiVersion)}" is not supported; expected ${EXEC_API_VERSIONS.join(" or ")}`,
      );
  }
  const any = cert || has("token") || has("tokenFile") || (has("username") && has("password")) || !!exec || !!provider;
  if (!any) throw new Error(`${who}: has no credentials; ${EXPECTED_AUTH}`);
}

function describeUser(sel: SelectedContext): string {
  return `${sel.where}: user "${sel.userName || "(none)"}" of context "${sel.context}"`;
}

/** The apiserver address and CA of the chosen context: what Vault needs to call that apiserver. */
export function kubeconfigClusterInfo(
  files: string[],
  contextOverride?: string,
): { server: string; caPem?: string; context: string; cluster: string } {
  const sel = selectContext(files, contextOverride);
  const caPem = pemOf(sel.cluster, "certificate-authority", `${sel.where}: cluster "${sel.clusterName}"`);
  return {
    server: String(sel.cluster.server),
    ...(caPem ? { caPem } : {}),
    context: sel.context,
    cluster: sel.clusterName,
  };
}

/** The client for the chosen context. `warn` is told, loudly, about insecure-skip-tls-verify. */
export async function kubeClientFromKubeconfig(
  files: string | string[],
  contextOverride?: string,
  warn: (message: string) => void = () => undefined,
): Promise<KubeClient> {
  return clientForContext(selectContext(typeof files === "string" ? [files] : files, contextOverride), warn);
}

/**
 * A client from a kubeconfig someone else wrote (a remote cluster's Secret), held to istiod's rules for those
 * (istio pkg/kube NewUntrustedRestConfig + sanitizeKubeConfig): nothing that reads the agent's files or runs a
 * program (client-certificate, client-key, tokenFile, exec, auth providers other than oidc), and, ours, no
 * certificate-authority file and no insecure-skip-tls-verify (the apiserver's certificate is always verified).
 * Inline data (token, client-certificate-data/client-key-data, certificate-authority-data) is what is expected.
 */
export async function kubeClientFromUntrustedKubeconfig(text: string, where: string): Promise<KubeClient> {
  let doc: unknown;
  try {
    doc = parseYaml(text) ?? {};
  } catch (err) {
    throw new Error(`${where}: cannot parse the kubeconfig (${(err as Error).message.split("\n")[0]})`, {
      cause: err,
    });
  }
  const sel = selectFromDocuments([{ name: where, doc, base: "/" }], where);
  const refused = untrustedOptions(sel);
  if (refused.length)
    throw new Error(
      `${where}: ${refused.join(", ")} not allowed in a remote cluster's kubeconfig; expected inline credentials ` +
        "(token, or client-certificate-data and client-key-data, or the oidc auth-provider) and certificate-authority-data",
    );
  return clientForContext(sel, () => undefined);
}

function untrustedOptions(sel: SelectedContext): string[] {
  const u = sel.user;
  const c = sel.cluster;
  const out: string[] = [];
  for (const k of ["client-certificate", "client-key", "tokenFile", "exec"]) if (u[k]) out.push(k);
  const provider = u["auth-provider"] as Raw | undefined;
  if (provider && provider.name !== "oidc") out.push(`auth-provider ${String(provider.name)}`);
  if (c["certificate-authority"]) out.push("certificate-authority (a file)");
  if (c["insecure-skip-tls-verify"] === true) out.push("insecure-skip-tls-verify");
  return out;
}

async function clientForContext(sel: SelectedContext, warn: (message: string) => void): Promise<KubeClient> {
  checkUser(sel);
  const who = describeUser(sel);
  const c = sel.cluster;
  const clusterWhat = `${sel.where}: cluster "${sel.clusterName}"`;
  const skipVerify = c["insecure-skip-tls-verify"] === true;
  if (skipVerify)
    warn(
      `${clusterWhat} sets insecure-skip-tls-verify: the apiserver's certificate is NOT verified, so anyone on the ` +
        "path can impersonate it; set certificate-authority(-data) instead",
    );
  const proxyUrl = typeof c["proxy-url"] === "string" && c["proxy-url"] ? c["proxy-url"] : undefined;
  if (proxyUrl && !/^https?:\/\//.test(proxyUrl))
    throw new Error(`${clusterWhat}: proxy-url ${proxyUrl} is not supported; expected an http:// or https:// proxy`);

  // client-node gets the one context, with kubectl's tokenFile taken out: it would read it once (and under another
  // key); we re-read it per request.
  const { tokenFile, ...userForClientNode } = sel.user;
  const { KubeConfig } = await import("./client-node.js");
  const kc = new KubeConfig();
  kc.loadFromString(
    JSON.stringify({
      clusters: [{ name: sel.clusterName, cluster: c }],
      users: [{ name: sel.userName || "user", user: userForClientNode }],
      contexts: [{ name: sel.context, context: { cluster: sel.clusterName, user: sel.userName || "user" } }],
      "current-context": sel.context,
    }),
  );
  const exec = sel.user.exec as Raw | undefined;

  /** Everything client-node derives for a request: TLS material and headers (exec plugins run here, cached). */
  const derive = async () => {
    const o: {
      headers?: Record<string, unknown>;
      auth?: string;
      ca?: unknown;
      cert?: unknown;
      key?: unknown;
    } = {};
    try {
      await kc.applyToHTTPSOptions(o);
    } catch (err) {
      const detail = ((err as Error).message || String(err)).trim().split("\n")[0]!.slice(0, 300);
      throw new Error(
        exec
          ? `${who}: the exec credential plugin "${String(exec.command)}" failed: ${detail || "no message"}`
          : `${who}: cannot get credentials: ${detail}`,
        { cause: err },
      );
    }
    return o;
  };
  const asText = (v: unknown) => (v === undefined || v === null ? undefined : Buffer.from(v as string).toString());

  const first = await derive();
  const headers = async (): Promise<Record<string, string>> => {
    const o = await derive();
    const h: Record<string, string> = {};
    for (const [k, v] of Object.entries(o.headers ?? {})) if (typeof v === "string") h[k.toLowerCase()] = v;
    if (o.auth) h.authorization = `Basic ${Buffer.from(o.auth).toString("base64")}`;
    if (!h.authorization && typeof tokenFile === "string" && tokenFile) {
      try {
        h.authorization = `Bearer ${(await readFile(tokenFile, "utf8")).trim()}`;
      } catch (err) {
        throw new Error(
          `${who}: cannot read tokenFile ${tokenFile} (${(err as NodeJS.ErrnoException).code ?? "error"})`,
          { cause: err },
        );
      }
    }
    if (exec && !h.authorization && !first.cert)
      throw new Error(
        `${who}: the exec credential plugin "${String(exec.command)}" printed no token and no client certificate; ` +
          "expected an ExecCredential with status.token",
      );
    return h;
  };
  const caPem = pemOf(c, "certificate-authority", clusterWhat);
  return new KubeClient({
    server: String(c.server),
    tls: {
      caPem,
      // From the user's files or data, or from an exec plugin's first credential.
      certPem: asText(first.cert),
      keyPem: asText(first.key),
      insecureSkipVerify: skipVerify,
      serverName: typeof c["tls-server-name"] === "string" ? c["tls-server-name"] : undefined,
    },
    headers,
    proxyUrl,
    identity: `the credentials of kubeconfig context "${sel.context}" (user "${sel.userName || "(none)"}"${exec ? `, exec plugin "${String(exec.command)}"` : ""})`,
  });
}
