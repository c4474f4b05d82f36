// Runs the built agent (dist/src/main.js) as a separate process, the way a pod runs it, and talks to its socket.
import { mkdtempSync, mkdirSync, writeFileSync, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import * as grpc from "@grpc/grpc-js";
import { CertificateAuthorityAgentClient, type SigningBundle } from "../../src/gen/istiodvaultagent/v1/agent.js";
import { ManagedProcess, waitUntil } from "./process.js";
import { repoRoot, type TestEnv } from "./harness.js";
import { ISTIO_NS, ISTIOD_SA } from "./fixtures.js";

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
  run: { socketPath: string; cacertsDir?: string; tokenPath: string },
  extra: string[] = [],
): string[] {
  return [
    `--vault-addr=${env.vault.url}`,
    `--vault-cacert=${env.vault.caFile}`,
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
  const run = { socketPath, tokenPath, ...(withCacerts ? { cacertsDir } : {}) };
  const proc = new ManagedProcess(
    `agent-${command}`,
    nodeBinary(),
    [join(repoRoot(), "dist/src/main.js"), command, ...agentArgs(env, run, extra)],
    logPath,
    opts.env,
  );
  const client = new CertificateAuthorityAgentClient(`unix://${socketPath}`, grpc.credentials.createInsecure());
  if (command === "sidecar" && opts.waitForBundle !== false) {
    await waitUntil("agent socket serves a bundle", async () => (await getBundle(client)).generation > 0, {
      timeoutMs: 60_000,
      process: proc,
    });
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
