// The relay command's configuration: Gloo-style relay mTLS certificates and the shared identity token, issued from
// Vault into Kubernetes Secrets. One flag table drives parsing and --help; every problem is reported at once, each
// naming the flag and what is expected.
import { ConfigError } from "../config/config.js";
import { KEY_ALGORITHMS, type KeyAlgorithmName } from "../crypto/keys.js";
import {
  applyFlags,
  commandFlag,
  fieldFlags,
  parseCommandLine,
  readFlagFile,
  renderHelp,
  valueFlag,
  type FlagTable,
  type FlagValues,
} from "../cli/flags.js";
import {
  Expected,
  dnsName,
  duration,
  hostPort,
  isDnsName,
  list,
  namespaceName,
  optionalHostPort,
  positive,
  ratio,
  vaultName,
  vaultPath,
} from "../cli/validate.js";
import { keyAlgorithm } from "../cli/key-algorithm.js";
import { kubeAccessFlags } from "../cli/kube-flags.js";
import { backoffProblem, retryLogFlags } from "../cli/service-flags.js";
import {
  defaultVaultAuthSection,
  VAULT_PROBE_HELP,
  loadVaultTlsFiles,
  withProxyEnv,
  vaultAuthFlags,
  vaultConnectionProblems,
  authSettingsProblems,
  resolveAuthDefaults,
  vaultProbeInterval,
  type VaultAuthSection,
} from "../cli/vault-flags.js";

export type RelayRole = "server" | "agent";

export interface RelaySecretNames {
  root: string;
  server: string;
  client: string;
  signing: string;
  token: string;
}

export interface RelayConfig {
  role: RelayRole;
  /** The workload cluster's name (agent role): the client certificate's DNS SAN. */
  cluster: string | undefined;
  namespace: string;
  /** The Vault/auth section every Vault-using mode shares (its flags: vaultAuthFlags). */
  vault: VaultAuthSection["vault"] & { caPem: string | undefined };
  auth: VaultAuthSection["auth"];
  pkiMount: string;
  serverRole: string;
  clientRole: string;
  /** Server role: also keep relay-tls-signing-secret, an intermediate CA signed by <pki>/root/sign-intermediate. */
  signingIntermediate: boolean;
  signingCommonName: string;
  serverDns: string[];
  /** KV v2 data path of the shared identity token (only with --shared-identity-token). */
  kvPath: string;
  /**
   * Opt-in: one identity token shared by every cluster (any holder can bootstrap a certificate for any cluster name).
   * Off by default: each registered cluster has its own token at <clusterTokensPath>/<cluster>.
   */
  sharedToken: boolean;
  /** KV v2 data prefix of the per-cluster identity tokens: one entry per registered cluster. */
  clusterTokensPath: string;
  /** Server role: the workload clusters to register (a token each in KV, and a Secret <token-secret>-<cluster>). */
  clusters: string[];
  /** The Vault PKI mount that holds the Istio root: the relay refuses to sign from it unless allowed explicitly. */
  istioPkiMount: string;
  allowIstioRootMount: boolean;
  /** DNS name constraints (permitted subtrees) of relay-tls-signing-secret's CA: the names it may sign for. */
  signingPermittedDns: string[];
  ttlSeconds: number;
  signingTtlSeconds: number;
  /** Renew when this fraction of a certificate's lifetime remains. */
  graceRatio: number;
  /** ± jitter on the renewal point, as a fraction of the lifetime. */
  jitterRatio: number;
  keyAlgorithm: KeyAlgorithmName;
  secrets: RelaySecretNames;
  /** Take over Secrets of the same name that lack the managed-by label. */
  adopt: boolean;
  kubeconfig: string | undefined;
  context: string | undefined;
  /** host:port for /healthz, /readyz and /metrics; empty disables. */
  httpAddress: string;
  /** Reconcile every Secret once and exit (init containers, tests). */
  once: boolean;
  /** How often every Secret is re-checked (and the identity token re-read from Vault) between renewals. */
  resyncSeconds: number;
  /** GET sys/health this often for the vault_up gauge (not in bootstrap mode, which has no Vault); 0 disables. */
  vaultProbeIntervalMs: number;
  backoff: { initialMs: number; maxMs: number };
  logLevel: string;
  /** Server role: also run the certificate issuer that workload-cluster agents bootstrap and renew from. */
  issuer: RelayIssuerConfig;
  /** Agent role: obtain the client certificate from an issuer (no Vault in the workload cluster). */
  bootstrap: RelayBootstrapConfig;
}

