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
import { KEY_ALGORITHMS, type KeyAlgorithmName } from "../crypto/keys.js";
import {
  applyFlags,
  parseCommandLine,
  renderHelp,
  switchFlag,
  valueFlag,
  type FlagTable,
  type FlagValues,
} from "../cli/flags.js";
import {
  duration,
  durationMs,
  list,
  logLevel,
  nonEmpty,
  normalizeAuthMount,
  optionalHostPort,
  ratio,
  text,
  vaultPath,
  wholeNumber,
} from "../cli/validate.js";
import { keyAlgorithm } from "../cli/key-algorithm.js";
import { vaultAuthFlags } from "../cli/vault-flags.js";

const flag = valueFlag<Config, string>;
const count = (min = 0) => wholeNumber(min);

/** The agent's flags (sidecar, init, status, doctor, setup-vault): one table drives parsing, defaults and --help. */
export const AGENT_FLAGS: FlagTable<Config> = {
  config: flag({
    help: "RootTrustPolicy file (YAML or JSON) to read settings from; the environment and flags override it",
    arg: "FILE",
    parse: text,
    set: () => undefined, // read first, by loadConfig
  }),
  ...vaultAuthFlags<Config>(),
  "vault-skip-verify": switchFlag<Config>({
    help: "DANGEROUS: do not verify Vault's TLS certificate (logged at every start); the variable takes true/1 or false/0",
    env: "VAULT_SKIP_VERIFY",
    set: (c) => (c.vault.insecureSkipVerify = true),
  }),
  "ca-path": flag({
    help: "Vault path that signs the intermediate CSR (pki_int/root/sign-intermediate signs from a Vault intermediate)",
    parse: vaultPath,
    set: (c, v) => (c.intermediate.caPath = v),
    get: (c) => c.intermediate.caPath,
  }),
  "csr-path": flag({
    help: "opt-in Gloo flow: Vault path that generates an exported key and CSR (.../intermediate/generate/exported)",
    parse: vaultPath,
    set: (c, v) => (c.intermediate.csrPath = v),
  }),
  ttl: valueFlag<Config, number>({
    help: "intermediate lifetime",
    arg: "DURATION",
    parse: duration("720h"),
    set: (c, v) => (c.intermediate.ttlSeconds = v),
    get: (c) => c.intermediate.ttlSeconds,
    format: "duration",
  }),
  "common-name": flag({
    help: "intermediate common name",
    parse: nonEmpty,
    set: (c, v) => (c.intermediate.commonName = v),
    get: (c) => c.intermediate.commonName,
  }),
  org: flag({ help: "intermediate organization", parse: text, set: (c, v) => (c.intermediate.organization = v) }),
  "key-algorithm": valueFlag<Config, KeyAlgorithmName>({
    help: `intermediate key algorithm: ${KEY_ALGORITHMS.join(", ")} (any case)`,
    parse: keyAlgorithm,
    set: (c, v) => (c.intermediate.keyAlgorithm = v),
    get: (c) => c.intermediate.keyAlgorithm,
  }),
  "max-path-length": valueFlag<Config, number>({
    help: "intermediate max path length",
    parse: wholeNumber(0, 10),
    set: (c, v) => (c.intermediate.maxPathLength = v),
    get: (c) => c.intermediate.maxPathLength,
  }),
  "grace-ratio": valueFlag<Config, number>({
    help: "renew when this fraction of the lifetime remains (±5% jitter)",
    parse: ratio(0.01, 0.99),
    set: (c, v) => (c.intermediate.rotationGraceRatio = v),
    get: (c) => c.intermediate.rotationGraceRatio,
  }),
  "trust-domain": flag({
    help: "SPIFFE trust domain of the leaves",
    parse: text,
    set: (c, v) => (c.leaf.trustDomain = v),
    get: (c) => c.leaf.trustDomain,
  }),
  "leaf-default-ttl": valueFlag<Config, number>({
    help: "leaf lifetime when a caller asks for none (lowered to --leaf-max-ttl when that is less)",
    arg: "DURATION",
    parse: duration("24h"),
    set: (c, v) => (c.leaf.defaultTtlSeconds = v),
    get: (c) => c.leaf.defaultTtlSeconds,
    format: "duration",
  }),
  "leaf-max-ttl": valueFlag<Config, number>({
    help: "longest leaf lifetime (always capped by the intermediate's)",
    arg: "DURATION",
    parse: duration("90d"),
    set: (c, v) => (c.leaf.maxTtlSeconds = v),
    get: (c) => c.leaf.maxTtlSeconds,
    format: "duration",
  }),
  "min-leaf-ttl": valueFlag<Config, number>({
    help:
      "refuse leaves (UNAVAILABLE) when the intermediate has less than this left; " +
      "lowered to 15% of the renewal grace period (--ttl × --grace-ratio) when that is less",
    arg: "DURATION",
    parse: duration("5m"),
    set: (c, v) => (c.leaf.minTtlSeconds = v),
    get: (c) => c.leaf.minTtlSeconds,
    format: "duration",
  }),
  "unready-before-expiry": valueFlag<Config, number>({
    help:
      "/readyz turns false this long before the intermediate expires; " +
      "lowered to 30% of the renewal grace period when that is less",
    arg: "DURATION",
    parse: duration("10m"),
    set: (c, v) => (c.serve.unreadyBeforeExpirySeconds = v),
    get: (c) => c.serve.unreadyBeforeExpirySeconds,
    format: "duration",
  }),
  socket: flag({
    help: "gRPC Unix socket path",
    arg: "PATH",
    parse: text,
    set: (c, v) => (c.serve.socketPath = v),
    get: (c) => c.serve.socketPath,
  }),
  "http-addr": flag({
    help: "host:port for /healthz, /readyz and /metrics; empty disables",
    arg: "HOST:PORT",
    parse: optionalHostPort,
    set: (c, v) => (c.serve.httpAddress = v),
    get: (c) => c.serve.httpAddress,
  }),
  "key-export": switchFlag<Config>({
    help: "include the private key in GetSigningBundle answers",
    set: (c) => (c.serve.keyExport = true),
  }),
  "cacerts-dir": flag({
    help: "write istiod's plugged-in CA files here (e.g. /etc/cacerts)",
    arg: "DIR",
    parse: text,
    set: (c, v) => (c.cacerts.dir = v),
  }),
  "cacerts-group": valueFlag<Config, number>({
    help: "numeric group of the cacerts files (istiod's)",
    parse: count(),
    set: (c, v) => (c.cacerts.group = v),
    get: (c) => c.cacerts.group,
  }),
  "trust-anchors-file": flag({
    help: "PEM file of extra roots to serve beside the signing root (Vault root rotation; needs --multi-root)",
    arg: "FILE",
    parse: text,
    set: (c, v) => (c.trustAnchors.file = v),
  }),
  "multi-root": switchFlag<Config>({
    help: "allow root changes in cacerts (istiod must run with ISTIO_MULTIROOT_MESH=true)",
    set: (c) => (c.cacerts.multiRoot = true),
  }),
  "istio-ca-addr": flag({
    help: "serve istio.v1.auth.IstioCertificateService with TLS here; off by default",
    arg: "HOST:PORT",
    parse: text,
    set: (c, v) => (c.istioCa.address = v),
  }),
  "istio-ca-names": valueFlag<Config, string[]>({
    help: "comma-separated DNS names/IPs in that listener's certificate",
    parse: list,
    set: (c, v) => (c.istioCa.servingNames = v),
    get: (c) => c.istioCa.servingNames,
  }),
  "istio-ca-audience": flag({
    help: "audience callers' tokens must carry",
    parse: text,
    set: (c, v) => (c.istioCa.audience = v),
    get: (c) => c.istioCa.audience,
  }),
  "istio-ca-max-in-flight": valueFlag<Config, number>({
    help: "CreateCertificate calls handled at once; more are refused",
    parse: count(1),
    set: (c, v) => (c.istioCa.maxInFlight = v),
    get: (c) => c.istioCa.maxInFlight,
  }),
  "istio-ca-auth-failure-burst": valueFlag<Config, number>({
    help: "failed authentications one peer address may make before being refused without a TokenReview",
    parse: count(1),
    set: (c, v) => (c.istioCa.authFailureBurst = v),
    get: (c) => c.istioCa.authFailureBurst,
  }),
  "istio-ca-auth-failures-per-minute": valueFlag<Config, number>({
    help: "failed authentications a peer address regains per minute",
    parse: count(1),
    set: (c, v) => (c.istioCa.authFailuresPerMinute = v),
    get: (c) => c.istioCa.authFailuresPerMinute,
  }),
  "socket-max-watch-per-connection": valueFlag<Config, number>({
    help: "WatchSigningBundle streams per socket connection",
    parse: count(1),
    set: (c, v) => (c.serve.limits.maxWatchPerConnection = v),
    get: (c) => c.serve.limits.maxWatchPerConnection,
  }),
  "socket-max-watch-total": valueFlag<Config, number>({
    help: "WatchSigningBundle streams on the socket in total",
    parse: count(1),
    set: (c, v) => (c.serve.limits.maxWatchTotal = v),
    get: (c) => c.serve.limits.maxWatchTotal,
  }),
  "socket-watch-max-buffered-bytes": valueFlag<Config, number>({
    help: "unread bytes a Watch stream may hold before it is dropped",
    parse: count(4096),
    set: (c, v) => (c.serve.limits.maxWatchBufferedBytes = v),
    get: (c) => c.serve.limits.maxWatchBufferedBytes,
  }),
  "socket-max-sign-in-flight-per-connection": valueFlag<Config, number>({
    help: "SignCertificate calls in flight per socket connection",
    parse: count(1),
    set: (c, v) => (c.serve.limits.maxSignInFlightPerConnection = v),
    get: (c) => c.serve.limits.maxSignInFlightPerConnection,
  }),
  "rotate-min-interval": valueFlag<Config, number>({
    help: "shortest time between two Vault signings caused by the Rotate RPC",
    arg: "DURATION",
    parse: durationMs("30s"),
    set: (c, v) => (c.serve.limits.rotateMinIntervalMs = v),
    get: (c) => c.serve.limits.rotateMinIntervalMs,
    format: "ms",
  }),
  "policy-name": flag({
    help: "RootTrustPolicy to read and watch through the apiserver (live reload; status and events)",
    parse: text,
    set: () => undefined, // read by the sidecar command
  }),
  "policy-namespace": flag({
    help: "namespace of that RootTrustPolicy",
    parse: text,
    set: () => undefined,
    defaultText: "$POD_NAMESPACE, else istio-system",
  }),
  kubeconfig: flag({
    help: "kubeconfig for running outside a pod (TokenReview, RootTrustPolicy); in a pod the service account is used",
    arg: "FILE",
    parse: text,
    set: (c, v) => (c.kube.kubeconfig = v),
  }),
  "backoff-initial": valueFlag<Config, number>({
    help: "first retry delay",
    arg: "DURATION",
    parse: durationMs("1s"),
    set: (c, v) => (c.backoff.initialMs = v),
    get: (c) => c.backoff.initialMs,
    format: "ms",
  }),
  "backoff-max": valueFlag<Config, number>({
    help: "longest retry delay",
    arg: "DURATION",
    parse: durationMs("5m"),
    set: (c, v) => (c.backoff.maxMs = v),
    get: (c) => c.backoff.maxMs,
    format: "ms",
  }),
  "log-level": flag({
    help: "error, warn, info or debug",
    parse: logLevel,
    set: (c, v) => (c.logLevel = v),
    get: (c) => c.logLevel,
  }),
};

