// `sidecar`: the long-running agent beside istiod, optionally steered by a watched RootTrustPolicy.
import { Agent } from "../agent.js";
import { ConfigError } from "../config/config.js";
import { loadConfig, type FlagValues } from "../config/load.js";
import { KubeClient } from "../kube/client.js";
import { kubeClientFromKubeconfig } from "../kube/kubeconfig.js";
import { RootTrustPolicyController, type ApplyResult, type PolicyObject } from "../kube/policy-controller.js";
import { createLogger } from "../observability/logger.js";

export async function runSidecar(flags: FlagValues): Promise<number> {
  const log = createLogger({ level: typeof flags["log-level"] === "string" ? flags["log-level"] : "info" });
  const policy = await openPolicy(flags);
  const config = loadConfig(flags, process.env, { needVault: true, policyDoc: policy?.initial });
  const agent = new Agent(config, log);
  const abort = new AbortController();
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig }, "stopping");
    abort.abort(new Error(`stopped by ${sig}`));
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGHUP", () => {
    log.info("SIGHUP: rotating the intermediate now");
    agent.authority.rotate("signal").catch(() => undefined);
  });
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
  try {
    await agent.run(abort.signal);
    if (policy) {
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
      void controller.run(abort.signal);
    }
    await new Promise<void>((resolve) => abort.signal.addEventListener("abort", () => resolve(), { once: true }));
    return 0;
  } catch (err) {
    if (abort.signal.aborted) return 0;
    throw err;
  } finally {
    await agent.stop();
    await policy?.kube.close();
  }
}

/** With --policy-name: the apiserver client and the policy as it is now (the agent starts from it). */
async function openPolicy(flags: FlagValues) {
  const name = typeof flags["policy-name"] === "string" ? flags["policy-name"] : undefined;
  if (!name) return undefined;
  const namespace =
    (typeof flags["policy-namespace"] === "string" ? flags["policy-namespace"] : undefined) ??
    process.env.POD_NAMESPACE ??
    "istio-system";
  const kube =
    typeof flags.kubeconfig === "string" ? kubeClientFromKubeconfig(flags.kubeconfig) : await KubeClient.inCluster();
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
