// Wires one agent together from a Config: Vault client → Kubernetes auth → intermediate authority → consumers
// (gRPC socket, cacerts directory, health/metrics, and the mesh-CA services: src/serve/mesh-ca-services.ts). Data
// flows one way: consumers subscribe to the authority.
import type { Logger } from "pino";
import type { Config } from "./config/config.js";
import type { SigningBundle } from "./authority/bundle.js";
import { IntermediateAuthority } from "./authority/intermediate-authority.js";
import { adoptionSettings, checkAdoptable, originRecordJson, type AdoptionCheck } from "./authority/adopt.js";
import { authorityOptions, freezeConfig, leafPolicy, planApply, planSummary, type AgentPlan } from "./agent-plan.js";
import { AgentMetrics } from "./observability/metrics.js";
import { AgentGrpcServer } from "./serve/agent-grpc.js";
import type { HealthHttpOptions } from "./serve/health-http.js";
import { CacertsSink, type CacertsFiles } from "./sinks/cacerts.js";
import type { LeafPolicy } from "./signing/leaf-policy.js";
import { systemClock, type Clock } from "./util/clock.js";
import { VaultClient } from "./vault/client.js";
import type { VaultTokenSession } from "./vault/auth.js";
import { createAuthSession } from "./vault/auth-methods.js";
import { VaultHealthProbe } from "./vault/health-probe.js";
import { AgentSigning } from "./signing/agent-signing.js";
import { cpuLimits, defaultSigningWorkers } from "./signing/signing-workers.js";
import { MeshCaServices } from "./serve/mesh-ca-services.js";

