// Builds the Config from, in rising precedence: defaults, a RootTrustPolicy file, the environment, then flags.
// Every source's problems are collected and reported together.
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import {
  ConfigError,
  DEFAULT_CONFIG,
  DEFAULT_MIN_LEAF_TTL_SECONDS,
  DEFAULT_UNREADY_BEFORE_EXPIRY_SECONDS,
  validateConfig,
  type Config,
} from "./config.js";
import { applyPolicyDocument } from "./root-trust-policy.js";
import { shadowingProblems, ShadowedByFlagError } from "./shadowing.js";
import { kubeAccessFlags } from "../cli/kube-flags.js";
import { KEY_ALGORITHMS } from "../crypto/keys.js";
import {
  applyFlags,
  parseCommandLine,
  renderHelp,
  valueFlag,
  type FlagTable,
  type FlagValues,
  fieldFlags,
  commandFlag,
} from "../cli/flags.js";
import {
  Expected,
  duration,
  durationMs,
  list,
  nonEmpty,
  normalizeAuthMount,
  optionalHostPort,
  ratio,
  revisionName,
  dnsNames,
  text,
  vaultPath,
  wholeNumber,
} from "../cli/validate.js";
import { keyAlgorithm } from "../cli/key-algorithm.js";
import { defaultIstiodDnsNames } from "../serve/istiod-cert.js";
import { retryLogFlags } from "../cli/service-flags.js";
import {
  VAULT_PROBE_HELP,
  loadVaultTlsFiles,
  resolveAuthDefaults,
  vaultAuthFlags,
  vaultProbeInterval,
  withProxyEnv,
} from "../cli/vault-flags.js";
import { readTrustAnchors } from "./trust-anchors.js";
import { parseNodeAccounts } from "../serve/node-authorizer.js";
import { parseClusterAliases } from "../kube/remote-clusters.js";
import { LabelSelectorError, parseLabelSelector, type LabelSelector } from "../kube/label-selector.js";

const flag = valueFlag<Config, string>;

/** --trusted-node-agents: ns/sa pairs, checked and normalised (an empty value trusts nobody). */
function trustedNodeAgents(v: string): string[] {
  try {
    return parseNodeAccounts(v).map((a) => `${a.namespace}/${a.serviceAccount}`);
  } catch (err) {
    throw new Expected(`namespace/serviceaccount pairs separated by commas (${(err as Error).message})`);
  }
}

function clusterAliases(v: string): string[] {
  try {
    return [...parseClusterAliases(v)].map(([alias, id]) => `${alias}=${id}`);
  } catch (err) {
    throw new Expected(`alias=clusterID pairs separated by commas, one alias per cluster (${(err as Error).message})`);
  }
}

/** More threads than this only add memory: one main thread cannot feed them (bench/RESULTS.md). */
const MAX_SIGNING_WORKERS = 64;
const { option, toggle, seconds, millis } = fieldFlags<Config>();
const count = (min = 0) => wholeNumber(min);