export interface RelayIssuerConfig {
  enabled: boolean;
  /** host:port of the issuer's TLS gRPC listener. */
  address: string;
  /** How long the previous identity token stays valid after the token in Vault KV changes. */
  tokenOverlapSeconds: number;
  /** Lifetime of the client certificates the issuer signs (capped by its signing intermediate's remaining life). */
  clientTtlSeconds: number;
  /** Token bucket per identity token (Bootstrap) or per cluster (Renew): refill rate and burst. */
  ratePerSecond: number;
  burst: number;
  /** Token bucket per peer address, taken before any authentication (Bootstrap and Renew). */
  peerRatePerSecond: number;
  peerBurst: number;
  /** How often the identity tokens are re-read from Vault KV: the bound on how long a deleted token still works. */
  tokenRefreshSeconds: number;
  /** How long after its Bootstrap a certificate chain may still be renewed over mTLS (then: bootstrap again). */
  maxBootstrapAgeSeconds: number;
}

export interface RelayBootstrapConfig {
  /** host:port of the issuer; set means bootstrap mode. */
  address: string | undefined;
  /** The name the issuer's certificate must carry (TLS server name). */
  serverName: string;
}

/** Flags that configure Vault access: refused in --bootstrap mode, where the agent never talks to Vault. */
export const VAULT_FLAGS = [
  ...Object.keys(vaultAuthFlags<RelayConfig>()),
  "pki-mount",
  "server-role",
  "client-role",
  "kv-path",
  "cluster-tokens-path",
  "signing-ttl",
] as const;

export const DEFAULT_RELAY_CONFIG: Omit<RelayConfig, "role"> = {
  cluster: undefined,
  namespace: "gloo-mesh",
  ...defaultVaultAuthSection("relay"),
  pkiMount: "pki_relay",
  serverRole: "relay-server",
  clientRole: "relay-client",
  signingIntermediate: false,
  signingCommonName: "relay-tls-signing-ca",
  serverDns: ["gloo-mesh-mgmt-server.gloo-mesh"],
  kvPath: "secret/data/relay/identity-token",
  sharedToken: false,
  clusterTokensPath: "secret/data/relay/cluster-tokens",
  clusters: [],
  istioPkiMount: "pki",
  allowIstioRootMount: false,
  signingPermittedDns: [],
  ttlSeconds: 720 * 3600,
  signingTtlSeconds: 720 * 3600,
  graceRatio: 1 / 3,
  jitterRatio: 0.05,
  keyAlgorithm: "ECDSA_P256",
  secrets: {
    root: "relay-root-tls-secret",
    server: "relay-server-tls-secret",
    client: "relay-client-tls-secret",
    signing: "relay-tls-signing-secret",
    token: "relay-identity-token-secret",
  },
  adopt: false,
  kubeconfig: undefined,
  context: undefined,
  httpAddress: "0.0.0.0:15300",
  once: false,
  resyncSeconds: 300,
  vaultProbeIntervalMs: 15_000,
  backoff: { initialMs: 1_000, maxMs: 300_000 },
  logLevel: "info",
  issuer: {
    enabled: false,
    address: "0.0.0.0:9910",
    tokenOverlapSeconds: 24 * 3600,
    clientTtlSeconds: 720 * 3600,
    ratePerSecond: 5,
    burst: 20,
    peerRatePerSecond: 10,
    peerBurst: 50,
    tokenRefreshSeconds: 30,
    maxBootstrapAgeSeconds: 90 * 86400,
  },
  bootstrap: { address: undefined, serverName: "gloo-mesh-mgmt-server.gloo-mesh" },
};

type C = RelayConfig;
const flag = valueFlag<C, string>;
const { option, toggle, seconds, millis } = fieldFlags<C>();
const lifetime = (min: number, max?: number) => duration("720h or 20s", min, max);
/** A burst: a whole number of requests, at least 1. */
const burst = (v: string) => Math.max(1, Math.floor(positive(100_000)(v)));
const kvDataPath = (what: string) => (v: string) => {
  const s = vaultPath(v);
  if (!/^[\w\-.]+\/data\/[\w\-./]*[\w\-.]$/.test(s)) throw new Expected(`a KV v2 data path <mount>/data/<${what}>`);
  return s;
};
const serverDnsNames = (v: string) =>
  list(v.toLowerCase()).map((d) => {
    if (!isDnsName(d.replace(/^\*\./, "")))
      throw new Expected(`DNS names such as gloo-mesh-mgmt-server.gloo-mesh; "${d}" is not one`);
    return d;
  });
