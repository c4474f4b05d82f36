// A minimal Kubernetes API client: JSON requests to the apiserver with either a bearer token (in a pod) or a client
// certificate (the test environment's admin). Only what the agent needs; no informer machinery here.
import { readFile } from "node:fs/promises";
import { HttpJsonClient, type TlsOptions } from "../net/http-json.js";

/** Where a pod's service-account token, CA and namespace are mounted. */
export const IN_CLUSTER_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

export interface KubeClientOptions {
  server: string;
  tls: TlsOptions;
  /** Bearer token, or a function that reads it (the in-pod token file is rotated by the kubelet). */
  token?: string | (() => Promise<string>);
}

export class KubeClient {
  private readonly http: HttpJsonClient;

  constructor(private readonly opts: KubeClientOptions) {
    this.http = new HttpJsonClient("kubernetes", opts.server, opts.tls);
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
    });
  }

  async request<T>(
    method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE",
    path: string,
    body?: unknown,
    opts: { contentType?: string; acceptStatuses?: readonly number[]; text?: boolean } = {},
  ): Promise<{ status: number; body: T }> {
    const headers: Record<string, string> = {};
    const token = typeof this.opts.token === "function" ? await this.opts.token() : this.opts.token;
    if (token) headers.authorization = `Bearer ${token}`;
    return this.http.request<T>({
      method,
      path,
      headers,
      body,
      contentType: opts.contentType,
      acceptStatuses: opts.acceptStatuses,
      text: opts.text,
    });
  }

  /** Streams watch events ({type, object}) of `path` (which must carry ?watch=1) until the server or `signal` ends it. */
  async watch(
    path: string,
    onEvent: (event: { type: string; object: unknown }) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const headers: Record<string, string> = { accept: "application/json" };
    const token = typeof this.opts.token === "function" ? await this.opts.token() : this.opts.token;
    if (token) headers.authorization = `Bearer ${token}`;
    await this.http.streamLines(path, headers, (v) => onEvent(v as { type: string; object: unknown }), signal);
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
