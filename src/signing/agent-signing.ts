// One agent's leaf signing: one SigningPool (or none) shared by every listener that signs workload leaves (the
// socket's SignCertificate and the drop-in Istio CA's CreateCertificate), with per-listener counts of where each leaf
// was signed. A request whose worker died is signed again on the main thread, so a crash fails no call.
import type { Counter, Gauge } from "prom-client";
import type { Logger } from "pino";
import type { SigningBundle } from "../authority/bundle.js";
import { signLeaf, type SignLeafFn } from "./leaf-signer.js";
import { SigningPool, WorkerCrashedError } from "./worker-pool.js";

export type SigningListener = "socket" | "istio_ca";

/** The metrics AgentSigning keeps (AgentMetrics has them; the bench harness passes its own). */
export interface SigningMetrics {
  signingWorkers: Gauge;
  signingLeaves: Counter<"listener" | "thread">;
  signingWorkerRestarts: Counter;
}

export class AgentSigning {
  private readonly pool: SigningPool | undefined;

  constructor(
    readonly workers: number,
    private readonly log: Logger,
    private readonly metrics?: SigningMetrics,
  ) {
    this.pool =
      workers > 0
        ? new SigningPool(workers, {
            onWorkerExit: (err, replaced) => {
              this.metrics?.signingWorkerRestarts.inc();
              this.metrics?.signingWorkers.set(this.pool?.working ? workers : 0);
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
    this.metrics?.signingWorkers.set(workers);
  }

  /** The signer `listener` uses: on a worker when there are any, on the main thread otherwise or after a crash. */
  signer(listener: SigningListener): SignLeafFn<SigningBundle> {
    return (bundle, csrPem, ttlSeconds, policy, now, opts) => {
      const pool = this.pool;
      if (!pool?.working) return this.count(listener, "main", signLeaf(bundle, csrPem, ttlSeconds, policy, now, opts));
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

  /** For tests: ends one worker as a crash would. */
  crashWorkerForTest(): Promise<number> {
    if (!this.pool) return Promise.reject(new Error("no signing workers"));
    return this.pool.crashWorkerForTest();
  }

  async close(): Promise<void> {
    await this.pool?.close();
  }
}
