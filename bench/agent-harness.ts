// The agent's gRPC socket server without Vault, for bench/socket-load.ts: a SigningBundle from the bench fixtures
// (bench/fixtures.ts) served by the real AgentGrpcServer through a minimal stand-in for IntermediateAuthority (the
// current()/subscribe()/lastError/rotate() shape the server uses). Bench code only.
//   node dist/bench/agent-harness.js FIXTURE_DIR SOCKET_PATH
// Prints "ready" once the socket serves; SIGTERM stops it.
import type { IntermediateAuthority } from "../src/authority/intermediate-authority.js";
import type { SigningBundle } from "../src/authority/bundle.js";
import { createLogger } from "../src/observability/logger.js";
import { AgentMetrics } from "../src/observability/metrics.js";
import { AgentGrpcServer } from "../src/serve/agent-grpc.js";
import { DEFAULT_SOCKET_LIMITS } from "../src/serve/socket-limits.js";
import { AgentSigning } from "../src/signing/agent-signing.js";
import { cpuLimits, defaultSigningWorkers } from "../src/signing/signing-workers.js";
import { benchPolicy, loadFixtures } from "./fixtures.js";

/** Serves one fixed bundle; rotation hands back the same bundle. */
function fixedAuthority(bundle: SigningBundle): IntermediateAuthority {
  const stub = {
    lastError: undefined as string | undefined,
    current: (): SigningBundle => bundle,
    subscribe: (fn: (b: SigningBundle) => void): (() => void) => {
      fn(bundle);
      return () => undefined;
    },
    rotate: (): Promise<SigningBundle> => Promise.resolve(bundle),
  };
  return stub as unknown as IntermediateAuthority;
}

async function main(): Promise<void> {
  const [dir, socketPath] = process.argv.slice(2);
  if (!dir || !socketPath) {
    console.error("usage: agent-harness.js FIXTURE_DIR SOCKET_PATH");
    process.exit(2);
  }
  const { bundle } = await loadFixtures(dir);
  const log = createLogger({ level: process.env.IVA_BENCH_LOG_LEVEL ?? "warn" });
  // As the agent chooses: IVA_SIGNING_WORKERS when set (the agent's --signing-workers), else the default rule.
  const set = process.env.IVA_SIGNING_WORKERS;
  const choice =
    set === undefined || set === ""
      ? defaultSigningWorkers(cpuLimits())
      : { workers: Number(set), reason: "IVA_SIGNING_WORKERS" };
  console.error(`signing workers: ${choice.workers} (${choice.reason})`);
  const metrics = new AgentMetrics();
  const signing = new AgentSigning(choice.workers, log, metrics);
  const server = new AgentGrpcServer(
    {
      socketPath,
      keyExport: false,
      leafPolicy: () => benchPolicy,
      sign: signing.signer("socket"),
      // socket-load.ts keeps all its requests on one connection: 64 in flight needs more than the per-connection
      // default of 32 (IVA_BENCH_SIGN_PER_CONNECTION; the agent's flag is --socket-max-sign-in-flight-per-connection).
      limits: {
        ...DEFAULT_SOCKET_LIMITS,
        maxSignInFlightPerConnection: Number(process.env.IVA_BENCH_SIGN_PER_CONNECTION ?? 256),
      },
    },
    fixedAuthority(bundle),
    log,
    metrics,
  );
  await server.start();
  process.once("SIGTERM", () => {
    void server
      .stop()
      .then(() => signing.close())
      .then(() => process.exit(0));
  });
  const every = Number(process.env.IVA_BENCH_MEMORY_EVERY_S ?? 0);
  if (every > 0) {
    // Where the RSS goes (V8 heap vs buffers), on stderr, for the RESULTS.md memory notes.
    const mib = (n: number): string => (n / 1048576).toFixed(1);
    setInterval(() => {
      const m = process.memoryUsage();
      console.error(
        `memory rss ${mib(m.rss)} heapTotal ${mib(m.heapTotal)} heapUsed ${mib(m.heapUsed)} ` +
          `external ${mib(m.external)} arrayBuffers ${mib(m.arrayBuffers)} MiB`,
      );
    }, every * 1000).unref();
  }
  console.log("ready");
}

await main();
