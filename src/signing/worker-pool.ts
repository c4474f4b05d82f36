// Leaf signing on worker threads. The gRPC server stays on the main thread; the CPU work of a leaf (CSR parse and
// signature check, policy, certificate encoding and signing, ~0.15 ms) runs on one of `size` workers, so a busy socket
// uses more than one core. Workers get each bundle once (its certificate DER and its node:crypto KeyObject, which
// postMessage copies into the worker) and answer with the leaf; refusals come back as the same error classes.
// Workers start on demand and exit after a quiet period (bench/RESULTS.md §9: each costs its own V8 isolate, ~14 MiB
// idle, which an agent that signs nothing should not pay). This file is both the pool (main thread) and the worker's
// entry point.
import { Worker, isMainThread, parentPort, workerData, type ResourceLimits } from "node:worker_threads";
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
  /** True once the worker runs its entry (the "online" event): requests sent before wait for its start-up. */
  online: boolean;
  /** Stopped on purpose (idle, or the pool closed): its exit is not a crash. */
  retiring: boolean;
  /** When inflight last fell to 0 (Date.now()). */
  idleSince: number;
  idleTimer: NodeJS.Timeout | undefined;
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

/**
 * V8 limits for each worker's isolate. A worker holds one or two issuers and the requests in flight: its old
 * generation stays at a few MiB, so 32 MiB is a bound that only a leak reaches (the worker then dies with
 * ERR_WORKER_OUT_OF_MEMORY and its requests are signed on the main thread). A bound, not a saving: no limit tried
 * changed the RSS (bench/RESULTS.md §9). The young generation is left to the process's --max-semi-space-size, the
 * image's throughput setting.
 */
export const SIGNING_WORKER_RESOURCE_LIMITS: ResourceLimits = { maxOldGenerationSizeMb: 32, codeRangeSizeMb: 16 };

/** How long a worker may have nothing to do before it exits (the next request starts one again). */
export const DEFAULT_WORKER_IDLE_EXIT_MS = 60_000;

export interface SigningPoolOptions {
  /** Called when a worker died and (unless `replaced` is false) a new one was started in its place. */
  onWorkerExit?: (err: Error, replaced: boolean) => void;
  /** Called with the number of running workers whenever it changes (started, stopped when idle, died). */
  onRunningChange?: (running: number) => void;
  /** A worker idle this long exits; 0 keeps workers until close(). Default DEFAULT_WORKER_IDLE_EXIT_MS. */
  idleExitMs?: number;
  /** Each worker's V8 limits. Default SIGNING_WORKER_RESOURCE_LIMITS. */
  resourceLimits?: ResourceLimits;
}

/**
 * Up to `size` signing workers, started when requests need them: the first request starts one, and a further one
 * starts only when every running worker is busy. sign() has signLeaf()'s contract.
 */
