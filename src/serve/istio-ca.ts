// The agent as a drop-in Istio CA: a TLS gRPC listener serving istio.v1.auth.IstioCertificateService, so
// istio-proxies (CA_ADDR / global.caAddress) get leaves signed by the in-memory intermediate and the key never
// leaves the agent. Callers authenticate like istiod's: `authorization: Bearer <JWT>` checked by TokenReview, in the
// cluster the request names (src/kube/remote-clusters.ts); node agents may ask for workloads on their own node
// (src/serve/node-authorizer.ts).
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type {
  CaCertificateUpdateListener,
  CertificateProvider,
  IdentityCertificateUpdateListener,
} from "@grpc/grpc-js/build/src/certificate-provider.js";
import { IstioCertificateServiceService, type IstioCertificateServiceServer } from "../gen/istio/v1/auth/ca.js";
import type { SigningBundle } from "../authority/bundle.js";
import type { IntermediateAuthority } from "../authority/intermediate-authority.js";
import { AuthenticationError, type ReviewedIdentity, type TokenReviewer } from "../kube/token-review.js";
import { requestedClusterId, CLUSTER_ID_HEADER, type ClusterChoice } from "../kube/remote-clusters.js";
import {
  impersonatedIdentityOf,
  NodeAuthorizationError,
  type NodeAuthorizer,
  type PodDirectory,
} from "./node-authorizer.js";
import type { AgentMetrics } from "../observability/metrics.js";
import { CaValidityError, LeafPolicyError, type LeafPolicy } from "../signing/leaf-policy.js";
import { signLeaf, type SignedLeaf, type SignLeafFn } from "../signing/leaf-signer.js";
import { systemClock, type Clock, type Timer } from "../util/clock.js";
import { MAX_MESSAGE_BYTES } from "./agent-grpc.js";
import { decodeError, withDecodeErrors } from "./grpc-decode.js";
import { issueServingCertificate } from "./serving-cert.js";
import { LogSampler, PeerFailureLimiter, peerAddress } from "./refusal-limits.js";
import { ConnectionCounter } from "./socket-limits.js";

export interface IstioCaOptions {
  /** host:port of the TLS listener. */
  address: string;
  /** DNS names (and IPs) in the serving certificate, e.g. istiod-vault-agent.istio-system.svc. */
  servingNames: string[];
  /** The policy in force, read at each request (the agent replaces it on reconfiguration). */
  leafPolicy: () => LeafPolicy;
  /** CreateCertificate calls handled at once; more are refused with RESOURCE_EXHAUSTED. */
  maxInFlight?: number;
  /** Failed authentications per peer address before it is refused without a TokenReview, and the refill rate. */
  authFailureBurst?: number;
  authFailuresPerMinute?: number;
  /** The cluster a request's cluster ID selects (TokenReview and pods there); default: the local reviewer only. */
  clusters?: (clusterId: string) => ClusterChoice<CaClusterAccess>;
  /** Who may be certified for whom (ImpersonatedIdentity); without it every impersonation is refused, as istiod. */
  nodeAuthorizer?: NodeAuthorizer;
  /** Signs the leaves: the agent's shared signer (AgentSigning, the socket's pool); signLeaf on this thread if absent. */
  sign?: SignLeafFn<SigningBundle>;
}

/** One cluster's part in a CreateCertificate: its TokenReview, and its pods for the node check. */
export interface CaClusterAccess {
  reviewer: TokenReviewer;
  pods?: PodDirectory;
}

/** Refusals logged per reason and minute; the rest are summed into one line. */
const REFUSAL_LOGS_PER_MINUTE = 10;
/** One key for the listener-wide in-flight cap (a ConnectionCounter with a single "connection"). */
const ALL_CALLERS = Object.freeze({});

export class IstioCaServer {
  private server: grpc.Server | undefined;
  private readonly identity = new InMemoryCertificateProvider();
  private unsubscribe: (() => void) | undefined;
  private renewTimer: Timer | undefined;
  private readonly inFlight: ConnectionCounter;
  private readonly authFailures: PeerFailureLimiter;
  private readonly refusalLogs: LogSampler;
  port = 0;

