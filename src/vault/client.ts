// A small typed Vault (and OpenBao) client: the handful of endpoints the agent and setup use, nothing else.
// Tokens are passed per call and never logged; errors carry Vault's own messages, never request bodies.
//
// Every request goes through send(), which behaves like Vault's own Go client (api/client.go) in an HA cluster:
// - retryable answers (412, 429, 472, 473, 5xx except 501) and connection failures are retried, 2 more times by default, with
//   Vault's linear jittered backoff (1-1.5 s, then 2-3 s) or the server's Retry-After (429/503) when it sends one;
// - a standby that does not forward (request forwarding off, or the active node unreachable over the cluster port)
//   answers 307 to the active node's api_addr: followed once, re-sending the same method, body and headers over the
//   same connection settings (CA, client certificate, server name, proxy). Refused: a redirect that changes the scheme
//   (Vault's client refuses only https -> http; we refuse both ways, since http -> https is not something Vault does
//   and an http -> anything hop was never authenticated) or the path. The token is kept: the redirect is how a Vault
//   cluster answers, the target must pass the same TLS verification as the configured address, and dropping the token
//   would only turn the followed request into a 403;
// - several comma-separated addresses (a cluster without a load balancer in front): tried in order when one cannot
//   be reached or answers a retryable status, starting from the last one that answered; a round over every address
//   counts as one attempt.
import {
  HttpJsonClient,
  HttpStatusError,
  HttpTransportError,
  type HttpTimeouts,
  type JsonRequest,
  type JsonResponse,
  DEFAULT_TIMEOUTS,
} from "../net/http-json.js";
import { VaultTransport, type VaultTlsOptions } from "./transport.js";

/** Retries of one Vault request (defaults: Vault's Go client's MaxRetries, MinRetryWait, MaxRetryWait). */
export interface VaultRetryOptions {
  /** Attempts after the first; each attempt tries every address once. */
  maxRetries: number;
  /** Retry n (1-based) waits a random time between n*minWaitMs and n*maxWaitMs, unless the server said how long. */
  minWaitMs: number;
  maxWaitMs: number;
  /** Cap on a server's Retry-After, so one request stays bounded whatever the server says. */
  maxRetryAfterMs: number;
}

export const DEFAULT_VAULT_RETRY: VaultRetryOptions = {
  maxRetries: 2,
  minWaitMs: 1_000,
  maxWaitMs: 1_500,
  maxRetryAfterMs: 30_000,
};

/** What the client tells its owner (for the log) when a request is retried, redirected or sent to another address. */
export interface VaultRetryEvent {
  method: string;
  path: string;
  /** The address that failed or redirected. */
  address: string;
  /** Status or error code, e.g. "HTTP 503", "ECONNREFUSED", "HTTP 307 to https://10.0.0.2:8200". */
  reason: string;
  /** "redirect": followed to the active node; "next-address": another configured address; "retry": after waitMs. */
  action: "redirect" | "next-address" | "retry";
  waitMs?: number;
}

export interface VaultClientOptions {
  /** One address, or several comma-separated (the nodes of a cluster), e.g. https://vault-0:8200,https://vault-1:8200 */
  address: string;
  /** CA, client certificate, server name, skip-verify and proxy (src/vault/transport.ts builds the connection). */
  tls?: VaultTlsOptions;
  /** Vault Enterprise / OpenBao namespace, sent as X-Vault-Namespace. */
  namespace?: string | undefined;
  timeouts?: HttpTimeouts;
  retry?: VaultRetryOptions;
  onRetry?: (event: VaultRetryEvent) => void;
}

/** The addresses of a `--vault-addr` value: one URL, or several separated by commas (blanks ignored). */
export function vaultAddressList(address: string): string[] {
  return address
    .split(",")
    .map((a) => a.trim())
    .filter((a) => a.length > 0);
}

/** The `auth` block of a login or token answer. */
export interface VaultAuth {
  client_token: string;
  accessor: string;
  policies: string[];
  token_policies?: string[];
  lease_duration: number;
  renewable: boolean;
  metadata?: Record<string, string> | null;
}

/** The `data` of `auth/token/lookup-self` (the fields the agent reads). */
export interface TokenLookup {
  accessor: string;
  /** Seconds left; 0 for a token that never expires. */
  ttl: number;
  renewable: boolean;
  policies: string[] | null;
}

