// The agent's typed configuration and its validation. Every problem is reported at once, each with the field path,
// the value's problem and what is expected.
import type { IntermediateProfile } from "../authority/intermediate-authority.js";
import { KEY_ALGORITHMS } from "../crypto/keys.js";
import { LOG_LEVELS, isHostPort } from "../cli/validate.js";
import {
  defaultVaultAuthSection,
  authSettingsProblems,
  vaultConnectionProblems,
  type VaultAuthSection,
} from "../cli/vault-flags.js";
import type { AuthSettings } from "../vault/auth.js";
import { DEFAULT_SOCKET_LIMITS, type SocketLimits } from "../serve/socket-limits.js";
import type { LabelSelector } from "../kube/label-selector.js";

export interface Config {
  /** Address, CA file/directory, namespace, client certificate, server name, skip-verify, proxy (vault-flags.ts). */
  vault: VaultAuthSection["vault"] & {
    /** PEM bundle to trust for Vault's TLS certificate (from caBundle, a file or a directory). */
    caPem: string | undefined;
  };
  auth: AuthSettings;
  intermediate: IntermediateProfile;
  leaf: {
    trustDomain: string;
    defaultTtlSeconds: number;
    maxTtlSeconds: number;
    /**
     * Shortest life a leaf may get when the intermediate's remaining life clips it: below this the agent refuses
     * (UNAVAILABLE) instead of issuing a certificate that dies at once.
     */
    minTtlSeconds: number;
  };
  serve: {
    socketPath: string;
    /** host:port for /healthz, /readyz and /metrics; empty disables. */
    httpAddress: string;
    /** Expose the private key over the socket (GetSigningBundle). Off by default. */
    keyExport: boolean;
    /** /readyz turns false this long before the intermediate expires (renewal failing), so traffic moves away. */
    unreadyBeforeExpirySeconds: number;
    /** Stream, signing and rotation limits on the socket. */
    limits: SocketLimits;
    /** GET sys/health this often for the vault_up gauge; 0 disables the probe. */
    vaultProbeIntervalMs: number;
    /**
     * Worker threads that sign leaves for the socket and the drop-in Istio CA (0: on the main thread); undefined:
     * chosen at start from the CPU quota and availableParallelism() (src/signing/signing-workers.ts).
     */
    signingWorkers: number | undefined;
  };
  /**
   * Extra trust anchors served beside the signing root (root-cert.pem, GetSigningBundle roots): the other root
   * during a Vault root rotation. Needs cacerts.multiRoot (istiod's ISTIO_MULTIROOT_MESH=true) for the cacerts sink.
   */
  trustAnchors: { file: string | undefined; pem: string[] };
  cacerts: {
    /** Directory istiod reads (its in-memory /etc/cacerts); empty disables the sink. */
    dir: string | undefined;
    group: number;
    multiRoot: boolean;
  };
  /** The drop-in Istio CA listener (IstioCertificateService over TLS); off unless an address is set. */
  istioCa: {
    address: string | undefined;
    /** DNS names / IPs in its serving certificate. */
    servingNames: string[];
    /** Audience callers' tokens must carry (TokenReview). */
    audience: string;
    /** CreateCertificate calls in flight at once (all callers together); more are refused. */
    maxInFlight: number;
    /** Failed authentications a peer address may make in a row before it must wait for the bucket to refill. */
    authFailureBurst: number;
    /** Failed authentications per minute a peer address regains (token bucket refill). */
    authFailuresPerMinute: number;
    /** Service accounts ("namespace/name") that may ask for workloads on their own node (istiod's CA_TRUSTED_NODE_ACCOUNTS). */
    trustedNodeAgents: string[];
    /** This cluster's ID (istiod's CLUSTER_ID): a request naming it, or none, is reviewed by the local apiserver. */
    clusterId: string;
    /** "alias=clusterID" entries (istiod's --clusterAliases), normalised; see parseClusterAliases. */
    clusterAliases: string[];
  };
  /**
   * istiod's TLS serving certificate in the mesh-CA mode (src/serve/istiod-cert.ts): written as tls.crt, tls.key and
   * ca.crt into `dir` (istiod's /var/run/secrets/istiod/tls); off unless a directory is set.
   */
  istiodTls: {
    dir: string | undefined;
    /** DNS names; empty: istiod.<POD_NAMESPACE>.svc, or istiod-<revision>.<ns>.svc (loadConfig fills them in). */
    dnsNames: string[];
    ttlSeconds: number;
    /** The istiod revision this agent runs beside; only names the default DNS name. */
    revision: string | undefined;
  };
  /**
   * Root distribution (mesh-CA mode): keep ConfigMap istio-ca-root-cert with the served roots in every namespace the
   * selector picks (src/kube/root-configmaps.ts). One replica writes, elected with a Lease.
   */
  rootConfigMaps: {
    enabled: boolean;
    /** Namespaces to keep it in; no requirements = every namespace. */
    namespaceSelector: LabelSelector;
    /** Overwrite an existing istio-ca-root-cert that lacks our managed-by label. */
    adopt: boolean;
  };
  kube: {
    /** Kubeconfig for running outside a pod; in a pod the service account is used. */
    kubeconfig: string | undefined;
    context: string | undefined;
  };
  backoff: { initialMs: number; maxMs: number };
  logLevel: string;
  pod: { name: string | undefined; namespace: string | undefined };
}

