// A minimal Kubernetes API client: JSON requests to the apiserver with a bearer token (in a pod), a client certificate,
// or whatever headers a kubeconfig's user produces (src/kube/kubeconfig.ts bridges @kubernetes/client-node's
// KubeConfig into `headers`). Only what the agent needs; no informer machinery here.
import { readFile } from "node:fs/promises";
import { HttpJsonClient, HttpStatusError, DEFAULT_TIMEOUTS, type TlsOptions } from "../net/http-json.js";

/** Where a pod's service-account token, CA and namespace are mounted. */
export const IN_CLUSTER_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

export interface KubeClientOptions {
  server: string;
  tls: TlsOptions;
  /** Bearer token, or a function that reads it (the in-pod token file is rotated by the kubelet). */
  token?: string | (() => Promise<string>);
  /** Per-request headers (Authorization, Impersonate-User), asked for before every request: exec plugins and auth
   * providers refresh their credentials there. Used instead of `token` when given. */
  headers?: () => Promise<Record<string, string>>;
  /** HTTP(S) proxy to the apiserver (a kubeconfig cluster's proxy-url). */
  proxyUrl?: string | undefined;
  /** Whose credentials these are, for errors: e.g. `kubeconfig context "prod" (user "admin")`. */
  identity?: string;
}

export class KubeClient {
  private readonly http: HttpJsonClient;

  constructor(private readonly opts: KubeClientOptions) {
    this.http = new HttpJsonClient("kubernetes", opts.server, opts.tls, DEFAULT_TIMEOUTS, { proxyUrl: opts.proxyUrl });
  }

  /** The client a pod uses: the mounted service-account token and CA, and the in-cluster service address. */
  static async inCluster(dir = IN_CLUSTER_DIR): Promise<KubeClient> {
    const host = process.env.KUBERNETES_SERVICE_HOST;
    const port = process.env.KUBERNETES_SERVICE_PORT ?? "443";
    if (!host) throw new Error("KUBERNETES_SERVICE_HOST is not set: not running in a pod (pass --kubeconfig)");
    const caPem = await readFile(`${dir}/ca.crt`, "utf8");
    const server = `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
    return new KubeClient({
      server,
      tls: { caPem },
      token: () => readFile(`${dir}/token`, "utf8").then((t) => t.trim()),
      identity: `the pod's service account (${dir}/token)`,
    });
  }

  async request<T>(
    method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE",
    path: string,
    body?: unknown,
    opts: { contentType?: string; acceptStatuses?: readonly number[]; text?: boolean } = {},
  ): Promise<{ status: number; body: T }> {
    const headers = await this.authHeaders();
    return this.http
      .request<T>({
        method,
        path,
        headers,
        body,
        contentType: opts.contentType,
        acceptStatuses: opts.acceptStatuses,
        text: opts.text,
      })
      .catch((err: unknown) => {
        throw this.explain(err);
      });
  }

  /** Streams watch events ({type, object}) of `path` (which must carry ?watch=1) until the server or `signal` ends it. */
  async watch(
    path: string,
    onEvent: (event: { type: string; object: unknown }) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const headers: Record<string, string> = { accept: "application/json", ...(await this.authHeaders()) };
    await this.http
      .streamLines(path, headers, (v) => onEvent(v as { type: string; object: unknown }), signal)
      .catch((err: unknown) => {
        throw this.explain(err);
      });
  }

  private async authHeaders(): Promise<Record<string, string>> {
    if (this.opts.headers) return this.opts.headers();
    const token = typeof this.opts.token === "function" ? await this.opts.token() : this.opts.token;
    return token ? { authorization: `Bearer ${token}` } : {};
  }

  /** A 401 names whose credentials were refused, so it is never a bare "HTTP 401". */
  private explain(err: unknown): unknown {
    if (!(err instanceof HttpStatusError) || err.status !== 401) return err;
    const who = this.opts.identity ?? "the configured credentials";
    return new HttpStatusError(err.service, err.method, err.path, err.status, [
      ...err.serverMessages,
      `the apiserver did not accept ${who}: expired, revoked or of another cluster`,
    ]);
  }

  async get<T>(path: string): Promise<T> {
    return (await this.request<T>("GET", path)).body;
  }

  async create<T>(path: string, body: unknown): Promise<T> {
    return (await this.request<T>("POST", path, body)).body;
  }

  async close(): Promise<void> {
    await this.http.close();
  }
}
