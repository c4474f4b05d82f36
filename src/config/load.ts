// Builds the Config from, in rising precedence: defaults, a RootTrustPolicy file, the environment, then flags.
// Every source's problems are collected and reported together.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { parse as parseYaml } from "yaml";
import {
  ConfigError,
  DEFAULT_CONFIG,
  DEFAULT_MIN_LEAF_TTL_SECONDS,
  DEFAULT_UNREADY_BEFORE_EXPIRY_SECONDS,
  parseDuration,
  validateConfig,
  type Config,
} from "./config.js";
import { applyPolicyDocument } from "./root-trust-policy.js";
import type { KeyAlgorithmName } from "../crypto/keys.js";
import { splitPemCertificates } from "../crypto/pem.js";

/** Flag name → [description, kind]. One table drives parsing and --help. */
export const AGENT_FLAGS = {
  config: ["RootTrustPolicy file (YAML or JSON) to read settings from", "string"],
  "vault-addr": ["Vault address, e.g. https://vault.vault:8200 (env VAULT_ADDR)", "string"],
  "vault-cacert": ["PEM file of CAs that sign Vault's TLS certificate (env VAULT_CACERT)", "string"],
  "vault-namespace": ["Vault namespace (env VAULT_NAMESPACE)", "string"],
  "vault-skip-verify": ["DANGEROUS: do not verify Vault's TLS certificate (logged at every start)", "boolean"],
  "auth-mount": ["Kubernetes auth mount path (default kubernetes)", "string"],
  "auth-role": ["Kubernetes auth role (default istiod-agent)", "string"],
  "token-path": [
    "service-account token file, re-read at every login (default /var/run/secrets/tokens/vault-token)",
    "string",
  ],
  "ca-path": ["Vault path that signs the intermediate CSR (default pki/root/sign-intermediate)", "string"],
  "csr-path": ["opt-in Gloo flow: Vault path that generates an exported key and CSR", "string"],
  ttl: ["intermediate TTL, e.g. 720h (default 30 days)", "string"],
  "common-name": ["intermediate common name", "string"],
  org: ["intermediate organization", "string"],
  "key-algorithm": ["ECDSA_P256 (default), ECDSA_P384, RSA_2048, RSA_3072 or RSA_4096", "string"],
  "max-path-length": ["intermediate max path length (default 0)", "string"],
  "grace-ratio": ["renew when this fraction of the lifetime remains (default 0.333)", "string"],
  "trust-domain": ["SPIFFE trust domain for leaves (default cluster.local)", "string"],
  "leaf-default-ttl": ["leaf TTL when a caller asks for none (default 24h)", "string"],
  "leaf-max-ttl": ["longest leaf TTL (default 90d; always capped by the intermediate)", "string"],
  "min-leaf-ttl": [
    "refuse leaves (UNAVAILABLE) when the intermediate has less than this left (default 5m, or 15% of the renewal grace period if less)",
    "string",
  ],
  "unready-before-expiry": [
    "/readyz turns false this long before the intermediate expires (default 10m, or 30% of the renewal grace period if less)",
    "string",
  ],
  socket: ["gRPC Unix socket path (default /var/run/istiod-vault-agent/agent.sock)", "string"],
  "http-addr": ["host:port for /healthz, /readyz, /metrics (default 0.0.0.0:15300; empty disables)", "string"],
  "key-export": ["include the private key in GetSigningBundle answers", "boolean"],
  "cacerts-dir": ["write istiod's plugged-in CA files here (e.g. /etc/cacerts)", "string"],
  "cacerts-group": ["numeric group for the cacerts files (default 1337, istiod's)", "string"],
  "trust-anchors-file": ["PEM file of extra roots to serve beside the signing root (Vault root rotation)", "string"],
  "multi-root": ["allow root changes in cacerts (istiod must run with ISTIO_MULTIROOT_MESH=true)", "boolean"],
  "istio-ca-addr": ["serve istio.v1.auth.IstioCertificateService with TLS here (host:port); off by default", "string"],
  "istio-ca-names": ["comma-separated DNS names/IPs for that listener's certificate", "string"],
  "istio-ca-audience": ["audience callers' tokens must carry (default istio-ca)", "string"],
  "istio-ca-max-in-flight": ["CreateCertificate calls handled at once; more are refused (default 64)", "string"],
  "istio-ca-auth-failure-burst": [
    "failed authentications one peer address may make before being refused without a TokenReview (default 20)",
    "string",
  ],
  "istio-ca-auth-failures-per-minute": [
    "failed authentications a peer address regains per minute (default 30)",
    "string",
  ],
  "socket-max-watch-per-connection": ["WatchSigningBundle streams per socket connection (default 16)", "string"],
  "socket-max-watch-total": ["WatchSigningBundle streams on the socket in total (default 256)", "string"],
  "socket-watch-max-buffered-bytes": [
    "unread bytes a Watch stream may hold before it is dropped (default 65536)",
    "string",
  ],
  "socket-max-sign-in-flight-per-connection": [
    "SignCertificate calls in flight per socket connection (default 32)",
    "string",
  ],
  "rotate-min-interval": ["shortest time between two Vault signings caused by the Rotate RPC (default 30s)", "string"],
  "policy-name": ["RootTrustPolicy to read and watch through the apiserver (live reload; status and events)", "string"],
  "policy-namespace": ["namespace of that RootTrustPolicy (default: POD_NAMESPACE, else istio-system)", "string"],
  kubeconfig: ["kubeconfig for running outside a pod (TokenReview for the Istio CA listener)", "string"],
  "backoff-initial": ["first retry delay (default 1s)", "string"],
  "backoff-max": ["longest retry delay (default 5m)", "string"],
  "log-level": ["error, warn, info (default) or debug", "string"],
  help: ["show this help", "boolean"],
} as const;

