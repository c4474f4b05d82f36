// The relay command's configuration: Gloo-style relay mTLS certificates and the shared identity token, issued from
// Vault into Kubernetes Secrets. One flag table drives parsing and --help; every problem is reported at once, each
// naming the flag and what is expected.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ConfigError, parseDuration } from "../config/config.js";
import { KEY_ALGORITHMS, type KeyAlgorithmName } from "../crypto/keys.js";

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
  vault: { address: string; caFile: string | undefined; caPem: string | undefined; namespace: string | undefined };
  auth: { mountPath: string; role: string; tokenPath: string };
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
  /** host:port for /healthz, /readyz and /metrics; empty disables. */
  httpAddress: string;
  /** Reconcile every Secret once and exit (init containers, tests). */
  once: boolean;
  /** How often every Secret is re-checked (and the identity token re-read from Vault) between renewals. */
  resyncSeconds: number;
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
  "vault-addr",
  "vault-cacert",
  "vault-namespace",
  "auth-mount",
  "auth-role",
  "token-path",
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
  vault: { address: "", caFile: undefined, caPem: undefined, namespace: undefined },
  auth: { mountPath: "kubernetes", role: "relay", tokenPath: "/var/run/secrets/tokens/vault-token" },
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
  httpAddress: "0.0.0.0:15300",
  once: false,
  resyncSeconds: 300,
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