export type FlagName = keyof typeof AGENT_FLAGS;
export type { FlagValues };

export function parseFlags(argv: string[]): FlagValues {
  return parseCommandLine(AGENT_FLAGS, argv).values;
}

export function loadConfig(
  flags: FlagValues,
  env: NodeJS.ProcessEnv = process.env,
  opts: { needVault: boolean; policyDoc?: unknown } = { needVault: true },
): Config {
  const problems: string[] = [];
  const c: Config = structuredClone(DEFAULT_CONFIG);

  const policyFile = str(flags.config);
  if (opts.policyDoc !== undefined) {
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
  if (env.POD_NAME) c.pod.name = env.POD_NAME;
  if (env.POD_NAMESPACE) c.pod.namespace = env.POD_NAMESPACE;
  // The policy document may name the mount in any of its spellings too.
  c.auth.mountPath = normalizeAuthMount(c.auth.mountPath);

  // A lower max TTL alone lowers the default with it, rather than being an error the operator did not cause.
  const defaultTtlUntouched = c.leaf.defaultTtlSeconds === DEFAULT_CONFIG.leaf.defaultTtlSeconds;
  if (defaultTtlUntouched && c.leaf.defaultTtlSeconds > c.leaf.maxTtlSeconds) {
    c.leaf.defaultTtlSeconds = c.leaf.maxTtlSeconds;
  }
  scaledExpiryDefaults(c);
  if (c.trustAnchors.file) {
    try {
      const pem = readFileSync(c.trustAnchors.file, "utf8");
      c.trustAnchors.pem =
        pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((b) => `${b}\n`) ?? [];
      if (c.trustAnchors.pem.length === 0)
        problems.push(`--trust-anchors-file ${c.trustAnchors.file}: holds no PEM certificate`);
    } catch (err) {
      problems.push(
        `--trust-anchors-file ${c.trustAnchors.file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? "error"})`,
      );
    }
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
  // The cacerts files carry the key istiod signs with, so the key must be exportable whenever that sink is on.
  problems.push(...validateConfig(c, opts));
  if (problems.length) throw new ConfigError(problems);
  return c;
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

function str(v: string | boolean | string[] | undefined): string | undefined {
  return typeof v === "string" && v.length > 0 ? v : undefined;
}

/** The help of a command that takes the agent's flags (sidecar, init, status, doctor, setup-vault). */
export function agentHelp(usage: string[], description: string, extra: FlagTable<Config> = {}): string {
  return renderHelp(usage, description, { ...AGENT_FLAGS, ...extra }, DEFAULT_CONFIG);
}
