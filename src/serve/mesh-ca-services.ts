// The services that make the agent the mesh's CA (README "the agent as the mesh's CA"), wired in one place so that
// agent.ts and the sidecar command read as the sequence of what the agent does:
// - MeshCaServices, started and stopped by the Agent: istiod's serving certificate (--istiod-tls-dir) and the drop-in
//   Istio CA listener (--istio-ca-address) with its node authoriser (--trusted-node-agents) and the remote clusters
//   whose TokenReview a `clusterid` selects.
// - distributeRoots, run by the sidecar command: the istio-ca-root-cert ConfigMaps (--root-configmaps), written by the
//   holder of their own Lease. It lives beside the Agent rather than in it because the Lease shares the sidecar's
//   identity, lease duration and (with a RootTrustPolicy) its apiserver client.
import type { Logger } from "pino";
import type { IntermediateAuthority } from "../authority/intermediate-authority.js";
import { openKube } from "../cli/kube.js";
import type { Config } from "../config/config.js";
import type { KubeClient } from "../kube/client.js";
import { KubeLeaseStore, LeaderElector } from "../kube/leader-elector.js";
import { parseClusterAliases, RemoteClusters } from "../kube/remote-clusters.js";
import { ROOT_CONFIGMAP_LEASE, RootConfigMapController } from "../kube/root-configmaps.js";
import { TokenReviewer } from "../kube/token-review.js";
import type { AgentMetrics } from "../observability/metrics.js";
import type { LeafPolicy } from "../signing/leaf-policy.js";
import type { AgentSigning } from "../signing/agent-signing.js";
import type { Clock } from "../util/clock.js";
import { IstioCaServer, type CaClusterAccess } from "./istio-ca.js";
import { IstiodCertPublisher } from "./istiod-cert.js";
import { ApiserverPodDirectory, NodeAuthorizer, parseNodeAccounts } from "./node-authorizer.js";

export interface MeshCaServicesDeps {
  /** The configuration in force, read at each step as the Agent reads its own (these settings need a restart). */
  config: () => Readonly<Config>;
  authority: IntermediateAuthority;
  /** The leaf policy in force, read at each request. */
  leafPolicy: () => Readonly<LeafPolicy>;
  /** The agent's one signing pool, shared with the socket; the Istio CA listener takes its signer when it opens. */
  signing: Pick<AgentSigning, "signer">;
  log: Logger;
  metrics: AgentMetrics;
  clock: Clock;
}

/** istiod's serving certificate and the drop-in Istio CA listener, each only when configured. */
export class MeshCaServices {
  private readonly istiodCert: IstiodCertPublisher | undefined;
  private istioCa: IstioCaServer | undefined;
  private kube: KubeClient | undefined;
  private remoteClusters: RemoteClusters<CaClusterAccess> | undefined;
  private remoteClustersStop: AbortController | undefined;

  constructor(private readonly deps: MeshCaServicesDeps) {
    const config = deps.config();
    const t = config.istiodTls;
    if (t.dir) {
      this.istiodCert = new IstiodCertPublisher(
        {
          dir: t.dir,
          dnsNames: t.dnsNames,
          ttlMs: t.ttlSeconds * 1000,
          graceRatio: config.intermediate.rotationGraceRatio,
          group: config.cacerts.group,
        },
        deps.authority,
        deps.log,
        deps.clock,
      );
    }
  }

  /** Fails unless istiod's TLS directory is usable: at start, before any Vault call. */
  async preflight(): Promise<void> {
    await this.istiodCert?.preflight();
  }

  /** Whether istiod's TLS files are written (/readyz waits for them with --istiod-tls-dir). */
  get istiodCertPublished(): boolean {
    return this.istiodCert?.published !== undefined;
  }

  /** Once the first intermediate is held: publishes istiod's files, then opens the Istio CA listener. */
  async start(): Promise<void> {
    // Before the listeners and before /readyz can pass: istiod looks for its TLS files once, at its start.
    await this.istiodCert?.start();
    const config = this.deps.config();
    if (config.istioCa.address) await this.startIstioCa(config, config.istioCa.address);
  }

