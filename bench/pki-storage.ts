// Vault-side cost of agent restarts: every start (and every renewal) signs an intermediate, and sign-intermediate
// always stores the certificate in the signing mount (pki/certs/<serial>). This runs the agent's `init` (one login,
// one sign, cacerts written, exit: what a pod start costs Vault) K times against an OpenBao with file storage, and
// reports the pki/certs entries and the storage directory's size at checkpoints; then how tidy bounds it: with
// setup-vault's auto-tidy settings run now (pki/tidy with the same fields), first with a safety buffer the expired
// intermediates are still inside (nothing removed), then with one they are past (removed; the valid ones stay).
// Run by hand, after `npm run build`:
//   node dist/bench/pki-storage.js [--restarts=200] [--every=50] [--ttl=30s] [--concurrency=4]
import { mkdtempSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { startAgent } from "../test/env/agent-process.js";
import { startAgentTestEnv } from "../test/env/fixtures.js";
import { waitUntil } from "../test/env/process.js";
import { autoTidyConfig, setupVault } from "../src/vault/setup.js";

function dirStats(dir: string): { bytes: number; files: number } {
  let bytes = 0;
  let files = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      const s = dirStats(p);
      bytes += s.bytes;
      files += s.files;
    } else if (e.isFile()) {
      bytes += statSync(p).size;
      files++;
    }
  }
  return { bytes, files };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      restarts: { type: "string", default: "200" },
      every: { type: "string", default: "50" },
      ttl: { type: "string", default: "30s" },
      concurrency: { type: "string", default: "4" },
    },
  });
  const restarts = Number(values.restarts);
  const every = Number(values.every);
  const concurrency = Number(values.concurrency);
  const t = await startAgentTestEnv({}, { vault: "persistent" });
  const { env } = t;
  const dataDir = join(env.dir, "openbao-data");
  const root = env.vault.rootToken;
  const load = () =>
    loadavg()
      .map((x) => x.toFixed(2))
      .join(" ");
  const certs = async () =>
    (await env.vault.client.read<{ keys: string[] }>("pki/certs?list=true", root)).data.keys.length;
  const row = async (label: string) => {
    const s = dirStats(dataDir);
    console.log(
      `${label} | ${await certs()} | ${(s.bytes / 1024).toFixed(0)} KiB in ${s.files} files | load ${load()}`,
    );
  };
  const work = mkdtempSync(join(tmpdir(), "iva-pki-storage-"));
  try {
    console.log(`OpenBao with file storage; agent init --ttl=${values.ttl}; ${new Date().toISOString()}`);
    console.log("agent starts | pki/certs entries | storage (openbao-data) | load");
    await row("0");
    let done = 0;
    const oneStart = async (i: number) => {
      // A fresh directory each time: a new pod's empty cacerts volume, so every start signs a new intermediate.
      const dir = join(work, `start-${i}`);
      mkdirSync(dir);
      const run = await startAgent(env, "init", [`--ttl=${values.ttl}`, "--log-level=warn"], { dir });
      const code = await run.process.waitExit();
      await run.stop();
      if (code !== 0) throw new Error(`init ${i} exited ${code}:\n${run.log().slice(-2000)}`);
      rmSync(dir, { recursive: true, force: true });
    };
    while (done < restarts) {
      const batch = Math.min(every, restarts - done);
      for (let i = 0; i < batch; i += concurrency) {
        const n = Math.min(concurrency, batch - i);
        await Promise.all(Array.from({ length: n }, (_, j) => oneStart(done + i + j)));
      }
      done += batch;
      await row(String(done));
    }

    // A few intermediates still valid at tidy time (signed just now with a long TTL), beside the expired ones.
    for (let i = 0; i < 3; i++) await oneStart(restarts + i).catch(() => undefined);
    const validStart = async (i: number) => {
      const dir = join(work, `valid-${i}`);
      mkdirSync(dir);
      const run = await startAgent(env, "init", ["--ttl=24h", "--log-level=warn"], { dir });
      await run.process.waitExit();
      await run.stop();
    };
    for (let i = 0; i < 3; i++) await validStart(i);
    await row(`${restarts + 6} (+3 short, +3 with --ttl=24h)`);
    const ttlSeconds = Number(/^(\d+)s$/.exec(values.ttl)?.[1] ?? 30);
    await sleep((ttlSeconds + 2) * 1000);

    const tidy = async (safetyBufferSeconds: number) => {
      // setup-vault --auto-tidy's settings, run now rather than at the next interval.
      const changes = await setupVault(env.vault.client, root, {
        ...t.setup,
        autoTidy: { intervalSeconds: 12 * 3600, safetyBufferSeconds },
      });
      const cfg = autoTidyConfig({ intervalSeconds: 12 * 3600, safetyBufferSeconds });
      const started = Date.now();
      await env.vault.client.write("pki/tidy", root, {
        tidy_cert_store: cfg.tidy_cert_store,
        tidy_revoked_certs: cfg.tidy_revoked_certs,
        safety_buffer: cfg.safety_buffer,
      });
      await waitUntil(
        "tidy finished",
        async () => (await env.vault.client.read<{ state: string }>("pki/tidy-status", root)).data.state === "Finished",
        { timeoutMs: 120_000, intervalMs: 200 },
      );
      const status = (await env.vault.client.read<{ cert_store_deleted_count: number }>("pki/tidy-status", root)).data;
      return { changes, deleted: status.cert_store_deleted_count, ms: Date.now() - started };
    };
    const kept = await tidy(72 * 3600);
    await row(`after tidy, safety_buffer=72h (${kept.deleted} removed, ${kept.ms} ms)`);
    const removed = await tidy(1);
    await row(`after tidy, safety_buffer=1s (${removed.deleted} removed, ${removed.ms} ms)`);
  } finally {
    await env.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
