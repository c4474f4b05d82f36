// The relay certificate issuer (`relay --role server --issuer`): a TLS gRPC endpoint where workload-cluster agents get
// their relay client certificates without Vault. Bootstrap is authenticated by the cluster's own identity token
// (current, or previous within the overlap window) and issues only for that cluster; Renew by the caller's current
// client certificate over mutual TLS, only while the cluster is registered and within --max-bootstrap-age of the
// chain's Bootstrap. Both sign with an in-memory intermediate that Vault signed (<pki>/root/sign-intermediate).
//
// Limits, in order: a token bucket per peer address before anything else (also before the client certificate is
// looked at on Renew), then one per cluster (wrong tokens share one bucket). Every refusal and every issued
// certificate is logged with the peer address.
//
// TLS is terminated by a node:tls server (the relay server certificate from relay-server-tls-secret, swapped in with
// setSecureContext when that Secret rotates) and each connection is handed to grpc-js through a connection injector.
// That keeps the handshake's view of the client certificate (presented chain, OpenSSL's verdict), which grpc-js hides
// when a certificate fails verification, so Renew can say exactly why a certificate was refused: none, expired,
// foreign CA. The listener requests a client certificate but does not require one (Bootstrap callers have none).
import { X509Certificate } from "node:crypto";
import * as tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { SigningBundle } from "../../authority/bundle.js";
import {
  RelayCertificateIssuerService,
  type BootstrapRequest,
  type Issued,
  type RelayCertificateIssuerServer,
  type RenewRequest,
} from "../../gen/relay/v1/issuer.js";
import { systemClock, type Clock, type Timer } from "../../util/clock.js";
import { uniquePemCertificates } from "../../crypto/pem.js";
import { scrub } from "../../observability/logger.js";
import type { LeafSubjectKey } from "../../signing/leaf-signer.js";
import { signClientCertificate } from "./client-signer.js";
import { checkClusterCsr, checkClusterName } from "./csr-policy.js";
import { bootstrapTimeAttribute } from "./bootstrap-time.js";
import { IdentityTokenRegistry, type IdentityTokenSource } from "./identity-tokens.js";
import type { IssuerMetrics } from "./metrics.js";
import { peerCertificateInfo, verifyClientCertificate, type PeerCertificateInfo } from "./peer-verify.js";
import { TokenBucketLimiter } from "../../util/token-bucket.js";
import { IssuerRefusal, denied, unauthenticated } from "./refusal.js";
import { splitHostPort } from "../../cli/validate.js";

export interface IssuerOptions {
  /** host:port of the TLS listener. */
  address: string;
  clientTtlSeconds: number;
  tokenOverlapSeconds: number;
  ratePerSecond: number;
  burst: number;
  peerRatePerSecond: number;
  peerBurst: number;
  /** One token shared by every cluster (opt-in); otherwise one token per registered cluster. */
  sharedToken: boolean;
  /** Names no client certificate may carry (the relay server's DNS names). */
  reservedNames: readonly string[];
  /** How long after Bootstrap a chain may keep renewing over mTLS. */
  maxBootstrapAgeMs: number;
  /** How often the identity tokens are re-read from Vault KV (the bound on how long a deleted token still works). */
  tokenRefreshMs: number;
  /** How often the serving certificate Secret is re-read (it is rotated by the relay). */
  identityReloadMs: number;
  /** Retry delay while the first serving certificate or token is not available. */
  retryMs: number;
}

/** The relay server certificate the listener presents: tls.crt (leaf first), tls.key, ca.crt (the root). */
export interface ServingIdentity {
  certPem: string;
  keyPem: string;
  caPem: string;
}

export interface SigningAuthority {
  current(): SigningBundle | undefined;
  subscribe(fn: (bundle: SigningBundle) => void): () => void;
}

export interface IssuerDeps {
  authority: SigningAuthority;
  tokens: IdentityTokenSource;
  /** Reads the serving certificate (undefined while it does not exist yet). */
  servingIdentity: () => Promise<ServingIdentity | undefined>;
  metrics: IssuerMetrics;
  log: Logger;
  clock?: Clock;
}

type Method = "bootstrap" | "renew";

/** Signing intermediates kept as known path elements after a rotation (certificates they signed keep renewing). */
const KEEP_INTERMEDIATES = 4;