const secretFlag = (key: keyof RelaySecretNames, what: string) =>
  flag({
    help: `name of the ${what} Secret`,
    parse: dnsName,
    set: (c, v) => (c.secrets[key] = v),
    get: (c) => c.secrets[key],
  });

/** The relay flags: the shared Vault/auth section plus the relay's own. One table drives parsing and --help. */
export const RELAY_FLAGS: FlagTable<C> = {
  role: commandFlag("server (management cluster) or agent (workload cluster); required", { arg: "server|agent" }),
  cluster: option(
    "agent role: the workload cluster's name, used as the client certificate's DNS SAN; required",
    dnsName,
    (c) => c.cluster,
  ),
  namespace: option("namespace of the relay Secrets", namespaceName, (c) => c.namespace),
  ...vaultAuthFlags<C>(),
  "pki-mount": option(
    "Vault PKI mount that signs the relay certificates, separate from the Istio root's mount",
    vaultPath,
    (c) => c.pkiMount,
  ),
  "server-role": option("Vault PKI role for the server certificate: <pki>/sign/<role>", vaultName, (c) => c.serverRole),
  "client-role": option(
    "Vault PKI role for agent client certificates: <pki>/sign/<role>",
    vaultName,
    (c) => c.clientRole,
  ),
  "signing-intermediate": toggle(
    "server role: also keep relay-tls-signing-secret, an intermediate CA from <pki>/root/sign-intermediate",
    (c) => c.signingIntermediate,
  ),
  "signing-ttl": option("lifetime of the signing intermediate", lifetime(10), (c) => c.signingTtlSeconds, {
    arg: "DURATION",
    defaultText: "--ttl",
  }),
  "server-dns": option("server role: comma-separated DNS SANs", serverDnsNames, (c) => c.serverDns),
  "kv-path": option(
    "with --shared-identity-token: Vault KV v2 data path of the shared token",
    kvDataPath("key"),
    (c) => c.kvPath,
  ),
  "shared-identity-token": toggle(
    "opt-in, insecure: one identity token for every cluster (any holder can get a certificate for any cluster " +
      "name); by default each cluster registered with --clusters has its own token",
    (c) => c.sharedToken,
  ),
  "cluster-tokens-path": option(
    "Vault KV v2 data prefix of the per-cluster identity tokens, one entry per cluster",
    kvDataPath("prefix"),
    (c) => c.clusterTokensPath,
  ),
  clusters: option(
    "server role: comma-separated workload clusters to register: each gets its own identity token in Vault KV " +
      "(<cluster-tokens-path>/<name>) and a Secret <token-secret>-<name> to copy to that cluster",
    (v) => list(v.toLowerCase()).map(dnsName),
    (c) => c.clusters,
  ),
  "istio-pki-mount": option(
    "the PKI mount that holds the Istio (mesh) root; the relay refuses to sign from it",
    vaultPath,
    (c) => c.istioPkiMount,
  ),
  "signing-permitted-dns": option(
    "server role with --signing-intermediate: comma-separated DNS names the signing CA may sign for (its name " +
      "constraints); required with --signing-intermediate",
    (v) => list(v.toLowerCase()).map(dnsName),
    (c) => c.signingPermittedDns,
    { defaultText: "--clusters" },
  ),
  "allow-istio-root-mount": toggle(
    "let the relay sign from --istio-pki-mount anyway (relay certificates then chain to the mesh root)",
    (c) => c.allowIstioRootMount,
  ),
  ttl: seconds("certificate lifetime", lifetime(10), (c) => c.ttlSeconds),
  "grace-ratio": option(
    "renew when this fraction of a certificate's lifetime remains",
    ratio(0.01, 0.99),
    (c) => c.graceRatio,
  ),
  "key-algorithm": option(
    `key algorithm: ${KEY_ALGORITHMS.join(", ")} (any case)`,
    keyAlgorithm,
    (c) => c.keyAlgorithm,
  ),
  "root-secret": secretFlag("root", "root CA"),
  "server-secret": secretFlag("server", "server certificate"),
  "client-secret": secretFlag("client", "client certificate"),
  "signing-secret": secretFlag("signing", "signing intermediate"),
  "token-secret": secretFlag("token", "identity token"),
  adopt: toggle("take over existing Secrets of those names that lack the managed-by label", (c) => c.adopt),
  ...kubeAccessFlags<RelayConfig>((c) => c),
  "http-addr": option(
    "host:port for /healthz, /readyz and /metrics; empty disables",
    optionalHostPort,
    (c) => c.httpAddress,
    { arg: "HOST:PORT" },
  ),
  once: toggle("reconcile every Secret once and exit (0 when all are in place)", (c) => c.once),
  resync: seconds(
    "re-check every Secret and re-read the identity token this often",
    lifetime(1, 7 * 86400),
    (c) => c.resyncSeconds,
  ),
  "vault-probe-interval": millis(VAULT_PROBE_HELP, vaultProbeInterval, (c) => c.vaultProbeIntervalMs),
  ...retryLogFlags<C>(),
  issuer: toggle(
    "server role: also serve the certificate issuer (TLS gRPC, relay server certificate) that agents started " +
      "with --bootstrap use instead of Vault; it signs with an in-memory intermediate from <pki>/root/sign-intermediate",
    (c) => c.issuer.enabled,
  ),
  "issuer-addr": option("server role with --issuer: host:port of the issuer", hostPort, (c) => c.issuer.address, {
    arg: "HOST:PORT",
  }),
  "token-overlap": seconds(
    "server role with --issuer: how long the previous identity token is still accepted after it changes in Vault KV",
    lifetime(0, 365 * 86400),
    (c) => c.issuer.tokenOverlapSeconds,
  ),
  "client-ttl": option(
    "server role with --issuer: lifetime of the client certificates it signs",
    lifetime(10),
    (c) => c.issuer.clientTtlSeconds,
    { arg: "DURATION", defaultText: "--ttl" },
  ),
  "issuer-rate": option(
    "server role with --issuer: requests per second per identity token or cluster",
    positive(10_000),
    (c) => c.issuer.ratePerSecond,
  ),
  "issuer-burst": option(
    "server role with --issuer: burst per identity token or cluster",
    burst,
    (c) => c.issuer.burst,
  ),
  "issuer-peer-rate": option(
    "server role with --issuer: requests per second per peer address, before authentication",
    positive(10_000),
    (c) => c.issuer.peerRatePerSecond,
  ),
  "issuer-peer-burst": option("server role with --issuer: burst per peer address", burst, (c) => c.issuer.peerBurst),
  "token-refresh": seconds(
    "server role with --issuer: re-read the identity tokens from Vault KV this often; a deleted token is refused within this interval",
    lifetime(1, 3600),
    (c) => c.issuer.tokenRefreshSeconds,
  ),
  "max-bootstrap-age": seconds(
    "server role with --issuer: a certificate chain renews over mTLS for at most this long after its Bootstrap, " +
      "then the cluster must bootstrap again with its token",
    lifetime(10),
    (c) => c.issuer.maxBootstrapAgeSeconds,
  ),
  bootstrap: option(
    "agent role: host:port of the management relay's issuer; the client certificate comes from there (identity " +
      "token once, then mTLS renewals), so no Vault flags are used or accepted",
    hostPort,
    (c) => c.bootstrap.address,
    { arg: "HOST:PORT" },
  ),
  "issuer-server-name": option(
    "agent role with --bootstrap: the name the issuer's certificate must carry",
    (v) => dnsName(v.trim().toLowerCase()),
    (c) => c.bootstrap.serverName,
  ),
  "print-policy": commandFlag("print the least-privilege Vault policy for these flags and exit", { kind: "boolean" }),
};

