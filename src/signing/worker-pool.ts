// Leaf signing on worker threads. The gRPC server stays on the main thread; the CPU work of a leaf (CSR parse and
// signature check, policy, certificate encoding and signing, ~0.15 ms) runs on one of `size` workers, so a busy socket
// uses more than one core. Workers get each bundle once (its certificate DER and its node:crypto KeyObject, which
// postMessage copies into the worker) and answer with the leaf; refusals come back as the same error classes.
// This file is both the pool (main thread) and the worker's entry point.
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import type { SigningBundle } from "../authority/bundle.js";
import type { KeyObject } from "node:crypto";
import type { KeyAlgorithmName } from "../crypto/keys.js";
import { CaValidityError, LeafPolicyError, type LeafPolicy, type LeafPolicyCode } from "./leaf-policy.js";
import { signLeaf, type LeafIssuer, type SignLeafFn, type SignLeafOptions, type SignedLeaf } from "./leaf-signer.js";
import { runtimeEntry } from "../util/runtime-entry.js";

const WORKER_ROLE = "istiod-vault-agent-signing-worker";

interface IssuerMessage {
  type: "issuer";
  issuer: number;
  certDer: Uint8Array;
  signingKey: KeyObject;
  keyAlgorithm: KeyAlgorithmName;
  notBefore: number;
  notAfter: number;
}

interface SignMessage {
  type: "sign";
  id: number;
  issuer: number;
  csrPem: string;
  ttlSeconds: number;
  policy: LeafPolicy;
  now: number;
  opts: SignLeafOptions;
}

type ErrorReply =
  | { kind: "policy"; code: LeafPolicyCode; rule: string; message: string }
  | { kind: "ca"; rule: CaValidityError["rule"]; message: string }
  | { kind: "internal"; message: string };

type Reply =
  | { id: number; ok: true; certPem: string; notAfter: number; serialHex: string }
  | { id: number; ok: false; error: ErrorReply };

interface Pending {
  resolve: (leaf: SignedLeaf) => void;
  reject: (err: Error) => void;
  chainPem: readonly string[];
  worker: PoolWorker;
}

interface PoolWorker {
  worker: Worker;
  inflight: number;
  /** Issuer ids this worker has been sent. */
  known: Set<number>;
}

/**
 * A request did not get an answer because its worker died (crash, out of memory, terminated), or because the pool
 * gave up replacing workers. Nothing about the request itself is known to be wrong: the caller may sign it elsewhere.
 */
export class WorkerCrashedError extends Error {
  override readonly name = "WorkerCrashedError";
}

/** Workers that die this many times in a row without one answer in between are not replaced any more. */
export const MAX_CONSECUTIVE_WORKER_CRASHES = 3;

export interface SigningPoolOptions {
  /** Called when a worker died and (unless `replaced` is false) a new one was started in its place. */
  onWorkerExit?: (err: Error, replaced: boolean) => void;
}

/** A fixed set of signing workers; sign() has signLeaf()'s contract. */
export class SigningPool {
  private readonly workers: PoolWorker[];
  private readonly pending = new Map<number, Pending>();
  private readonly issuerIds = new WeakMap<SigningBundle, number>();
  private nextId = 1;
  private nextIssuer = 1;
  private closed = false;
  /** Worker deaths since the last answer from any worker: a worker that cannot even start must not respawn forever. */
  private consecutiveCrashes = 0;

  constructor(
    readonly size: number,
    private readonly opts: SigningPoolOptions = {},
  ) {
    if (!Number.isInteger(size) || size < 1) throw new Error(`signing pool size must be a positive integer`);
    this.workers = Array.from({ length: size }, () => this.spawn());
  }

  /** False once workers kept dying and were no longer replaced: sign() then rejects with WorkerCrashedError. */
  get working(): boolean {
    return this.workers.length > 0 && !this.closed;
  }

