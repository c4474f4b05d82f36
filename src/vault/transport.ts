// The one place that turns the Vault connection settings (CA bundle, client certificate, TLS server name, skip-verify,
// proxy) into the undici dispatcher every Vault request goes through: the sidecar, init, status and the relay use it
// through VaultClient. Nothing here logs: the client key never leaves this module except into the TLS context.
import { readFile, stat } from "node:fs/promises";
import { createSecureContext } from "node:tls";
import { Agent, EnvHttpProxyAgent, type Dispatcher } from "undici";
import type { DispatcherProvider, HttpTimeouts } from "../net/http-json.js";

/** Proxies as Vault's client takes them from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY). */
export interface VaultProxySettings {
  httpsProxy: string | undefined;
  httpProxy: string | undefined;
  noProxy: string | undefined;
}

export interface VaultTlsOptions {
  /** PEM bundle of CAs to trust for Vault's certificate instead of the system store. */
  caPem?: string | undefined;
  /** Turns certificate verification off. Only from an explicit flag/variable, loudly logged by the caller. */
  insecureSkipVerify?: boolean | undefined;
  /** Client certificate and key files (PEM) for mutual TLS; re-read when they change (certificates rotate). */
  clientCertFile?: string | undefined;
  clientKeyFile?: string | undefined;
  /** The name sent as SNI and verified in Vault's certificate instead of the address's host. */
  tlsServerName?: string | undefined;
  proxy?: VaultProxySettings | undefined;
}

/** The proxy URL a request to `address` uses, or undefined (Go's rule: https uses HTTPS_PROXY, http HTTP_PROXY). */
export function proxyFor(address: string, proxy: VaultProxySettings | undefined): string | undefined {
  if (!proxy) return undefined;
  const url = new URL(address);
  return (url.protocol === "https:" ? proxy.httpsProxy : proxy.httpProxy) || undefined;
}

/**
 * The dispatcher for one Vault address. Without client certificate files it is built once. With them, the files'
 * identity (inode, size, mtime) is compared before each request, and a change builds a new dispatcher (new
 * connections, new TLS session cache) with the new pair, while the old one finishes its requests and closes. Why at
 * each request rather than only at login: Vault's cert auth binds renewals to the certificate, and keep-alive
 * connections would otherwise go on presenting a certificate that was rotated away; two stat calls per Vault
 * request (a few an hour) cost nothing. A half-rotated pair (new certificate, old key) fails to build: the previous
 * dispatcher is kept and the next request tries again.
 */
export class VaultTransport implements DispatcherProvider {
  private current: { dispatcher: Dispatcher; fingerprint: string } | undefined;
  private pending: Promise<Dispatcher> | undefined;
  private closed = false;
  /** How many dispatchers were built (1 + client-certificate reloads). */
  builds = 0;

  constructor(
    private readonly address: string,
    private readonly tls: VaultTlsOptions,
    private readonly timeouts: HttpTimeouts,
  ) {
    if (!!tls.clientCertFile !== !!tls.clientKeyFile)
      throw new Error(
        "Vault client certificate: both the certificate (VAULT_CLIENT_CERT) and its key (VAULT_CLIENT_KEY) are needed",
      );
    if (!tls.clientCertFile) this.current = { dispatcher: this.build(undefined, undefined), fingerprint: "" };
  }

  async dispatcher(): Promise<Dispatcher> {
    if (!this.tls.clientCertFile) return this.current!.dispatcher;
    this.pending ??= this.refresh().finally(() => (this.pending = undefined));
    return this.pending;
  }

  private async refresh(): Promise<Dispatcher> {
    const certFile = this.tls.clientCertFile!;
    const keyFile = this.tls.clientKeyFile!;
    let fingerprint: string;
    try {
      fingerprint = (await Promise.all([stat(certFile), stat(keyFile)]))
        .map((s) => `${s.ino}:${s.size}:${s.mtimeMs}`)
        .join("/");
    } catch (err) {
      if (this.current) return this.current.dispatcher; // a rotation in progress: keep the pair we have
      throw clientFileError(certFile, keyFile, err);
    }
    if (this.current?.fingerprint === fingerprint) return this.current.dispatcher;
    let cert: string;
    let key: string;
    let dispatcher: Dispatcher;
    try {
      [cert, key] = await Promise.all([readFile(certFile, "utf8"), readFile(keyFile, "utf8")]);
      // Fails on a certificate and key that do not belong together (a half-done rotation), before any connection.
      createSecureContext({ cert, key });
      dispatcher = this.build(cert, key);
    } catch (err) {
      if (this.current) return this.current.dispatcher;
      throw clientFileError(certFile, keyFile, err);
    }
    const old = this.current;
    this.current = { dispatcher, fingerprint };
    if (old) void old.dispatcher.close().catch(() => undefined);
    if (this.closed) void dispatcher.close().catch(() => undefined);
    return dispatcher;
  }

  private build(cert: string | undefined, key: string | undefined): Dispatcher {
    this.builds++;
    const tls = {
      ca: this.tls.caPem,
      cert,
      key,
      rejectUnauthorized: !this.tls.insecureSkipVerify,
      servername: this.tls.tlsServerName,
      timeout: this.timeouts.connectMs,
    };
    const common = {
      headersTimeout: this.timeouts.headersMs,
      bodyTimeout: this.timeouts.bodyMs,
      keepAliveTimeout: 30_000,
    };
    const proxy = proxyFor(this.address, this.tls.proxy);
    if (!proxy) return new Agent({ ...common, connect: tls });
    // One proxy for both schemes (the one this address's scheme selects); NO_PROXY is matched by undici. Empty
    // strings, not undefined, so undici never falls back to reading process.env behind the configuration's back.
    return new EnvHttpProxyAgent({
      ...common,
      httpProxy: proxy,
      httpsProxy: proxy,
      noProxy: this.tls.proxy?.noProxy ?? "",
      connect: tls,
      requestTls: tls,
      proxyTls: { timeout: this.timeouts.connectMs },
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.current?.dispatcher.close();
  }
}

function clientFileError(certFile: string, keyFile: string, err: unknown): Error {
  const e = err as NodeJS.ErrnoException;
  // The OpenSSL reason ("key values mismatch", "no start line") names no key material.
  const why = e.code && e.code.startsWith("E") ? e.code : (e.message ?? "error").split("\n")[0];
  return new Error(
    `cannot use the Vault client certificate ${certFile} with key ${keyFile} (${why}); expected a PEM certificate and its matching PEM private key`,
  );
}
