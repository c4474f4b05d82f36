// Process wiring for bootstrap mode: the agent (`relay --role agent --bootstrap=HOST:PORT`, no Vault at all) and the
// issuer started beside `relay --role server --issuer`.
import { createPrivateKey } from "node:crypto";
import * as tls from "node:tls";
import type { Logger } from "pino";
import { IntermediateAuthority } from "../../authority/intermediate-authority.js";
import { ConfigError } from "../../config/config.js";
import { KubeClient } from "../../kube/client.js";
import { kubeClientFromKubeconfig } from "../../kube/kubeconfig.js";
import { createLogger } from "../../observability/logger.js";
import { AgentMetrics } from "../../observability/metrics.js";
import { HealthHttpServer } from "../../serve/health-http.js";
import type { VaultClient } from "../../vault/client.js";
import type { KubernetesAuth } from "../../vault/kubernetes-auth.js";
import type { RelayConfig } from "../config.js";
import { RelayMetrics } from "../metrics.js";
import { scrub } from "../relay.js";
import { SecretStore } from "../secrets.js";
import { BootstrapAgent } from "./agent.js";
import { KvIdentityTokenSource } from "./identity-tokens.js";
import { IssuerClient } from "./issuer-client.js";
import { RelayIssuer, type ServingIdentity } from "./issuer.js";
import { BootstrapAgentMetrics, IssuerMetrics } from "./metrics.js";

/** Common name of the issuer's in-memory signing intermediate. */
export const ISSUER_SIGNING_CN = "relay-issuer-signing-ca";

export interface RunningIssuer {
  issuer: RelayIssuer;
  authority: IntermediateAuthority;
  ready(): boolean;
  stop(): Promise<void>;
}

/**
 * Starts the issuer in the background: its signing intermediate from Vault (retried with backoff until obtained and
 * then renewed at --grace-ratio), the identity token from Vault KV, and the listener once relay-server-tls-secret
 * holds a certificate.
 */
export function startIssuer(
  cfg: RelayConfig,
  deps: {
    vault: VaultClient;
    auth: KubernetesAuth;
    secrets: SecretStore;
    agentMetrics: AgentMetrics;
    log: Logger;
  },
): RunningIssuer {
  const log = deps.log;
  const authority = new IntermediateAuthority(
    {
      caPath: `${cfg.pkiMount}/root/sign-intermediate`,
      csrPath: undefined,
      ttlSeconds: cfg.signingTtlSeconds,
      commonName: ISSUER_SIGNING_CN,
      organization: undefined,
      keyAlgorithm: cfg.keyAlgorithm,
      maxPathLength: 0,
      rotationGraceRatio: cfg.graceRatio,
      jitterRatio: cfg.jitterRatio,
      keyExport: false,
      backoff: cfg.backoff,
      extraRootsPem: [],
    },
    deps.vault,
    deps.auth,
    log.child({ subsystem: "issuer-signing-ca" }),
    deps.agentMetrics,
  );
  const resyncMs = cfg.resyncSeconds * 1000;
  const issuer = new RelayIssuer(
    {
      address: cfg.issuer.address,
      clientTtlSeconds: cfg.issuer.clientTtlSeconds,
      tokenOverlapSeconds: cfg.issuer.tokenOverlapSeconds,
      ratePerSecond: cfg.issuer.ratePerSecond,
      burst: cfg.issuer.burst,
      peerRatePerSecond: cfg.issuer.peerRatePerSecond,
      peerBurst: cfg.issuer.peerBurst,
      sharedToken: cfg.sharedToken,
      reservedNames: cfg.serverDns,
      maxBootstrapAgeMs: cfg.issuer.maxBootstrapAgeSeconds * 1000,
      tokenRefreshMs: cfg.issuer.tokenRefreshSeconds * 1000,
      identityReloadMs: Math.min(resyncMs, 30_000),
      retryMs: Math.min(Math.max(cfg.backoff.initialMs, 500), 5_000),
    },
    {
      authority,
      tokens: new KvIdentityTokenSource(deps.vault, deps.auth, deps.agentMetrics, {
        shared: cfg.sharedToken,
        kvPath: cfg.kvPath,
        clusterPrefix: cfg.clusterTokensPath,
      }),
      servingIdentity: () => readServingIdentity(deps.secrets, cfg.secrets.server, log),
      metrics: new IssuerMetrics(deps.agentMetrics.registry),
      log,
    },
  );
  const abort = new AbortController();
  void authority.start(abort.signal).catch((err: unknown) => {
    if (!abort.signal.aborted)
      log.error({ err: scrub((err as Error).message) }, "the issuer could not obtain its signing intermediate");
  });
  void issuer.start().catch((err: unknown) => {
    if (!abort.signal.aborted) log.error({ err: scrub((err as Error).message) }, "the relay issuer could not start");
  });
  return {
    issuer,
    authority,
    ready: () => issuer.ready(),
    async stop() {
      abort.abort(new Error("stopping"));
      authority.stop();
      await issuer.stop();
    },
  };
}

/** The relay server certificate from its Secret, if it holds a usable, current pair. */
async function readServingIdentity(
  secrets: SecretStore,
  name: string,
  log: Logger,
): Promise<ServingIdentity | undefined> {
  const data = SecretStore.decode(await secrets.get(name));
  const certPem = data["tls.crt"];
  const keyPem = data["tls.key"];
  const caPem = data["ca.crt"] ?? "";
  if (!certPem || !keyPem) return undefined;
  try {
    createPrivateKey(keyPem);
    tls.createSecureContext({ cert: certPem, key: keyPem });
  } catch {
    log.warn(
      { secret: `${secrets.namespace}/${name}` },
      "the relay server certificate Secret holds no usable pair yet",
    );
    return undefined;
  }
  return { certPem, keyPem, caPem };
}

/** `relay --role agent --bootstrap=HOST:PORT`: no Vault client is created at all. Returns the exit code. */
export async function runBootstrapAgent(cfg: RelayConfig): Promise<number> {
  const log = createLogger({ level: cfg.logLevel }).child({ component: "relay", role: "agent", mode: "bootstrap" });
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
  const agentMetrics = new AgentMetrics({ processMetrics: !cfg.once });
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
  if (cfg.once) {
    try {
      await agent.runOnce();
      log.info("relay --once: the client certificate Secret is in place");
      return 0;
    } catch (err) {
      log.error({ err: scrub((err as Error).message) }, "relay --once failed");
      return 1;
    } finally {
      agent.stop();
      await kube.close().catch(() => undefined);
    }
  }

  const http = cfg.httpAddress
    ? new HealthHttpServer({ address: cfg.httpAddress, ready: () => agent.ready(), registry: agentMetrics.registry })
    : undefined;
  const keepAlive = setInterval(() => undefined, 1 << 30);
  let stopResolve: (signal: string) => void = () => undefined;
  const stopped = new Promise<string>((resolve) => (stopResolve = resolve));
  const onTerm = () => stopResolve("SIGTERM");
  const onInt = () => stopResolve("SIGINT");
  const onHup = () => {
    log.info("SIGHUP: renewing the client certificate now");
    agent.rotateNow();
  };
  process.on("SIGTERM", onTerm);
  process.on("SIGINT", onInt);
  process.on("SIGHUP", onHup);
  try {
    if (http) {
      const addr = await http.start();
      log.info({ address: `${addr.address}:${addr.port}` }, "serving /healthz, /readyz and /metrics");
    }
    await agent.start();
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
    agent.stop();
    await http?.stop();
    await kube.close().catch(() => undefined);
  }
}
