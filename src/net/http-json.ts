// One small JSON-over-HTTPS layer for the two servers the agent talks to (Vault and the Kubernetes API), so TLS,
// timeouts and the shape of errors live in one place. Request bodies are never put in errors or logs: they carry
// JWTs, tokens and CSRs.
import { Agent, ProxyAgent, request, type Dispatcher } from "undici";

export interface TlsOptions {
  /** PEM bundle of CAs to trust instead of the system store. */
  caPem?: string | undefined;
  /** Client certificate and key (PEM), for mutual TLS. */
  certPem?: string | undefined;
  keyPem?: string | undefined;
  /** Turns certificate verification off. Only ever set from an explicit, loudly logged flag. */
  insecureSkipVerify?: boolean | undefined;
  /** Name to verify the server's certificate against (and send as SNI) instead of the URL's host. */
  serverName?: string | undefined;
}

/** Where requests get their dispatcher (connection pool): a fixed Agent, or one rebuilt when credentials rotate. */
export interface DispatcherProvider {
  dispatcher(): Promise<Dispatcher>;
  close(): Promise<void>;
}

export interface HttpTimeouts {
  connectMs: number;
  headersMs: number;
  bodyMs: number;
}

export const DEFAULT_TIMEOUTS: HttpTimeouts = { connectMs: 5_000, headersMs: 15_000, bodyMs: 15_000 };

export class HttpStatusError extends Error {
  constructor(
    readonly service: string,
    readonly method: string,
    readonly path: string,
    readonly status: number,
    /** Server-provided error strings (Vault `errors`, Kubernetes Status `message`); safe to show. */
    readonly serverMessages: readonly string[],
    /**
     * The two response headers a retrying caller needs (no others are kept: headers can carry credentials): where a
     * redirect points (Location) and how long the server asked to wait (Retry-After, in ms).
     */
    readonly details: { location?: string | undefined; retryAfterMs?: number | undefined } = {},
  ) {
    super(
      `${service} ${method} ${path} answered HTTP ${status}` +
        (serverMessages.length ? `: ${serverMessages.join("; ")}` : ""),
    );
    this.name = "HttpStatusError";
  }
}

/** A network-level failure (refused, reset, timeout, TLS). */
export class HttpTransportError extends Error {
  constructor(
    readonly service: string,
    readonly method: string,
    readonly path: string,
    readonly causeCode: string,
    message: string,
  ) {
    super(`${service} ${method} ${path} failed: ${message}`);
    this.name = "HttpTransportError";
  }
}

export interface JsonRequest {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "LIST";
  path: string;
  headers?: Record<string, string>;
  body?: unknown;
  contentType?: string;
  /** Statuses that are answers rather than errors (their body is returned). */
  acceptStatuses?: readonly number[];
  /** Return the body as text instead of parsing JSON (health endpoints answer "ok"). */
  text?: boolean;
  /**
   * Send to this origin (scheme://host:port) instead of the client's base URL, with the same connections and TLS
   * settings: another address of the same server (a Vault cluster's nodes, a standby's redirect to the active node).
   */
  baseUrl?: string;
}

export interface JsonResponse<T> {
  status: number;
  body: T;
}

export class HttpJsonClient {
  private readonly provider: DispatcherProvider;