export class RelayIssuer {
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly tokens: IdentityTokenRegistry;
  private readonly limiter: TokenBucketLimiter;
  private readonly peerLimiter: TokenBucketLimiter;
  /** Open TLS connections by peer address (what grpc-js reports as a call's peer). */
  private readonly sockets = new Map<string, tls.TLSSocket>();
  private grpcServer: grpc.Server | undefined;
  private injector: ReturnType<grpc.Server["createConnectionInjector"]> | undefined;
  private tlsServer: tls.Server | undefined;
  private identity: ServingIdentity | undefined;
  private intermediates: X509Certificate[] = [];
  private readonly timers: Timer[] = [];
  private unsubscribe: (() => void) | undefined;
  private stopped = false;
  port = 0;

  constructor(
    private readonly opts: IssuerOptions,
    private readonly deps: IssuerDeps,
  ) {
    this.clock = deps.clock ?? systemClock;
    this.log = deps.log.child({ subsystem: "issuer" });
    const now = () => this.clock.now();
    this.tokens = new IdentityTokenRegistry(opts.sharedToken, opts.tokenOverlapSeconds * 1000, now);
    this.limiter = new TokenBucketLimiter({ ratePerSecond: opts.ratePerSecond, burst: opts.burst }, now);
    this.peerLimiter = new TokenBucketLimiter({ ratePerSecond: opts.peerRatePerSecond, burst: opts.peerBurst }, now);
  }

  /** Listening, holding a signing intermediate and an identity token. */
  ready(): boolean {
    return this.tlsServer !== undefined && this.deps.authority.current() !== undefined && this.tokens.loaded;
  }