  constructor(
    private readonly opts: IstioCaOptions,
    private readonly authority: IntermediateAuthority,
    private readonly reviewer: TokenReviewer,
    private readonly log: Logger,
    private readonly metrics: AgentMetrics,
    private readonly clock: Clock = systemClock,
  ) {
    this.inFlight = new ConnectionCounter(opts.maxInFlight ?? 64);
    this.authFailures = new PeerFailureLimiter(opts.authFailureBurst ?? 20, opts.authFailuresPerMinute ?? 30, clock);
    this.refusalLogs = new LogSampler(REFUSAL_LOGS_PER_MINUTE, 60_000, clock);
  }

  /** Starts serving; call after the authority holds its first bundle (the serving certificate comes from it). */
  async start(): Promise<number> {
    const first = this.authority.current();
    if (!first) throw new Error("the Istio CA listener needs an intermediate first");
    await this.issueServingCert(first);
    this.unsubscribe = this.authority.subscribe((b) => {
      if (b !== first)
        void this.issueServingCert(b).catch((err: unknown) =>
          this.log.error({ err: (err as Error).message }, "could not re-issue the Istio CA serving certificate"),
        );
    });
    const server = new grpc.Server({ "grpc.max_receive_message_length": MAX_MESSAGE_BYTES });
    server.addService(withDecodeErrors(IstioCertificateServiceService), this.handlers());
    // The same provider is passed in both positions: grpc-js's argument order for this experimental call is not stable.
    const creds = grpc.experimental.createCertificateProviderServerCredentials(this.identity, this.identity, false);
    this.port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(this.opts.address, creds, (err, port) => (err ? reject(err) : resolve(port))),
    );
    this.server = server;
    this.log.info(
      { address: this.opts.address, port: this.port, names: this.opts.servingNames },
      "Istio CA (CreateCertificate) listening with TLS",
    );
    return this.port;
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.renewTimer?.cancel();
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => (server.forceShutdown(), resolve()), 2_000);
      server.tryShutdown(() => (clearTimeout(t), resolve()));
    });
  }

  private handlers(): IstioCertificateServiceServer {
    return {
      createCertificate: (call, callback) => {
        const peer = peerAddress(call.getPeer());
        const fail = (code: grpc.status, details: string, reason: string, authReason?: string) => {
          this.metrics.leavesRefused.inc({ reason });
          this.logRefusal(authReason ?? reason, { reason, authReason, details, peer });
          callback({ code, details });
        };
        const undecodable = decodeError(call.request);
        if (undecodable) return fail(grpc.status.INVALID_ARGUMENT, undecodable, "undecodable");
        const auth = call.metadata.get("authorization")[0];
        const m = typeof auth === "string" ? /^Bearer\s+(\S+)$/i.exec(auth) : null;
        if (!m)
          return fail(
            grpc.status.UNAUTHENTICATED,
            "missing 'authorization: Bearer <service-account token>' metadata",
            "no_token",
          );
        const token = m[1]!;
        if (!this.authority.current())
          return fail(grpc.status.UNAVAILABLE, this.authority.unavailableReason(), "no_intermediate");
        const target = this.requestTarget(call);
        if (!target.ok) return fail(grpc.status[target.code], target.message, target.reason);
        const { cluster, impersonated } = target;
        const reviewer = cluster.access.reviewer;
        const release = this.inFlight.acquire(ALL_CALLERS);
        if (typeof release !== "function") {
          this.metrics.limitHits.inc({ reason: "istio_ca_in_flight" });
          return fail(
            grpc.status.RESOURCE_EXHAUSTED,
            `the Istio CA is handling its limit of ${this.opts.maxInFlight ?? 64} requests (--istio-ca-max-in-flight); retry with backoff`,
            "too_many_in_flight",
          );
        }
        // A token reviewed successfully moments ago needs no TokenReview, so it passes even when its address is
        // out of failures (a node's other pods may share that address).
        const cached = reviewer.cached(token);
        const waitMs = cached ? 0 : this.authFailures.waitMs(peer);
        if (waitMs > 0) {
          release();
          this.metrics.limitHits.inc({ reason: "istio_ca_auth_failures" });
          return fail(
            grpc.status.RESOURCE_EXHAUSTED,
            `too many failed authentications from ${peer} (--istio-ca-auth-failure-burst, --istio-ca-auth-failures-per-minute); retry in ${Math.ceil(waitMs / 1000)}s with a valid service-account token`,
            "auth_failures_exhausted",
          );
        }
        (cached ? Promise.resolve(cached) : reviewer.review(token))
          .then((who) => this.certifiedIdentity(who, impersonated, cluster))
          .then((identity) =>
            this.signWorkload(call.request.csr ?? "", Number(call.request.validityDuration ?? 0), identity),
          )
          .then((leaf) => {
            this.metrics.leavesSigned.inc();
            callback(null, { certChain: leaf.chainPem });
          })
          .catch((err: unknown) => {
            if (err instanceof AuthenticationError) {
              this.authFailures.fail(peer);
              return fail(grpc.status.UNAUTHENTICATED, err.message, "unauthenticated", err.reason);
            }
            if (err instanceof NodeAuthorizationError) return fail(grpc.status[err.code], err.message, err.reason);
            if (err instanceof LeafPolicyError) {
              return fail(
                err.code === "PERMISSION_DENIED" ? grpc.status.PERMISSION_DENIED : grpc.status.INVALID_ARGUMENT,
                err.message,
                err.rule,
              );
            }
            if (err instanceof CaValidityError) return fail(grpc.status.UNAVAILABLE, err.message, err.rule);
            this.log.error({ err: (err as Error).message }, "CreateCertificate failed");
            fail(grpc.status.INTERNAL, "certificate signing failed (see the agent's log)", "internal");
          })
          .finally(release);
      },
    };
  }

  /** The cluster a request names and the identity it asks for; refusals carry the gRPC code and reason. */
  private requestTarget(
    call: grpc.ServerUnaryCall<{ metadata?: { [key: string]: unknown } | undefined }, unknown>,
  ):
    | { ok: true; cluster: { id: string; access: CaClusterAccess }; impersonated: string | undefined }
    | { ok: false; code: "INVALID_ARGUMENT" | "UNAUTHENTICATED" | "UNAVAILABLE"; message: string; reason: string } {
    let clusterId: string;
    let impersonated: string | undefined;
    try {
      clusterId = requestedClusterId(call.metadata.get(CLUSTER_ID_HEADER), call.request.metadata);
      impersonated = impersonatedIdentityOf(call.request.metadata);
    } catch (err) {
      if (err instanceof NodeAuthorizationError)
        return { ok: false, code: err.code, message: err.message, reason: err.reason };
      return { ok: false, code: "INVALID_ARGUMENT", message: (err as Error).message, reason: "cluster_id_invalid" };
    }
    const choice: ClusterChoice<CaClusterAccess> = this.opts.clusters
      ? this.opts.clusters(clusterId)
      : { ok: true, id: clusterId || "local", local: true, access: { reviewer: this.reviewer } };
    if (!choice.ok) return { ok: false, code: choice.code, message: choice.message, reason: choice.reason };
    return { ok: true, cluster: { id: choice.id, access: choice.access }, impersonated };
  }

  /** The identity `who` may be certified for in this request (its own unless a node agent impersonates). */
  private async certifiedIdentity(
    who: ReviewedIdentity,
    impersonated: string | undefined,
    cluster: { id: string; access: CaClusterAccess },
  ): Promise<string> {
    if (impersonated === undefined) return who.spiffeId;
    const authorizer = this.opts.nodeAuthorizer;
    const pods = cluster.access.pods;
    if (!authorizer || !pods)
      throw new NodeAuthorizationError(
        "impersonation_not_trusted",
        "UNAUTHENTICATED",
        `caller ${who.namespace}/${who.serviceAccount} may only request its own identity ${who.spiffeId}; ` +
          "node authorisation is not configured (--trusted-node-agents)",
      );
    return authorizer.identityFor(who, impersonated, pods, cluster.id);
  }

  /**
   * Signs an authenticated caller's leaf through the agent's signer. The intermediate is read now, after the
   * TokenReview, not when the call arrived: a rotation during the review must not leave a leaf signed by the
   * intermediate it replaced.
   */
  private signWorkload(csrPem: string, validitySeconds: number, spiffeId: string): Promise<SignedLeaf> {
    const bundle = this.authority.current();
    if (!bundle) return Promise.reject(new Error(this.authority.unavailableReason()));
    return (this.opts.sign ?? signLeaf)(
      bundle,
      csrPem,
      Math.max(0, validitySeconds),
      this.opts.leafPolicy(),
      new Date(this.clock.now()),
      { requiredIdentity: spiffeId },
    );
  }

  /** Logs a refusal unless this reason already logged its share this minute; then reports how many were skipped. */
  private logRefusal(sampleKey: string, fields: Record<string, unknown>): void {
    const { log, suppressedBefore } = this.refusalLogs.sample(sampleKey);
    if (suppressedBefore > 0)
      this.log.info(
        { reason: sampleKey, suppressed: suppressedBefore },
        "CreateCertificate refusals of this reason were not logged in the last minute",
      );
    if (log) this.log.info(fields, "refused a CreateCertificate request");
  }

  /** A fresh serving key and certificate from the current intermediate; pushed to the listener without a restart. */
  private async issueServingCert(bundle: SigningBundle): Promise<void> {
    const now = this.clock.now();
    const serving = await issueServingCertificate(bundle, this.opts.servingNames, now);
    const notAfter = serving.notAfter.getTime();
    const chain = [serving.certPem, ...bundle.chainPem.slice(0, -1)].join("\n");
    this.identity.update(Buffer.from(chain), Buffer.from(serving.keyPem), Buffer.from(bundle.rootsPem.join("")));
    this.renewTimer?.cancel();
    this.renewTimer = this.clock.after(((notAfter - now) * 2) / 3, () => {
      const cur = this.authority.current();
      if (cur) void this.issueServingCert(cur).catch(() => undefined);
    });
    this.log.info(
      { notAfter: new Date(notAfter).toISOString(), generation: bundle.generation },
      "issued the Istio CA serving certificate",
    );
  }
}

