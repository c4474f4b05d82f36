// `sidecar`: the long-running agent beside istiod, optionally steered by a watched RootTrustPolicy.
import { hostname } from "node:os";
import { Agent } from "../agent.js";
import { ConfigError } from "../config/config.js";
import { AGENT_FLAGS, agentHelp, loadConfig, type FlagValues } from "../config/load.js";
import { ShadowedByFlagError } from "../config/shadowing.js";
import type { Command } from "../cli/command.js";
import { runService } from "../cli/service.js";
import { openPolicy, type OpenedPolicy } from "../cli/policy.js";
import { durationMs, Expected } from "../cli/validate.js";
import { KubeLeaseStore, LeaderElector } from "../kube/leader-elector.js";
import { RootTrustPolicyController, type ApplyResult, type PolicyObject } from "../kube/policy-controller.js";
import type { KubeClient } from "../kube/client.js";
import { openKube } from "../cli/kube.js";
import { distributeRoots } from "../serve/mesh-ca-services.js";
import type { Config } from "../config/config.js";
import type { Logger } from "pino";
import { createLogger } from "../observability/logger.js";
import { TrustAnchorsReloader } from "../config/trust-anchors-reload.js";
import { servedRoots, signingRootOf } from "../authority/bundle.js";

export const command: Command = {
  name: "sidecar",
  flags: AGENT_FLAGS,
  help: () =>
    agentHelp(
      [
        "istiod-vault-agent sidecar --policy-name=NAME [--cacerts-dir=DIR] [flags]",
        "istiod-vault-agent sidecar --vault-addr=URL [--cacerts-dir=DIR] [flags]",
      ],
      "Runs beside istiod: obtains the intermediate, serves it on the socket (and in cacerts), renews it.\n" +
        "With --policy-name the RootTrustPolicy is authoritative (flags may not set its fields), reloaded live, and\n" +
        "one replica, elected with a Lease, writes its status.\n" +
        "SIGHUP re-reads --trust-anchors-file, then rotates the intermediate now; SIGTERM/SIGINT stop gracefully\n" +
        "(the Vault token is revoked). The trust-anchors file is also watched: a change serves its roots at once.",
    ),
  run: runSidecar,
};

export async function runSidecar(flags: FlagValues): Promise<number> {
  const leaseMs = leaseDuration(flags);
  const policy = await openPolicy(flags);
  let config;
  try {
    config = loadConfig(flags, process.env, { needVault: true, policyDoc: policy?.initial, policyName: policy?.label });
  } catch (err) {
    await policy?.kube.close();
    throw err;
  }
  const log = createLogger({ level: config.logLevel });
  const agent = new Agent(config, log);
  const identity = config.pod.name ?? hostname();
  log.info(
    {
      vault: config.vault.address,
      caPath: config.intermediate.caPath,
      socket: config.serve.socketPath,
      cacerts: config.cacerts.dir ?? null,
      policy: policy?.label ?? null,
      identity,
    },
    "starting sidecar",
  );
  let controller: RootTrustPolicyController | undefined;
  let election: Promise<void> | undefined;
  let roots: Promise<void> | undefined;
  let rootsKube: KubeClient | undefined;
  const anchors = trustAnchorsReloader(agent, config, log);
  // Its own signal: close() also runs when start() failed without a stop signal.
  const stopElection = new AbortController();
  // /healthz answers from the start; /readyz follows the intermediate the agent holds.
  return runService({
    log,
    name: "sidecar",
    http: config.serve.httpAddress ? { address: config.serve.httpAddress, ...agent.healthEndpoints() } : undefined,
    onHangup: () => {
      // The new intermediate then carries the file's roots too; a bad file keeps the last good roots (logged).
      void (anchors?.reload("signal") ?? Promise.resolve()).then(() => {
        log.info("SIGHUP: rotating the intermediate now");
        agent.authority.rotate("signal").catch(() => undefined);
      });
    },
    async start(signal) {
      anchors?.start();
      if (policy) {
        // Wired before the first intermediate, so a start that keeps failing shows in the status (NoIntermediate)
        // and as Events; the watch for policy edits starts once the agent runs.
        controller = watchPolicy(agent, flags, policy, identity, log);
        controller.markApplied(policy.initial);
        const c = controller;
        agent.authority.subscribe((b) => void c.rotated(b));
        agent.authority.onFailure((f) => void c.rotationFailed(f.message));
        const lease = new LeaderElector({
          store: new KubeLeaseStore(policy.kube, policy.ref.namespace, `istiod-vault-agent-${policy.ref.name}`),
          identity,
          leaseDurationMs: leaseMs,
          onChange: (leading) => c.setWriter(leading),
          log,
        });
        signal.addEventListener("abort", () => stopElection.abort(), { once: true });
        election = lease.run(stopElection.signal);
      }
      if (config.rootConfigMaps.enabled) {
        rootsKube = policy?.kube ?? (await openKube(config.kube));
        signal.addEventListener("abort", () => stopElection.abort(), { once: true });
        roots = distributeRoots(
          { authority: agent.authority, metrics: agent.metrics, config, kube: rootsKube, identity, leaseMs, log },
          stopElection.signal,
        );
      }
      await agent.run(signal);
      if (controller) void controller.run(signal);
    },
    async close() {
      // The Lease is released before the apiserver client closes, so another replica takes over at once.
      stopElection.abort();
      anchors?.stop();
      await election;
      await roots;
      await agent.stop();
      await policy?.kube.close();
      if (rootsKube !== policy?.kube) await rootsKube?.close();
    },
  });
}