/** Flag name → [description, kind]. */
export const RELAY_FLAGS = {
  role: ["server (management cluster) or agent (workload cluster); required", "string"],
  cluster: ["agent role: the workload cluster's name, used as the client certificate's DNS SAN; required", "string"],
  namespace: ["namespace of the relay Secrets (default gloo-mesh)", "string"],
  "vault-addr": ["Vault address, e.g. https://vault.vault:8200 (env VAULT_ADDR)", "string"],
  "vault-cacert": ["PEM file of CAs that sign Vault's TLS certificate (env VAULT_CACERT)", "string"],
  "vault-namespace": ["Vault namespace (env VAULT_NAMESPACE)", "string"],
  "auth-mount": ["Kubernetes auth mount path (default kubernetes)", "string"],
  "auth-role": ["Kubernetes auth role (default relay)", "string"],
  "token-path": [
    "service-account token file, re-read at every login (default /var/run/secrets/tokens/vault-token)",
    "string",
  ],
  "pki-mount": [
    "Vault PKI mount that signs the relay certificates, separate from the Istio root's mount (default pki_relay)",
    "string",
  ],
  "server-role": ["Vault PKI role for the server certificate: <pki>/sign/<role> (default relay-server)", "string"],
  "client-role": ["Vault PKI role for agent client certificates: <pki>/sign/<role> (default relay-client)", "string"],
  "signing-intermediate": [
    "server role: also keep relay-tls-signing-secret, an intermediate CA from <pki>/root/sign-intermediate",
    "boolean",
  ],
  "signing-ttl": ["lifetime of the signing intermediate (default: --ttl)", "string"],
  "server-dns": ["server role: comma-separated DNS SANs (default gloo-mesh-mgmt-server.gloo-mesh)", "string"],
  "kv-path": [
    "with --shared-identity-token: Vault KV v2 data path of the shared token (default secret/data/relay/identity-token)",
    "string",
  ],
  "shared-identity-token": [
    "opt-in, insecure: one identity token for every cluster (any holder can get a certificate for any cluster name); " +
      "by default each cluster registered with --clusters has its own token",
    "boolean",
  ],
  "cluster-tokens-path": [
    "Vault KV v2 data prefix of the per-cluster identity tokens, one entry per cluster (default secret/data/relay/cluster-tokens)",
    "string",
  ],
  clusters: [
    "server role: comma-separated workload clusters to register: each gets its own identity token in Vault KV " +
      "(<cluster-tokens-path>/<name>) and a Secret <token-secret>-<name> to copy to that cluster",
    "string",
  ],
  "istio-pki-mount": [
    "the PKI mount that holds the Istio (mesh) root; the relay refuses to sign from it (default pki)",
    "string",
  ],
  "signing-permitted-dns": [
    "server role with --signing-intermediate: comma-separated DNS names the signing CA may sign for (its name " +
      "constraints; default: --clusters); required with --signing-intermediate",
    "string",
  ],
  "allow-istio-root-mount": [
    "let the relay sign from --istio-pki-mount anyway (relay certificates then chain to the mesh root)",
    "boolean",
  ],
  ttl: ["certificate lifetime, e.g. 720h (default 720h)", "string"],
  "grace-ratio": ["renew when this fraction of a certificate's lifetime remains (default 0.333)", "string"],
  "key-algorithm": [`key algorithm: ${KEY_ALGORITHMS.join(", ")} (default ECDSA_P256)`, "string"],
  "root-secret": ["name of the root CA Secret (default relay-root-tls-secret)", "string"],
  "server-secret": ["name of the server certificate Secret (default relay-server-tls-secret)", "string"],
  "client-secret": ["name of the client certificate Secret (default relay-client-tls-secret)", "string"],
  "signing-secret": ["name of the signing intermediate Secret (default relay-tls-signing-secret)", "string"],
  "token-secret": ["name of the identity token Secret (default relay-identity-token-secret)", "string"],
  adopt: ["take over existing Secrets of those names that lack the managed-by label", "boolean"],
  kubeconfig: ["kubeconfig for running outside a pod (in a pod the service account is used)", "string"],
  "http-addr": ["host:port for /healthz, /readyz, /metrics (default 0.0.0.0:15300; empty disables)", "string"],
  once: ["reconcile every Secret once and exit (0 when all are in place)", "boolean"],
  resync: ["re-check every Secret and re-read the identity token this often (default 5m)", "string"],
  "backoff-initial": ["first retry delay after a failure (default 1s)", "string"],
  "backoff-max": ["longest retry delay (default 5m)", "string"],
  "log-level": ["error, warn, info (default) or debug", "string"],
  issuer: [
    "server role: also serve the certificate issuer (TLS gRPC, relay server certificate) that agents started with " +
      "--bootstrap use instead of Vault; it signs with an in-memory intermediate from <pki>/root/sign-intermediate",
    "boolean",
  ],
  "issuer-addr": ["server role with --issuer: host:port of the issuer (default 0.0.0.0:9910)", "string"],
  "token-overlap": [
    "server role with --issuer: how long the previous identity token is still accepted after it changes in Vault KV (default 24h)",
    "string",
  ],
  "client-ttl": ["server role with --issuer: lifetime of the client certificates it signs (default: --ttl)", "string"],
  "issuer-rate": ["server role with --issuer: requests per second per identity token or cluster (default 5)", "string"],
  "issuer-burst": ["server role with --issuer: burst per identity token or cluster (default 20)", "string"],
  "issuer-peer-rate": [
    "server role with --issuer: requests per second per peer address, before authentication (default 10)",
    "string",
  ],
  "issuer-peer-burst": ["server role with --issuer: burst per peer address (default 50)", "string"],
  "token-refresh": [
    "server role with --issuer: re-read the identity tokens from Vault KV this often; a deleted token is refused " +
      "within this interval (default 30s)",
    "string",
  ],
  "max-bootstrap-age": [
    "server role with --issuer: a certificate chain renews over mTLS for at most this long after its Bootstrap, " +
      "then the cluster must bootstrap again with its token (default 2160h = 90d)",
    "string",
  ],
  bootstrap: [
    "agent role: host:port of the management relay's issuer; the client certificate comes from there (identity " +
      "token once, then mTLS renewals), so no Vault flags are used or accepted",
    "string",
  ],
  "issuer-server-name": [
    "agent role with --bootstrap: the name the issuer's certificate must carry (default gloo-mesh-mgmt-server.gloo-mesh)",
    "string",
  ],
  "print-policy": ["print the least-privilege Vault policy for these flags and exit", "boolean"],
  help: ["show this help", "boolean"],
} as const;