export interface VaultSecret<T> {
  data: T;
  warnings?: string[] | null;
  auth?: VaultAuth | null;
  lease_duration?: number;
}

export class VaultClient {
  readonly http: HttpJsonClient;
  readonly namespace: string | undefined;
  readonly transport: VaultTransport;
  /** The configured addresses, in order. */
  readonly addresses: readonly string[];
  /** Index of the address that answered last: where the next request starts. */
  private preferred = 0;
  private readonly retry: VaultRetryOptions;
  private readonly onRetry: ((event: VaultRetryEvent) => void) | undefined;

  constructor(opts: VaultClientOptions) {
    const timeouts = opts.timeouts ?? DEFAULT_TIMEOUTS;
    this.addresses = vaultAddressList(opts.address);
    if (this.addresses.length === 0) throw new Error("vault address: missing; expected e.g. https://vault.vault:8200");
    const schemes = new Set(this.addresses.map((a) => safeUrl(a)?.protocol));
    if (schemes.size > 1)
      throw new Error(`vault addresses ${opts.address}: expected every address with the same scheme (https://)`);
    // One transport (connections, TLS settings, proxy choice) for every address: they are nodes of one server.
    this.transport = new VaultTransport(this.addresses[0]!, opts.tls ?? {}, timeouts);
    this.http = new HttpJsonClient("vault", this.addresses[0]!, {}, timeouts, { provider: this.transport });
    for (const a of this.addresses) {
      const protocol = safeUrl(a)?.protocol;
      if (protocol !== "https:" && protocol !== "http:")
        throw new Error(`vault address ${a} must start with https:// (or http:// for a local dev server)`);
    }
    this.namespace = opts.namespace;
    this.retry = opts.retry ?? DEFAULT_VAULT_RETRY;
    this.onRetry = opts.onRetry;
  }

  /** Raw call to `/v1/<path>`. `token` may be omitted for unauthenticated endpoints (login, health, CA reads). */
  async call<T>(
    method: "GET" | "POST" | "PUT" | "DELETE" | "LIST",
    path: string,
    opts: { token?: string | undefined; body?: unknown; acceptStatuses?: readonly number[] } = {},
  ): Promise<{ status: number; body: T }> {
    const headers: Record<string, string> = {};
    if (opts.token) headers["x-vault-token"] = opts.token;
    if (this.namespace) headers["x-vault-namespace"] = this.namespace;
    try {
      return await this.send<T>({
        method,
        path: `/v1/${path.replace(/^\/+/, "")}`,
        headers,
        body: opts.body,
        acceptStatuses: opts.acceptStatuses,
      });
    } catch (err) {
      throw withTlsHint(err);
    }
  }

  /**
   * The one way every request reaches Vault: over the addresses from the preferred one, following one standby
   * redirect, retrying retryable failures with backoff (see the top of this file). Statuses the caller accepts are
   * answers, never retried; those in `tryNextOn` are answers too, but another address is asked first (sys/health: a
   * sealed node's 503 is the answer only when no other node is up).
   */
  private async send<T>(
    req: JsonRequest,
    opts: { maxRetries?: number; tryNextOn?: readonly number[] } = {},
  ): Promise<JsonResponse<T>> {
    const maxRetries = opts.maxRetries ?? this.retry.maxRetries;
    let last: unknown;
    for (let attempt = 0; ; attempt++) {
      let fallback: JsonResponse<T> | undefined;
      for (let k = 0; k < this.addresses.length; k++) {
        const i = (this.preferred + k) % this.addresses.length;
        const address = this.addresses[i]!;
        try {
          const res = await this.sendFollowingRedirect<T>(address, req);
          if (opts.tryNextOn?.includes(res.status)) {
            fallback ??= res;
            continue;
          }
          this.preferred = i;
          return res;
        } catch (err) {
          if (!retryable(err, req.acceptStatuses)) throw err;
          last = err;
          if (k + 1 < this.addresses.length)
            this.onRetry?.({
              method: req.method,
              path: req.path,
              address,
              reason: reasonOf(err),
              action: "next-address",
            });
        }
      }
      if (fallback) return fallback;
      if (attempt >= maxRetries) throw last;
      const waitMs = this.backoff(attempt + 1, last);
      this.onRetry?.({
        method: req.method,
        path: req.path,
        address: this.addresses[this.preferred]!,
        reason: reasonOf(last),
        action: "retry",
        waitMs,
      });
      await new Promise((r) => setTimeout(r, waitMs));
    }
  }

