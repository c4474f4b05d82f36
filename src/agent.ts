// Wires one agent together from a Config: Vault client → Kubernetes auth → intermediate authority → consumers
// (gRPC socket, cacerts directory, health/metrics). Data flows one way: consumers subscribe to the authority.
import type { Logger } from "pino";
import type { Config } from "./config/config.js";
import type { SigningBundle } from "./authority/bundle.js";
import { IntermediateAuthority, type IntermediateAuthorityOptions } from "./authority/intermediate-authority.js";
import { AgentMetrics } from "./observability/metrics.js";
import { AgentGrpcServer } from "./serve/agent-grpc.js";
import { HealthHttpServer } from "./serve/health-http.js";
import { CacertsSink, type CacertsFiles } from "./sinks/cacerts.js";
import { DEFAULT_MAX_CSR_BYTES, type LeafPolicy } from "./signing/leaf-policy.js";
import { systemClock, type Clock } from "./util/clock.js";
import { VaultClient } from "./vault/client.js";
import { KubernetesAuth } from "./vault/kubernetes-auth.js";
import { KubeClient } from "./kube/client.js";
import { kubeClientFromKubeconfig } from "./kube/kubeconfig.js";
import { TokenReviewer } from "./kube/token-review.js";
import { IstioCaServer } from "./serve/istio-ca.js";

export function authorityOptions(c: Config): IntermediateAuthorityOptions {
  return {
    ...c.intermediate,
    // istiod reads the key from the cacerts files, so the sink needs it exportable.
    keyExport: c.serve.keyExport || c.cacerts.dir !== undefined,
    backoff: c.backoff,
    extraRootsPem: c.trustAnchors.pem,
  };
}

export function leafPolicy(c: Config): LeafPolicy {
  return { ...c.leaf, maxCsrBytes: DEFAULT_MAX_CSR_BYTES };
}

export function cacertsFiles(b: SigningBundle): CacertsFiles {
  if (!b.privateKeyPem) throw new Error("the bundle has no exportable key; the cacerts sink needs key export");
  return {
    caCertPem: b.signingCertPem,
    caKeyPem: b.privateKeyPem,
    certChainPem: b.chainPem.join(""),
    rootCertPem: b.rootsPem.join(""),
  };
}

export class Agent {
  readonly metrics: AgentMetrics;
  vault: VaultClient;
  auth: KubernetesAuth;
  /** Shared by reference with the servers, so a reconfiguration applies to the next request. */
  readonly leafPolicy: LeafPolicy;
  readonly authority: IntermediateAuthority;
  readonly sink: CacertsSink | undefined;
  private grpc: AgentGrpcServer | undefined;
  private http: HealthHttpServer | undefined;
  private istioCa: IstioCaServer | undefined;
  private kube: KubeClient | undefined;
  private unsubscribeSink: (() => void) | undefined;
  private sinkQueue: Promise<void> = Promise.resolve();

  constructor(
    public config: Config,
    readonly log: Logger,
    private readonly clock: Clock = systemClock,
  ) {
    this.metrics = new AgentMetrics();
    this.leafPolicy = leafPolicy(config);
    ({ vault: this.vault, auth: this.auth } = this.vaultBackend(config));
    this.authority = new IntermediateAuthority(
      authorityOptions(config),
      this.vault,
      this.auth,
      log,
      this.metrics,
      clock,
    );
    this.sink = config.cacerts.dir
      ? new CacertsSink({ dir: config.cacerts.dir, group: config.cacerts.group, multiRoot: config.cacerts.multiRoot })
      : undefined;
  }

  private vaultBackend(config: Config): { vault: VaultClient; auth: KubernetesAuth } {
    if (config.vault.insecureSkipVerify) {
      this.log.warn(
        "TLS VERIFICATION OF VAULT IS OFF (--vault-skip-verify): anyone on the network path can impersonate Vault",
      );
    }
    const vault = new VaultClient({
      address: config.vault.address,
      namespace: config.vault.namespace,
      tls: { caPem: config.vault.caPem, insecureSkipVerify: config.vault.insecureSkipVerify },
    });
    return { vault, auth: new KubernetesAuth(vault, config.auth, this.log, this.metrics, this.clock) };
  }