type RelayFlagName = keyof typeof RELAY_FLAGS;
type RelayFlagValues = Partial<Record<RelayFlagName, string | boolean>>;

export type ParsedRelayArgs =
  | { kind: "help" }
  /** --print-policy: `roles` are the roles the policy must serve (both when --role is not given). */
  | { kind: "print-policy"; config: RelayConfig; roles: RelayRole[] }
  | { kind: "run"; config: RelayConfig };

export function relayHelp(): string {
  return [
    "usage: istiod-vault-agent relay --role server|agent [flags]",
    "       istiod-vault-agent relay register-cluster NAME [server flags]   (a token in Vault KV + Secret for NAME)",
    "",
    "Issues and rotates the Gloo relay mTLS certificates from Vault into Kubernetes Secrets. Keys are generated in this",
    "process and Vault signs CSRs (<pki>/sign/<role>), so Vault never sees a relay private key. Secrets it writes carry",
    "the label app.kubernetes.io/managed-by=istiod-vault-agent; others are never overwritten unless --adopt is given.",
    "Kubernetes RBAC needed: get, create and update on secrets in the namespace.",
    "",
    "flags:",
    ...Object.entries(RELAY_FLAGS).map(
      ([name, [desc, type]]) => `  --${name}${type === "string" ? " VALUE" : ""}\n      ${desc}`,
    ),
  ].join("\n");
}