/** The agent's flags (sidecar, init, status, doctor, setup-vault): one table drives parsing, defaults and --help. */
export const AGENT_FLAGS: FlagTable<Config> = {
  config: commandFlag(
    "RootTrustPolicy file (YAML or JSON) to read settings from; the environment and flags override it",
    {
      arg: "FILE",
    },
  ),
  ...vaultAuthFlags<Config>(),
  "ca-path": option(
    "Vault path that signs the intermediate CSR (pki_int/root/sign-intermediate signs from a Vault intermediate)",
    vaultPath,
    (c) => c.intermediate.caPath,
  ),
  "csr-path": option(
    "opt-in Gloo flow: Vault path that generates an exported key and CSR (.../intermediate/generate/exported)",
    vaultPath,
    (c) => c.intermediate.csrPath,
  ),
  ttl: option("intermediate lifetime", duration("720h"), (c) => c.intermediate.ttlSeconds, {
    arg: "DURATION",
    format: "duration",
  }),
  "common-name": option("intermediate common name", nonEmpty, (c) => c.intermediate.commonName),
  org: flag({ help: "intermediate organization", parse: text, set: (c, v) => (c.intermediate.organization = v) }),
  "key-algorithm": option(
    `intermediate key algorithm: ${KEY_ALGORITHMS.join(", ")} (any case)`,
    keyAlgorithm,
    (c) => c.intermediate.keyAlgorithm,
  ),
  "max-path-length": option("intermediate max path length", wholeNumber(0, 10), (c) => c.intermediate.maxPathLength),
  "grace-ratio": option(
    "renew when this fraction of the lifetime remains (±5% jitter)",
    ratio(0.01, 0.99),
    (c) => c.intermediate.rotationGraceRatio,
  ),
  "trust-domain": option("SPIFFE trust domain of the leaves", text, (c) => c.leaf.trustDomain),
  "leaf-default-ttl": seconds(
    "leaf lifetime when a caller asks for none (lowered to --leaf-max-ttl when that is less)",
    duration("24h"),
    (c) => c.leaf.defaultTtlSeconds,
  ),
  "leaf-max-ttl": seconds(
    "longest leaf lifetime (always capped by the intermediate's)",
    duration("90d"),
    (c) => c.leaf.maxTtlSeconds,
  ),
  "min-leaf-ttl": seconds(
    "refuse leaves (UNAVAILABLE) when the intermediate has less than this left; " +
      "lowered to 15% of the renewal grace period (--ttl × --grace-ratio) when that is less",
    duration("5m"),
    (c) => c.leaf.minTtlSeconds,
  ),
  "unready-before-expiry": seconds(
    "/readyz turns false this long before the intermediate expires; " +
      "lowered to 30% of the renewal grace period when that is less",
    duration("10m"),
    (c) => c.serve.unreadyBeforeExpirySeconds,
  ),
  socket: option("gRPC Unix socket path", text, (c) => c.serve.socketPath, { arg: "PATH" }),
  "http-addr": option(
    "host:port for /healthz, /readyz and /metrics; empty disables",
    optionalHostPort,
    (c) => c.serve.httpAddress,
    { arg: "HOST:PORT" },
  ),
  "vault-probe-interval": millis(VAULT_PROBE_HELP, vaultProbeInterval, (c) => c.serve.vaultProbeIntervalMs),
  "key-export": toggle("include the private key in GetSigningBundle answers", (c) => c.serve.keyExport),
  "cacerts-dir": option("write istiod's plugged-in CA files here (e.g. /etc/cacerts)", text, (c) => c.cacerts.dir, {
    arg: "DIR",
  }),
  "cacerts-group": option("numeric group of the cacerts files (istiod's)", count(), (c) => c.cacerts.group),
  "trust-anchors-file": option(
    "PEM file of extra roots to serve beside the signing root (Vault root rotation; needs --multi-root)",
    text,
    (c) => c.trustAnchors.file,
    { arg: "FILE" },
  ),
  "multi-root": toggle(
    "allow root changes in cacerts (istiod must run with ISTIO_MULTIROOT_MESH=true)",
    (c) => c.cacerts.multiRoot,
  ),
  "istio-ca-addr": option(
    "serve istio.v1.auth.IstioCertificateService with TLS here; off by default",
    text,
    (c) => c.istioCa.address,
    { arg: "HOST:PORT" },
  ),
  "istio-ca-names": option(
    "comma-separated DNS names/IPs in that listener's certificate",
    list,
    (c) => c.istioCa.servingNames,
  ),
  "istio-ca-audience": option("audience callers' tokens must carry", text, (c) => c.istioCa.audience),
  "istio-ca-max-in-flight": option(
    "CreateCertificate calls handled at once; more are refused",
    count(1),
    (c) => c.istioCa.maxInFlight,
  ),
  "istio-ca-auth-failure-burst": option(
    "failed authentications one peer address may make before being refused without a TokenReview",
    count(1),
    (c) => c.istioCa.authFailureBurst,
  ),
  "istio-ca-auth-failures-per-minute": option(
    "failed authentications a peer address regains per minute",
    count(1),
    (c) => c.istioCa.authFailuresPerMinute,
  ),
  "trusted-node-agents": option(
    "comma-separated namespace/serviceaccount of node agents (ztunnel) that may ask the Istio CA for the identities " +
      "of pods on their own node (metadata ImpersonatedIdentity); empty: nobody",
    trustedNodeAgents,
    (c) => c.istioCa.trustedNodeAgents,
    { arg: "NS/SA,..." },
  ),
  "cluster-id": option(
    "this cluster's ID (Istio's CLUSTER_ID): Istio CA requests naming another cluster are reviewed by that cluster's " +
      "apiserver, from Secrets labelled istio/multiCluster=true in the agent's namespace",
    nonEmpty,
    (c) => c.istioCa.clusterId,
  ),
  "cluster-aliases": option(
    "other names Istio CA requests may give a cluster (istiod's --clusterAliases): alias=clusterID,...; an alias of " +
      "--cluster-id is this cluster, any other is looked up as its cluster ID",
    clusterAliases,
    (c) => c.istioCa.clusterAliases,
    { arg: "ALIAS=ID,..." },
  ),
  "istiod-tls-dir": option(
    "mesh-CA mode: write istiod's TLS serving certificate (tls.crt, tls.key, ca.crt) here, for istiod's " +
      "/var/run/secrets/istiod/tls; off by default",
    text,
    (c) => c.istiodTls.dir,
    { arg: "DIR" },
  ),
  "istiod-dns-names": option(
    "comma-separated DNS names of istiod's serving certificate",
    dnsNames,
    (c) => c.istiodTls.dnsNames,
    { defaultText: "istiod.$POD_NAMESPACE.svc (istiod-<rev>.$POD_NAMESPACE.svc with --revision)" },
  ),
  "istiod-cert-ttl": seconds(
    "lifetime of istiod's serving certificate (renewed at --grace-ratio and on every new intermediate)",
    duration("24h"),
    (c) => c.istiodTls.ttlSeconds,
  ),
  revision: option(
    "istiod revision this agent runs beside (names the default --istiod-dns-names)",
    revisionName,
    (c) => c.istiodTls.revision,
  ),
  "socket-max-watch-per-connection": option(
    "WatchSigningBundle streams per socket connection",
    count(1),
    (c) => c.serve.limits.maxWatchPerConnection,
  ),
  "socket-max-watch-total": option(
    "WatchSigningBundle streams on the socket in total",
    count(1),
    (c) => c.serve.limits.maxWatchTotal,
  ),
  "socket-watch-max-buffered-bytes": option(
    "unread bytes a Watch stream may hold before it is dropped",
    count(4096),
    (c) => c.serve.limits.maxWatchBufferedBytes,
  ),
  "socket-max-sign-in-flight-per-connection": option(
    "SignCertificate calls in flight per socket connection",
    count(1),
    (c) => c.serve.limits.maxSignInFlightPerConnection,
  ),
  "signing-workers": option(
    "worker threads signing leaves for the socket and the Istio CA listener; 0 signs on the main thread",
    wholeNumber(0, MAX_SIGNING_WORKERS),
    (c) => c.serve.signingWorkers,
    {
      env: "ISTIOD_VAULT_AGENT_SIGNING_WORKERS",
      arg: "N",
      defaultText: "CPUs the cgroup quota and availableParallelism() allow, minus one (max 4), logged at start",
    },
  ),
  "rotate-min-interval": millis(
    "shortest time between two Vault signings caused by the Rotate RPC",
    durationMs("30s"),
    (c) => c.serve.limits.rotateMinIntervalMs,
  ),
  "root-configmaps": toggle(
    "mesh-CA mode: keep ConfigMap istio-ca-root-cert (root-cert.pem = the served roots) in every namespace " +
      "--root-namespace-selector picks; one replica writes, elected with Lease istiod-vault-agent-root-cert",
    (c) => c.rootConfigMaps.enabled,
  ),
  "root-namespace-selector": valueFlag<Config, LabelSelector>({
    help: "label selector (kubectl -l syntax) of the namespaces that get istio-ca-root-cert",
    parse: namespaceSelector,
    set: (c, v) => (c.rootConfigMaps.namespaceSelector = v),
    arg: "SELECTOR",
    defaultText: "every namespace",
  }),
  adopt: toggle(
    "with --root-configmaps: take over an existing istio-ca-root-cert that lacks the label " +
      "app.kubernetes.io/managed-by=istiod-vault-agent (otherwise it is left alone and reported)",
    (c) => c.rootConfigMaps.adopt,
  ),
  "policy-name": commandFlag(
    "RootTrustPolicy to read (init) or read and watch (sidecar) through the apiserver: live reload, status, Events. " +
      "The policy is authoritative: a flag or variable setting one of its fields is refused",
  ),
  "policy-namespace": commandFlag("namespace of that RootTrustPolicy", {
    defaultText: "$POD_NAMESPACE, else istio-system",
  }),
  "status-lease-duration": commandFlag(
    "how long a Lease electing the one writer among replicas (the policy's status with --policy-name; the " +
      "ConfigMaps with --root-configmaps) lasts without renewal before another replica takes over",
    { arg: "DURATION", defaultText: "15s" },
  ),
  // Outside a pod (TokenReview, RootTrustPolicy; doctor and setup-vault from a laptop); in a pod the service account.
  ...kubeAccessFlags<Config>((c) => c.kube),
  ...retryLogFlags<Config>(),
};