/** Defaults for a normal intermediate; loadConfig scales them down for short-lived ones (see scaledExpiryDefaults). */
export const DEFAULT_MIN_LEAF_TTL_SECONDS = 5 * 60;
export const DEFAULT_UNREADY_BEFORE_EXPIRY_SECONDS = 10 * 60;

export const DEFAULT_CONFIG: Config = {
  ...defaultVaultAuthSection("istiod-agent"),
  intermediate: {
    caPath: "pki/root/sign-intermediate",
    csrPath: undefined,
    ttlSeconds: 30 * 24 * 3600,
    commonName: "istiod-vault-agent intermediate",
    organization: undefined,
    keyAlgorithm: "ECDSA_P256",
    maxPathLength: 0,
    rotationGraceRatio: 1 / 3,
    jitterRatio: 0.05,
  },
  leaf: {
    trustDomain: "cluster.local",
    defaultTtlSeconds: 24 * 3600,
    maxTtlSeconds: 90 * 24 * 3600,
    minTtlSeconds: DEFAULT_MIN_LEAF_TTL_SECONDS,
  },
  serve: {
    socketPath: "/var/run/istiod-vault-agent/agent.sock",
    httpAddress: "0.0.0.0:15300",
    keyExport: false,
    unreadyBeforeExpirySeconds: DEFAULT_UNREADY_BEFORE_EXPIRY_SECONDS,
    limits: { ...DEFAULT_SOCKET_LIMITS },
    vaultProbeIntervalMs: 15_000,
    signingWorkers: undefined,
  },
  trustAnchors: { file: undefined, pem: [] },
  cacerts: { dir: undefined, group: 1337, multiRoot: false },
  istioCa: {
    address: undefined,
    servingNames: ["istiod-vault-agent.istio-system.svc"],
    audience: "istio-ca",
    maxInFlight: 64,
    authFailureBurst: 20,
    authFailuresPerMinute: 30,
    trustedNodeAgents: ["istio-system/ztunnel"],
    clusterId: "Kubernetes",
    clusterAliases: [],
  },
  istiodTls: { dir: undefined, dnsNames: [], ttlSeconds: 24 * 3600, revision: undefined },
  rootConfigMaps: { enabled: false, namespaceSelector: { requirements: [], text: "" }, adopt: false },
  kube: { kubeconfig: undefined, context: undefined },
  backoff: { initialMs: 1_000, maxMs: 300_000 },
  logLevel: "info",
  pod: { name: undefined, namespace: undefined },
};

export { ConfigError } from "../cli/errors.js";

