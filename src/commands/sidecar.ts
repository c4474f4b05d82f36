// `sidecar`: the long-running agent beside istiod, optionally steered by a watched RootTrustPolicy.
import { Agent } from "../agent.js";
import { ConfigError } from "../config/config.js";
import { AGENT_FLAGS, agentHelp, loadConfig, type FlagValues } from "../config/load.js";
import type { Command } from "../cli/command.js";
import { runService } from "../cli/service.js";
import { openKube } from "../cli/kube.js";
import { RootTrustPolicyController, type ApplyResult, type PolicyObject } from "../kube/policy-controller.js";
import { createLogger } from "../observability/logger.js";

export const command: Command = {
  name: "sidecar",
  flags: AGENT_FLAGS,
  help: () =>
    agentHelp(
      ["istiod-vault-agent sidecar --vault-addr=URL [--cacerts-dir=DIR] [flags]"],
      "Runs beside istiod: obtains the intermediate, serves it on the socket (and in cacerts), renews it.\n" +
        "SIGHUP rotates the intermediate now; SIGTERM/SIGINT stop gracefully (the Vault token is revoked).",
    ),
  run: runSidecar,
};

export async function runSidecar(flags: FlagValues): Promise<number> {
  const policy = await openPolicy(flags);
  const config = loadConfig(flags, process.env, { needVault: true, policyDoc: policy?.initial });
  const log = createLogger({ level: config.logLevel });
  const agent = new Agent(config, log);
  log.info(
    {
      vault: config.vault.address,
      caPath: config.intermediate.caPath,
      socket: config.serve.socketPath,
      cacerts: config.cacerts.dir ?? null,
      policy: policy ? `${policy.ref.namespace}/${policy.ref.name}` : null,
    },
    "starting sidecar",
  );
  // /healthz answers from the start; /readyz follows the intermediate the agent holds.
  return runService({
    log,
    name: "sidecar",
    http: config.serve.httpAddress ? { address: config.serve.httpAddress, ...agent.healthEndpoints() } : undefined,
    onHangup: () => {
      log.info("SIGHUP: rotating the intermediate now");
      agent.authority.rotate("signal").catch(() => undefined);
    },
    async start(signal) {
      await agent.run(signal);
      if (!policy) return;
      const controller = new RootTrustPolicyController(
        policy.kube,
        policy.ref,
        (doc) => applyPolicy(agent, flags, doc),
        () => {
          const b = agent.authority.current();
          return {
            ready: b !== undefined,
            intermediateSerial: b?.serialHex,
            intermediateNotAfter: b?.notAfter.toISOString(),
            generation: b?.generation,
            lastError: agent.authority.lastError,
          };
        },
        log,
      );
      controller.markApplied(policy.initial);
      agent.authority.subscribe(() => void controller.writeStatus());
      void controller.run(signal);
    },
    async close() {
      await agent.stop();
      await policy?.kube.close();
    },
  });
}

/** With --policy-name: the apiserver client and the policy as it is now (the agent starts from it). */
async function openPolicy(flags: FlagValues) {
  const name = typeof flags["policy-name"] === "string" ? flags["policy-name"] : undefined;
  if (!name) return undefined;
  const namespace =
    (typeof flags["policy-namespace"] === "string" ? flags["policy-namespace"] : undefined) ??
    process.env.POD_NAMESPACE ??
    "istio-system";
  const str = (v: unknown) => (typeof v === "string" ? v : undefined);
  const kube = await openKube({ kubeconfig: str(flags.kubeconfig), context: str(flags.context) });
  const ref = { namespace, name };
  const reader = new RootTrustPolicyController(
    kube,
    ref,
    () => Promise.resolve({ ok: true, message: "" }),
    () => ({ ready: false }),
    createLogger({ level: "silent" }),
  );
  return { kube, ref, initial: await reader.fetch() };
}

async function applyPolicy(agent: Agent, flags: FlagValues, doc: PolicyObject): Promise<ApplyResult> {
  let next;
  try {
    next = loadConfig(flags, process.env, { needVault: true, policyDoc: doc });
  } catch (err) {
    return { ok: false, problems: err instanceof ConfigError ? err.problems : [(err as Error).message] };
  }
  try {
    const changed = await agent.reconfigure(next);
    return {
      ok: true,
      message: changed.length ? `applied; changed: ${changed.join(", ")}` : "applied; nothing to change",
    };
  } catch (err) {
    return { ok: true, message: `applied, but the new intermediate failed for now: ${(err as Error).message}` };
  }
}
