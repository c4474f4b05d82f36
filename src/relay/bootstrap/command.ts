// The issuer started beside `relay --role server --issuer` (the command's process wiring is in src/commands/relay.ts).
import { createPrivateKey } from "node:crypto";
import * as tls from "node:tls";
import type { Logger } from "pino";
import { IntermediateAuthority } from "../../authority/intermediate-authority.js";
import type { AgentMetrics } from "../../observability/metrics.js";
import type { VaultClient } from "../../vault/client.js";
import type { VaultTokenSession } from "../../vault/auth.js";
import type { RelayConfig } from "../config.js";
import { scrub } from "../../observability/logger.js";
import { SecretStore } from "../../kube/secret-store.js";
import { KvIdentityTokenSource } from "./identity-tokens.js";
import { RelayIssuer, type ServingIdentity } from "./issuer.js";
import { IssuerMetrics } from "./metrics.js";

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
    auth: VaultTokenSession;
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
