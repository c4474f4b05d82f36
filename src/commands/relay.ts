// `istiod-vault-agent relay`: issues and rotates the Gloo relay mTLS certificates from Vault into Kubernetes Secrets
// (--role server|agent), or, with --bootstrap, obtains the agent's certificate from the management relay's issuer.
// Exit codes: 0 done (or stopped by a signal), 1 a Secret could not be put in place (--once) or a start failed,
// 2 a configuration error.
import type { Command } from "../cli/command.js";
import { runOnce, runService } from "../cli/service.js";
import { ConfigError } from "../config/config.js";
import type { KubeClient } from "../kube/client.js";
import { openKube } from "../cli/kube.js";
import { createLogger } from "../observability/logger.js";
import { AgentMetrics, type MetricGroup } from "../observability/metrics.js";
import { VaultClient } from "../vault/client.js";
import { VaultHealthProbe } from "../vault/health-probe.js";
import { createAuthSession } from "../vault/auth-methods.js";
import { RELAY_FLAGS, parseRelayArgs, relayHelp, type RelayConfig } from "../relay/config.js";
import { RelayMetrics } from "../relay/metrics.js";
import { relayPolicy } from "../relay/policy.js";
import { scrub } from "../observability/logger.js";
import { Relay } from "../relay/relay.js";
import { SecretStore } from "../kube/secret-store.js";
import { BootstrapAgent } from "../relay/bootstrap/agent.js";
import { startIssuer, type RunningIssuer } from "../relay/bootstrap/command.js";
import { IssuerClient } from "../relay/bootstrap/issuer-client.js";
import { BootstrapAgentMetrics } from "../relay/bootstrap/metrics.js";
import { RelayVault } from "../relay/vault.js";

export const command: Command = {
  name: "relay",
  flags: RELAY_FLAGS,
  help: relayHelp,
  positionals: true,
  async run(_values, positionals, argv) {
    if (positionals[0] === "register-cluster") {
      if (argv[0] !== "register-cluster")
        throw new ConfigError(["register-cluster: expected first, e.g. relay register-cluster cluster1 [flags]"]);
      return (await import("../relay/register-cluster.js")).runRegisterCluster(argv.slice(1));
    }
    if (positionals.length)
      throw new ConfigError([`${positionals[0]}: unexpected argument; expected flags, or register-cluster NAME`]);
    const parsed = parseRelayArgs(argv, process.env);
    if (parsed.kind === "help") return 0;
    if (parsed.kind === "print-policy") {
      const c = parsed.config;
      process.stdout.write(
        relayPolicy({
          pkiMount: c.pkiMount,
          serverRole: c.serverRole,
          clientRole: c.clientRole,
          // The issuer's in-memory signing intermediate needs <pki>/root/sign-intermediate as well.
          signingIntermediate: c.signingIntermediate || c.issuer.enabled,
          kvPath: c.kvPath,
          sharedToken: c.sharedToken,
          clusterTokensPath: c.clusterTokensPath,
          roles: parsed.roles,
        }),
      );
      return 0;
    }
    const cfg = parsed.config;
    const kube = await openKube({ kubeconfig: cfg.kubeconfig, context: cfg.context });
    return cfg.bootstrap.address ? runBootstrapAgent(cfg, kube) : runRelay(cfg, kube);
  },
};

/**
 * The registry of a relay mode, with only that mode's series: its Vault calls and the issuer's signing intermediate
 * when it runs one; in bootstrap mode (no Vault) none of those. The relay's own series register beside them.
 */
export function relayAgentMetrics(cfg: RelayConfig): AgentMetrics {
  const groups: MetricGroup[] = cfg.bootstrap.address ? [] : cfg.issuer.enabled ? ["vault", "intermediate"] : ["vault"];
  return new AgentMetrics({ processMetrics: !cfg.once, groups, vaultProbe: relayProbes(cfg) });
}

/** The relay probes Vault's sys/health when it runs as a service that talks to Vault. */
function relayProbes(cfg: RelayConfig): boolean {
  return !cfg.once && !cfg.bootstrap.address && cfg.vaultProbeIntervalMs > 0;
}

