// `npm run dev`: builds the real servers (cached), starts etcd + kube-apiserver + OpenBao on loopback, configures
// Vault with setupVault(), runs the agent's init and sidecar against them, and shows what the agent obtained and
// where it serves it. Ctrl-C stops everything. Pass --exit to stop after showing the result (used by tests).
import { join } from "node:path";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { startAgentTestEnv } from "./fixtures.js";
import { getBundle, startAgent } from "./agent-process.js";
import { serverBinaries, serverVersions } from "./harness.js";
import { describeBundle } from "../../src/commands/status.js";

async function main(): Promise<void> {
  const exitAfter = process.argv.includes("--exit");
  console.log("Starting etcd, kube-apiserver and OpenBao on 127.0.0.1 (first run builds them from Go modules) ...");
  console.log(serverVersions(serverBinaries(["etcd", "kube-apiserver", "openbao"])));
  const t = await startAgentTestEnv();
  console.log(`\nkube-apiserver: ${t.env.kube.url}  (kubeconfig: ${t.env.kube.kubeconfigPath})`);
  console.log(`OpenBao:        ${t.env.vault.url}  (CA: ${join(t.env.dir, "openbao-tls", "vault-ca.pem")})`);
  console.log("Vault setup:\n  - " + t.changes.join("\n  - "));

  const init = await startAgent(t.env, "init", [], {});
  const code = await init.process.waitExit();
  if (code !== 0) throw new Error(`init exited ${code}:\n${init.log().slice(-3000)}`);
  console.log(
    `\ninit wrote istiod's cacerts into ${init.cacertsDir}: ${readdirSync(init.cacertsDir)
      .filter((n) => !n.startsWith(".."))
      .join(", ")}`,
  );

  const sidecar = await startAgent(t.env, "sidecar", [], { dir: init.dir });
  const bundle = await getBundle(sidecar.client);
  console.log(`\nsidecar is serving (log: ${sidecar.logPath}):\n${describeBundle(bundle, sidecar.socketPath)}`);
  console.log(
    `\nroot-cert.pem in cacerts is Vault's root: ${readFileSync(join(init.cacertsDir, "root-cert.pem"), "utf8").trim() === bundle.rootCertPem.join("").trim()}`,
  );
  console.log(`Try: node dist/src/main.js status --socket=${sidecar.socketPath}`);

  const shutdown = async () => {
    await sidecar.stop();
    await t.env.stop();
    rmSync(init.dir, { recursive: true, force: true });
  };
  if (exitAfter) return shutdown();
  console.log("\nRunning. Press Ctrl-C to stop the agent and the servers.");
  // SIGTERM too (a `kill`, or npm passing on its own): without a handler Node would exit at once and leave the
  // servers running.
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  await shutdown();
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