export type ParsedRelayArgs =
  | { kind: "help" }
  /** --print-policy: `roles` are the roles the policy must serve (both when --role is not given). */
  | { kind: "print-policy"; config: RelayConfig; roles: RelayRole[] }
  | { kind: "run"; config: RelayConfig };

export function relayHelp(): string {
  return renderHelp(
    [
      "istiod-vault-agent relay --role server|agent [flags]",
      "istiod-vault-agent relay register-cluster NAME [server flags]   (a token in Vault KV + Secret for NAME)",
    ],
    [
      "Issues and rotates the Gloo relay mTLS certificates from Vault into Kubernetes Secrets. Keys are generated in this",
      "process and Vault signs CSRs (<pki>/sign/<role>), so Vault never sees a relay private key. Secrets it writes carry",
      "the label app.kubernetes.io/managed-by=istiod-vault-agent; others are never overwritten unless --adopt is given.",
      "Kubernetes RBAC needed: get, create and update on secrets in the namespace.",
    ].join("\n"),
    RELAY_FLAGS,
    { ...structuredClone(DEFAULT_RELAY_CONFIG), role: "server" },
  );
}

/** Parses and validates the relay flags (with VAULT_ADDR / VAULT_CACERT / VAULT_NAMESPACE from `env`). */
export function parseRelayArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): ParsedRelayArgs {
  const { values: flags } = parseCommandLine(RELAY_FLAGS, argv);
  if (flags.help === true) return { kind: "help" };
  const printPolicy = flags["print-policy"] === true;
  const role = typeof flags.role === "string" ? flags.role : undefined;
  const problems: string[] = [];
  if (role !== "server" && role !== "agent" && !(printPolicy && role === undefined)) {
    problems.push(
      role === undefined
        ? "--role: missing; expected server (management cluster) or agent (workload cluster)"
        : `--role: "${role}" is invalid; expected server or agent`,
    );
  }
  const c: RelayConfig = { ...structuredClone(DEFAULT_RELAY_CONFIG), role: role === "agent" ? "agent" : "server" };
  // --bootstrap mode never talks to Vault, so Vault's environment variables are not read there.
  const bootstrapMode = flags.bootstrap !== undefined;
  problems.push(...applyFlags(RELAY_FLAGS, flags, bootstrapMode ? {} : withProxyEnv(env), c));
  // Defaults that follow other flags.
  if (flags["signing-ttl"] === undefined) c.signingTtlSeconds = c.ttlSeconds;
  if (flags["client-ttl"] === undefined) c.issuer.clientTtlSeconds = c.ttlSeconds;
  if (flags["signing-permitted-dns"] === undefined) c.signingPermittedDns = [...c.clusters];
  resolveAuthDefaults(c.auth, flags["auth-mount"] !== undefined);

  problems.push(...parseBootstrapFlags(c, flags));
  if (!printPolicy && !bootstrapMode) problems.push(...validateRuntime(c, flags));
  if (!printPolicy && bootstrapMode && flags.role === "agent" && !c.cluster)
    problems.push(
      "--cluster: missing; expected the workload cluster's name with --role agent, e.g. cluster1 (the client certificate's DNS SAN)",
    );
  problems.push(...validateShape(c, flags));
  if (problems.length) throw new ConfigError(problems);
  if (printPolicy) {
    const roles: RelayRole[] = role === "server" || role === "agent" ? [role] : ["server", "agent"];
    return { kind: "print-policy", config: c, roles };
  }
  return { kind: "run", config: c };
}