export type FlagName = keyof typeof AGENT_FLAGS;
export type FlagValues = Partial<Record<FlagName, string | boolean>>;

export function parseFlags(argv: string[]): FlagValues {
  const options = Object.fromEntries(Object.entries(AGENT_FLAGS).map(([name, [, type]]) => [name, { type: type }]));
  try {
    const { values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false });
    return values;
  } catch (err) {
    throw new ConfigError([`flags: ${(err as Error).message}`]);
  }
}

export function flagHelp(): string {
  return Object.entries(AGENT_FLAGS)
    .map(([name, [desc, type]]) => `  --${name}${type === "string" ? " VALUE" : ""}\n      ${desc}`)
    .join("\n");
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

  // Environment (the names Vault's own CLI uses, and the pod's downward API).
  if (env.VAULT_ADDR) c.vault.address = env.VAULT_ADDR;
  if (env.VAULT_CACERT) c.vault.caFile = env.VAULT_CACERT;
  if (env.VAULT_NAMESPACE) c.vault.namespace = env.VAULT_NAMESPACE;
  if (env.VAULT_SKIP_VERIFY !== undefined && env.VAULT_SKIP_VERIFY !== "") {
    // Strict parsing on purpose: node-vault treats *any* non-empty value, even "false", as "skip".
    if (["true", "1"].includes(env.VAULT_SKIP_VERIFY)) c.vault.insecureSkipVerify = true;
    else if (!["false", "0"].includes(env.VAULT_SKIP_VERIFY))
      problems.push(`VAULT_SKIP_VERIFY: "${env.VAULT_SKIP_VERIFY}" must be true or false`);
  }
  if (env.POD_NAME) c.pod.name = env.POD_NAME;
  if (env.POD_NAMESPACE) c.pod.namespace = env.POD_NAMESPACE;

  // Flags.
  const set = <T>(name: FlagName, apply: (v: string) => T | undefined, assign: (v: T) => void, expected: string) => {
    const raw = flags[name];
    if (raw === undefined || typeof raw === "boolean") return;
    const v = apply(raw);
    if (v === undefined || (typeof v === "number" && !Number.isFinite(v)))
      problems.push(`--${name}: "${raw}" is invalid; expected ${expected}`);
    else assign(v);
  };
  const text = (v: string) => v;
  const seconds = (v: string) => parseDuration(v);
  const num = (v: string) => (/^-?\d+(\.\d+)?$/.test(v) ? Number(v) : undefined);
  set("vault-addr", text, (v) => (c.vault.address = v), "a URL");
  set("vault-cacert", text, (v) => (c.vault.caFile = v), "a file path");
  set("vault-namespace", text, (v) => (c.vault.namespace = v), "a namespace");
  if (flags["vault-skip-verify"] === true) c.vault.insecureSkipVerify = true;
  set("auth-mount", text, (v) => (c.auth.mountPath = v), "a mount path");
  set("auth-role", text, (v) => (c.auth.role = v), "a role name");
  set("token-path", text, (v) => (c.auth.tokenPath = v), "a file path");
  set("ca-path", text, (v) => (c.intermediate.caPath = v), "a Vault path");
  set("csr-path", text, (v) => (c.intermediate.csrPath = v), "a Vault path");
  set("ttl", seconds, (v) => (c.intermediate.ttlSeconds = v), "a duration such as 720h");
  set("common-name", text, (v) => (c.intermediate.commonName = v), "a name");
  set("org", text, (v) => (c.intermediate.organization = v), "a name");
  set("key-algorithm", text, (v) => (c.intermediate.keyAlgorithm = v as KeyAlgorithmName), "a key algorithm");
  set("max-path-length", num, (v) => (c.intermediate.maxPathLength = v), "an integer");
  set("grace-ratio", num, (v) => (c.intermediate.rotationGraceRatio = v), "a number between 0 and 1");
  set("trust-domain", text, (v) => (c.leaf.trustDomain = v), "a trust domain");
  set("leaf-default-ttl", seconds, (v) => (c.leaf.defaultTtlSeconds = v), "a duration such as 24h");
  set("leaf-max-ttl", seconds, (v) => (c.leaf.maxTtlSeconds = v), "a duration such as 90d");
  set("min-leaf-ttl", seconds, (v) => (c.leaf.minTtlSeconds = v), "a duration such as 5m");
  set("unready-before-expiry", seconds, (v) => (c.serve.unreadyBeforeExpirySeconds = v), "a duration such as 10m");
  set("socket", text, (v) => (c.serve.socketPath = v), "an absolute path");
  if (typeof flags["http-addr"] === "string") c.serve.httpAddress = flags["http-addr"];
  if (flags["key-export"] === true) c.serve.keyExport = true;
  set("cacerts-dir", text, (v) => (c.cacerts.dir = v), "a directory");
  set("cacerts-group", num, (v) => (c.cacerts.group = v), "a numeric group id");
  if (flags["multi-root"] === true) c.cacerts.multiRoot = true;
  set("trust-anchors-file", text, (v) => (c.trustAnchors.file = v), "a file path");
  set("istio-ca-addr", text, (v) => (c.istioCa.address = v), "host:port");
  set(
    "istio-ca-names",
    (v) =>
      v
        .split(",")
        .map((x) => x.trim())
        .filter(Boolean),
    (v) => (c.istioCa.servingNames = v),
    "names",
  );
  set("istio-ca-audience", text, (v) => (c.istioCa.audience = v), "an audience");
  const count = (v: string) => (/^\d+$/.test(v) ? Number(v) : undefined);
  const lim = c.serve.limits;
  set("istio-ca-max-in-flight", count, (v) => (c.istioCa.maxInFlight = v), "a whole number");
  set("istio-ca-auth-failure-burst", count, (v) => (c.istioCa.authFailureBurst = v), "a whole number");
  set("istio-ca-auth-failures-per-minute", count, (v) => (c.istioCa.authFailuresPerMinute = v), "a whole number");
  set("socket-max-watch-per-connection", count, (v) => (lim.maxWatchPerConnection = v), "a whole number");
  set("socket-max-watch-total", count, (v) => (lim.maxWatchTotal = v), "a whole number");
  set("socket-watch-max-buffered-bytes", count, (v) => (lim.maxWatchBufferedBytes = v), "a number of bytes");
  set(
    "socket-max-sign-in-flight-per-connection",
    count,
    (v) => (lim.maxSignInFlightPerConnection = v),
    "a whole number",
  );
  set("rotate-min-interval", seconds, (v) => (lim.rotateMinIntervalMs = v * 1000), "a duration such as 30s");
  set("kubeconfig", text, (v) => (c.kube.kubeconfig = v), "a file path");
  set("backoff-initial", seconds, (v) => (c.backoff.initialMs = v * 1000), "a duration such as 1s");
  set("backoff-max", seconds, (v) => (c.backoff.maxMs = v * 1000), "a duration such as 5m");
  set("log-level", text, (v) => (c.logLevel = v), "a log level");

  // A lower max TTL alone lowers the default with it, rather than being an error the operator did not cause.
  const defaultTtlUntouched = c.leaf.defaultTtlSeconds === DEFAULT_CONFIG.leaf.defaultTtlSeconds;
  if (defaultTtlUntouched && c.leaf.defaultTtlSeconds > c.leaf.maxTtlSeconds) {
    c.leaf.defaultTtlSeconds = c.leaf.maxTtlSeconds;
  }
  scaledExpiryDefaults(c);
  if (c.trustAnchors.file) {
    try {
      const pem = readFileSync(c.trustAnchors.file, "utf8");
      c.trustAnchors.pem = splitPemCertificates(pem, c.trustAnchors.file);
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

function str(v: string | boolean | undefined): string | undefined {
  return typeof v === "string" && v.length > 0 ? v : undefined;
}
