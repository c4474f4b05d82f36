// Upstream istiod (pilot-discovery, built from istio.io/istio by build.sh) run out of cluster against the test
// apiserver, every listener on a free 127.0.0.1 port, reading its plugged-in CA from `rootCaDir`.
import { join } from "node:path";
import { ManagedProcess, waitUntil } from "./process.js";
import { freePort, serverBinaries, type TestEnv } from "./harness.js";

export interface IstiodRun {
  process: ManagedProcess;
  secureGrpcPort: number;
  httpPort: number;
  logPath: string;
}

export async function startIstiod(
  env: TestEnv,
  rootCaDir: string,
  extraEnv: Record<string, string> = {},
): Promise<IstiodRun> {
  const bin = serverBinaries(["istiod"]).istiod;
  const [httpPort, grpcPort, securePort, monitoringPort, httpsPort] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  const logPath = join(env.dir, `istiod-${Date.now()}.log`);
  const proc = new ManagedProcess(
    "istiod",
    bin,
    [
      "discovery",
      `--kubeconfig=${env.kube.kubeconfigPath}`,
      `--httpAddr=127.0.0.1:${httpPort}`,
      `--grpcAddr=127.0.0.1:${grpcPort}`,
      `--secureGRPCAddr=127.0.0.1:${securePort}`,
      `--monitoringAddr=127.0.0.1:${monitoringPort}`,
      `--httpsAddr=127.0.0.1:${httpsPort}`,
      "--domain=cluster.local",
      "--log_output_level=default:info",
    ],
    logPath,
    {
      ...process.env,
      POD_NAMESPACE: "istio-system",
      POD_NAME: "istiod-test",
      ROOT_CA_DIR: rootCaDir,
      HOME: env.dir,
      ...extraEnv,
    },
  );
  await waitUntil(
    "istiod /ready",
    async () => {
      const res = await fetch(`http://127.0.0.1:${httpPort}/ready`);
      return res.status === 200;
    },
    { timeoutMs: 120_000, process: proc, intervalMs: 500 },
  );
  return { process: proc, secureGrpcPort: securePort, httpPort, logPath };
}
