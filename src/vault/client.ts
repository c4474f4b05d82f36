// A small typed Vault (and OpenBao) client: the handful of endpoints the agent and setup use, nothing else.
// Tokens are passed per call and never logged; errors carry Vault's own messages, never request bodies.
import { HttpJsonClient, HttpTransportError, type HttpTimeouts, DEFAULT_TIMEOUTS } from "../net/http-json.js";
import { VaultTransport, type VaultTlsOptions } from "./transport.js";

export interface VaultClientOptions {
  address: string;
  /** CA, client certificate, server name, skip-verify and proxy (src/vault/transport.ts builds the connection). */
  tls?: VaultTlsOptions;
  /** Vault Enterprise / OpenBao namespace, sent as X-Vault-Namespace. */
  namespace?: string | undefined;
  timeouts?: HttpTimeouts;
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

  constructor(opts: VaultClientOptions) {
    const timeouts = opts.timeouts ?? DEFAULT_TIMEOUTS;
    this.transport = new VaultTransport(opts.address, opts.tls ?? {}, timeouts);
    this.http = new HttpJsonClient("vault", opts.address, {}, timeouts, { provider: this.transport });
    this.namespace = opts.namespace;
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
      return await this.http.request<T>({
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

  /** `GET sys/health`: unauthenticated and server-wide, so sent without the namespace header. */
  async health(): Promise<{ status: number; initialized: boolean; sealed: boolean; version: string }> {
    try {
      const res = await this.http.request<{ initialized: boolean; sealed: boolean; version: string }>({
        method: "GET",
        path: "/v1/sys/health",
        acceptStatuses: [429, 472, 473, 501, 503],
      });
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

export function trimSlashes(s: string): string {
  return s.replace(/^\/+|\/+$/g, "");
}