/** Feeds the serving certificate (and the roots) to grpc-js from memory; updates apply to new connections. */
class InMemoryCertificateProvider implements CertificateProvider {
  private identity: { certificate: Buffer; privateKey: Buffer } | null = null;
  private ca: { caCertificate: Buffer } | null = null;
  private readonly identityListeners = new Set<IdentityCertificateUpdateListener>();
  private readonly caListeners = new Set<CaCertificateUpdateListener>();

  update(certificate: Buffer, privateKey: Buffer, caCertificate: Buffer): void {
    this.identity = { certificate, privateKey };
    this.ca = { caCertificate };
    for (const l of this.identityListeners) l(this.identity);
    for (const l of this.caListeners) l(this.ca);
  }

  addCaCertificateListener(listener: CaCertificateUpdateListener): void {
    this.caListeners.add(listener);
    // Deliver asynchronously: grpc-js registers its own watcher only after adding this listener.
    setImmediate(() => this.ca && this.caListeners.has(listener) && listener(this.ca));
  }
  removeCaCertificateListener(listener: CaCertificateUpdateListener): void {
    this.caListeners.delete(listener);
  }
  addIdentityCertificateListener(listener: IdentityCertificateUpdateListener): void {
    this.identityListeners.add(listener);
    setImmediate(() => this.identity && this.identityListeners.has(listener) && listener(this.identity));
  }
  removeIdentityCertificateListener(listener: IdentityCertificateUpdateListener): void {
    this.identityListeners.delete(listener);
  }
}
