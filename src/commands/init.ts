// `init`: the init container. Obtains an intermediate, writes the cacerts files istiod needs at start, exits 0.
import { Agent } from "../agent.js";
import { AGENT_FLAGS, agentHelp, loadConfig, type FlagValues } from "../config/load.js";
import type { Command } from "../cli/command.js";
import { ConfigError } from "../config/config.js";
import { createLogger } from "../observability/logger.js";
import { openPolicy } from "../cli/policy.js";

export const command: Command = {
  name: "init",
  flags: AGENT_FLAGS,
  help: () =>
    agentHelp(
      [
        "istiod-vault-agent init --policy-name=NAME --cacerts-dir=DIR [flags]",
        "istiod-vault-agent init --vault-addr=URL --cacerts-dir=DIR [flags]",
      ],
      "Init container: obtains an intermediate, writes the cacerts files istiod needs at start, and exits 0.\n" +
        "With --policy-name the RootTrustPolicy is read once and is authoritative (flags may not set its fields).",
    ),
  run: runInit,
};

export async function runInit(flags: FlagValues): Promise<number> {
  // Read once: the sidecar that follows watches it; nothing here writes status.
  const policy = await openPolicy(flags);
  await policy?.kube.close();
  const config = loadConfig(flags, process.env, {
    needVault: true,
    policyDoc: policy?.initial,
    policyName: policy?.label,
  });
  if (!config.cacerts.dir)
    throw new ConfigError(["--cacerts-dir: missing; expected istiod's cacerts directory, e.g. /etc/cacerts"]);
  const log = createLogger({ level: config.logLevel });
  const agent = new Agent(config, log);
  const abort = new AbortController();
  process.once("SIGTERM", () => abort.abort(new Error("stopped by SIGTERM")));
  // The retry sleeps of a failing first attempt use unref'd timers; with nothing else open, Node would leave the event
  // loop and exit 0 without any files (istiod then starts without its CA). Hold the process until init is done.
  const keepAlive = setInterval(() => undefined, 60_000);
  try {
    await agent.sink?.preflight();
    const bundle = await agent.authority.start(abort.signal);
    await agent.writeCacerts(bundle);
    log.info(
      { dir: config.cacerts.dir, serial: bundle.serialHex, notAfter: bundle.notAfter.toISOString() },
      "init: cacerts ready for istiod",
    );
    return 0;
  } finally {
    clearInterval(keepAlive);
    await agent.stop();
  }
}