  /** One request to `address`; a 307/308 (a standby pointing at the active node) is followed once. */
  private async sendFollowingRedirect<T>(address: string, req: JsonRequest): Promise<JsonResponse<T>> {
    try {
      return await this.http.request<T>({ ...req, baseUrl: address });
    } catch (err) {
      if (!(err instanceof HttpStatusError) || (err.status !== 307 && err.status !== 308)) throw err;
      if (req.acceptStatuses?.includes(err.status)) throw err;
      const target = redirectTarget(address, req.method, req.path, err.details.location);
      this.onRetry?.({
        method: req.method,
        path: req.path,
        address,
        reason: `HTTP ${err.status} to ${target}`,
        action: "redirect",
      });
      try {
        return await this.http.request<T>({ ...req, baseUrl: target });
      } catch (again) {
        if (again instanceof HttpStatusError && (again.status === 307 || again.status === 308))
          throw new HttpStatusError("vault", req.method, req.path, again.status, [
            `redirected again by ${target} (a standby's redirect is followed once; expected the active node to answer)`,
          ]);
        throw again;
      }
    }
  }

  /** Vault's RateLimitLinearJitterBackoff: the server's Retry-After (capped), else n*min .. n*max with jitter. */
  private backoff(retry: number, err: unknown): number {
    const after = err instanceof HttpStatusError ? err.details.retryAfterMs : undefined;
    if (after !== undefined) return Math.min(after, this.retry.maxRetryAfterMs);
    const lo = retry * this.retry.minWaitMs;
    const hi = retry * Math.max(this.retry.minWaitMs, this.retry.maxWaitMs);
    return Math.round(lo + Math.random() * (hi - lo));
  }

  async write<T>(path: string, token: string | undefined, body: unknown): Promise<VaultSecret<T>> {
    return (await this.call<VaultSecret<T>>("POST", path, { token, body })).body;
  }

  async read<T>(path: string, token: string | undefined): Promise<VaultSecret<T>> {
    return (await this.call<VaultSecret<T>>("GET", path, { token })).body;
  }

  /** `POST auth/<mount>/login` with the Kubernetes service-account JWT. */
  async kubernetesLogin(mount: string, role: string, jwt: string): Promise<VaultAuth> {
    return this.login(mount, { role, jwt });
  }

  /** `POST auth/<mount>/login` with a method's credentials (the body is never logged nor put in errors). */
  async login(mount: string, body: Record<string, string>): Promise<VaultAuth> {
    const res = await this.call<VaultSecret<unknown>>("POST", `auth/${trimSlashes(mount)}/login`, { body });
    const auth = res.body?.auth;
    if (!auth || typeof auth.client_token !== "string" || auth.client_token.length === 0) {
      throw new Error(`vault login at auth/${trimSlashes(mount)}/login returned no auth.client_token`);
    }
    return auth;
  }

  async renewSelf(token: string, incrementSeconds?: number): Promise<VaultAuth> {
    const body = incrementSeconds ? { increment: `${incrementSeconds}s` } : {};
    const res = await this.call<VaultSecret<unknown>>("POST", "auth/token/renew-self", { token, body });
    if (!res.body?.auth) throw new Error("vault renew-self returned no auth block");
    return res.body.auth;
  }

  /** `GET auth/token/lookup-self`: the token's remaining TTL, renewability, policies and accessor. */
  async lookupSelf(token: string): Promise<TokenLookup> {
    const res = await this.call<VaultSecret<TokenLookup>>("GET", "auth/token/lookup-self", { token });
    if (!res.body?.data) throw new Error("vault lookup-self returned no data");
    return res.body.data;
  }

  /** `POST auth/token/revoke-self`: the token (and its leases) stop working at once. */
  async revokeSelf(token: string): Promise<void> {
    await this.call("POST", "auth/token/revoke-self", { token, body: {} });
  }

  /**
   * `GET sys/health`: unauthenticated and server-wide, so sent without the namespace header. Not retried (the probe
   * polls); with several addresses, the first node that is up (active or standby) answers, else a sealed or
   * uninitialised node's answer.
   */
  async health(): Promise<{ status: number; initialized: boolean; sealed: boolean; version: string }> {
    try {
      const res = await this.send<{ initialized: boolean; sealed: boolean; version: string }>(
        { method: "GET", path: "/v1/sys/health", acceptStatuses: [429, 472, 473, 501, 503] },
        { maxRetries: 0, tryNextOn: [501, 503] },
      );
      return { status: res.status, ...res.body };
    } catch (err) {
      throw withTlsHint(err);
    }
  }