export type FlagName = keyof typeof AGENT_FLAGS;
export type { FlagValues };

export function parseFlags(argv: string[]): FlagValues {
  return parseCommandLine(AGENT_FLAGS, argv).values;
}

export function loadConfig(
  flags: FlagValues,
  env: NodeJS.ProcessEnv = process.env,
  opts: {
    needVault: boolean;
    /** The RootTrustPolicy read through the apiserver: authoritative (flags and variables may not shadow it). */
    policyDoc?: unknown;
    /** How messages name that policy (namespace/name). */
    policyName?: string;
  } = { needVault: true },
): Config {
  const problems: string[] = [];
  const c: Config = structuredClone(DEFAULT_CONFIG);
  env = withProxyEnv(env);

  const policyFile = str(flags.config);
  if (opts.policyDoc !== undefined) {
    if (policyFile)
      problems.push(
        `--config ${policyFile}: not used with --policy-name, whose RootTrustPolicy is authoritative; remove one of them`,
      );
    problems.push(...applyPolicyDocument(c, opts.policyDoc));
  } else if (policyFile) {
    let doc: unknown;
    try {
      doc = parseYaml(readFileSync(policyFile, "utf8"));
    } catch (err) {
      problems.push(
        `--config ${policyFile}: cannot read or parse it (${(err as Error).message.split("\n")[0]}); expected a RootTrustPolicy in YAML or JSON`,
      );
    }
    if (doc !== undefined) problems.push(...applyPolicyDocument(c, doc));
  }

  // The environment (the names Vault's own CLI uses) and the flags, flag over variable.
  const values = Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined));
  for (const [name, v] of Object.entries(values)) {
    // A string flag given as a bare switch (no value) carries nothing.
    if (typeof v === "boolean" && AGENT_FLAGS[name]?.kind !== "boolean") delete values[name];
  }
  problems.push(...applyFlags(AGENT_FLAGS, values, env, c));
  const shadowing =
    opts.policyDoc === undefined
      ? []
      : shadowingProblems(AGENT_FLAGS, values, env, opts.policyDoc, opts.policyName ?? policyNameOf(opts.policyDoc));
  if (env.POD_NAME) c.pod.name = env.POD_NAME;
  if (env.POD_NAMESPACE) c.pod.namespace = env.POD_NAMESPACE;
  if (c.istiodTls.dir !== undefined && c.istiodTls.dnsNames.length === 0)
    c.istiodTls.dnsNames = defaultIstiodDnsNames(c.pod.namespace ?? "istio-system", c.istiodTls.revision);
  // The policy document may name the mount in any of its spellings too.
  c.auth.mountPath = normalizeAuthMount(c.auth.mountPath);
  const given = (flag: string) => values[flag] !== undefined;
  resolveAuthDefaults(c.auth, given("auth-mount"));

  // A lower max TTL alone lowers the default with it, rather than being an error the operator did not cause.
  const defaultTtlUntouched = c.leaf.defaultTtlSeconds === DEFAULT_CONFIG.leaf.defaultTtlSeconds;
  if (defaultTtlUntouched && c.leaf.defaultTtlSeconds > c.leaf.maxTtlSeconds) {
    c.leaf.defaultTtlSeconds = c.leaf.maxTtlSeconds;
  }
  scaledExpiryDefaults(c);
  if (c.trustAnchors.file) {
    // The same check every live reload makes (SIGHUP, the file watch), so start and reload refuse alike.
    const read = readTrustAnchors(c.trustAnchors.file, new Date());
    if (read.ok) c.trustAnchors.pem = read.pem;
    else problems.push(read.problem);
  }
  if (c.vault.caFile && c.vault.caPem === undefined) {
    try {
      c.vault.caPem = readFileSync(c.vault.caFile, "utf8");
    } catch (err) {
      problems.push(
        `vault CA file ${c.vault.caFile}: cannot read it (${(err as NodeJS.ErrnoException).code ?? "error"}); expected a PEM bundle`,
      );
    }
  }
  if (opts.needVault) problems.push(...loadVaultTlsFiles(c.vault, c.auth));
  // The cacerts files carry the key istiod signs with, so the key must be exportable whenever that sink is on.
  problems.push(...validateConfig(c, { ...opts, given }));
  if (shadowing.length) throw new ShadowedByFlagError([...shadowing, ...problems], shadowing);
  if (problems.length) throw new ConfigError(problems);
  return c;
}