/** Parses and validates the relay flags (with VAULT_ADDR / VAULT_CACERT / VAULT_NAMESPACE from `env`). */
export function parseRelayArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): ParsedRelayArgs {
  let flags: RelayFlagValues;
  try {
    const options = Object.fromEntries(Object.entries(RELAY_FLAGS).map(([name, [, type]]) => [name, { type }]));
    flags = parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new ConfigError([`flags: ${(err as Error).message}; run with --help for the list of flags`]);
  }
  if (flags.help === true) return { kind: "help" };
  const printPolicy = flags["print-policy"] === true;

  const problems: string[] = [];
  const str = (name: RelayFlagName): string | undefined => {
    const v = flags[name];
    return typeof v === "string" ? v : undefined;
  };
  const role = str("role");
  if (role !== "server" && role !== "agent" && !(printPolicy && role === undefined)) {
    problems.push(
      role === undefined
        ? "--role: missing; expected server (management cluster) or agent (workload cluster)"
        : `--role: "${role}" is invalid; expected server or agent`,
    );
  }
  const c: RelayConfig = { ...structuredClone(DEFAULT_RELAY_CONFIG), role: role === "agent" ? "agent" : "server" };

  // --bootstrap mode never talks to Vault, so Vault's environment variables are not read there.
  const bootstrapMode = str("bootstrap") !== undefined;
  if (!bootstrapMode) {
    if (env.VAULT_ADDR) c.vault.address = env.VAULT_ADDR;
    if (env.VAULT_CACERT) c.vault.caFile = env.VAULT_CACERT;
    if (env.VAULT_NAMESPACE) c.vault.namespace = env.VAULT_NAMESPACE;
  }

  const text = (name: RelayFlagName, assign: (v: string) => void) => {
    const v = str(name);
    if (v !== undefined) assign(v.trim());
  };
  const duration = (name: RelayFlagName, assign: (seconds: number) => void, min: number, max: number) => {
    const v = str(name);
    if (v === undefined) return;
    const s = parseDuration(v);
    if (!Number.isFinite(s) || s < min || s > max) {
      problems.push(
        `--${name}: "${v}" is invalid; expected a duration from ${formatSeconds(min)} to ${formatSeconds(max)}, e.g. 720h or 20s`,
      );
    } else assign(s);
  };

  text("cluster", (v) => (c.cluster = v));
  text("namespace", (v) => (c.namespace = v));
  text("vault-addr", (v) => (c.vault.address = v));
  text("vault-cacert", (v) => (c.vault.caFile = v));
  text("vault-namespace", (v) => (c.vault.namespace = v || undefined));
  text("auth-mount", (v) => (c.auth.mountPath = v.replace(/^\/+|\/+$/g, "").replace(/^(v1\/)?auth\//, "")));
  text("auth-role", (v) => (c.auth.role = v));
  text("token-path", (v) => (c.auth.tokenPath = v));
  text("pki-mount", (v) => (c.pkiMount = v.replace(/^\/+|\/+$/g, "")));
  text("server-role", (v) => (c.serverRole = v));
  text("client-role", (v) => (c.clientRole = v));
  if (flags["signing-intermediate"] === true) c.signingIntermediate = true;
  text(
    "server-dns",
    (v) =>
      (c.serverDns = v
        .split(",")
        .map((x) => x.trim().toLowerCase())
        .filter(Boolean)),
  );
  text("kv-path", (v) => (c.kvPath = v.replace(/^\/+|\/+$/g, "").replace(/^v1\//, "")));
  text("cluster-tokens-path", (v) => (c.clusterTokensPath = v.replace(/^\/+|\/+$/g, "").replace(/^v1\//, "")));
  if (flags["shared-identity-token"] === true) c.sharedToken = true;
  text(
    "clusters",
    (v) =>
      (c.clusters = [
        ...new Set(
          v
            .split(",")
            .map((x) => x.trim().toLowerCase())
            .filter(Boolean),
        ),
      ]),
  );
  text("istio-pki-mount", (v) => (c.istioPkiMount = v.replace(/^\/+|\/+$/g, "")));
  if (flags["allow-istio-root-mount"] === true) c.allowIstioRootMount = true;
  c.signingPermittedDns = [...c.clusters];
  text(
    "signing-permitted-dns",
    (v) =>
      (c.signingPermittedDns = v
        .split(",")
        .map((x) => x.trim().toLowerCase())
        .filter(Boolean)),
  );
  duration("ttl", (s) => (c.ttlSeconds = s), 10, 20 * 365 * 86400);
  c.signingTtlSeconds = c.ttlSeconds;
  duration("signing-ttl", (s) => (c.signingTtlSeconds = s), 10, 20 * 365 * 86400);
  duration("resync", (s) => (c.resyncSeconds = s), 1, 7 * 86400);
  duration("backoff-initial", (s) => (c.backoff.initialMs = s * 1000), 0.01, 3600);
  duration("backoff-max", (s) => (c.backoff.maxMs = s * 1000), 0.01, 86400);
  const grace = str("grace-ratio");
  if (grace !== undefined) {
    const g = /^\d*\.?\d+$/.test(grace.trim()) ? Number(grace) : Number.NaN;
    if (!(g > 0.01 && g < 0.99))
      problems.push(`--grace-ratio: "${grace}" is invalid; expected a number between 0.01 and 0.99, e.g. 0.333`);
    else c.graceRatio = g;
  }
  const alg = str("key-algorithm");
  if (alg !== undefined) {
    const upper = alg.trim().toUpperCase() as KeyAlgorithmName;
    if (!KEY_ALGORITHMS.includes(upper))
      problems.push(`--key-algorithm: "${alg}" is not supported; expected one of ${KEY_ALGORITHMS.join(", ")}`);
    else c.keyAlgorithm = upper;
  }
  text("root-secret", (v) => (c.secrets.root = v));
  text("server-secret", (v) => (c.secrets.server = v));
  text("client-secret", (v) => (c.secrets.client = v));
  text("signing-secret", (v) => (c.secrets.signing = v));
  text("token-secret", (v) => (c.secrets.token = v));
  if (flags.adopt === true) c.adopt = true;
  text("kubeconfig", (v) => (c.kubeconfig = v || undefined));
  const http = str("http-addr");
  if (http !== undefined) c.httpAddress = http.trim();
  if (flags.once === true) c.once = true;
  text("log-level", (v) => (c.logLevel = v));
  problems.push(...parseBootstrapFlags(c, flags, str, duration));

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
function validateRuntime(c: RelayConfig, flags: RelayFlagValues): string[] {
  const p: string[] = [];
  if (!c.vault.address) {
    p.push("--vault-addr: missing; expected the Vault URL, e.g. https://vault.vault:8200 (or env VAULT_ADDR)");
  } else {
    let url: URL | undefined;
    try {
      url = new URL(c.vault.address);
    } catch {
      p.push(`--vault-addr: "${c.vault.address}" is not a URL; expected e.g. https://vault.vault:8200`);
    }
    if (url && url.protocol !== "https:" && url.protocol !== "http:")
      p.push(`--vault-addr: "${c.vault.address}" must be an https:// URL`);
  }
  if (c.vault.caFile) {
    try {
      c.vault.caPem = readFileSync(c.vault.caFile, "utf8");
      if (!c.vault.caPem.includes("BEGIN CERTIFICATE"))
        p.push(`--vault-cacert: ${c.vault.caFile} holds no PEM certificate; expected a PEM bundle of CA certificates`);
    } catch (err) {
      p.push(
        `--vault-cacert: cannot read ${c.vault.caFile} (${(err as NodeJS.ErrnoException).code ?? "error"}); expected a PEM bundle`,
      );
    }
  }
  if (!c.auth.tokenPath) p.push("--token-path: empty; expected the projected service-account token file");
  // Relay certificates (and a --signing-intermediate CA whose key sits in a Secret) must not chain to the mesh root.
  if (c.pkiMount === c.istioPkiMount && !c.allowIstioRootMount)
    p.push(
      `--pki-mount: "${c.pkiMount}" is the mount that holds the Istio root (--istio-pki-mount); relay certificates ` +
        "signed there would chain to the mesh root. Expected a separate relay PKI mount (default pki_relay), or " +
        "--allow-istio-root-mount to accept that explicitly",
    );
  if (flags.role === "agent" && !c.cluster)
    p.push(
      "--cluster: missing; expected the workload cluster's name with --role agent, e.g. cluster1 (the client certificate's DNS SAN)",
    );
  return p;
}

/** Checks that every name and path has a usable shape. */
function validateShape(c: RelayConfig, flags: RelayFlagValues): string[] {
  const p: string[] = [];
  const dns1123Label = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
  const dnsSubdomain = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
  const vaultName = /^[\w\-.]+$/;
  if (c.cluster !== undefined) {
    if (flags.role === "server")
      p.push("--cluster: only used with --role agent; expected no --cluster with --role server");
    else if (!dnsSubdomain.test(c.cluster) || c.cluster.length > 253)
      p.push(
        `--cluster: "${c.cluster}" is invalid; expected a DNS name such as cluster1 (lower-case, digits, '-', '.')`,
      );
  }
  if (!dns1123Label.test(c.namespace) || c.namespace.length > 63)
    p.push(`--namespace: "${c.namespace}" is invalid; expected a Kubernetes namespace name such as gloo-mesh`);
  for (const [key, name] of Object.entries(c.secrets) as [string, string][]) {
    if (!dnsSubdomain.test(name) || name.length > 253)
      p.push(`--${key}-secret: "${name}" is invalid; expected a Kubernetes Secret name (lower-case DNS subdomain)`);
  }
  const names = Object.values(c.secrets);
  if (new Set(names).size !== names.length)
    p.push(`secret names: ${names.join(", ")} must all differ; expected one distinct name per Secret`);
  if (!c.auth.mountPath || !/^[\w\-./]+$/.test(c.auth.mountPath))
    p.push(`--auth-mount: "${c.auth.mountPath}" is invalid; expected a mount path such as kubernetes`);
  if (!c.auth.role || !vaultName.test(c.auth.role))
    p.push(`--auth-role: "${c.auth.role}" is invalid; expected a Kubernetes-auth role name such as relay`);
  if (!c.pkiMount || !/^[\w\-./]+$/.test(c.pkiMount))
    p.push(`--pki-mount: "${c.pkiMount}" is invalid; expected a PKI mount path such as pki`);
  if (!vaultName.test(c.serverRole))
    p.push(`--server-role: "${c.serverRole}" is invalid; expected a Vault PKI role name such as relay-server`);
  if (!vaultName.test(c.clientRole))
    p.push(`--client-role: "${c.clientRole}" is invalid; expected a Vault PKI role name such as relay-client`);
  if (!/^[\w\-.]+\/data\/[\w\-./]*[\w\-.]$/.test(c.clusterTokensPath))
    p.push(
      `--cluster-tokens-path: "${c.clusterTokensPath}" is not a KV v2 data path; expected <mount>/data/<prefix>, e.g. secret/data/relay/cluster-tokens`,
    );
  if (flags["kv-path"] !== undefined && !c.sharedToken)
    p.push("--kv-path: only used with --shared-identity-token; per-cluster tokens live under --cluster-tokens-path");
  for (const name of c.clusters) {
    if (!dnsSubdomain.test(name) || name.length > 253 - c.secrets.token.length - 1)
      p.push(`--clusters: "${name}" is not a usable cluster name; expected a DNS name such as cluster1`);
    if (c.serverDns.includes(name))
      p.push(`--clusters: "${name}" is a relay server name (--server-dns); a cluster must never get the server's name`);
  }
  if (c.signingIntermediate && c.signingPermittedDns.length === 0)
    p.push(
      "--signing-intermediate: its CA key sits in a Secret, so it is name-constrained to the relay client names; " +
        "expected --clusters or --signing-permitted-dns listing them",
    );
  for (const d of c.signingPermittedDns) {
    if (!dnsSubdomain.test(d) || d.length > 253)
      p.push(`--signing-permitted-dns: "${d}" is not a DNS name; expected e.g. cluster1`);
    if (c.serverDns.includes(d))
      p.push(`--signing-permitted-dns: "${d}" is the relay server's name; the signing CA must not cover it`);
  }
  if (c.clusters.length && flags.role !== "server")
    p.push("--clusters: only used with --role server; expected it on the management cluster's relay");
  if (c.clusters.length && c.sharedToken)
    p.push("--clusters: not used with --shared-identity-token; choose per-cluster tokens or the shared one");
  if (!/^[\w\-.]+\/data\/[\w\-./]*[\w\-.]$/.test(c.kvPath))
    p.push(
      `--kv-path: "${c.kvPath}" is not a KV v2 data path; expected <mount>/data/<key>, e.g. secret/data/relay/identity-token`,
    );
  if (c.role === "server") {
    if (c.serverDns.length === 0)
      p.push("--server-dns: empty; expected at least one DNS name, e.g. gloo-mesh-mgmt-server.gloo-mesh");
    for (const d of c.serverDns) {
      if (!/^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(d) || d.length > 253)
        p.push(`--server-dns: "${d}" is not a DNS name; expected e.g. gloo-mesh-mgmt-server.gloo-mesh`);
    }
  } else {
    if (flags["signing-intermediate"] === true)
      p.push(
        "--signing-intermediate: only used with --role server; expected it only on the management cluster's relay",
      );
    if (flags["server-dns"] !== undefined)
      p.push("--server-dns: only used with --role server; expected the client certificate's name in --cluster instead");
  }
  if (c.httpAddress && !/^[^\s:]*:\d{1,5}$/.test(c.httpAddress) && !/^\[[0-9a-f:]+\]:\d{1,5}$/i.test(c.httpAddress)) {
    p.push(`--http-addr: "${c.httpAddress}" is invalid; expected host:port such as 0.0.0.0:15300, or empty to disable`);
  }
  if (c.backoff.maxMs < c.backoff.initialMs)
    p.push(`--backoff-max: ${c.backoff.maxMs}ms is below --backoff-initial; expected max ≥ initial`);
  if (!["fatal", "error", "warn", "info", "debug", "trace", "silent"].includes(c.logLevel))
    p.push(`--log-level: "${c.logLevel}" is invalid; expected one of error, warn, info, debug`);
  return p;
}

/** The issuer (server) and bootstrap (agent) flags, and what each mode refuses. */
function parseBootstrapFlags(
  c: RelayConfig,
  flags: RelayFlagValues,
  str: (name: RelayFlagName) => string | undefined,
  duration: (name: RelayFlagName, assign: (seconds: number) => void, min: number, max: number) => void,
): string[] {
  const p: string[] = [];
  const given = (name: RelayFlagName) => flags[name] !== undefined;
  const issuerFlags: RelayFlagName[] = [
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
  const hostPort = (v: string) => /^[^\s:]*:\d{1,5}$/.test(v) || /^\[[0-9a-f:]+\]:\d{1,5}$/i.test(v);

  if (flags.issuer === true) c.issuer.enabled = true;
  c.issuer.clientTtlSeconds = c.ttlSeconds;
  const addr = str("issuer-addr")?.trim();
  if (addr !== undefined) {
    if (!hostPort(addr)) p.push(`--issuer-addr: "${addr}" is invalid; expected host:port such as 0.0.0.0:9910`);
    else c.issuer.address = addr;
  }
  duration("token-overlap", (s) => (c.issuer.tokenOverlapSeconds = s), 0, 365 * 86400);
  duration("client-ttl", (s) => (c.issuer.clientTtlSeconds = s), 10, 20 * 365 * 86400);
  duration("token-refresh", (s) => (c.issuer.tokenRefreshSeconds = s), 1, 3600);
  duration("max-bootstrap-age", (s) => (c.issuer.maxBootstrapAgeSeconds = s), 10, 20 * 365 * 86400);
  const positive = (name: RelayFlagName, assign: (n: number) => void, max: number) => {
    const v = str(name);
    if (v === undefined) return;
    const n = /^\d*\.?\d+$/.test(v.trim()) ? Number(v) : Number.NaN;
    if (!(n > 0 && n <= max)) p.push(`--${name}: "${v}" is invalid; expected a number above 0 and at most ${max}`);
    else assign(n);
  };
  positive("issuer-rate", (n) => (c.issuer.ratePerSecond = n), 10_000);
  positive("issuer-burst", (n) => (c.issuer.burst = Math.max(1, Math.floor(n))), 100_000);
  positive("issuer-peer-rate", (n) => (c.issuer.peerRatePerSecond = n), 10_000);
  positive("issuer-peer-burst", (n) => (c.issuer.peerBurst = Math.max(1, Math.floor(n))), 100_000);

  const boot = str("bootstrap")?.trim();
  if (boot !== undefined) {
    if (!hostPort(boot))
      p.push(`--bootstrap: "${boot}" is invalid; expected the issuer's host:port, e.g. mgmt.example.com:9910`);
    else c.bootstrap.address = boot;
  }
  const serverName = str("issuer-server-name")?.trim().toLowerCase();
  if (serverName !== undefined) {
    if (
      !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(serverName) ||
      serverName.length > 253
    )
      p.push(`--issuer-server-name: "${serverName}" is not a DNS name; expected e.g. gloo-mesh-mgmt-server.gloo-mesh`);
    else c.bootstrap.serverName = serverName;
  }

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

function formatSeconds(s: number): string {
  if (s >= 365 * 86400) return `${Math.round(s / (365 * 86400))} years`;
  if (s >= 86400) return `${Math.round(s / 86400)}d`;
  if (s >= 1) return `${s}s`;
  return `${Math.round(s * 1000)}ms`;
}
