// One lifecycle for every long-running mode (sidecar, relay server/agent, relay bootstrap agent): the health and
// metrics HTTP server, SIGTERM/SIGINT for a graceful stop, SIGHUP for "renew now", and --once where the mode has it.
import type { Logger } from "pino";
import { HealthHttpServer, type HealthHttpOptions } from "../serve/health-http.js";
import { EXIT_FAILURE, EXIT_OK } from "./command.js";

export interface ServiceSpec {
  log: Logger;
  /** Logged with failures: "relay", "sidecar". */
  name: string;
  /** Serves /healthz, /readyz and /metrics here unless empty or undefined. */
  http?: HealthHttpOptions | undefined;
  /** Starts the mode's work; resolves once it runs (its timers may be unref'd). */
  start(signal: AbortSignal): Promise<void>;
  /** SIGHUP: e.g. renew now. */
  onHangup?: () => void;
  /** Releases everything start() took; called once, on every path. */
  close(): Promise<void>;
  /** Describes an error for the log (e.g. scrubbed of secrets). */
  describeError?: (err: unknown) => string;
}

/** Runs `spec` until SIGTERM or SIGINT; returns the exit code (0 when stopped by a signal, 1 when start failed). */
export async function runService(spec: ServiceSpec): Promise<number> {
  const { log } = spec;
  const abort = new AbortController();
  const stop = (signal: string) => {
    if (abort.signal.aborted) return;
    log.info({ signal }, `stopping ${spec.name}`);
    abort.abort(new Error(`stopped by ${signal}`));
  };
  const onTerm = () => stop("SIGTERM");
  const onInt = () => stop("SIGINT");
  const onHup = () => spec.onHangup?.();
  process.on("SIGTERM", onTerm);
  process.on("SIGINT", onInt);
  process.on("SIGHUP", onHup);
  // The modes' timers are unref'd; this keeps the process alive until a signal arrives.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  const http = spec.http?.address ? new HealthHttpServer(spec.http) : undefined;
  try {
    if (http) {
      const addr = await http.start();
      log.info({ address: `${addr.address}:${addr.port}` }, "serving /healthz, /readyz and /metrics");
    }
    await spec.start(abort.signal);
    if (!abort.signal.aborted)
      await new Promise<void>((resolve) => abort.signal.addEventListener("abort", () => resolve(), { once: true }));
    return EXIT_OK;
  } catch (err) {
    if (abort.signal.aborted) return EXIT_OK;
    log.error({ err: describe(spec, err) }, `${spec.name} failed`);
    return EXIT_FAILURE;
  } finally {
    process.off("SIGTERM", onTerm);
    process.off("SIGINT", onInt);
    process.off("SIGHUP", onHup);
    clearInterval(keepAlive);
    await http?.stop();
    await spec.close();
  }
}

/** --once: runs `work` to completion, then closes; 0 on success, 1 on failure. */
export async function runOnce(
  spec: Pick<ServiceSpec, "log" | "name" | "close" | "describeError">,
  work: () => Promise<boolean>,
): Promise<number> {
  try {
    return (await work()) ? EXIT_OK : EXIT_FAILURE;
  } catch (err) {
    spec.log.error({ err: describe(spec, err) }, `${spec.name} --once failed`);
    return EXIT_FAILURE;
  } finally {
    await spec.close();
  }
}

function describe(spec: Pick<ServiceSpec, "describeError">, err: unknown): string {
  return spec.describeError ? spec.describeError(err) : (err as Error).message;
}