async function runRelay(cfg: RelayConfig, kube: KubeClient): Promise<number> {
  const log = createLogger({ level: cfg.logLevel }).child({ component: "relay", role: cfg.role });
  if (cfg.vault.insecureSkipVerify)
    log.warn(
      "TLS VERIFICATION OF VAULT IS OFF (--vault-skip-verify / VAULT_SKIP_VERIFY): anyone on the network path can impersonate Vault",
    );
  const vault = new VaultClient({
    address: cfg.vault.address,
    tls: cfg.vault,
    namespace: cfg.vault.namespace,
  });
  const agentMetrics = relayAgentMetrics(cfg);
  const metrics = new RelayMetrics(agentMetrics.registry);
  const auth = createAuthSession(vault, cfg.auth, log, agentMetrics);
  const secrets = new SecretStore(kube, cfg.namespace, cfg.adopt);
  const relayVault = new RelayVault(vault, auth, agentMetrics, log, { pkiMount: cfg.pkiMount });
  const relay = new Relay(cfg, { vault: relayVault, secrets, metrics, log });
  let issuer: RunningIssuer | undefined;
  const probe = relayProbes(cfg)
    ? new VaultHealthProbe({
        intervalMs: cfg.vaultProbeIntervalMs,
        client: () => vault,
        up: agentMetrics.vaultUp,
        durationSeconds: agentMetrics.vaultProbeSeconds,
        log,
      })
    : undefined;
  const spec = {
    log,
    name: "relay",
    describeError: (err: unknown) => scrub((err as Error).message),
    async close() {
      probe?.stop();
      await issuer?.stop();
      relay.stop();
      await auth.revokeAndStop();
      await vault.close().catch(() => undefined);
      await kube.close().catch(() => undefined);
    },
  };

  log.info(
    {
      vault: cfg.vault.address,
      namespace: cfg.namespace,
      secrets: relay.secretNames(),
      pkiMount: cfg.pkiMount,
      identityTokens: cfg.sharedToken ? `shared at ${cfg.kvPath}` : `per cluster under ${cfg.clusterTokensPath}`,
      clusters: cfg.clusters,
      ttlSeconds: cfg.ttlSeconds,
      graceRatio: cfg.graceRatio,
      keyAlgorithm: cfg.keyAlgorithm,
      adopt: cfg.adopt,
      once: cfg.once,
    },
    "starting relay",
  );
  if (cfg.sharedToken)
    log.warn(
      { kvPath: cfg.kvPath },
      "INSECURE OPT-IN --shared-identity-token: every cluster shares one identity token, so any holder of it can " +
        "obtain a relay client certificate for ANY cluster name; use per-cluster tokens (--clusters) instead",
    );
  if (cfg.once)
    return runOnce(spec, async () => {
      const { failed } = await relay.runOnce();
      if (failed.length) {
        log.error({ failed }, `relay --once: ${failed.length} Secret(s) could not be put in place`);
        return false;
      }
      log.info({ secrets: relay.secretNames() }, "relay --once: every Secret is in place");
      return true;
    });
  return runService({
    ...spec,
    http: {
      address: cfg.httpAddress,
      ready: () => relay.ready() && (issuer?.ready() ?? true),
      registry: agentMetrics.registry,
    },
    onHangup: () => {
      log.info("SIGHUP: issuing new certificates now");
      relay.rotateNow("signal");
    },
    async start() {
      probe?.start();
      await relay.start();
      if (cfg.issuer.enabled) issuer = startIssuer(cfg, { vault, auth, secrets, agentMetrics, log });
    },
  });
}

/** `relay --role agent --bootstrap=HOST:PORT`: no Vault client is created at all. */
async function runBootstrapAgent(cfg: RelayConfig, kube: KubeClient): Promise<number> {
  const log = createLogger({ level: cfg.logLevel }).child({ component: "relay", role: "agent", mode: "bootstrap" });
  const agentMetrics = relayAgentMetrics(cfg);
  const metrics = new RelayMetrics(agentMetrics.registry);
  const secrets = new SecretStore(kube, cfg.namespace, cfg.adopt);
  const client = new IssuerClient({ address: cfg.bootstrap.address!, serverName: cfg.bootstrap.serverName });
  const agent = new BootstrapAgent(cfg, {
    secrets,
    client,
    metrics,
    agentMetrics: new BootstrapAgentMetrics(agentMetrics.registry),
    log,
  });
  log.info(
    {
      issuer: cfg.bootstrap.address,
      serverName: cfg.bootstrap.serverName,
      cluster: cfg.cluster,
      namespace: cfg.namespace,
      rootSecret: cfg.secrets.root,
      clientSecret: cfg.secrets.client,
      tokenSecret: cfg.secrets.token,
      graceRatio: cfg.graceRatio,
      keyAlgorithm: cfg.keyAlgorithm,
      adopt: cfg.adopt,
      once: cfg.once,
    },
    "starting relay agent in bootstrap mode (certificates from the issuer; no Vault)",
  );
  const spec = {
    log,
    name: "relay",
    describeError: (err: unknown) => scrub((err as Error).message),
    async close() {
      agent.stop();
      await kube.close().catch(() => undefined);
    },
  };
  if (cfg.once)
    return runOnce(spec, async () => {
      await agent.runOnce();
      log.info("relay --once: the client certificate Secret is in place");
      return true;
    });
  return runService({
    ...spec,
    http: { address: cfg.httpAddress, ready: () => agent.ready(), registry: agentMetrics.registry },
    onHangup: () => {
      log.info("SIGHUP: renewing the client certificate now");
      agent.rotateNow();
    },
    start: () => agent.start(),
  });
}