export class SigningPool {
  /** Running workers (started, online or not), at most `size`. */
  private readonly workers: PoolWorker[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly issuerIds = new WeakMap<SigningBundle, number>();
  private nextId = 1;
  private nextIssuer = 1;
  private closed = false;
  /** Worker deaths since the last answer from any worker: a worker that cannot even start must not respawn forever. */
  private consecutiveCrashes = 0;

  private gaveUp = false;
  private readonly idleExitMs: number;

  constructor(
    readonly size: number,
    private readonly opts: SigningPoolOptions = {},
  ) {
    if (!Number.isInteger(size) || size < 1) throw new Error(`signing pool size must be a positive integer`);
    this.idleExitMs = opts.idleExitMs ?? DEFAULT_WORKER_IDLE_EXIT_MS;
  }

  /** False once workers kept dying and were no longer replaced: sign() then rejects with WorkerCrashedError. */
  get working(): boolean {
    return !this.gaveUp && !this.closed;
  }

  /** Workers running now (0 until the first request, and again after a quiet period). */
  get running(): number {
    return this.workers.length;
  }

  /** Workers that have started up and take requests without waiting. */
  get online(): number {
    return this.workers.filter((w) => w.online).length;
  }

  /** Starts a worker unless one runs; resolves when a worker is online (rejects if the pool cannot start one). */
  warm(): Promise<void> {
    if (!this.working) return Promise.reject(new WorkerCrashedError("no signing worker can be started"));
    const entry = this.workers[0] ?? this.spawn();
    if (entry.online) return Promise.resolve();
    return new Promise((resolve, reject) => {
      entry.worker.once("online", () => resolve());
      entry.worker.once("exit", () => reject(new WorkerCrashedError("the signing worker exited while starting")));
    });
  }

  readonly sign: SignLeafFn<SigningBundle> = (bundle, csrPem, ttlSeconds, policy, now, opts = {}) => {
    if (this.closed) return Promise.reject(new Error("the signing pool is closed"));
    if (this.gaveUp) return Promise.reject(new WorkerCrashedError("no signing worker is running"));
    const target = this.pick();
    if (target.idleTimer) {
      clearTimeout(target.idleTimer);
      target.idleTimer = undefined;
    }
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
    const workers = this.workers.splice(0);
    for (const w of workers) {
      w.retiring = true;
      clearTimeout(w.idleTimer);
    }
    await Promise.all(workers.map((w) => w.worker.terminate()));
    for (const p of this.pending.values()) p.reject(new Error("the signing pool is closed"));
    this.pending.clear();
  }

  /**
   * Where a request goes: the least busy online worker (ties to the first, which keeps a light load on few threads).
   * When every running worker is busy and fewer than `size` run, one more starts; requests keep going to online
   * workers meanwhile, and wait for a starting worker only when none is online.
   */
  private pick(): PoolWorker {
    let best: PoolWorker | undefined;
    for (const w of this.workers) if (w.online && (!best || w.inflight < best.inflight)) best = w;
    if (this.workers.length < this.size && (!best || best.inflight > 0) && this.workers.every((w) => w.online))
      this.spawn();
    if (best) return best;
    let starting = this.workers[0]!;
    for (const w of this.workers) if (w.inflight < starting.inflight) starting = w;
    return starting;
  }

  private spawn(): PoolWorker {
    const worker = new Worker(runtimeEntry(import.meta.url, "signing-worker"), {
      workerData: { role: WORKER_ROLE },
      resourceLimits: this.opts.resourceLimits ?? SIGNING_WORKER_RESOURCE_LIMITS,
    });
    // Idle workers must not keep the process alive.
    worker.unref();
    const entry: PoolWorker = {
      worker,
      inflight: 0,
      known: new Set(),
      online: false,
      retiring: false,
      idleSince: Date.now(),
      idleTimer: undefined,
    };
    this.workers.push(entry);
    worker.once("online", () => {
      entry.online = true;
      if (entry.inflight === 0) this.armIdleExit(entry);
    });
    worker.on("message", (reply: Reply) => this.settle(reply));
    worker.on("error", (err: Error) => this.replace(entry, err));
    worker.on("exit", (code) => {
      if (!this.closed && !entry.retiring) this.replace(entry, new Error(`signing worker exited with code ${code}`));
    });
    this.opts.onRunningChange?.(this.workers.length);
    return entry;
  }

  /** A worker with nothing in flight exits once idleExitMs have passed since its last answer. */
  private armIdleExit(entry: PoolWorker): void {
    if (this.idleExitMs <= 0 || entry.idleTimer || entry.retiring) return;
    const wait = Math.max(0, entry.idleSince + this.idleExitMs - Date.now());
    entry.idleTimer = setTimeout(() => {
      entry.idleTimer = undefined;
      if (entry.inflight > 0 || entry.retiring || this.closed) return;
      if (Date.now() - entry.idleSince < this.idleExitMs) return this.armIdleExit(entry);
      this.retire(entry);
    }, wait);
    entry.idleTimer.unref();
  }

  /** Stops an idle worker on purpose: it and the keys it was sent go; the next request that needs one starts one. */
  private retire(entry: PoolWorker): void {
    const index = this.workers.indexOf(entry);
    if (index < 0) return;
    entry.retiring = true;
    this.workers.splice(index, 1);
    void entry.worker.terminate();
    this.opts.onRunningChange?.(this.workers.length);
  }

  private settle(reply: Reply): void {
    const p = this.pending.get(reply.id);
    if (!p) return;
    this.pending.delete(reply.id);
    this.consecutiveCrashes = 0;
    if (--p.worker.inflight === 0) {
      p.worker.idleSince = Date.now();
      this.armIdleExit(p.worker);
    }
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
    if (index < 0 || this.closed || entry.retiring) return;
    entry.retiring = true;
    clearTimeout(entry.idleTimer);
    this.workers.splice(index, 1);
    for (const [id, p] of this.pending) {
      if (p.worker !== entry) continue;
      this.pending.delete(id);
      p.reject(new WorkerCrashedError(`signing worker died: ${err.message}`));
    }
    void entry.worker.terminate();
    const replaced = ++this.consecutiveCrashes < MAX_CONSECUTIVE_WORKER_CRASHES;
    // The replacement starts now (there was work for the dead one) and exits when idle like any other.
    if (replaced) this.spawn();
    else {
      // Every worker goes: callers sign elsewhere rather than queue on threads that keep dying.
      this.gaveUp = true;
      for (const w of this.workers.splice(0)) {
        w.retiring = true;
        clearTimeout(w.idleTimer);
        for (const [id, p] of this.pending) {
          if (p.worker !== w) continue;
          this.pending.delete(id);
          p.reject(new WorkerCrashedError("the signing workers were stopped after repeated crashes"));
        }
        void w.worker.terminate();
      }
      this.opts.onRunningChange?.(0);
    }
    this.opts.onWorkerExit?.(err, replaced);
  }

  /** Test hook: the V8 limits worker `index` runs under, as Node reports them. */
  resourceLimitsForTest(index = 0): ResourceLimits | undefined {
    return this.workers[index]?.worker.resourceLimits;
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
