// One agent's leaf signing: one SigningPool (or none) shared by every listener that signs workload leaves (the
// socket's SignCertificate and the drop-in Istio CA's CreateCertificate), with per-listener counts of where each leaf
// was signed. A request whose worker died is signed again on the main thread, so a crash fails no call.
// The pool's workers start when load appears and exit after a quiet period: an idle agent runs none (each is a V8
// isolate, ~14 MiB; bench/RESULTS.md §9). Leaves are signed on the main thread until a worker is online.
import type { Counter, Gauge } from "prom-client";
import type { Logger } from "pino";
import type { SigningBundle } from "../authority/bundle.js";
import { signLeaf, type SignLeafFn } from "./leaf-signer.js";
import { SigningPool, WorkerCrashedError, type SigningPoolOptions } from "./worker-pool.js";

export type SigningListener = "socket" | "istio_ca";

/** The metrics AgentSigning keeps (AgentMetrics has them; the bench harness passes its own). */
export interface SigningMetrics {
  signingWorkers: Gauge;
  signingLeaves: Counter<"listener" | "thread">;
  signingWorkerRestarts: Counter;
}

/**
 * A worker starts when a leaf is asked for within this long of the previous one signed on the main thread: a lone
 * request (one pod starting) is cheaper to sign here (~0.5 ms) than a worker is to start (~60-80 ms of CPU).
 */
export const WORKER_START_WITHIN_MS = 1_000;

export type AgentSigningOptions = Pick<SigningPoolOptions, "idleExitMs" | "resourceLimits">;

export class AgentSigning {
  private readonly pool: SigningPool | undefined;
  /** When the last leaf was signed on the main thread while the pool had no worker online (-Infinity: never). */
  private lastMainSign = -Infinity;

  constructor(
    readonly workers: number,
    private readonly log: Logger,
    private readonly metrics?: SigningMetrics,
    opts: AgentSigningOptions = {},
  ) {
    this.pool =
      workers > 0
        ? new SigningPool(workers, {
            ...opts,
            onRunningChange: (running) => this.metrics?.signingWorkers.set(running),
            onWorkerExit: (err, replaced) => {
              this.metrics?.signingWorkerRestarts.inc();
              if (replaced)
                this.log.warn(
                  { err: err.message },
                  "a signing worker died; its requests are signed on the main thread",
                );
              else
                this.log.error(
                  { err: err.message },
                  "signing workers keep dying; leaves are signed on the main thread from now on",
                );
            },
          })
        : undefined;
    this.metrics?.signingWorkers.set(0);
  }

  /**
   * The signer `listener` uses: on a worker when one is online; on the main thread when there are none, while the
   * first one starts, or after a crash.
   */
  signer(listener: SigningListener): SignLeafFn<SigningBundle> {
    return (bundle, csrPem, ttlSeconds, policy, now, opts) => {
      const pool = this.pool;
      if (!pool?.working) return this.count(listener, "main", signLeaf(bundle, csrPem, ttlSeconds, policy, now, opts));
      if (pool.online === 0) {
        const t = performance.now();
        // Load: a second leaf within WORKER_START_WITHIN_MS. A failed start is counted as a crash by the pool.
        if (pool.running === 0 && t - this.lastMainSign < WORKER_START_WITHIN_MS) pool.warm().catch(() => undefined);
        this.lastMainSign = t;
        return this.count(listener, "main", signLeaf(bundle, csrPem, ttlSeconds, policy, now, opts));
      }
      return pool.sign(bundle, csrPem, ttlSeconds, policy, now, opts).then(
        (leaf) => (this.metrics?.signingLeaves.inc({ listener, thread: "worker" }), leaf),
        (err: unknown) => {
          if (!(err instanceof WorkerCrashedError)) throw err;
          // The same bundle and clock: the leaf is what the worker would have answered.
          return this.count(listener, "main", signLeaf(bundle, csrPem, ttlSeconds, policy, now, opts));
        },
      );
    };
  }

  private count<T>(listener: SigningListener, thread: "main" | "worker", p: Promise<T>): Promise<T> {
    return p.then((v) => (this.metrics?.signingLeaves.inc({ listener, thread }), v));
  }

  /** Starts a worker now (when there is a pool) and resolves once it is online: for tests and benches. */
  async warm(): Promise<void> {
    await this.pool?.warm();
  }

  /** For tests: ends one worker as a crash would. */
  crashWorkerForTest(): Promise<number> {
    if (!this.pool) return Promise.reject(new Error("no signing workers"));
    return this.pool.crashWorkerForTest();
  }

  async close(): Promise<void> {
    await this.pool?.close();
  }
}
