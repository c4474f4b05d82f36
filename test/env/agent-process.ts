// Runs the built agent (dist/src/main.js) as a separate process, the way a pod runs it, and talks to its socket.
import { mkdtempSync, mkdirSync, writeFileSync, existsSync, readFileSync, rmSync } from "node:fs";
import { after, before } from "node:test";
import { join } from "node:path";
import { tmpdir } from "node:os";
import * as grpc from "@grpc/grpc-js";
import { CertificateAuthorityAgentClient, type SigningBundle } from "../../src/gen/istiodvaultagent/v1/agent.js";
import { ManagedProcess, waitUntil } from "./process.js";
import { freePort, repoRoot, type TestEnv, type TestEnvOptions } from "./harness.js";
import { IstioCertificateServiceClient } from "../../src/gen/istio/v1/auth/ca.js";
import { ISTIO_NS, ISTIOD_SA, startAgentTestEnv, type AgentTestEnv } from "./fixtures.js";
import type { VaultSetupOptions } from "../../src/vault/setup.js";

export interface AgentRun {
  process: ManagedProcess;
  dir: string;
  socketPath: string;
  cacertsDir: string;
  tokenPath: string;
  logPath: string;
  client: CertificateAuthorityAgentClient;
  stop(): Promise<void>;
  log(): string;
}

/** The node binary that runs npm scripts (Node 24 from the pinned npm package). */
export function nodeBinary(): string {
  const pinned = join(repoRoot(), "node_modules/.bin/node");
  return existsSync(pinned) ? pinned : process.execPath;
}

/** A projected-token stand-in: a TokenRequest token for istiod with the Vault audience, written to a file. */
export async function writeIstiodToken(env: TestEnv, path: string, audience = "vault"): Promise<void> {
  writeFileSync(path, await env.requestToken(ISTIO_NS, ISTIOD_SA, audience, 3600), { mode: 0o600 });
}

export function agentArgs(
  env: TestEnv,
  run: { socketPath: string; cacertsDir?: string; tokenPath: string; vaultFlags?: boolean },
  extra: string[] = [],
): string[] {
  return [
    ...(run.vaultFlags === false ? [] : [`--vault-addr=${env.vault.url}`, `--vault-cacert=${env.vault.caFile}`]),
    `--token-path=${run.tokenPath}`,
    `--socket=${run.socketPath}`,
    "--http-addr=",
    ...(run.cacertsDir ? [`--cacerts-dir=${run.cacertsDir}`] : []),
    "--backoff-initial=200ms",
    "--backoff-max=2s",
    "--log-level=debug",
    ...extra,
  ];
}

export interface StartAgentOptions {
  /** The run's directory (socket, token file, cacerts/, log); a new temporary one by default. */
  dir?: string;
  env?: NodeJS.ProcessEnv;
  /** false: no --cacerts-dir (the sidecar then serves only its socket). Default true. */
  cacerts?: boolean;
  /** false: return as soon as the sidecar process is spawned, before it holds a bundle. Default true. */
  waitForBundle?: boolean;
  /**
   * false: no --vault-addr/--vault-cacert (a RootTrustPolicy read with --policy-name names Vault, and the agent
   * refuses flags that shadow it). Default true.
   */
  vaultFlags?: boolean;
}