  /**
   * Waits for the serving certificate, then listens; the identity token and the intermediate are picked up as they
   * become available (requests are refused with UNAVAILABLE until then). Returns the port.
   */
  async start(): Promise<number> {
    await this.refreshTokens().catch(() => undefined);
    this.scheduleTokenRefresh();
    this.unsubscribe = this.deps.authority.subscribe((b) => this.onBundle(b));
    for (;;) {
      if (this.stopped) throw new Error("the issuer was stopped before it could listen");
      const id = await this.deps.servingIdentity().catch((err: unknown) => {
        this.log.warn({ err: scrub((err as Error).message) }, "cannot read the relay server certificate yet");
        return undefined;
      });
      if (id) {
        this.identity = id;
        break;
      }
      this.log.info({ retryInMs: this.opts.retryMs }, "waiting for the relay server certificate before listening");
      await new Promise<void>((resolve) => this.timers.push(this.clock.after(this.opts.retryMs, resolve)));
    }
    const server = new grpc.Server({ "grpc.max_receive_message_length": 64 * 1024 });
    server.addService(RelayCertificateIssuerService, this.handlers());
    this.grpcServer = server;
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    this.injector = injector;
    const tlsServer = tls.createServer(
      {
        ...this.secureContextOptions(),
        requestCert: true,
        rejectUnauthorized: false,
        ALPNProtocols: ["h2"],
        minVersion: "TLSv1.2",
        handshakeTimeout: 10_000,
      },
      (socket) => {
        // TLS 1.2 renegotiation could change the client certificate under an established connection.
        socket.disableRenegotiation();
        const key = `${socket.remoteAddress}:${socket.remotePort}`;
        this.sockets.set(key, socket);
        socket.once("close", () => {
          if (this.sockets.get(key) === socket) this.sockets.delete(key);
        });
        injector.injectConnection(socket);
      },
    );
    tlsServer.on("tlsClientError", (err) => this.log.debug({ err: err.message }, "TLS handshake with a caller failed"));
    const { host, port } = splitHostPort(this.opts.address);
    await new Promise<void>((resolve, reject) => {
      tlsServer.once("error", reject);
      tlsServer.listen(port, host, () => (tlsServer.off("error", reject), resolve()));
    });
    this.tlsServer = tlsServer;
    this.port = (tlsServer.address() as { port: number }).port;
    this.scheduleIdentityReload();
    this.log.info(
      { address: this.opts.address, port: this.port, serverCert: describe(this.identity.certPem) },
      "relay certificate issuer listening (TLS; Bootstrap with the identity token, Renew with mTLS)",
    );
    return this.port;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) t.cancel();
    this.unsubscribe?.();
    const tlsServer = this.tlsServer;
    this.tlsServer = undefined;
    this.injector?.destroy();
    if (tlsServer) {
      const closed = new Promise<void>((resolve) => tlsServer.close(() => resolve()));
      const t = setTimeout(() => {
        for (const s of this.sockets.values()) s.destroy();
      }, 2_000);
      await closed;
      clearTimeout(t);
    }
    const server = this.grpcServer;
    if (server)
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => (server.forceShutdown(), resolve()), 2_000);
        server.tryShutdown(() => (clearTimeout(t), resolve()));
      });
  }

  /**
   * Re-reads the identity tokens from Vault KV. A change keeps the old token valid for the overlap window; a deleted
   * or destroyed token (or a removed cluster) is dropped at once.
   */
  async refreshTokens(): Promise<void> {
    const report = await this.tokens.refresh(this.deps.tokens);
    const until = this.tokens.previousValidUntil;
    this.deps.metrics.previousTokenValidUntil.set(until ? Math.round(until / 1000) : 0);
    this.deps.metrics.registeredClusters.set(this.tokens.shared ? 0 : this.tokens.size);
    const which = (entries: string[]) => (this.tokens.shared ? undefined : entries);
    if (this.tokens.size === 0)
      this.log.warn(
        this.tokens.shared
          ? "no identity token in Vault KV; Bootstrap is refused until the relay stores one"
          : "no registered cluster has an identity token in Vault KV; every Bootstrap is refused",
      );
    if (report.rotated.length) {
      this.deps.metrics.tokenRotations.inc(report.rotated.length);
      this.log.warn(
        {
          clusters: which(report.rotated),
          previousValidUntil: until ? new Date(until).toISOString() : undefined,
        },
        "the identity token changed in Vault KV; the previous one is still accepted until the overlap ends",
      );
    }
    if (report.loaded.length)
      this.log.info({ clusters: which(report.loaded) }, "loaded the identity token from Vault KV");
    if (report.removed.length)
      this.log.warn(
        { clusters: which(report.removed) },
        "the identity token was deleted or destroyed in Vault KV (or the cluster removed); it is refused from now on",
      );
  }

  /** Token state older than this is not trusted: revocations might have been missed while Vault was unreachable. */
  private tokenStateStale(): boolean {
    const at = this.tokens.refreshedAt;
    const maxAge = Math.max(3 * this.opts.tokenRefreshMs, 30_000);
    return at === undefined || this.clock.now() - at > maxAge;
  }

  private scheduleTokenRefresh(): void {
    if (this.stopped) return;
    this.timers.push(
      this.clock.after(this.opts.tokenRefreshMs, () => {
        this.refreshTokens()
          .catch((err: unknown) =>
            this.log.error(
              { err: scrub((err as Error).message) },
              "could not re-read the identity tokens from Vault KV",
            ),
          )
          .finally(() => this.scheduleTokenRefresh());
      }),
    );
  }

  private scheduleIdentityReload(): void {
    if (this.stopped) return;
    this.timers.push(
      this.clock.after(this.opts.identityReloadMs, () => {
        this.deps
          .servingIdentity()
          .then((id) => {
            if (!id || !this.identity || (id.certPem === this.identity.certPem && id.keyPem === this.identity.keyPem))
              return;
            this.identity = id;
            this.applySecureContext("the relay server certificate rotated");
          })
          .catch((err: unknown) =>
            this.log.warn({ err: scrub((err as Error).message) }, "could not re-read the relay server certificate"),
          )
          .finally(() => this.scheduleIdentityReload());
      }),
    );
  }

  private onBundle(bundle: SigningBundle): void {
    const cert = new X509Certificate(bundle.signingCertPem);
    const now = this.clock.now();
    this.intermediates = [cert, ...this.intermediates.filter((c) => c.raw.compare(cert.raw) !== 0)]
      .filter((c) => Date.parse(c.validTo) > now)
      .slice(0, KEEP_INTERMEDIATES);
    if (this.tlsServer) this.applySecureContext("the signing intermediate rotated");
  }

  /** Roots clients are verified against: Vault's root (from the intermediate's chain) and the Secret's ca.crt. */
  private trustRootsPem(): string[] {
    const bundle = this.deps.authority.current();
    return uniquePemCertificates([...(bundle?.rootsPem ?? []), this.identity?.caPem ?? ""]);
  }

  private secureContextOptions(): tls.SecureContextOptions {
    const id = this.identity!;
    const ca = [...this.trustRootsPem(), ...this.intermediates.map((c) => c.toString())];
    return { cert: id.certPem, key: id.keyPem, ca };
  }

  private applySecureContext(why: string): void {
    const server = this.tlsServer;
    if (!server || !this.identity) return;
    try {
      server.setSecureContext(this.secureContextOptions());
      this.log.info({ why, serverCert: describe(this.identity.certPem) }, "updated the issuer's TLS credentials");
    } catch (err) {
      this.log.error(
        { why, err: scrub((err as Error).message) },
        "could not apply new TLS credentials; keeping the old",
      );
    }
  }

  private handlers(): RelayCertificateIssuerServer {
    return {
      bootstrap: (call, callback) => {
        void this.serve("bootstrap", call, callback, () => this.bootstrap(call.request, call.getPeer()));
      },
      renew: (call, callback) => {
        void this.serve("renew", call, callback, () => this.renew(call.request, call.getPeer()));
      },
    };
  }

  private async serve(
    method: Method,
    call: grpc.ServerUnaryCall<unknown, Issued>,
    callback: grpc.sendUnaryData<Issued>,
    fn: () => Promise<Issued>,
  ): Promise<void> {
    try {
      callback(null, await fn());
    } catch (err) {
      if (err instanceof IssuerRefusal) {
        this.deps.metrics.refused.inc({ method, reason: err.reason });
        this.log.info({ method, reason: err.reason, details: err.message, peer: call.getPeer() }, `refused ${method}`);
        callback({ code: err.grpcStatus, details: err.message });
        return;
      }
      this.deps.metrics.refused.inc({ method, reason: "internal" });
      this.log.error({ method, err: scrub((err as Error).message), peer: call.getPeer() }, `${method} failed`);
      callback({ code: grpc.status.INTERNAL, details: "internal: certificate signing failed (see the issuer's log)" });
    }
  }

  /** The per-address bucket, taken before any authentication. */
  private limitPeer(peer: string): void {
    if (!this.peerLimiter.take(`peer:${peerHost(peer)}`))
      throw new IssuerRefusal(
        "RESOURCE_EXHAUSTED",
        "rate_limited_peer",
        `more than ${this.opts.peerBurst} requests in a burst (${this.opts.peerRatePerSecond}/s) from this address; retry later`,
      );
  }

  private requireFreshTokens(): void {
    if (!this.tokens.loaded)
      throw new IssuerRefusal(
        "UNAVAILABLE",
        "token_unavailable",
        "the issuer has not read the identity tokens from Vault KV yet; retry shortly",
      );
    if (this.tokenStateStale())
      throw new IssuerRefusal(
        "UNAVAILABLE",
        "token_state_stale",
        "the issuer could not re-read the identity tokens from Vault KV recently, so it cannot tell whether one was " +
          "revoked; retry shortly",
      );
  }

  private async bootstrap(req: BootstrapRequest, peer: string): Promise<Issued> {
    this.limitPeer(peer);
    this.requireFreshTokens();
    const presented = typeof req.identityToken === "string" ? req.identityToken : "";
    const cluster = checkClusterName(req.clusterName);
    const match = presented ? this.tokens.match(cluster, presented) : undefined;
    // One bucket per cluster whose token matched; every wrong or missing token shares one, which throttles guessing.
    const bucket = match ? `cluster:${cluster}` : "token:invalid";
    if (!this.limiter.take(bucket))
      throw new IssuerRefusal(
        "RESOURCE_EXHAUSTED",
        "rate_limited",
        `more than ${this.opts.burst} requests in a burst (${this.opts.ratePerSecond}/s) for this cluster; retry later`,
      );
    if (!presented)
      throw unauthenticated(
        "token_missing",
        "identity_token is empty; Bootstrap needs the cluster's relay identity token (relay-identity-token-secret)",
      );
    if (!match)
      throw unauthenticated(
        "token_invalid",
        this.tokens.shared
          ? "the identity token is not the relay's current identity token (nor the previous one within its overlap window)"
          : `the identity token is not the identity token of cluster ${cluster} (current, or previous within its ` +
              "overlap window); each cluster bootstraps only with its own registered token",
      );
    if (this.opts.reservedNames.includes(cluster))
      throw denied("cluster_name_reserved", `"${cluster}" is a relay server name; no client certificate carries it`);
    const key = await checkClusterCsr(req.csrPem, cluster);
    // Whole seconds: the certificate records the time as a GeneralizedTime without fractions.
    const bootstrappedAt = new Date(Math.floor(this.clock.now() / 1000) * 1000);
    return this.sign("bootstrap", cluster, key, bootstrappedAt, { acceptedToken: match, peer });
  }

  private async renew(req: RenewRequest, peer: string): Promise<Issued> {
    this.limitPeer(peer);
    const socket = this.sockets.get(peer);
    const info: PeerCertificateInfo = socket
      ? peerCertificateInfo(socket)
      : { authorized: false, authorizationError: undefined, chainDer: [] };
    const trust = {
      roots: this.trustRootsPem().map((p) => new X509Certificate(p)),
      intermediates: this.intermediates,
    };
    const client = verifyClientCertificate(info, trust, new Date(this.clock.now()));
    if (!this.limiter.take(`cluster:${client.cluster}`))
      throw new IssuerRefusal(
        "RESOURCE_EXHAUSTED",
        "rate_limited",
        `more than ${this.opts.burst} requests in a burst (${this.opts.ratePerSecond}/s) for cluster ${client.cluster}; retry later`,
      );
    this.requireFreshTokens();
    if (!this.tokens.isRegistered(client.cluster))
      throw denied(
        "cluster_not_registered",
        `cluster ${client.cluster} has no identity token in Vault KV (removed or revoked); its certificate cannot renew`,
      );
    const bootstrappedAt = client.bootstrappedAt;
    if (!bootstrappedAt)
      throw unauthenticated(
        "bootstrap_time_missing",
        "the client certificate carries no bootstrap time (issued before this issuer version); bootstrap again with the identity token",
      );
    const deadline = bootstrappedAt.getTime() + this.opts.maxBootstrapAgeMs;
    if (this.clock.now() >= deadline)
      throw unauthenticated(
        "bootstrap_too_old",
        `this certificate chain was bootstrapped at ${bootstrappedAt.toISOString()}, more than the maximum age ` +
          `(${Math.round(this.opts.maxBootstrapAgeMs / 1000)}s) ago; bootstrap again with the cluster's identity token`,
      );
    const key = await checkClusterCsr(req.csrPem, client.cluster);
    return this.sign("renew", client.cluster, key, bootstrappedAt, { previousSerial: client.serialHex, peer });
  }

  private sign(
    method: Method,
    cluster: string,
    key: LeafSubjectKey,
    bootstrappedAt: Date,
    extra: Record<string, string>,
  ): Issued {
    const bundle = this.deps.authority.current();
    if (!bundle)
      throw new IssuerRefusal(
        "UNAVAILABLE",
        "no_signing_ca",
        "the issuer holds no valid signing intermediate yet (Vault unreachable?); retry shortly",
      );
    // No certificate outlives the chain's maximum age: after that only a new Bootstrap helps.
    const signed = signClientCertificate(bundle, key, cluster, this.opts.clientTtlSeconds, new Date(this.clock.now()), {
      notAfterCap: new Date(bootstrappedAt.getTime() + this.opts.maxBootstrapAgeMs),
      subjectAttributes: [bootstrapTimeAttribute(bootstrappedAt)],
    });
    this.deps.metrics.issued.inc({ method });
    // The audit line: one per issued certificate.
    this.log.info(
      {
        audit: "relay_certificate_issued",
        method,
        cluster,
        serial: signed.serialHex,
        notAfter: signed.notAfter.toISOString(),
        signingSerial: bundle.serialHex,
        bootstrappedAt: bootstrappedAt.toISOString(),
        ...extra,
      },
      `issued a relay client certificate (${method})`,
    );
    return { certChainPem: signed.chainPem, notAfterUnix: Math.floor(signed.notAfter.getTime() / 1000) };
  }
}

function describe(certPem: string): { serial: string; notAfter: string } | undefined {
  try {
    const c = new X509Certificate(certPem);
    return { serial: c.serialNumber.toLowerCase(), notAfter: new Date(c.validTo).toISOString() };
  } catch {
    return undefined;
  }
}

/** The address part of a gRPC peer ("1.2.3.4:5678", "[::1]:5678", "ipv4:…"): rate limits are per address. */
export function peerHost(peer: string): string {
  const p = peer.replace(/^ipv[46]:/, "");
  const m = /^\[?([^\]]*?)\]?:\d+$/.exec(p);
  return m?.[1] ?? p;
}
