// The agent's gRPC service on a Unix socket in the istiod pod. The socket is created 0660 (stale file removed
// first); handlers log details and answer with a plain status and a message that says which rule failed.
import { chmod, mkdir, stat, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import {
  CertificateAuthorityAgentService,
  type CertificateAuthorityAgentServer,
  type SigningBundle as SigningBundleMessage,
} from "../gen/istiodvaultagent/v1/agent.js";
import type { SigningBundle } from "../authority/bundle.js";
import type { IntermediateAuthority } from "../authority/intermediate-authority.js";
import type { AgentMetrics } from "../observability/metrics.js";
import type { LeafPolicy } from "../signing/leaf-policy.js";
import { CaValidityError, LeafPolicyError } from "../signing/leaf-policy.js";
import { signLeaf } from "../signing/leaf-signer.js";
import { SigningPool } from "../signing/worker-pool.js";
import { decodeError, withDecodeErrors } from "./grpc-decode.js";

/** Largest request accepted on the socket: a CSR is capped at 8 KiB, so 64 KiB leaves room and no more. */
export const MAX_MESSAGE_BYTES = 64 * 1024;

export interface AgentGrpcOptions {
  socketPath: string;
  keyExport: boolean;
  leafPolicy: LeafPolicy;
  /** Sign leaves on this many worker threads (0 or absent: on the main thread). */
  signingWorkers?: number;
}

export class AgentGrpcServer {
  private server: grpc.Server | undefined;
  private pool: SigningPool | undefined;
  private readonly streams = new Set<grpc.ServerWritableStream<unknown, SigningBundleMessage>>();

  constructor(
    private readonly opts: AgentGrpcOptions,
    private readonly authority: IntermediateAuthority,
    private readonly log: Logger,
    private readonly metrics: AgentMetrics,
  ) {}

  async start(): Promise<void> {
    const path = this.opts.socketPath;
    await prepareSocketPath(path);
    const server = new grpc.Server({
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": 4 * 1024 * 1024,
      "grpc.max_concurrent_streams": 256,
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
    if (this.opts.signingWorkers) this.pool = new SigningPool(this.opts.signingWorkers);
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
    await this.pool?.close();
    this.pool = undefined;
  }

  private handlers(): CertificateAuthorityAgentServer {
    return {
      getSigningBundle: (_call, callback) => {
        const b = this.authority.current();
        if (!b) return callback(unavailable(this.authority.unavailableReason()));
        callback(null, this.toMessage(b));
      },
      watchSigningBundle: (call) => {
        this.streams.add(call);
        const unsubscribe = this.authority.subscribe((b) => {
          if (!call.cancelled && call.writable) call.write(this.toMessage(b));
        });
        const done = () => {
          unsubscribe();
          this.streams.delete(call);
        };
        call.on("cancelled", done);
        call.on("close", done);
        call.on("error", done);
      },
      signCertificate: (call, callback) => {
        const undecodable = decodeError(call.request);
        if (undecodable) {
          this.metrics.leavesRefused.inc({ reason: "undecodable" });
          return callback({ code: grpc.status.INVALID_ARGUMENT, details: undecodable });
        }
        const b = this.authority.current();
        if (!b) return callback(unavailable(this.authority.unavailableReason()));
        const ttl = Number(call.request.ttlSeconds ?? 0);
        const csrPem = call.request.csrPem ?? "";
        (this.pool
          ? this.pool.sign(b, csrPem, ttl, this.opts.leafPolicy, new Date())
          : signLeaf(b, csrPem, ttl, this.opts.leafPolicy, new Date())
        )
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
      },
      rotate: (_call, callback) => {
        this.authority
          .rotate("rpc")
          .then((b) => callback(null, this.toMessage(b)))
          .catch((err: unknown) =>
            callback({ code: grpc.status.UNAVAILABLE, details: `rotation failed: ${(err as Error).message}` }),
          );
      },
    };
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
