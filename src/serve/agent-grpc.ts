// The agent's gRPC service on a Unix socket in the istiod pod. The socket is created 0660 (stale file removed
// first); handlers log details and answer with a plain status and a message that says which rule failed.
import { chmod, mkdir, stat, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import {
  CertificateAuthorityAgentService,
  SigningBundle as SigningBundleCodec,
  type CertificateAuthorityAgentServer,
  type SignCertificateRequest,
  type SignCertificateResponse,
  type SigningBundle as SigningBundleMessage,
} from "../gen/istiodvaultagent/v1/agent.js";
import type { SigningBundle } from "../authority/bundle.js";
import type { IntermediateAuthority } from "../authority/intermediate-authority.js";
import type { AgentMetrics } from "../observability/metrics.js";
import type { LeafPolicy } from "../signing/leaf-policy.js";
import { CaValidityError, LeafPolicyError } from "../signing/leaf-policy.js";
import { signLeaf, type SignLeafFn } from "../signing/leaf-signer.js";
import { decodeError, withDecodeErrors } from "./grpc-decode.js";
import { RotateGate } from "./rotate-gate.js";
import {
  ConnectionCounter,
  DEFAULT_SOCKET_LIMITS,
  WatchBuffer,
  connectionOf,
  dropStream,
  http2StreamsPerConnection,
  type SocketLimits,
} from "./socket-limits.js";

/** Largest request accepted on the socket: a CSR is capped at 8 KiB, so 64 KiB leaves room and no more. */
export const MAX_MESSAGE_BYTES = 64 * 1024;

export interface AgentGrpcOptions {
  socketPath: string;
  keyExport: boolean;
  /** The policy in force, read at each request (the agent replaces it on reconfiguration). */
  leafPolicy: () => LeafPolicy;
  /** Signs SignCertificate's leaves: the agent's shared signer (AgentSigning); signLeaf on this thread when absent. */
  sign?: SignLeafFn<SigningBundle>;
  /** Stream, signing and rotation limits; DEFAULT_SOCKET_LIMITS when absent. */
  limits?: SocketLimits;
}

export class AgentGrpcServer {
  private server: grpc.Server | undefined;
  private readonly streams = new Set<grpc.ServerWritableStream<unknown, SigningBundleMessage>>();
  private readonly limits: SocketLimits;
  private readonly watches: ConnectionCounter;
  private readonly signings: ConnectionCounter;
  private readonly rotations: RotateGate;

  constructor(
    private readonly opts: AgentGrpcOptions,
    private readonly authority: IntermediateAuthority,
    private readonly log: Logger,
    private readonly metrics: AgentMetrics,
  ) {
    this.limits = opts.limits ?? DEFAULT_SOCKET_LIMITS;
    this.watches = new ConnectionCounter(this.limits.maxWatchPerConnection, this.limits.maxWatchTotal);
    this.signings = new ConnectionCounter(this.limits.maxSignInFlightPerConnection);
    this.rotations = new RotateGate(() => this.authority.rotate("rpc"), this.limits.rotateMinIntervalMs);
  }

  async start(): Promise<void> {
    const path = this.opts.socketPath;
    await prepareSocketPath(path);
    const server = new grpc.Server({
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": 4 * 1024 * 1024,
      // HTTP/2's own cap on open streams per connection: each open stream costs the agent memory even before a
      // handler refuses it, so a client gets room for its allowed Watch streams and signings plus a few other calls,
      // and further streams wait on the client's side.
      "grpc.max_concurrent_streams": http2StreamsPerConnection(this.limits),
    });
    server.addService(withDecodeErrors(CertificateAuthorityAgentService), this.handlers());
    // The socket takes the process umask at creation: narrow it for the bind so there is no window where the
    // socket is wider than 0660, then set the mode explicitly.
    const previousUmask = process.umask(0o117);
    try {
      await new Promise<number>((resolve, reject) =>
        server.bindAsync(`unix://${path}`, grpc.ServerCredentials.createInsecure(), (err, port) =>
          err ? reject(err) : resolve(port),
        ),
      );
    } finally {
      process.umask(previousUmask);
    }
    await chmod(path, 0o660);
    this.server = server;
    this.log.info({ socket: path, mode: "0660" }, "gRPC server listening on Unix socket");
  }

  async stop(): Promise<void> {
    // tryShutdown waits for open streams forever: end the watch streams first.
    for (const s of this.streams) s.end();
    this.streams.clear();
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => (server.forceShutdown(), resolve()), 2_000);
      server.tryShutdown(() => (clearTimeout(t), resolve()));
    });
    await unlink(this.opts.socketPath).catch(() => undefined);
  }

  private handlers(): CertificateAuthorityAgentServer {
    return {
      getSigningBundle: (_call, callback) => {
        const b = this.authority.current();
        if (!b) return callback(unavailable(this.authority.unavailableReason()));
        callback(null, this.toMessage(b));
      },
      watchSigningBundle: (call) => {
        const release = this.watches.acquire(connectionOf(call));
        if (typeof release !== "function") {
          const [flag, max] =
            release === "per_connection"
              ? ["--socket-max-watch-per-connection", this.limits.maxWatchPerConnection]
              : ["--socket-max-watch-total", this.limits.maxWatchTotal];
          return this.refuseStream(
            call,
            `watch_${release}`,
            `too many WatchSigningBundle streams ${release === "per_connection" ? "on this connection" : "open on the agent"} (limit ${max}, ${flag}); close unused streams or share one`,
          );
        }
        this.streams.add(call);
        const buffer = new WatchBuffer(this.limits.maxWatchBufferedBytes);
        let unsubscribe: () => void = () => undefined;
        let finished = false;
        const done = () => {
          if (finished) return;
          finished = true;
          unsubscribe();
          release();
          this.streams.delete(call);
        };
        unsubscribe = this.authority.subscribe((b) => {
          if (finished || call.cancelled || !call.writable) return;
          const message = this.toMessage(b);
          const bytes = SigningBundleCodec.encode(message).finish().length;
          const written = buffer.offer(bytes, (sent) => call.write(message, sent));
          if (!written) {
            // The client stopped reading: drop the stream rather than keep a copy of every bundle for it.
            this.metrics.limitHits.inc({ reason: "watch_slow_reader" });
            this.log.debug(
              { bufferedBytes: buffer.bufferedBytes, limit: this.limits.maxWatchBufferedBytes },
              "dropped a WatchSigningBundle stream whose client does not read (--socket-watch-max-buffered-bytes)",
            );
            done();
            dropStream(call);
          }
        });
        if (finished) unsubscribe(); // dropped while subscribe() delivered the current bundle
        call.on("cancelled", done);
        call.on("close", done);
        call.on("error", done);
        call.on("finish", done);
      },
      signCertificate: (call, callback) => {
        const release = this.signings.acquire(connectionOf(call));
        if (typeof release !== "function") {
          this.metrics.limitHits.inc({ reason: "sign_per_connection" });
          this.metrics.leavesRefused.inc({ reason: "too_many_in_flight" });
          return callback({
            code: grpc.status.RESOURCE_EXHAUSTED,
            details: `too many SignCertificate calls in flight on this connection (limit ${this.limits.maxSignInFlightPerConnection}, --socket-max-sign-in-flight-per-connection); wait for answers before sending more`,
          });
        }
        this.signCertificate(call, (err, res) => {
          release();
          if (err) callback(err);
          else callback(null, res);
        });
      },
      rotate: (_call, callback) => {
        const decision = this.rotations.request();
        if (decision.kind === "limited") {
          this.metrics.limitHits.inc({ reason: "rotate_rate_limited" });
          return callback({
            code: grpc.status.RESOURCE_EXHAUSTED,
            details: `Rotate is limited to one Vault signing per ${this.limits.rotateMinIntervalMs / 1000}s (--rotate-min-interval); generation ${decision.lastGeneration ?? "?"} was made less than that ago; retry in ${Math.ceil(decision.retryAfterMs / 1000)}s`,
          });
        }
        if (decision.kind === "joined") this.metrics.limitHits.inc({ reason: "rotate_coalesced" });
        decision.result
          .then((b) => callback(null, this.toMessage(b)))
          .catch((err: unknown) =>
            callback({ code: grpc.status.UNAVAILABLE, details: `rotation failed: ${(err as Error).message}` }),
          );
      },
    };
  }

  /** Ends a Watch stream with RESOURCE_EXHAUSTED and counts the limit that ended it. */
  private refuseStream(
    call: grpc.ServerWritableStream<unknown, SigningBundleMessage>,
    reason: string,
    details: string,
  ): void {
    this.metrics.limitHits.inc({ reason });
    this.log.debug({ reason, details }, "refused or dropped a WatchSigningBundle stream");
    call.emit("error", { code: grpc.status.RESOURCE_EXHAUSTED, details, metadata: new grpc.Metadata() });
  }

  private signCertificate(
    call: grpc.ServerUnaryCall<SignCertificateRequest, SignCertificateResponse>,
    callback: grpc.sendUnaryData<SignCertificateResponse>,
  ): void {
    const undecodable = decodeError(call.request);
    if (undecodable) {
      this.metrics.leavesRefused.inc({ reason: "undecodable" });
      return callback({ code: grpc.status.INVALID_ARGUMENT, details: undecodable });
    }
    const b = this.authority.current();
    if (!b) return callback(unavailable(this.authority.unavailableReason()));
    const ttl = Number(call.request.ttlSeconds ?? 0);
    const csrPem = call.request.csrPem ?? "";
    // `b` is the bundle current now, so a request that arrives after a rotation is signed by the new intermediate
    // (the pool sends a worker each new key before the first request for it).
    (this.opts.sign ?? signLeaf)(b, csrPem, ttl, this.opts.leafPolicy(), new Date())
      .then((leaf) => {
        this.metrics.leavesSigned.inc();
        callback(null, { certChainPem: leaf.chainPem });
      })
      .catch((err: unknown) => {
        if (err instanceof LeafPolicyError || err instanceof CaValidityError) {
          this.metrics.leavesRefused.inc({ reason: err.rule });
          this.log.info({ rule: err.rule, reason: err.message }, "refused a leaf signing request");
          const code =
            err.code === "PERMISSION_DENIED"
              ? grpc.status.PERMISSION_DENIED
              : err.code === "UNAVAILABLE"
                ? grpc.status.UNAVAILABLE
                : grpc.status.INVALID_ARGUMENT;
          return callback({ code, details: err.message });
        }
        this.metrics.leavesRefused.inc({ reason: "internal" });
        this.log.error({ err: (err as Error).message }, "leaf signing failed");
        callback({ code: grpc.status.INTERNAL, details: "leaf signing failed (see the agent's log)" });
      });
  }

  private toMessage(b: SigningBundle): SigningBundleMessage {
    return {
      signingCertPem: b.signingCertPem,
      certChainPem: [...b.chainPem],
      rootCertPem: [...b.rootsPem],
      notBeforeUnix: Math.floor(b.notBefore.getTime() / 1000),
      notAfterUnix: Math.floor(b.notAfter.getTime() / 1000),
      generation: b.generation,
      serialHex: b.serialHex,
      privateKeyPem: this.opts.keyExport ? (b.privateKeyPem ?? "") : "",
    };
  }
}

function unavailable(reason: string): grpc.StatusObject {
  return {
    code: grpc.status.UNAVAILABLE,
    details: reason,
    metadata: new grpc.Metadata(),
  };
}

/** Checks the socket's directory and removes a stale socket file (never a regular file someone else owns). */
async function prepareSocketPath(path: string): Promise<void> {
  const dir = dirname(path);
  try {
    const s = await stat(dir);
    if (!s.isDirectory()) throw new Error(`socket directory ${dir} is not a directory`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    await mkdir(dir, { recursive: true, mode: 0o770 }).catch((e: NodeJS.ErrnoException) => {
      throw new Error(
        `socket directory ${dir} does not exist and cannot be created (${e.code}); mount a writable volume there (e.g. an emptyDir shared with istiod)`,
      );
    });
  }
  try {
    const s = await stat(path);
    if (!s.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}
