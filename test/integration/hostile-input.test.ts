// Hostile input against a real agent (real OpenBao, kube-apiserver, TokenReview): ten thousand malformed, oversized,
// forged or unauthorised requests to SignCertificate (Unix socket) and CreateCertificate (TLS listener), each of which
// must be refused with one exact gRPC status; afterwards the agent must still be alive, still sign, and hold no more
// memory or file descriptors than before. Then 200 WatchSigningBundle streams are abandoned and the fds must settle.
//
// Replay: IVA_HOSTILE_SEED=<seed printed below>. IVA_HOSTILE_COUNT changes the number of requests (default 10000).
// IVA_HOSTILE_KNOWN=cat1,cat2 still sends and reports those categories but does not fail the run on them.
// IVA_HOSTILE_ONLY=12,345 sends only those cases of the seed's run (to replay the mismatches it printed).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import * as grpc from "@grpc/grpc-js";
import {
  CertificateAuthorityAgentClient,
  CertificateAuthorityAgentService,
  SignCertificateResponse,
  type SigningBundle,
} from "../../src/gen/istiodvaultagent/v1/agent.js";
import { IstioCertificateResponse, IstioCertificateServiceService } from "../../src/gen/istio/v1/auth/ca.js";
import { MAX_MESSAGE_BYTES } from "../../src/serve/agent-grpc.js";
import { startAgentTestEnv, type AgentTestEnv } from "../env/fixtures.js";
import { getBundle, nodeBinary, signCertificate, startAgent, type AgentRun } from "../env/agent-process.js";
import { freePort, repoRoot } from "../env/harness.js";
import { opensslVerify, workloadCsr } from "../env/crypto-check.js";
import {
  controlCsrs,
  encodeRequest,
  hostileCase,
  hostileSeed,
  makeHostileKeys,
  type HostileCase,
  type HostileContext,
  type Rpc,
} from "../env/hostile.js";

const TRUST_DOMAIN = "cluster.local";
const CALLER = { namespace: "default", serviceAccount: "sleep" };
const IDENTITY = `spiffe://${TRUST_DOMAIN}/ns/${CALLER.namespace}/sa/${CALLER.serviceAccount}`;
/** The leaf policy's CSR cap (DEFAULT_MAX_CSR_BYTES; the README's "CSR input is size-capped"). */
const MAX_CSR_BYTES = 8192;
const COUNT = Number(process.env.IVA_HOSTILE_COUNT ?? 10_000);
const WARMUP = Math.min(500, COUNT);
const CONCURRENCY = 32;
const KNOWN = new Set((process.env.IVA_HOSTILE_KNOWN ?? "").split(",").filter(Boolean));
const ONLY = process.env.IVA_HOSTILE_ONLY ? new Set(process.env.IVA_HOSTILE_ONLY.split(",").map(Number)) : undefined;
const RSS_SLACK_KB = 50 * 1024;
/** The pod's memory limit (manifests/overlays/istiod/agent-patch.yaml) and the V8 old-space cap that fits in it. */
const POD_MEMORY_LIMIT_KB = 256 * 1024;
const AGENT_OLD_SPACE_MB = 96;
const FD_SLACK = 10;

const PATHS: Record<Rpc, string> = {
  sign: CertificateAuthorityAgentService.signCertificate.path,
  create: IstioCertificateServiceService.createCertificate.path,
};

interface Outcome {
  code: grpc.status;
  details: string;
  response?: Buffer;
}

/** Sends a serialized request message as is (so hand-made protobuf reaches the server untouched). */
function callRaw(
  client: grpc.Client,
  rpc: Rpc,
  body: Uint8Array,
  authorization: string | undefined,
  timeoutMs = 20_000,
): Promise<Outcome> {
  const md = new grpc.Metadata();
  if (authorization !== undefined) md.set("authorization", authorization);
  return new Promise((resolve) =>
    client.makeUnaryRequest<Buffer, Buffer>(
      PATHS[rpc],
      (b) => b,
      (b) => b,
      Buffer.from(body),
      md,
      { deadline: Date.now() + timeoutMs },
      (err, res) =>
        resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: "", response: res }),
    ),
  );
}

interface ProcStats {
  rssKb: number;
  fds: number;
}

function procStats(pid: number): ProcStats {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return { rssKb: Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]), fds: readdirSync(`/proc/${pid}/fd`).length };
}

async function settle(pid: number, ok: (s: ProcStats) => boolean, timeoutMs: number): Promise<ProcStats> {
  const deadline = Date.now() + timeoutMs;
  await new Promise((r) => setTimeout(r, 1_000));
  let s = procStats(pid);
  while (!ok(s) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    s = procStats(pid);
  }
  return s;
}