  private async startIstioCa(config: Readonly<Config>, address: string): Promise<void> {
    const { authority, log, metrics, clock } = this.deps;
    this.kube = await openKube(config.kube);
    // What the listener uses in one cluster: a TokenReview client and the pod lookups of the node authoriser. A remote
    // cluster's is made when its Secret appears, with the settings in force then.
    const access = (client: KubeClient): CaClusterAccess => {
      const now = this.deps.config();
      return {
        reviewer: new TokenReviewer(client, now.istioCa.audience, now.leaf.trustDomain, undefined, metrics),
        pods: new ApiserverPodDirectory(client),
      };
    };
    const local = access(this.kube);
    const remote = new RemoteClusters<CaClusterAccess>({
      kube: this.kube,
      namespace: config.pod.namespace ?? "istio-system",
      localClusterId: config.istioCa.clusterId,
      aliases: parseClusterAliases(config.istioCa.clusterAliases.join(",")),
      local,
      makeAccess: (_id, client) => access(client),
      log,
      clock,
    });
    this.remoteClusters = remote;
    this.remoteClustersStop = new AbortController();
    void remote.run(this.remoteClustersStop.signal);
    this.istioCa = new IstioCaServer(
      {
        address,
        servingNames: config.istioCa.servingNames,
        leafPolicy: this.deps.leafPolicy,
        maxInFlight: config.istioCa.maxInFlight,
        authFailureBurst: config.istioCa.authFailureBurst,
        authFailuresPerMinute: config.istioCa.authFailuresPerMinute,
        clusters: (id) => remote.select(id),
        nodeAuthorizer: new NodeAuthorizer(
          parseNodeAccounts(config.istioCa.trustedNodeAgents.join(",")),
          config.leaf.trustDomain,
          clock,
        ),
        sign: this.deps.signing.signer("istio_ca"),
      },
      authority,
      local.reviewer,
      log,
      metrics,
    );
    await this.istioCa.start();
  }

  /** Stops publishing, closes the listener, then the clusters' watches and apiserver clients. */
  async stop(): Promise<void> {
    this.istiodCert?.stop();
    await this.istioCa?.stop();
    this.remoteClustersStop?.abort();
    await this.remoteClusters?.close();
    await this.kube?.close();
  }
}

export interface RootDistribution {
  authority: Pick<IntermediateAuthority, "subscribe">;
  metrics: Pick<AgentMetrics, "rootConfigMapsWritten" | "rootConfigMapsUnowned">;
  config: Readonly<Config>;
  kube: KubeClient;
  /** This replica's name in the Lease. */
  identity: string;
  leaseMs: number;
  log: Logger;
}

/**
 * --root-configmaps: the ConfigMap controller follows the served roots; only the holder of Lease
 * istiod-vault-agent-root-cert (in the agent's namespace, shared by every revision) writes. Runs until `signal`
 * aborts; the Lease is released on the way out.
 */
export function distributeRoots(d: RootDistribution, signal: AbortSignal): Promise<void> {
  const { config, kube, identity, log } = d;
  const namespace = config.pod.namespace ?? "istio-system";
  const roots = new RootConfigMapController({
    kube,
    selector: config.rootConfigMaps.namespaceSelector,
    adopt: config.rootConfigMaps.adopt,
    identity,
    log: log.child({ component: "root-configmaps" }),
    metrics: { written: d.metrics.rootConfigMapsWritten, unowned: d.metrics.rootConfigMapsUnowned },
    backoff: config.backoff,
  });
  // The same text the cacerts sink is asked to write as root-cert.pem: every served root, signing root first.
  d.authority.subscribe((b) => roots.setRoots(b.rootsPem.join("")));
  const lease = new LeaderElector({
    store: new KubeLeaseStore(kube, namespace, ROOT_CONFIGMAP_LEASE),
    identity,
    leaseDurationMs: d.leaseMs,
    purpose: "the istio-ca-root-cert ConfigMaps",
    onChange: (leading) => roots.setLeading(leading),
    log,
  });
  log.info(
    {
      selector: config.rootConfigMaps.namespaceSelector.text || "(every namespace)",
      lease: `${namespace}/${ROOT_CONFIGMAP_LEASE}`,
    },
    "keeping istio-ca-root-cert in the selected namespaces",
  );
  return Promise.all([roots.run(signal), lease.run(signal)]).then(() => undefined);
}
