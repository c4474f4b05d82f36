// Upstream istiod (pilot-discovery, built from istio.io/istio by build.sh) run out of cluster against the test
// apiserver, every listener on a free 127.0.0.1 port, reading its plugged-in CA from `rootCaDir`.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { IstioCertificateServiceClient } from "../../src/gen/istio/v1/auth/ca.js";
import { getBundle, startAgent, type AgentRun } from "./agent-process.js";
import { publicKeyId, workloadCsr } from "./crypto-check.js";
import type { AgentTestEnv } from "./fixtures.js";
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
  /**
   * istiod's working directory: its well-known paths are relative (./var/run/secrets/istiod/tls, as `/` in Istio's
   * image), so a test puts the agent's --istiod-tls-dir at <cwd>/var/run/secrets/istiod/tls.
   */
  cwd?: string,
  /** More pilot-discovery flags (e.g. --tlsCertFile, as the mesh-CA Helm values pass them). */
  extraArgs: string[] = [],
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
      ...extraArgs,
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
    cwd,
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

/**
 * The pod's order with upstream istiod: the agent's init container fills `<dir>/cacerts`, then istiod starts on it.
 * The sidecar that keeps the directory current is started by the test (startSidecar), with the same directory.
 */
export interface IstiodOnAgentCacerts {
  dir: string;
  istiod: IstiodRun;
  client: IstioCertificateServiceClient;
  sidecar: AgentRun | undefined;
  /** A file of the cacerts directory istiod reads. */
  cacerts(name: string): string;
  /** Stops the running sidecar (if any) and starts one with `args`, on the same cacerts directory. */
  startSidecar(args: string[]): Promise<AgentRun>;
  /** CreateCertificate for default/sleep, as the workload's istio-proxy asks. */
  createCertificate(validitySeconds?: number): Promise<string[]>;
  /** Polls istiod until it signs with the intermediate the sidecar serves now; returns that chain. */
  leafFromCurrentIntermediate(validitySeconds?: number): Promise<string[]>;
  stop(): Promise<void>;
}

export async function startIstiodOnAgentCacerts(
  t: AgentTestEnv,
  opts: {
    /** Flags of the init run (and of the sidecar, unless startSidecar gets others). */
    agentArgs: string[];
    istiodEnv?: Record<string, string>;
    /** The roots the CreateCertificate client trusts; root-cert.pem by default. */
    clientRootsPem?: (dir: string) => string;
    /** Writes files the agent flags refer to, before init runs. */
    prepare?: (dir: string) => void;
  },
): Promise<IstiodOnAgentCacerts> {
  await t.env.createServiceAccount("default", "sleep");
  const dir = mkdtempSync(join(tmpdir(), "iva-istiod-"));
  opts.prepare?.(dir);
  const cacerts = (name: string) => readFileSync(join(dir, "cacerts", name), "utf8");
  const init = await startAgent(t.env, "init", opts.agentArgs, { dir });
  assert.equal(await init.process.waitExit(), 0, init.log().slice(-2000));
  const istiod = await startIstiod(t.env, join(dir, "cacerts"), opts.istiodEnv);
  const client = istiodCaClient(istiod, opts.clientRootsPem?.(dir) ?? cacerts("root-cert.pem"));
  const stack: IstiodOnAgentCacerts = {
    dir,
    istiod,
    client,
    sidecar: undefined,
    cacerts,
    async startSidecar(args) {
      await stack.sidecar?.stop();
      stack.sidecar = await startAgent(t.env, "sidecar", args, { dir });
      return stack.sidecar;
    },
    createCertificate: (validitySeconds) =>
      requestWorkloadCertificate(t.env, client, {
        namespace: "default",
        serviceAccount: "sleep",
        ...(validitySeconds ? { validitySeconds } : {}),
      }),
    async leafFromCurrentIntermediate(validitySeconds) {
      const sidecar = stack.sidecar;
      if (!sidecar) throw new Error("leafFromCurrentIntermediate needs a running sidecar (startSidecar)");
      let chain: string[] = [];
      await waitUntil(
        "istiod signs with the agent's current intermediate",
        async () => {
          const current = (await getBundle(sidecar.client)).signingCertPem;
          chain = await stack.createCertificate(validitySeconds);
          return publicKeyId(chain[1]!) === publicKeyId(current);
        },
        { timeoutMs: 30_000, intervalMs: 300 },
      );
      return chain;
    },
    async stop() {
      client.close();
      await stack.sidecar?.stop();
      await istiod.process.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return stack;
}