/** What a run needs beyond the policy's inputs: Vault address and CA, the cluster name, files. */
function validateRuntime(c: RelayConfig, flags: FlagValues): string[] {
  const p: string[] = [];
  if (c.vault.caFile)
    c.vault.caPem = readFlagFile("--vault-cacert", c.vault.caFile, "a PEM bundle of CA certificates", p);
  p.push(...loadVaultTlsFiles(c.vault, c.auth));
  p.push(...vaultConnectionProblems(c.vault, { address: "--vault-addr", ca: `--vault-cacert ${c.vault.caFile}` }));
  p.push(...authSettingsProblems(c.auth, (flag) => flags[flag] !== undefined));
  // Relay certificates (and a --signing-intermediate CA whose key sits in a Secret) must not chain to the mesh root.
  if (c.pkiMount === c.istioPkiMount && !c.allowIstioRootMount)
    p.push(
      `--pki-mount: "${c.pkiMount}" is the mount that holds the Istio root (--istio-pki-mount); relay certificates ` +
        `signed there would chain to the mesh root. Expected a separate relay PKI mount (default ${DEFAULT_RELAY_CONFIG.pkiMount}), or ` +
        "--allow-istio-root-mount to accept that explicitly",
    );
  if (flags.role === "agent" && !c.cluster)
    p.push(
      "--cluster: missing; expected the workload cluster's name with --role agent, e.g. cluster1 (the client certificate's DNS SAN)",
    );
  return p;
}