const statusName = (code: number): string => grpc.status[code] ?? String(code);

interface Mismatch {
  c: HostileCase;
  got: Outcome;
}

describe("hostile input against a real agent", () => {
  const seed = hostileSeed();
  console.log(`# hostile-input seed ${seed} (replay with IVA_HOSTILE_SEED=${seed}); ${COUNT} requests`);
  let t: AgentTestEnv;
  let run: AgentRun;
  let pid: number;
  let ctx: HostileContext;
  let rootPem: string;
  const clients: Partial<Record<"sign" | "signGzip" | "create" | "createGzip", grpc.Client>> = {};
  const mismatches: Mismatch[] = [];
  const perCategory = new Map<string, { sign: number; create: number; refusedAsExpected: number }>();
  let baseline: ProcStats | undefined;
  /** Highest RSS seen while the hostile requests ran (sampled every 200 ms). */
  let peakRssKb = 0;

  before(async () => {
    t = await startAgentTestEnv();
    await t.env.createServiceAccount(CALLER.namespace, CALLER.serviceAccount);
    await t.env.createServiceAccount(CALLER.namespace, "doomed");
    const [valid, wrongAudience, deletedServiceAccount] = await Promise.all([
      t.env.requestToken(CALLER.namespace, CALLER.serviceAccount, "istio-ca", 3600),
      t.env.requestToken(CALLER.namespace, CALLER.serviceAccount, "vault", 3600),
      t.env.requestToken(CALLER.namespace, "doomed", "istio-ca", 3600),
    ]);
    await t.env.kube.admin.request("DELETE", `/api/v1/namespaces/${CALLER.namespace}/serviceaccounts/doomed`);
    const port = await freePort();
    // Cap the V8 heap as a memory-limited pod would need (the manifests give the agent limits.memory 256Mi): without
    // a cap V8 grows its heap far beyond what it uses under this load (heapUsed stays ~20-70 MiB while RSS climbs
    // toward 300 MiB), which would hide a real leak in the RSS check below. A leak now shows as growth or an OOM exit.
    const nodeOptions = process.env.NODE_OPTIONS;
    process.env.NODE_OPTIONS = `${nodeOptions ?? ""} --max-old-space-size=${AGENT_OLD_SPACE_MB}`.trim();
    try {
      run = await startAgent(t.env, "sidecar", [
        `--istio-ca-addr=127.0.0.1:${port}`,
        "--istio-ca-names=127.0.0.1,localhost",
        `--kubeconfig=${t.env.kube.kubeconfigPath}`,
        "--leaf-max-ttl=2h",
        // Every hostile request comes from 127.0.0.1 and each expects its own exact refusal, so the per-address
        // failed-authentication bucket (tested in socket-limits.test.ts) must not run dry here.
        "--istio-ca-auth-failure-burst=1000000",
      ]);
    } finally {
      if (nodeOptions === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = nodeOptions;
    }
    pid = run.process.pid!;
    rootPem = (await getBundle(run.client)).rootCertPem.join("");
    ctx = {
      seed,
      keys: await makeHostileKeys(),
      trustDomain: TRUST_DOMAIN,
      identity: IDENTITY,
      tokens: { valid, wrongAudience, deletedServiceAccount },
      maxCsrBytes: MAX_CSR_BYTES,
      maxMessageBytes: MAX_MESSAGE_BYTES,
    };
    const gzip = { "grpc.default_compression_algorithm": grpc.compressionAlgorithms.gzip };
    const tls = () => grpc.credentials.createSsl(Buffer.from(rootPem));
    // The serving certificate names localhost too; verifying that name keeps Node from warning about an IP as SNI.
    const name = { "grpc.ssl_target_name_override": "localhost", "grpc.default_authority": "localhost" };
    clients.sign = new grpc.Client(`unix://${run.socketPath}`, grpc.credentials.createInsecure());
    clients.signGzip = new grpc.Client(`unix://${run.socketPath}`, grpc.credentials.createInsecure(), gzip);
    clients.create = new grpc.Client(`127.0.0.1:${port}`, tls(), name);
    clients.createGzip = new grpc.Client(`127.0.0.1:${port}`, tls(), { ...name, ...gzip });
  });

  after(async () => {
    for (const c of Object.values(clients)) c.close();
    await run?.stop();
    if (run) rmSync(run.dir, { recursive: true, force: true });
    await t?.env.stop();
  });

  const clientFor = (c: HostileCase): grpc.Client =>
    (c.rpc === "sign" ? (c.gzip ? clients.signGzip : clients.sign) : c.gzip ? clients.createGzip : clients.create)!;

  async function runCases(from: number, to: number): Promise<void> {
    const indices = Array.from({ length: Math.max(0, to - from) }, (_, k) => from + k).filter(
      (i) => !ONLY || ONLY.has(i),
    );
    let next = 0;
    const worker = async () => {
      for (let k = next++; k < indices.length; k = next++) {
        const i = indices[k]!;
        let c: HostileCase;
        try {
          c = await hostileCase(ctx, i);
        } catch (err) {
          throw new Error(`the generator failed on case ${i} (IVA_HOSTILE_SEED=${seed})`, { cause: err });
        }
        let got: Outcome;
        try {
          got = await callRaw(clientFor(c), c.rpc, c.body, c.authorization);
        } catch (err) {
          got = { code: grpc.status.UNKNOWN, details: `client-side error: ${(err as Error).message}` };
        }
        const stat = perCategory.get(c.category) ?? { sign: 0, create: 0, refusedAsExpected: 0 };
        stat[c.rpc]++;
        if (got.code === c.expected) stat.refusedAsExpected++;
        else mismatches.push({ c, got });
        perCategory.set(c.category, stat);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  }

  it("signs the generator's well-formed control CSRs on both RPCs (so its refusals mean something)", async () => {
    for (const rpc of ["sign", "create"] as const) {
      for (const { note, csr } of await controlCsrs(ctx, rpc)) {
        const client = rpc === "sign" ? clients.sign! : clients.create!;
        const res = await callRaw(client, rpc, encodeRequest(rpc, csr, 3600), `Bearer ${ctx.tokens.valid}`);
        assert.equal(res.code, grpc.status.OK, `${rpc} control "${note}" was refused: ${res.details}`);
        const chain =
          rpc === "sign"
            ? SignCertificateResponse.decode(res.response!).certChainPem
            : IstioCertificateResponse.decode(res.response!).certChain;
        assert.equal(chain.length, 3, `${rpc} control "${note}": leaf, intermediate, root`);
      }
    }
  });

  it(`refuses ${COUNT} hostile requests, each with its exact status`, async (tc) => {
    const started = Date.now();
    await runCases(0, WARMUP);
    // The baseline is taken after a warm-up, so code loading and JIT do not count as growth.
    baseline = await settle(pid, () => true, 0);
    const sampler = setInterval(() => {
      try {
        peakRssKb = Math.max(peakRssKb, procStats(pid).rssKb);
      } catch {
        /* the agent is gone; the next test says so */
      }
    }, 200);
    try {
      await runCases(WARMUP, COUNT);
    } finally {
      clearInterval(sampler);
    }
    const seconds = (Date.now() - started) / 1000;

    const rows = [...perCategory.entries()].sort(([a], [b]) => a.localeCompare(b));
    const total = rows.reduce((s, [, v]) => s + v.sign + v.create, 0);
    const sign = rows.reduce((s, [, v]) => s + v.sign, 0);
    tc.diagnostic(
      `seed ${seed}: ${total} requests (${sign} SignCertificate, ${total - sign} CreateCertificate) in ${seconds.toFixed(1)} s`,
    );
    for (const [name, v] of rows) {
      tc.diagnostic(
        `  ${name.padEnd(26)} sign ${String(v.sign).padStart(5)}  create ${String(v.create).padStart(5)}  ` +
          `as expected ${v.refusedAsExpected}/${v.sign + v.create}${KNOWN.has(name) ? "  (known)" : ""}`,
      );
    }
    const describeMismatch = ({ c, got }: Mismatch) =>
      `IVA_HOSTILE_SEED=${seed} index ${c.index}: ${c.rpc} ${c.category} (${c.note}): expected ${statusName(c.expected)}, ` +
      `got ${statusName(got.code)}${got.details ? ` "${got.details.slice(0, 160)}"` : ""}`;
    for (const m of mismatches.slice(0, 20)) tc.diagnostic(`MISMATCH ${describeMismatch(m)}`);
    const wanted = ONLY ? [...ONLY].filter((i) => i < COUNT).length : COUNT;
    assert.ok(total >= wanted, `sent ${total} of ${wanted}`);
    const failing = mismatches.filter((m) => !KNOWN.has(m.c.category));
    assert.equal(
      failing.length,
      0,
      `${failing.length} of ${total} requests got another status than expected; first ones:\n` +
        failing.slice(0, 8).map(describeMismatch).join("\n"),
    );
  });

  it("is alive afterwards and still signs a valid CSR on both RPCs", async () => {
    assert.ok(run.process.alive, `the agent exited (${run.process.exitCode}):\n${run.process.logTail()}`);
    const chain = await signCertificate(run.client, await workloadCsr(IDENTITY), 3600);
    assert.equal(chain.length, 3);
    assert.match(opensslVerify(chain[0]!, chain[2]!, chain[1]), /OK/);
    const res = await callRaw(
      clients.create!,
      "create",
      encodeRequest("create", await workloadCsr(IDENTITY), 3600),
      `Bearer ${ctx.tokens.valid}`,
    );
    assert.equal(res.code, grpc.status.OK, res.details);
    const created = IstioCertificateResponse.decode(res.response!).certChain;
    assert.match(opensslVerify(created[0]!, created[2]!, created[1]), /OK/);
    assert.doesNotMatch(run.log(), /"level":50.*(leaf signing failed|CreateCertificate failed)/);
  });

  it("returns to its baseline RSS and open file descriptors", async (tc) => {
    assert.ok(baseline, "the hostile run recorded a baseline");
    const b = baseline;
    const now = await settle(pid, (s) => s.fds <= b.fds + FD_SLACK && s.rssKb <= b.rssKb + RSS_SLACK_KB, 15_000);
    tc.diagnostic(
      `RSS ${(b.rssKb / 1024).toFixed(1)} → ${(now.rssKb / 1024).toFixed(1)} MiB (peak ${(peakRssKb / 1024).toFixed(1)}), ` +
        `fds ${b.fds} → ${now.fds} (pid ${pid}, --max-old-space-size=${AGENT_OLD_SPACE_MB})`,
    );
    assert.ok(now.fds <= b.fds + FD_SLACK, `open fds ${b.fds} → ${now.fds}`);
    assert.ok(now.rssKb <= b.rssKb + RSS_SLACK_KB, `RSS ${b.rssKb} kB → ${now.rssKb} kB`);
    assert.ok(peakRssKb <= POD_MEMORY_LIMIT_KB, `peak RSS ${peakRssKb} kB is over the pod's 256Mi limit`);
  });

  it("lets go of 200 abandoned WatchSigningBundle streams (100 cancelled, 100 whose client process died)", async (tc) => {
    const before = procStats(pid);
    // Half in a child process that is then SIGKILLed: the connections vanish without a goodbye. (Closing a grpc-js
    // channel leaves its in-flight streams and their connection open, so it cannot play a client that went away.)
    const holder: ChildProcess = spawn(
      nodeBinary(),
      [join(repoRoot(), "dist/test/env/hostile.js"), "hold-watch-streams", run.socketPath, "100"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let holderErr = "";
    holder.stderr!.on("data", (d: Buffer) => (holderErr += d.toString()));
    const holderExited = new Promise<void>((resolve) => holder.once("exit", () => resolve()));
    const holderReady = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`the stream holder was not ready in 30 s: ${holderErr}`)),
        30_000,
      );
      createInterface({ input: holder.stdout! }).on("line", (line) => {
        if (line.trim() === "ready") {
          clearTimeout(timer);
          resolve();
        }
      });
      holder.once("exit", (code) => (clearTimeout(timer), reject(new Error(`holder exited ${code}: ${holderErr}`))));
    });

    // The other half here, each on its own connection, cancelled once it delivered the current bundle.
    const local = Array.from({ length: 100 }, () => {
      const client = new CertificateAuthorityAgentClient(
        `unix://${run.socketPath}`,
        grpc.credentials.createInsecure(),
        {
          "grpc.use_local_subchannel_pool": 1,
        },
      );
      const call = client.watchSigningBundle({});
      const first = new Promise<SigningBundle>((resolve, reject) => {
        call.once("data", resolve);
        call.once("error", reject);
      });
      call.on("error", () => undefined);
      return { client, call, first };
    });
    try {
      const bundles = await Promise.all(local.map((l) => l.first));
      assert.ok(bundles.every((b) => b.generation >= 1));
      await holderReady;
      const during = procStats(pid);
      tc.diagnostic(`fds: ${before.fds} before, ${during.fds} with 200 open streams`);
      assert.ok(
        during.fds >= before.fds + 150,
        `200 streams on their own connections: fds ${before.fds} → ${during.fds}`,
      );
    } finally {
      for (const l of local) {
        l.call.cancel();
        l.client.close();
      }
      if (holder.pid !== undefined && holder.exitCode === null) holder.kill("SIGKILL");
      await holderExited;
    }
    const after = await settle(pid, (s) => s.fds <= before.fds + FD_SLACK, 15_000);
    tc.diagnostic(`fds after abandoning them: ${after.fds}`);
    assert.ok(after.fds <= before.fds + FD_SLACK, `fds ${before.fds} → ${after.fds} after the streams were abandoned`);
    assert.ok(run.process.alive);
    assert.ok((await getBundle(run.client)).generation >= 1, "still serves the bundle");
  });
});