  readonly sign: SignLeafFn<SigningBundle> = (bundle, csrPem, ttlSeconds, policy, now, opts = {}) => {
    if (this.closed) return Promise.reject(new Error("the signing pool is closed"));
    if (this.workers.length === 0) return Promise.reject(new WorkerCrashedError("no signing worker is running"));
    // The least busy worker; ties go to the first, which keeps a light load on few threads.
    let target = this.workers[0]!;
    for (const w of this.workers) if (w.inflight < target.inflight) target = w;
    let issuer = this.issuerIds.get(bundle);
    if (issuer === undefined) {
      issuer = this.nextIssuer++;
      this.issuerIds.set(bundle, issuer);
    }
    if (!target.known.has(issuer)) {
      // Bundles rotate rarely: forget the older ones so a worker holds at most the current and previous key.
      if (target.known.size >= 2) target.known.clear();
      target.known.add(issuer);
      const message: IssuerMessage = {
        type: "issuer",
        issuer,
        certDer: new Uint8Array(bundle.signingCert.rawData),
        signingKey: bundle.signingKey,
        keyAlgorithm: bundle.keyAlgorithm,
        notBefore: bundle.notBefore.getTime(),
        notAfter: bundle.notAfter.getTime(),
      };
      target.worker.postMessage(message);
    }
    const id = this.nextId++;
    const message: SignMessage = { type: "sign", id, issuer, csrPem, ttlSeconds, policy, now: now.getTime(), opts };
    return new Promise<SignedLeaf>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, chainPem: bundle.chainPem, worker: target });
      target.inflight++;
      target.worker.postMessage(message);
    });
  };

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
    for (const p of this.pending.values()) p.reject(new Error("the signing pool is closed"));
    this.pending.clear();
  }

  private spawn(): PoolWorker {
    const worker = new Worker(runtimeEntry(import.meta.url, "signing-worker"), { workerData: { role: WORKER_ROLE } });
    // Idle workers must not keep the process alive.
    worker.unref();
    const entry: PoolWorker = { worker, inflight: 0, known: new Set() };
    worker.on("message", (reply: Reply) => this.settle(reply));
    worker.on("error", (err: Error) => this.replace(entry, err));
    worker.on("exit", (code) => {
      if (!this.closed) this.replace(entry, new Error(`signing worker exited with code ${code}`));
    });
    return entry;
  }

  private settle(reply: Reply): void {
    const p = this.pending.get(reply.id);
    if (!p) return;
    this.pending.delete(reply.id);
    this.consecutiveCrashes = 0;
    p.worker.inflight--;
    if (reply.ok) {
      p.resolve({
        certPem: reply.certPem,
        chainPem: [reply.certPem, ...p.chainPem],
        notAfter: new Date(reply.notAfter),
        serialHex: reply.serialHex,
      });
      return;
    }
    const e = reply.error;
    p.reject(
      e.kind === "policy"
        ? new LeafPolicyError(e.code, e.rule, e.message)
        : e.kind === "ca"
          ? new CaValidityError(e.rule, e.message)
          : new Error(e.message),
    );
  }

  /**
   * A worker died: its requests (only those it held) fail with WorkerCrashedError, and a new worker takes its place,
   * which is sent each issuer again before its first request (its `known` set starts empty). After
   * MAX_CONSECUTIVE_WORKER_CRASHES deaths without an answer in between, no more workers are started.
   */
  private replace(entry: PoolWorker, err: Error): void {
    const index = this.workers.indexOf(entry);
    if (index < 0 || this.closed) return;
    for (const [id, p] of this.pending) {
      if (p.worker !== entry) continue;
      this.pending.delete(id);
      p.reject(new WorkerCrashedError(`signing worker died: ${err.message}`));
    }
    void entry.worker.terminate();
    const replaced = ++this.consecutiveCrashes < MAX_CONSECUTIVE_WORKER_CRASHES;
    if (replaced) this.workers[index] = this.spawn();
    else {
      // Every worker goes: callers sign elsewhere rather than queue on threads that keep dying.
      this.workers.splice(index, 1);
      for (const w of this.workers.splice(0)) {
        for (const [id, p] of this.pending) {
          if (p.worker !== w) continue;
          this.pending.delete(id);
          p.reject(new WorkerCrashedError("the signing workers were stopped after repeated crashes"));
        }
        void w.worker.terminate();
      }
    }
    this.opts.onWorkerExit?.(err, replaced);
  }

  /** Test hook: ends worker `index` abruptly, as a crash would. */
  crashWorkerForTest(index = 0): Promise<number> {
    const w = this.workers[index];
    if (!w) return Promise.reject(new Error(`no worker ${index}`));
    return w.worker.terminate();
  }
}

/** The worker side: issuers by id, and signLeaf for each request. */
function runWorker(): void {
  const port = parentPort!;
  const issuers = new Map<number, LeafIssuer>();
  port.on("message", (msg: IssuerMessage | SignMessage) => {
    if (msg.type === "issuer") {
      if (issuers.size >= 2) issuers.clear();
      const rawData = msg.certDer.buffer.slice(msg.certDer.byteOffset, msg.certDer.byteOffset + msg.certDer.byteLength);
      issuers.set(msg.issuer, {
        signingCert: { rawData: rawData as ArrayBuffer },
        chainPem: [],
        signingKey: msg.signingKey,
        keyAlgorithm: msg.keyAlgorithm,
        notBefore: new Date(msg.notBefore),
        notAfter: new Date(msg.notAfter),
      });
      return;
    }
    const issuer = issuers.get(msg.issuer);
    if (!issuer) {
      port.postMessage({ id: msg.id, ok: false, error: { kind: "internal", message: "unknown issuer" } });
      return;
    }
    signLeaf(issuer, msg.csrPem, msg.ttlSeconds, msg.policy, new Date(msg.now), msg.opts).then(
      (leaf) =>
        port.postMessage({
          id: msg.id,
          ok: true,
          certPem: leaf.certPem,
          notAfter: leaf.notAfter.getTime(),
          serialHex: leaf.serialHex,
        } satisfies Reply),
      (err: unknown) => port.postMessage({ id: msg.id, ok: false, error: errorReply(err) } satisfies Reply),
    );
  });
}

function errorReply(err: unknown): ErrorReply {
  // The error classes prefix the rule to the message; the main thread's constructors add it again.
  const bare = (e: LeafPolicyError | CaValidityError) => e.message.slice(e.rule.length + 2);
  if (err instanceof LeafPolicyError) return { kind: "policy", code: err.code, rule: err.rule, message: bare(err) };
  if (err instanceof CaValidityError) return { kind: "ca", rule: err.rule, message: bare(err) };
  return { kind: "internal", message: err instanceof Error ? err.message : String(err) };
}

if (!isMainThread && (workerData as { role?: string } | null)?.role === WORKER_ROLE) runWorker();
