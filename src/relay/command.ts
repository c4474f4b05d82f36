// `istiod-vault-agent relay`: issues and rotates the Gloo relay mTLS certificates from Vault into Kubernetes Secrets.
// Returns the process exit code: 0 success (or stopped by a signal), 1 a Secret could not be put in place in --once
// mode, 2 a configuration error.
import { ConfigError } from "../config/config.js";
import { KubeClient } from "../kube/client.js";
import { kubeClientFromKubeconfig } from "../kube/kubeconfig.js";
import { createLogger } from "../observability/logger.js";
import { AgentMetrics } from "../observability/metrics.js";
import { HealthHttpServer } from "../serve/health-http.js";
import { VaultClient } from "../vault/client.js";
import { KubernetesAuth } from "../vault/kubernetes-auth.js";
import { parseRelayArgs, relayHelp, type RelayConfig } from "./config.js";
import { RelayMetrics } from "./metrics.js";
import { relayPolicy } from "./policy.js";
import { Relay, scrub } from "./relay.js";
import { SecretStore } from "./secrets.js";
import { runBootstrapAgent, startIssuer, type RunningIssuer } from "./bootstrap/command.js";
import { RelayVault } from "./vault.js";

export async function runRelay(argv: string[]): Promise<number> {
  if (argv[0] === "register-cluster") return (await import("./register-cluster.js")).runRegisterCluster(argv.slice(1));
  let parsed;
  try {
    parsed = parseRelayArgs(argv, process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`relay: ${err.message}`);
      return 2;
    }
    throw err;
  }
  if (parsed.kind === "help") {
    console.log(relayHelp());
    return 0;
  }
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
  return runWithConfig(parsed.config);
}

async function runWithConfig(cfg: RelayConfig): Promise<number> {
  // Bootstrap mode: the certificate comes from the management relay's issuer; no Vault client is ever created.
  if (cfg.bootstrap.address) return runBootstrapAgent(cfg);
  const log = createLogger({ level: cfg.logLevel }).child({ component: "relay", role: cfg.role });
  let kube: KubeClient;
  try {
    kube = cfg.kubeconfig ? kubeClientFromKubeconfig(cfg.kubeconfig) : await KubeClient.inCluster();
  } catch (err) {
    const e = new ConfigError([
      `--kubeconfig: ${(err as Error).message}; expected a readable kubeconfig, or run in a pod with a service account`,
    ]);
    console.error(`relay: ${e.message}`);
    return 2;
  }
  const vault = new VaultClient({
    address: cfg.vault.address,
    tls: { caPem: cfg.vault.caPem },
    namespace: cfg.vault.namespace,
  });
  const agentMetrics = new AgentMetrics({ processMetrics: !cfg.once });
  const metrics = new RelayMetrics(agentMetrics.registry);
  const auth = new KubernetesAuth(vault, cfg.auth, log, agentMetrics);
  const secrets = new SecretStore(kube, cfg.namespace, cfg.adopt);
  const relayVault = new RelayVault(vault, auth, agentMetrics, log, { pkiMount: cfg.pkiMount });
  const relay = new Relay(cfg, { vault: relayVault, secrets, metrics, log });
  let issuer: RunningIssuer | undefined;
  const closeAll = async () => {
    await issuer?.stop();
    relay.stop();
    await auth.revokeAndStop();
    await vault.close().catch(() => undefined);
    await kube.close().catch(() => undefined);
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
  if (cfg.once) {
    try {
      const { failed } = await relay.runOnce();
      if (failed.length) {
        log.error({ failed }, `relay --once: ${failed.length} Secret(s) could not be put in place`);
        return 1;
      }
      log.info({ secrets: relay.secretNames() }, "relay --once: every Secret is in place");
      return 0;
    } catch (err) {
      log.error({ err: scrub((err as Error).message) }, "relay --once failed");
      return 1;
    } finally {
      await closeAll();
    }
  }

  const http = cfg.httpAddress
    ? new HealthHttpServer({
        address: cfg.httpAddress,
        ready: () => relay.ready() && (issuer?.ready() ?? true),
        registry: agentMetrics.registry,
      })
    : undefined;
  // The relay's timers are unref'd; this keeps the process alive until a signal arrives.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  let stopResolve: (signal: string) => void = () => undefined;
  const stopped = new Promise<string>((resolve) => (stopResolve = resolve));
  const onTerm = () => stopResolve("SIGTERM");
  const onInt = () => stopResolve("SIGINT");
  const onHup = () => {
    log.info("SIGHUP: issuing new certificates now");
    relay.rotateNow("signal");
  };
  process.on("SIGTERM", onTerm);
  process.on("SIGINT", onInt);
  process.on("SIGHUP", onHup);
  try {
    if (http) {
      const addr = await http.start();
      log.info({ address: `${addr.address}:${addr.port}` }, "serving /healthz, /readyz and /metrics");
    }
    await relay.start();
    if (cfg.issuer.enabled) issuer = startIssuer(cfg, { vault, auth, secrets, agentMetrics, log });
    const signal = await stopped;
    log.info({ signal }, "stopping relay");
    return 0;
  } catch (err) {
    log.error({ err: scrub((err as Error).message) }, "relay failed");
    return 1;
  } finally {
    process.off("SIGTERM", onTerm);
    process.off("SIGINT", onInt);
    process.off("SIGHUP", onHup);
    clearInterval(keepAlive);
    await http?.stop();
    await closeAll();
  }
}
