// `init`: the init container. Obtains an intermediate, writes the cacerts files istiod needs at start, exits 0.
import { Agent } from "../agent.js";
import { loadConfig, type FlagValues } from "../config/load.js";
import { createLogger } from "../observability/logger.js";

export async function runInit(flags: FlagValues): Promise<number> {
  const config = loadConfig(flags);
  if (!config.cacerts.dir) {
    console.error("init: --cacerts-dir is required (istiod's /etc/cacerts volume)");
    return 2;
  }
  const log = createLogger({ level: config.logLevel });
  const agent = new Agent(config, log);
  const abort = new AbortController();
  process.once("SIGTERM", () => abort.abort(new Error("stopped by SIGTERM")));
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
    await agent.stop();
  }
}