/** Starts `istiod-vault-agent <command>` against the env; for `sidecar`, waits until its socket answers. */
export async function startAgent(
  env: TestEnv,
  command: "sidecar" | "init",
  extra: string[] = [],
  opts: StartAgentOptions = {},
): Promise<AgentRun> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), "iva-agent-"));
  const socketPath = join(dir, "agent.sock");
  const cacertsDir = join(dir, "cacerts");
  const tokenPath = join(dir, "vault-token");
  const withCacerts = opts.cacerts ?? true;
  if (withCacerts && !existsSync(cacertsDir)) mkdirSync(cacertsDir, { mode: 0o750 });
  if (!existsSync(tokenPath)) await writeIstiodToken(env, tokenPath);
  const logPath = join(dir, `agent-${command}.log`);
  const run = { socketPath, tokenPath, vaultFlags: opts.vaultFlags, ...(withCacerts ? { cacertsDir } : {}) };
  const proc = new ManagedProcess(
    `agent-${command}`,
    nodeBinary(),
    [join(repoRoot(), "dist/src/main.js"), command, ...agentArgs(env, run, extra)],
    logPath,
    opts.env,
  );
  const client = new CertificateAuthorityAgentClient(`unix://${socketPath}`, grpc.credentials.createInsecure());
  if (command === "sidecar" && opts.waitForBundle !== false) {
    try {
      await waitUntil("agent socket serves a bundle", async () => (await getBundle(client)).generation > 0, {
        timeoutMs: 60_000,
        process: proc,
      });
    } catch (err) {
      // Nobody holds the run yet to stop it: a sidecar left running would keep the test process alive.
      client.close();
      await proc.stop();
      throw err;
    }
  }
  return {
    process: proc,
    dir,
    socketPath,
    cacertsDir,
    tokenPath,
    logPath,
    client,
    async stop() {
      client.close();
      await proc.stop();
    },
    log: () => (existsSync(logPath) ? readFileSync(logPath, "utf8") : ""),
  };
}

type UnaryCall<Req, Res> = (
  req: Req,
  md: grpc.Metadata,
  opts: Partial<grpc.CallOptions>,
  cb: (err: grpc.ServiceError | null, res: Res) => void,
) => grpc.ClientUnaryCall;

/** One unary call on the agent's socket with a deadline. */
function unary<Req, Res>(call: UnaryCall<Req, Res>, req: Req, timeoutMs: number): Promise<Res> {
  return new Promise((resolve, reject) =>
    call(req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) =>
      err ? reject(err) : resolve(res),
    ),
  );
}

export function getBundle(client: CertificateAuthorityAgentClient, timeoutMs = 5_000): Promise<SigningBundle> {
  return unary(client.getSigningBundle.bind(client), {}, timeoutMs);
}

export async function signCertificate(
  client: CertificateAuthorityAgentClient,
  csrPem: string,
  ttlSeconds = 0,
  timeoutMs = 5_000,
): Promise<string[]> {
  return (await unary(client.signCertificate.bind(client), { csrPem, ttlSeconds }, timeoutMs)).certChainPem;
}

export function rotate(client: CertificateAuthorityAgentClient, timeoutMs = 30_000): Promise<SigningBundle> {
  return unary(client.rotate.bind(client), {}, timeoutMs);
}