  /**
   * Applies a new configuration to the running agent (live RootTrustPolicy reload). Vault or intermediate changes
   * make a new intermediate at once; leaf-policy changes apply to the next request. Listener addresses, the socket
   * and the cacerts directory need a restart and are reported as such. Returns what changed.
   */
  async reconfigure(next: Config): Promise<string[]> {
    const prev = this.config;
    const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
    const changes: string[] = [];
    if (!same(prev.vault, next.vault) || !same(prev.auth, next.auth)) {
      const old = { vault: this.vault, auth: this.auth };
      ({ vault: this.vault, auth: this.auth } = this.vaultBackend(next));
      this.authority.setBackend(this.vault, this.auth);
      // The old token is no longer used: revoke it (bounded) before closing its client, rather than leave it live.
      void old.auth
        .revokeAndStop()
        .then(() => old.vault.close())
        .catch(() => undefined);
      changes.push("vault");
    }
    if (!same(authorityOptions(prev), authorityOptions(next))) {
      this.authority.reconfigure(authorityOptions(next));
      changes.push("intermediate");
    }
    if (!same(prev.leaf, next.leaf)) {
      Object.assign(this.leafPolicy, leafPolicy(next));
      changes.push("leaf policy");
    }
    for (const [what, a, b] of [
      ["serve", prev.serve, next.serve],
      ["cacerts", prev.cacerts, next.cacerts],
      ["istioCa", prev.istioCa, next.istioCa],
    ] as const) {
      if (!same(a, b))
        this.log.warn({ setting: what }, "this setting changed but needs a restart of the agent to take effect");
    }
    this.config = next;
    if (changes.includes("vault") || changes.includes("intermediate")) {
      await this.authority.rotate("config");
    }
    return changes;
  }

  /** Writes a bundle to the cacerts directory; failures are logged and counted, the last good files stay. */
  async writeCacerts(b: SigningBundle): Promise<void> {
    if (!this.sink) return;
    try {
      await this.sink.write(cacertsFiles(b));
      this.metrics.sinkWrites.inc({ outcome: "success" });
      for (const w of this.sink.warnings) this.log.warn({ dir: this.sink.dir }, w);
      this.log.info({ dir: this.sink.dir, generation: b.generation }, "wrote cacerts for istiod");
    } catch (err) {
      this.metrics.sinkWrites.inc({ outcome: "failure" });
      this.log.error(
        { dir: this.sink.dir, err: (err as Error).message },
        "could not write cacerts; istiod keeps the previous files",
      );
      throw err;
    }
  }

  /** Long-running mode: obtain the first bundle, then serve and renew until stop(). */
  async run(signal?: AbortSignal): Promise<void> {
    // Fail fast, before any Vault call, on a directory istiod's files cannot be written to.
    await this.sink?.preflight();
    if (this.config.serve.httpAddress) {
      this.http = new HealthHttpServer({
        address: this.config.serve.httpAddress,
        // Unready a margin before expiry: while renewal fails, the pod leaves the Service before leaves would be
        // refused (--min-leaf-ttl) or the intermediate dies.
        ready: () => this.authority.ready(this.config.serve.unreadyBeforeExpirySeconds * 1000),
        registry: this.metrics.registry,
        beforeMetrics: () => {
          const b = this.authority.current();
          this.metrics.intermediateSecondsToExpiry.set(b ? (b.notAfter.getTime() - Date.now()) / 1000 : 0);
        },
      });
      const addr = await this.http.start();
      this.log.info({ address: `${addr.address}:${addr.port}` }, "health and metrics listening");
    }
    this.grpc = new AgentGrpcServer(
      {
        socketPath: this.config.serve.socketPath,
        keyExport: this.config.serve.keyExport,
        leafPolicy: this.leafPolicy,
        limits: this.config.serve.limits,
      },
      this.authority,
      this.log,
      this.metrics,
    );
    await this.grpc.start();
    await this.authority.start(signal);
    if (this.config.istioCa.address) {
      this.kube = this.config.kube.kubeconfig
        ? kubeClientFromKubeconfig(this.config.kube.kubeconfig)
        : await KubeClient.inCluster();
      const reviewer = new TokenReviewer(
        this.kube,
        this.config.istioCa.audience,
        this.config.leaf.trustDomain,
        undefined,
        this.metrics,
      );
      this.istioCa = new IstioCaServer(
        {
          address: this.config.istioCa.address,
          servingNames: this.config.istioCa.servingNames,
          leafPolicy: this.leafPolicy,
          maxInFlight: this.config.istioCa.maxInFlight,
          authFailureBurst: this.config.istioCa.authFailureBurst,
          authFailuresPerMinute: this.config.istioCa.authFailuresPerMinute,
        },
        this.authority,
        reviewer,
        this.log,
        this.metrics,
      );
      await this.istioCa.start();
    }
    if (this.sink) {
      this.unsubscribeSink = this.authority.subscribe((b) => {
        this.sinkQueue = this.sinkQueue.then(() => this.writeCacerts(b)).catch(() => undefined);
      });
    }
  }

  async stop(): Promise<void> {
    this.authority.stop();
    // Revoke rather than just forget the token: a stopped sidecar must not leave a valid Vault token behind.
    await this.auth.revokeAndStop();
    this.unsubscribeSink?.();
    await this.sinkQueue;
    await this.istioCa?.stop();
    await this.kube?.close();
    await this.grpc?.stop();
    await this.http?.stop();
    await this.vault.close();
  }
}