export { authorityOptions, leafPolicy, type AgentPlan } from "./agent-plan.js";

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
  readonly authority: IntermediateAuthority;
  readonly sink: CacertsSink | undefined;
  /** The configuration in force: a frozen snapshot, replaced as a whole by apply(). */
  private snapshot: Readonly<Config>;
  private backend: Readonly<{ vault: VaultClient; auth: VaultTokenSession }>;
  /** Replaced (never mutated) when the leaf settings change; the servers read it at each request. */
  private policy: Readonly<LeafPolicy>;
  /** apply() calls run one after another, each from the snapshot the previous one left. */
  private applying: Promise<unknown> = Promise.resolve();
  private grpc: AgentGrpcServer | undefined;
  /** The one signing pool, shared by the socket and the Istio CA listener. */
  private signing: AgentSigning | undefined;
  private meshCa: MeshCaServices | undefined;
  private unsubscribeSink: (() => void) | undefined;
  private probe: VaultHealthProbe | undefined;
  private sinkQueue: Promise<void> = Promise.resolve();

  constructor(
    config: Config,
    readonly log: Logger,
    private readonly clock: Clock = systemClock,
  ) {
    this.snapshot = freezeConfig(config);
    this.metrics = new AgentMetrics({ vaultProbe: this.snapshot.serve.vaultProbeIntervalMs > 0 });
    this.policy = leafPolicy(this.snapshot);
    this.backend = this.vaultBackend(this.snapshot);
    this.authority = new IntermediateAuthority(
      authorityOptions(this.snapshot),
      this.backend.vault,
      this.backend.auth,
      log,
      this.metrics,
      clock,
    );
    const c = this.snapshot.cacerts;
    this.sink = c.dir ? new CacertsSink({ dir: c.dir, group: c.group, multiRoot: c.multiRoot }) : undefined;
    // The init container just published an intermediate in this pod's cacerts volume: serve it rather than sign a
    // second one at every pod start (src/authority/adopt.ts says what is checked).
    if (this.sink) this.authority.adoptAtStart(() => this.adoptionCheck());
  }

  private async adoptionCheck(): Promise<AdoptionCheck> {
    const read = await this.sink!.readOwnGeneration();
    if (!read.ok) return read;
    const now = new Date(this.clock.now());
    return checkAdoptable(read.generation.files, adoptionSettings(this.snapshot), this.snapshot.trustAnchors.pem, now);
  }

  /** The configuration in force (frozen). */
  get config(): Readonly<Config> {
    return this.snapshot;
  }

  /** The leaf policy in force (frozen). */
  get leafPolicy(): Readonly<LeafPolicy> {
    return this.policy;
  }

  private vaultBackend(config: Readonly<Config>): { vault: VaultClient; auth: VaultTokenSession } {
    if (config.vault.insecureSkipVerify) {
      this.log.warn(
        "TLS VERIFICATION OF VAULT IS OFF (--vault-skip-verify / VAULT_SKIP_VERIFY): anyone on the network path can impersonate Vault",
      );
    }
    const vault = new VaultClient({
      address: config.vault.address,
      namespace: config.vault.namespace,
      tls: config.vault,
      // An HA cluster's failover shows here: standby redirects, an unreachable node, retries (never a token or body).
      onRetry: (e) => {
        const fields = { vaultAddress: e.address, method: e.method, path: e.path, reason: e.reason, waitMs: e.waitMs };
        if (e.action === "redirect") this.log.info(fields, "Vault standby redirected the request to the active node");
        else if (e.action === "next-address") this.log.warn(fields, "Vault address failed; trying the next address");
        else this.log.warn(fields, "Vault request failed; retrying");
      },
    });
    return { vault, auth: createAuthSession(vault, config.auth, this.log, this.metrics, this.clock) };
  }

  /**
   * Applies a new configuration to the running agent (live RootTrustPolicy reload): computes the plan (planApply),
   * carries it out and returns it. A new Vault backend or new intermediate options make a new intermediate at once
   * (its failure is thrown after the new configuration is in force); new trust anchors alone are published with the
   * held intermediate; a new leaf policy applies to the next request;
   * settings read only at start are logged as needing a restart.
   */
  apply(next: Config | ((current: Readonly<Config>) => Config)): Promise<AgentPlan> {
    // A function edits the configuration in force when its turn comes, not the one in force when it was queued.
    const run = this.applying.then(() =>
      this.carryOut(freezeConfig(typeof next === "function" ? next(this.snapshot) : next)),
    );
    this.applying = run.catch(() => undefined);
    return run;
  }

  /** apply(), answering the short list of what changed (for status messages). */
  async reconfigure(next: Config): Promise<string[]> {
    return planSummary(await this.apply(next));
  }

  private async carryOut(next: Readonly<Config>): Promise<AgentPlan> {
    const plan = planApply(this.snapshot, next);
    if (plan.newVaultBackend) {
      const old = this.backend;
      this.backend = this.vaultBackend(next);
      this.authority.setBackend(this.backend.vault, this.backend.auth);
      // The old token is no longer used: revoke it (bounded) before closing its client, rather than leave it live.
      void old.auth
        .revokeAndStop()
        .then(() => old.vault.close())
        .catch(() => undefined);
    }
    if (plan.newAuthorityOptions) this.authority.reconfigure(authorityOptions(next));
    if (plan.newLeafPolicy) this.policy = leafPolicy(next);
    for (const setting of plan.needsRestart)
      this.log.warn({ setting }, "this setting changed but needs a restart of the agent to take effect");
    this.snapshot = next;
    if (plan.newIntermediate) await this.authority.rotate("config");
    else if (plan.newRoots) await this.authority.republishRoots();
    return plan;
  }

  /** Writes a bundle to the cacerts directory; failures are logged and counted, the last good files stay. */
  async writeCacerts(b: SigningBundle): Promise<void> {
    if (!this.sink) return;
    // An adopted bundle is the one already published; rewriting the same files would only wake istiod's watcher.
    if (b === this.authority.adopted) return;
    try {
      const issuedAt = new Date(this.clock.now());
      await this.sink.write({
        ...cacertsFiles(b),
        originJson: originRecordJson(adoptionSettings(this.snapshot), b.signingCertPem, issuedAt),
      });
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

  /**
   * What the service lifecycle serves on /readyz and /metrics for this agent. Unready a margin before expiry: while
   * renewal fails, the pod leaves the Service before leaves would be refused (--min-leaf-ttl) or the intermediate dies.
   */
  healthEndpoints(): Omit<HealthHttpOptions, "address"> {
    return {
      // With --istiod-tls-dir, ready also means istiod's TLS files exist: the startupProbe holds istiod until then.
      ready: () =>
        this.authority.ready(this.config.serve.unreadyBeforeExpirySeconds * 1000) &&
        (this.config.istiodTls.dir === undefined || this.meshCa?.istiodCertPublished === true),
      registry: this.metrics.registry,
    };
  }

  /** Long-running mode: obtain the first bundle, then serve and renew until stop(). */
  async run(signal?: AbortSignal): Promise<void> {
    // Fail fast, before any Vault call, on a directory istiod's files cannot be written to.
    await this.sink?.preflight();
    this.signing = this.startSigning();
    this.meshCa = new MeshCaServices({
      config: () => this.config,
      authority: this.authority,
      leafPolicy: () => this.policy,
      signing: this.signing,
      log: this.log,
      metrics: this.metrics,
      clock: this.clock,
    });
    await this.meshCa.preflight();
    this.grpc = new AgentGrpcServer(
      {
        socketPath: this.config.serve.socketPath,
        keyExport: this.config.serve.keyExport,
        leafPolicy: () => this.policy,
        limits: this.config.serve.limits,
        sign: this.signing.signer("socket"),
      },
      this.authority,
      this.log,
      this.metrics,
    );
    await this.grpc.start();
    // Before the first intermediate, so an unreachable Vault at start shows on /metrics too.
    this.probe = new VaultHealthProbe({
      intervalMs: this.config.serve.vaultProbeIntervalMs,
      client: () => this.backend.vault,
      up: this.metrics.vaultUp,
      durationSeconds: this.metrics.vaultProbeSeconds,
      log: this.log,
      clock: this.clock,
    });
    this.probe.start();
    await this.authority.start(signal);
    // Adopted: no Vault call was needed, but log in now, not at the first renewal hours later, so a broken role or
    // unreachable Vault shows at pod start (logs, login metrics) and the renewal finds a token. Not awaited: the
    // adopted intermediate is served either way, and the renewal logs in again if this fails.
    if (this.authority.adopted) {
      this.backend.auth
        .token()
        .catch((err: Error) =>
          this.log.warn(
            { err: err.message },
            "Vault login failed; the adopted intermediate keeps serving, renewal retries",
          ),
        );
    }
    // istiod's TLS files and the Istio CA listener need the intermediate; both before /readyz can pass.
    await this.meshCa.start();
    if (this.sink) {
      this.unsubscribeSink = this.authority.subscribe((b) => {
        this.sinkQueue = this.sinkQueue.then(() => this.writeCacerts(b)).catch(() => undefined);
      });
    }
  }

  /** The signing workers: --signing-workers, else the default rule over this container's CPU limits. */
  private startSigning(): AgentSigning {
    const given = this.config.serve.signingWorkers;
    const choice =
      given === undefined
        ? defaultSigningWorkers(cpuLimits())
        : { workers: given, reason: "--signing-workers / ISTIOD_VAULT_AGENT_SIGNING_WORKERS" };
    this.log.info(
      { signingWorkers: choice.workers, reason: choice.reason },
      choice.workers > 0 ? "signing leaves on worker threads" : "signing leaves on the main thread",
    );
    return new AgentSigning(choice.workers, this.log, this.metrics);
  }

  async stop(): Promise<void> {
    this.probe?.stop();
    this.authority.stop();
    // Revoke rather than just forget the token: a stopped sidecar must not leave a valid Vault token behind.
    await this.backend.auth.revokeAndStop();
    this.unsubscribeSink?.();
    await this.meshCa?.stop();
    await this.sinkQueue;
    await this.grpc?.stop();
    await this.signing?.close();
    await this.backend.vault.close();
  }
}