  constructor(
    readonly service: string,
    readonly baseUrl: string,
    tls: TlsOptions,
    private readonly timeouts: HttpTimeouts = DEFAULT_TIMEOUTS,
    /**
     * How connections are made: through an HTTP(S) proxy (CONNECT; a kubeconfig cluster's proxy-url), or by a provider
     * that replaces the Agent built from `tls` (Vault: src/vault/transport.ts).
     */
    route: { proxyUrl?: string | undefined; provider?: DispatcherProvider | undefined } = {},
  ) {
    const url = new URL(baseUrl);
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw new Error(`${service} address ${baseUrl} must start with https:// (or http:// for a local dev server)`);
    }
    if (route.provider) {
      this.provider = route.provider;
      return;
    }
    const connect = {
      ca: tls.caPem,
      cert: tls.certPem,
      key: tls.keyPem,
      rejectUnauthorized: !tls.insecureSkipVerify,
      ...(tls.serverName ? { servername: tls.serverName } : {}),
      timeout: timeouts.connectMs,
    };
    const common = { headersTimeout: timeouts.headersMs, bodyTimeout: timeouts.bodyMs, keepAliveTimeout: 30_000 };
    // Through a proxy the TLS options apply to the tunnelled connection to the server, not to the proxy.
    const dispatcher: Dispatcher = route.proxyUrl
      ? new ProxyAgent({ uri: route.proxyUrl, requestTls: connect, ...common })
      : new Agent({ connect, ...common });
    this.provider = { dispatcher: () => Promise.resolve(dispatcher), close: () => dispatcher.close() };
  }

  async request<T>(req: JsonRequest): Promise<JsonResponse<T>> {
    const headers: Record<string, string> = { accept: "application/json", ...req.headers };
    let payload: string | undefined;
    if (req.body !== undefined) {
      payload = JSON.stringify(req.body);
      headers["content-type"] = req.contentType ?? "application/json";
    }
    let res;
    try {
      res = await request(new URL(req.path, req.baseUrl ?? this.baseUrl), {
        method: req.method,
        headers,
        body: payload,
        dispatcher: await this.provider.dispatcher(),
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new HttpTransportError(this.service, req.method, req.path, e.code ?? "UNKNOWN", e.message);
    }
    let text: string;
    try {
      text = await res.body.text();
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new HttpTransportError(this.service, req.method, req.path, e.code ?? "UNKNOWN", e.message);
    }
    const ok = (res.statusCode >= 200 && res.statusCode < 300) || req.acceptStatuses?.includes(res.statusCode);
    let parsed: unknown = undefined;
    if (req.text) {
      parsed = text;
    } else if (text.length > 0) {
      try {
        parsed = JSON.parse(text);
      } catch {
        if (ok) {
          throw new HttpStatusError(this.service, req.method, req.path, res.statusCode, [
            "response body is not JSON (expected a JSON document)",
          ]);
        }
      }
    }
    if (!ok) {
      throw new HttpStatusError(this.service, req.method, req.path, res.statusCode, serverMessages(parsed), {
        location: headerValue(res.headers.location),
        retryAfterMs: retryAfterMs(headerValue(res.headers["retry-after"]), Date.now()),
      });
    }
    return { status: res.statusCode, body: parsed as T };
  }

  /**
   * A long-lived GET whose body is newline-delimited JSON (Kubernetes watch). Calls onLine for each parsed line and
   * resolves when the server ends the stream or `signal` aborts. No body timeout: watches are idle for long periods.
   */
  async streamLines(
    path: string,
    headers: Record<string, string>,
    onLine: (value: unknown) => void,
    signal: AbortSignal,
  ): Promise<void> {
    let res;
    try {
      res = await request(new URL(path, this.baseUrl), {
        method: "GET",
        headers,
        dispatcher: await this.provider.dispatcher(),
        signal,
        bodyTimeout: 0,
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new HttpTransportError(this.service, "GET", path.split("?")[0]!, e.code ?? "UNKNOWN", e.message);
    }
    if (res.statusCode !== 200) {
      const text = await res.body.text().catch(() => "");
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      throw new HttpStatusError(this.service, "GET", path.split("?")[0]!, res.statusCode, serverMessages(parsed));
    }
    let buffered = "";
    for await (const chunk of res.body) {
      buffered += (chunk as Buffer).toString("utf8");
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line) onLine(JSON.parse(line));
      }
    }
  }

  async close(): Promise<void> {
    await this.provider.close();
  }
}

/** Error strings from a Vault (`{errors: [...]}`) or Kubernetes (`{kind: "Status", message}`) error body. */
function serverMessages(body: unknown): string[] {
  if (body && typeof body === "object") {
    const b = body as { errors?: unknown; message?: unknown };
    if (Array.isArray(b.errors)) return b.errors.filter((x): x is string => typeof x === "string").map(clip);
    if (typeof b.message === "string") return [clip(b.message)];
  }
  return [];
}

function clip(s: string): string {
  return s.length > 500 ? `${s.slice(0, 500)}…` : s;
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** A Retry-After header (delay-seconds or an HTTP-date, RFC 9110 10.2.3) in ms from `now`; undefined if unusable. */
export function retryAfterMs(v: string | undefined, now: number): number | undefined {
  if (v === undefined) return undefined;
  const s = v.trim();
  if (/^\d+$/.test(s)) return Number(s) * 1000;
  const at = Date.parse(s);
  if (!/[a-z]/i.test(s) || Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}