/**
 * --trust-anchors-file, reloaded live: its roots go through Agent.apply (the path a RootTrustPolicy edit takes), which
 * publishes them with the held intermediate to the socket, cacerts root-cert.pem and the root ConfigMaps.
 */
function trustAnchorsReloader(agent: Agent, config: Config, log: Logger): TrustAnchorsReloader | undefined {
  const file = config.trustAnchors.file;
  if (!file) return undefined;
  return new TrustAnchorsReloader({
    file,
    inForce: () => agent.config.trustAnchors.pem,
    // istiod reads them from cacerts: refuse up front what the sink would refuse, so no consumer serves other roots.
    refusal: async (pem) => {
      const held = agent.authority.current();
      if (!agent.sink || !held) return undefined;
      return agent.sink.rootChangeProblem(servedRoots(signingRootOf(held), pem).join(""));
    },
    apply: (pem) => agent.apply((c) => ({ ...c, trustAnchors: { file, pem } })),
    log: log.child({ component: "trust-anchors" }),
    count: (labels) => agent.metrics.trustAnchorsReloads.inc(labels),
  });
}

function leaseDuration(flags: FlagValues): number {
  const raw = flags["status-lease-duration"];
  if (typeof raw !== "string" || raw === "") return 15_000;
  try {
    return durationMs("15s", 3)(raw);
  } catch (err) {
    if (!(err instanceof Expected)) throw err;
    throw new ConfigError([`--status-lease-duration: "${raw}" is invalid; expected ${err.message}`]);
  }
}

function watchPolicy(
  agent: Agent,
  flags: FlagValues,
  policy: OpenedPolicy,
  identity: string,
  log: ReturnType<typeof createLogger>,
): RootTrustPolicyController {
  return new RootTrustPolicyController({
    kube: policy.kube,
    ref: policy.ref,
    apply: (doc) => applyPolicy(agent, flags, policy.label, doc),
    snapshot: () => {
      const b = agent.authority.current();
      return {
        ready: b !== undefined,
        intermediateSerial: b?.serialHex,
        intermediateNotAfter: b?.notAfter.toISOString(),
        generation: b?.generation,
        lastError: agent.authority.lastError,
      };
    },
    identity,
    log,
  });
}

async function applyPolicy(agent: Agent, flags: FlagValues, label: string, doc: PolicyObject): Promise<ApplyResult> {
  let next;
  try {
    next = loadConfig(flags, process.env, { needVault: true, policyDoc: doc, policyName: label });
  } catch (err) {
    if (err instanceof ShadowedByFlagError) return { ok: false, reason: "ShadowedByFlag", problems: err.problems };
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