  async close(): Promise<void> {
    await this.http.close();
  }
}

/**
 * Adds what to do to the TLS failures an operator meets first: a certificate naming another host, an untrusted CA,
 * a listener that wants a client certificate.
 */
function withTlsHint(err: unknown): unknown {
  if (!(err instanceof HttpTransportError)) return err;
  const code = err.causeCode;
  let hint: string | undefined;
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID")
    hint =
      "Vault's certificate does not name the address's host; use an address it names, or set VAULT_TLS_SERVER_NAME " +
      "(--vault-tls-server-name) to a name it carries";
  else if (/SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY_LEAF|CERT_UNTRUSTED/.test(code))
    hint =
      "Vault's certificate is not signed by a trusted CA; set VAULT_CACERT or VAULT_CAPATH (--vault-cacert, --vault-capath)";
  else if (/CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE|BAD_CERTIFICATE|UNKNOWN_CA|ECONNRESET|UND_ERR_SOCKET/.test(code))
    hint =
      "if Vault's listener requires a client certificate, set VAULT_CLIENT_CERT and VAULT_CLIENT_KEY " +
      "(--vault-client-cert, --vault-client-key) to a certificate it trusts";
  if (!hint) return err;
  const detail = err.message.slice(err.message.indexOf(" failed: ") + " failed: ".length);
  return new HttpTransportError(err.service, err.method, err.path, code, `${detail} (${code}); ${hint}`);
}

/** Whether a failed attempt is worth another address or another try (Vault's retry policy). */
function retryable(err: unknown, accepted: readonly number[] | undefined): boolean {
  if (err instanceof HttpStatusError) {
    if (accepted?.includes(err.status)) return false;
    // 412: a node not yet caught up (Vault's client retries it). 429: a standby or a rate limit. 472/473: a DR
    // secondary or performance standby that cannot serve this request (another node can). 5xx but 501 (not
    // initialised): sealed, no active node yet, a failed forward.
    if ([412, 429, 472, 473].includes(err.status)) return true;
    return err.status >= 500 && err.status !== 501;
  }
  if (err instanceof HttpTransportError) {
    // A certificate that does not verify will not verify next time either (Go's retryablehttp gives up on it too).
    return !/CERT|SELF_SIGNED|UNABLE_TO|ALTNAME|ERR_TLS|ERR_SSL|INVALID_ARG|ERR_INVALID/.test(err.causeCode);
  }
  return false;
}

function reasonOf(err: unknown): string {
  if (err instanceof HttpStatusError) return `HTTP ${err.status}`;
  if (err instanceof HttpTransportError) return err.causeCode;
  return err instanceof Error ? err.message : String(err);
}

function safeUrl(s: string): URL | undefined {
  try {
    return new URL(s);
  } catch {
    return undefined;
  }
}

/**
 * Where a standby's redirect may send the request: an absolute or relative Location with the request's own scheme
 * and path (a standby's redirect keeps both: it only swaps in the active node's host), no credentials in the URL.
 * Anything else is refused, not followed.
 */
export function redirectTarget(from: string, method: string, path: string, location: string | undefined): string {
  const base = new URL(from);
  const refuse = (why: string) =>
    new HttpStatusError("vault", method, path, 307, [`refused to follow a redirect from ${base.origin}: ${why}`]);
  if (!location) throw refuse("no Location header");
  let to: URL;
  try {
    to = new URL(location, base);
  } catch {
    throw refuse("its Location is not a URL");
  }
  if (to.protocol !== base.protocol)
    throw refuse(
      `it changes the scheme to ${to.protocol.replace(":", "")}; expected ${base.protocol.replace(":", "")}`,
    );
  if (to.username || to.password) throw refuse("its Location carries credentials");
  if (to.pathname !== new URL(path, base).pathname)
    throw refuse(`it changes the path; expected ${new URL(path, base).pathname}`);
  return to.origin;
}

export function trimSlashes(s: string): string {
  return s.replace(/^\/+|\/+$/g, "");
}