/** Returns every problem with `c`; an empty list means valid. */
export function validateConfig(
  c: Config,
  opts: {
    needVault: boolean;
    /** Whether a flag was given (a credential flag of another method is refused). */
    given?: (flag: string) => boolean;
  } = { needVault: true },
): string[] {
  const p: string[] = [];
  if (opts.needVault) {
    p.push(...vaultConnectionProblems(c.vault, { address: "vault.address", ca: "vault.caBundle" }));
    p.push(...authSettingsProblems(c.auth, opts.given ?? (() => false)));
    if (!/^[\w\-./]+$/.test(c.intermediate.caPath) || !c.intermediate.caPath.includes("sign")) {
      p.push(
        `intermediate.caPath: "${c.intermediate.caPath}" is not a PKI sign path; expected e.g. pki/root/sign-intermediate`,
      );
    }
    if (c.intermediate.csrPath !== undefined && !/^[\w\-./]+\/generate\/exported$/.test(c.intermediate.csrPath)) {
      p.push(
        `intermediate.csrPath: "${c.intermediate.csrPath}" must end in /generate/exported, e.g. pki_int/intermediate/generate/exported`,
      );
    }
  }
  const ttl = c.intermediate.ttlSeconds;
  if (!Number.isFinite(ttl) || ttl < 10 || ttl > 20 * 365 * 24 * 3600)
    p.push(`intermediate.ttl: ${ttl}s is out of range; expected 10s to 20 years`);
  if (!c.intermediate.commonName) p.push("intermediate.commonName: missing");
  if (!KEY_ALGORITHMS.includes(c.intermediate.keyAlgorithm)) {
    p.push(
      `intermediate.keyAlgorithm: "${String(c.intermediate.keyAlgorithm)}" is not supported; expected one of ${KEY_ALGORITHMS.join(", ")}`,
    );
  }
  if (
    !Number.isInteger(c.intermediate.maxPathLength) ||
    c.intermediate.maxPathLength < 0 ||
    c.intermediate.maxPathLength > 10
  ) {
    p.push(`intermediate.maxPathLength: ${c.intermediate.maxPathLength} must be an integer from 0 to 10`);
  }
  const g = c.intermediate.rotationGraceRatio;
  if (!(g > 0.01 && g < 0.99))
    p.push(`intermediate.secretRotationGracePeriodRatio: ${g} must be between 0.01 and 0.99`);
  if (!(c.intermediate.jitterRatio >= 0 && c.intermediate.jitterRatio <= 0.2))
    p.push(`intermediate.jitterRatio: ${c.intermediate.jitterRatio} must be between 0 and 0.2`);
  if (!/^[a-z0-9]([a-z0-9.\-_]*[a-z0-9])?$/.test(c.leaf.trustDomain)) {
    p.push(
      `leaf.trustDomain: "${c.leaf.trustDomain}" is not a SPIFFE trust domain; expected lower-case letters, digits, '.', '-' or '_', e.g. cluster.local`,
    );
  }
  for (const entry of c.istioCa.clusterAliases) {
    // istiod checks the cluster's own ID before aliases, so such an alias would never be used.
    if (entry.split("=")[0] === c.istioCa.clusterId)
      p.push(
        `istioCa.clusterAliases: "${entry}" makes this cluster's own ID (--cluster-id ${c.istioCa.clusterId}) an alias; expected aliases that are other names`,
      );
  }
  if (!(c.leaf.maxTtlSeconds >= 60)) p.push(`leaf.maxTtl: ${c.leaf.maxTtlSeconds}s must be at least 60s`);
  if (!(c.leaf.defaultTtlSeconds >= 60 && c.leaf.defaultTtlSeconds <= c.leaf.maxTtlSeconds)) {
    p.push(
      `leaf.defaultTtl: ${c.leaf.defaultTtlSeconds}s must be between 60s and leaf.maxTtl (${c.leaf.maxTtlSeconds}s)`,
    );
  }
  // Both must fall inside the grace period: refusing leaves, or turning unready, before renewal has even started would
  // take a healthy agent out of service.
  const grace = Math.floor(ttl * c.intermediate.rotationGraceRatio);
  const minLeaf = c.leaf.minTtlSeconds;
  if (!(Number.isFinite(minLeaf) && minLeaf >= 1 && minLeaf <= c.leaf.maxTtlSeconds && minLeaf < grace)) {
    p.push(
      `leaf.minTtl: ${minLeaf}s must be at least 1s, at most leaf.maxTtl (${c.leaf.maxTtlSeconds}s) and below the renewal grace period (${grace}s = ttl × grace ratio)`,
    );
  }
  const margin = c.serve.unreadyBeforeExpirySeconds;
  if (!(Number.isFinite(margin) && margin >= 0 && margin < grace)) {
    p.push(
      `serve.unreadyBeforeExpiry: ${margin}s must be at least 0s and below the renewal grace period (${grace}s = ttl × grace ratio)`,
    );
  }
  if (!c.serve.socketPath.startsWith("/")) p.push(`serve.socketPath: "${c.serve.socketPath}" must be an absolute path`);
  else if (Buffer.byteLength(c.serve.socketPath) > 100) {
    p.push(
      `serve.socketPath: "${c.serve.socketPath}" is ${Buffer.byteLength(c.serve.socketPath)} bytes; Unix socket paths must stay under 100 bytes`,
    );
  }
  if (c.serve.httpAddress && !isHostPort(c.serve.httpAddress)) {
    p.push(`serve.httpAddress: "${c.serve.httpAddress}" must be host:port, e.g. 0.0.0.0:15300`);
  }
  const counts: [string, number, number][] = [
    ["serve.limits.maxWatchPerConnection (--socket-max-watch-per-connection)", c.serve.limits.maxWatchPerConnection, 1],
    ["serve.limits.maxWatchTotal (--socket-max-watch-total)", c.serve.limits.maxWatchTotal, 1],
    [
      "serve.limits.maxWatchBufferedBytes (--socket-watch-max-buffered-bytes)",
      c.serve.limits.maxWatchBufferedBytes,
      4096,
    ],
    [
      "serve.limits.maxSignInFlightPerConnection (--socket-max-sign-in-flight-per-connection)",
      c.serve.limits.maxSignInFlightPerConnection,
      1,
    ],
    ["serve.limits.rotateMinIntervalMs (--rotate-min-interval)", c.serve.limits.rotateMinIntervalMs, 0],
    ["istioCa.maxInFlight (--istio-ca-max-in-flight)", c.istioCa.maxInFlight, 1],
    ["istioCa.authFailureBurst (--istio-ca-auth-failure-burst)", c.istioCa.authFailureBurst, 1],
    ["istioCa.authFailuresPerMinute (--istio-ca-auth-failures-per-minute)", c.istioCa.authFailuresPerMinute, 1],
  ];
  for (const [name, value, min] of counts) {
    if (!Number.isInteger(value) || value < min) p.push(`${name}: ${value} must be an integer ≥ ${min}`);
  }
  if (c.trustAnchors.pem.length > 0 && c.cacerts.dir !== undefined && !c.cacerts.multiRoot) {
    p.push(
      "trustAnchors: extra roots change istiod's root-cert.pem, which istiod accepts only in multi-root mode; add --multi-root (and run istiod with ISTIO_MULTIROOT_MESH=true)",
    );
  }
  if (c.cacerts.dir !== undefined && !c.cacerts.dir.startsWith("/"))
    p.push(`cacerts.dir: "${c.cacerts.dir}" must be an absolute path`);
  if (!Number.isInteger(c.cacerts.group) || c.cacerts.group < 0)
    p.push(`cacerts.group: ${c.cacerts.group} must be a numeric group id`);
  if (c.istioCa.address !== undefined && !isHostPort(c.istioCa.address)) {
    p.push(`istioCa.address: "${c.istioCa.address}" must be host:port, e.g. 0.0.0.0:15012`);
  }
  if (c.istioCa.address !== undefined && c.istioCa.servingNames.length === 0)
    p.push("istioCa.servingNames: at least one DNS name is needed");
  p.push(...istiodTlsProblems(c));
  if (c.rootConfigMaps.enabled && c.cacerts.dir !== undefined) {
    p.push(
      "--root-configmaps: for the mesh-CA mode (no --cacerts-dir); with cacerts istiod publishes " +
        "istio-ca-root-cert itself and the two writers would fight; remove one of them",
    );
  }
  if (!c.rootConfigMaps.enabled && (c.rootConfigMaps.adopt || c.rootConfigMaps.namespaceSelector.text !== "")) {
    p.push("--adopt and --root-namespace-selector: they only act with --root-configmaps; add it or remove them");
  }
  if (!(c.backoff.initialMs >= 10 && c.backoff.maxMs >= c.backoff.initialMs))
    p.push("backoff: initial must be ≥ 10ms and ≤ max");
  if (!LOG_LEVELS.includes(c.logLevel)) p.push(`logLevel: "${c.logLevel}" must be one of error, warn, info, debug`);
  return p;
}

/** The mesh-CA mode's istiod serving certificate settings. */
function istiodTlsProblems(c: Config): string[] {
  const p: string[] = [];
  const t = c.istiodTls;
  if (t.dir !== undefined && !t.dir.startsWith("/")) p.push(`istiodTls.dir: "${t.dir}" must be an absolute path`);
  if (!(Number.isFinite(t.ttlSeconds) && t.ttlSeconds >= 60))
    p.push(`istiodTls.ttl: ${t.ttlSeconds}s (--istiod-cert-ttl) must be at least 60s`);
  return p;
}

export { parseDuration } from "../cli/validate.js";