/** Collects bundles from WatchSigningBundle until `count` arrived or the timeout passes. */
export function watchBundles(
  client: CertificateAuthorityAgentClient,
  count: number,
  timeoutMs: number,
): Promise<SigningBundle[]> {
  return new Promise((resolve, reject) => {
    const got: SigningBundle[] = [];
    const call = client.watchSigningBundle({});
    const timer = setTimeout(() => {
      call.cancel();
      reject(new Error(`WatchSigningBundle delivered ${got.length} of ${count} bundles in ${timeoutMs} ms`));
    }, timeoutMs);
    call.on("data", (b: SigningBundle) => {
      got.push(b);
      if (got.length >= count) {
        clearTimeout(timer);
        call.cancel();
        resolve(got);
      }
    });
    call.on("error", (err: grpc.ServiceError) => {
      if (err.code === grpc.status.CANCELLED) return;
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** The frame most agent test files share: one environment, and the agent runs started in it. */
export interface AgentSuite {
  /** The environment (available once the suite's before() hook has run). */
  readonly t: AgentTestEnv;
  readonly env: TestEnv;
  /** Every run tracked so far, in start order. */
  readonly runs: readonly AgentRun[];
  /** Registers a run to be stopped and removed when the suite ends. */
  readonly track: (run: AgentRun) => AgentRun;
  /** Registers a clean-up to run when the suite ends, before the runs stop (e.g. closing a client). */
  readonly defer: (cleanup: () => void | Promise<void>) => void;
  /** startAgent() in the suite's environment, tracked. */
  readonly start: (command: "sidecar" | "init", extra?: string[], opts?: StartAgentOptions) => Promise<AgentRun>;
}

/**
 * Call inside describe(): registers a before() hook that starts a fresh AgentTestEnv and an after() hook that stops
 * every tracked run, removes its directory and stops the servers.
 */
export function agentSuite(
  overrides: Partial<Omit<VaultSetupOptions, "kubernetes">> = {},
  envOpts: TestEnvOptions = {},
): AgentSuite {
  let t: AgentTestEnv | undefined;
  const runs: AgentRun[] = [];
  const cleanups: (() => void | Promise<void>)[] = [];
  before(async () => {
    t = await startAgentTestEnv(overrides, envOpts);
  });
  after(async () => {
    for (const c of cleanups) await c();
    for (const r of runs) await r.stop();
    if (!process.env.IVA_KEEP_ENV) for (const r of runs) rmSync(r.dir, { recursive: true, force: true });
    await t?.env.stop();
  });
  const suite: AgentSuite = {
    get t() {
      if (!t) throw new Error("the suite's environment is not started yet (use it inside before/it)");
      return t;
    },
    get env() {
      return suite.t.env;
    },
    runs,
    track: (run) => (runs.push(run), run),
    defer: (cleanup) => void cleanups.push(cleanup),
    start: async (command, extra = [], opts = {}) => suite.track(await startAgent(suite.env, command, extra, opts)),
  };
  return suite;
}

/** The agent serving as a drop-in Istio CA (CreateCertificate over TLS, TokenReview by the test apiserver). */
export interface IstioCaAgent {
  run: AgentRun;
  port: number;
  /** The roots the agent serves (its CreateCertificate TLS certificate chains to them). */
  rootPem: string;
  client: IstioCertificateServiceClient;
  /**
   * CreateCertificate with `token` as the bearer (none: no authorization header); `extra.metadata` is the request's
   * metadata Struct (e.g. ImpersonatedIdentity), `extra.headers` more gRPC metadata (e.g. clusterid).
   */
  create(
    csr: string,
    token?: string,
    validitySeconds?: number,
    extra?: { metadata?: Record<string, unknown>; headers?: Record<string, string> },
  ): Promise<string[]>;
}

/** Starts a sidecar with the Istio CA server on a free port (tracked by the suite) and a client for it. */
export async function startIstioCaAgent(
  suite: AgentSuite,
  extra: string[] = [],
  opts: StartAgentOptions = {},
): Promise<IstioCaAgent> {
  const port = await freePort();
  const args = [
    `--istio-ca-addr=127.0.0.1:${port}`,
    "--istio-ca-names=127.0.0.1,localhost",
    // The admin's kubeconfig unless the test passes its own (e.g. one with only the RBAC the manifests grant).
    ...(extra.some((a) => a.startsWith("--kubeconfig=")) ? [] : [`--kubeconfig=${suite.env.kube.kubeconfigPath}`]),
  ];
  const run = await suite.start("sidecar", [...args, ...extra], opts);
  const rootPem = (await getBundle(run.client)).rootCertPem.join("");
  const { client, create } = istioCaClient(`127.0.0.1:${port}`, rootPem);
  suite.defer(() => client.close());
  return { run, port, rootPem, client, create };
}

/**
 * A client of an Istio CA listener at `address` (host:port) verified against `rootPem`, optionally under another
 * server name than the host (a pod IP reached without DNS), and its CreateCertificate call (IstioCaAgent.create).
 */
export function istioCaClient(
  address: string,
  rootPem: string,
  serverName?: string,
): Pick<IstioCaAgent, "client" | "create"> {
  const client = new IstioCertificateServiceClient(
    address,
    grpc.credentials.createSsl(Buffer.from(rootPem)),
    serverName ? { "grpc.ssl_target_name_override": serverName } : {},
  );
  return {
    client,
    create(csr, token, validitySeconds = 3600, extra = {}) {
      const md = new grpc.Metadata();
      if (token) md.set("authorization", `Bearer ${token}`);
      for (const [k, v] of Object.entries(extra.headers ?? {})) md.set(k, v);
      return new Promise<string[]>((resolve, reject) =>
        client.createCertificate(
          { csr, validityDuration: validitySeconds, metadata: extra.metadata },
          md,
          { deadline: Date.now() + 10_000 },
          (err, res) => (err ? reject(err) : resolve(res.certChain)),
        ),
      );
    },
  };
}
