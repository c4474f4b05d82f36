// Upstream istiod (pilot-discovery, built from istio.io/istio by build.sh) run out of cluster against the test
// apiserver, every listener on a free 127.0.0.1 port, reading its plugged-in CA from `rootCaDir`.
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { IstioCertificateServiceClient } from "../../src/gen/istio/v1/auth/ca.js";
import { workloadCsr } from "./crypto-check.js";
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

/** A CreateCertificate client for istiod's TLS port, trusting `rootsPem`, addressed as istiod's service name. */
export function istiodCaClient(istiod: IstiodRun, rootsPem: string): IstioCertificateServiceClient {
  return new IstioCertificateServiceClient(
    `127.0.0.1:${istiod.secureGrpcPort}`,
    grpc.credentials.createSsl(Buffer.from(rootsPem)),
    { "grpc.ssl_target_name_override": "istiod.istio-system.svc" },
  );
}

/** What a workload's istio-proxy does: a fresh key, a CSR for its SPIFFE ID, and its token (audience istio-ca). */
export async function requestWorkloadCertificate(
  env: TestEnv,
  client: IstioCertificateServiceClient,
  workload: { namespace: string; serviceAccount: string; validitySeconds?: number },
): Promise<string[]> {
  const md = new grpc.Metadata();
  md.set(
    "authorization",
    `Bearer ${await env.requestToken(workload.namespace, workload.serviceAccount, "istio-ca", 600)}`,
  );
  const csr = await workloadCsr(`spiffe://cluster.local/ns/${workload.namespace}/sa/${workload.serviceAccount}`);
  return new Promise<string[]>((resolve, reject) =>
    client.createCertificate(
      { csr, validityDuration: workload.validitySeconds ?? 600 },
      md,
      { deadline: Date.now() + 10_000 },
      (err, res) => (err ? reject(err) : resolve(res.certChain)),
    ),
  );
}