function policyNameOf(doc: unknown): string {
  const m = (doc as { metadata?: { namespace?: unknown; name?: unknown } } | null)?.metadata;
  return typeof m?.name === "string" ? `${typeof m.namespace === "string" ? `${m.namespace}/` : ""}${m.name}` : "";
}

/**
 * A short renewal grace period (a short --ttl in tests, or a small grace ratio) lowers the untouched expiry defaults
 * with it, as a lower max TTL lowers the default TTL: to 15% (min leaf TTL) and 30% (readiness margin) of the grace
 * period, so renewal has most of that period to succeed first. Values set explicitly are kept and validated.
 */
function scaledExpiryDefaults(c: Config): void {
  const grace = Math.floor(c.intermediate.ttlSeconds * c.intermediate.rotationGraceRatio);
  if (!Number.isFinite(grace)) return;
  if (c.leaf.minTtlSeconds === DEFAULT_MIN_LEAF_TTL_SECONDS)
    c.leaf.minTtlSeconds = Math.min(DEFAULT_MIN_LEAF_TTL_SECONDS, Math.max(1, Math.floor(grace * 0.15)));
  if (c.serve.unreadyBeforeExpirySeconds === DEFAULT_UNREADY_BEFORE_EXPIRY_SECONDS)
    c.serve.unreadyBeforeExpirySeconds = Math.min(DEFAULT_UNREADY_BEFORE_EXPIRY_SECONDS, Math.floor(grace * 0.3));
}

function namespaceSelector(raw: string): LabelSelector {
  try {
    return parseLabelSelector(raw);
  } catch (err) {
    if (err instanceof LabelSelectorError)
      throw new Expected(`a label selector such as istio-injection=enabled or env in (prod,staging): ${err.message}`);
    throw err;
  }
}

function str(v: string | boolean | string[] | undefined): string | undefined {
  return typeof v === "string" && v.length > 0 ? v : undefined;
}

/** The help of a command that takes the agent's flags (sidecar, init, status, doctor, setup-vault). */
export function agentHelp(
  usage: string[],
  description: string,
  extra: FlagTable<Config> = {},
  omit: readonly string[] = [],
): string {
  const shown = Object.fromEntries(Object.entries(AGENT_FLAGS).filter(([name]) => !omit.includes(name)));
  return renderHelp(usage, description, { ...shown, ...extra }, DEFAULT_CONFIG);
}