/** Checks that span several flags (each flag's own shape is checked by its parser). */
function validateShape(c: RelayConfig, flags: FlagValues): string[] {
  const p: string[] = [];
  if (c.cluster !== undefined && flags.role === "server")
    p.push("--cluster: only used with --role agent; expected no --cluster with --role server");
  const names = Object.values(c.secrets);
  if (new Set(names).size !== names.length)
    p.push(`secret names: ${names.join(", ")} must all differ; expected one distinct name per Secret`);
  if (flags["kv-path"] !== undefined && !c.sharedToken)
    p.push("--kv-path: only used with --shared-identity-token; per-cluster tokens live under --cluster-tokens-path");
  for (const name of c.clusters) {
    if (name.length > 253 - c.secrets.token.length - 1)
      p.push(`--clusters: "${name}" is too long for a Secret <token-secret>-${name}; expected a shorter DNS name`);
    if (c.serverDns.includes(name))
      p.push(`--clusters: "${name}" is a relay server name (--server-dns); a cluster must never get the server's name`);
  }
  if (c.signingIntermediate && c.signingPermittedDns.length === 0)
    p.push(
      "--signing-intermediate: its CA key sits in a Secret, so it is name-constrained to the relay client names; " +
        "expected --clusters or --signing-permitted-dns listing them",
    );
  for (const d of c.signingPermittedDns) {
    if (c.serverDns.includes(d))
      p.push(`--signing-permitted-dns: "${d}" is the relay server's name; the signing CA must not cover it`);
  }
  if (c.clusters.length && flags.role !== "server")
    p.push("--clusters: only used with --role server; expected it on the management cluster's relay");
  if (c.clusters.length && c.sharedToken)
    p.push("--clusters: not used with --shared-identity-token; choose per-cluster tokens or the shared one");
  if (c.role === "server") {
    if (c.serverDns.length === 0)
      p.push("--server-dns: empty; expected at least one DNS name, e.g. gloo-mesh-mgmt-server.gloo-mesh");
  } else {
    if (flags["signing-intermediate"] === true)
      p.push(
        "--signing-intermediate: only used with --role server; expected it only on the management cluster's relay",
      );
    if (flags["server-dns"] !== undefined)
      p.push("--server-dns: only used with --role server; expected the client certificate's name in --cluster instead");
  }
  const backoff = backoffProblem(c);
  if (backoff) p.push(backoff);
  return p;
}

/** What the issuer (server) and bootstrap (agent) modes refuse. */
function parseBootstrapFlags(c: RelayConfig, flags: FlagValues): string[] {
  const p: string[] = [];
  const given = (name: string) => flags[name] !== undefined;
  const issuerFlags = [
    "issuer-addr",
    "token-overlap",
    "client-ttl",
    "issuer-rate",
    "issuer-burst",
    "issuer-peer-rate",
    "issuer-peer-burst",
    "token-refresh",
    "max-bootstrap-age",
  ];
  const boot = flags.bootstrap;
  const role = flags.role;
  if (role === "server" || role === undefined) {
    if (boot !== undefined)
      p.push("--bootstrap: only used with --role agent; the server role issues, it does not bootstrap");
    if (given("issuer-server-name"))
      p.push("--issuer-server-name: only used with --role agent --bootstrap; expected it on workload-cluster agents");
    if (!c.issuer.enabled) {
      for (const name of issuerFlags)
        if (given(name)) p.push(`--${name}: only used with --issuer; add --issuer or drop --${name}`);
    } else if (flags.once === true) {
      p.push("--once: the issuer is a long-running service; expected --issuer without --once");
    }
  } else {
    if (c.issuer.enabled) p.push("--issuer: only used with --role server; agents use --bootstrap=HOST:PORT instead");
    for (const name of issuerFlags)
      if (given(name)) p.push(`--${name}: only used with --role server --issuer; expected it on the management relay`);
    if (boot === undefined) {
      if (given("issuer-server-name"))
        p.push("--issuer-server-name: only used with --bootstrap; add --bootstrap=HOST:PORT or drop it");
    } else {
      for (const name of VAULT_FLAGS) {
        if (given(name))
          p.push(
            `--${name}: not accepted with --bootstrap; in bootstrap mode the agent never talks to Vault (its ` +
              "certificate comes from the issuer), so no Vault address, credentials or paths may be given",
          );
      }
      if (given("ttl")) p.push("--ttl: not accepted with --bootstrap; the issuer decides the certificate lifetime");
    }
  }
  return p;
}
