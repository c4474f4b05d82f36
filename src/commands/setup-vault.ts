// `setup-vault`: configures Vault for the agent, idempotently (PKI mounts, root, Kubernetes auth, role, policy). The
// agent's own flags say where and as whom the agent will log in; the flags below say how Vault reaches the apiserver
// and whom the role admits. The apiserver's URL and CA come from the kubeconfig context unless given. With --cluster
// (repeatable) it configures one auth mount, role and policy per workload cluster, all signing from one root.
// VAULT_TOKEN holds the admin token (never printed).
import type { Command } from "../cli/command.js";
import {
  applyFlags,
  renderFlags,
  readFlagFile,
  valueFlag,
  type FlagTable,
  type FlagValues,
  fieldFlags,
} from "../cli/flags.js";
import { kubeClusterInfo, type KubeAccess } from "../cli/kube.js";
import {
  DNS_LABEL,
  duration,
  Expected,
  formatDuration,
  revisionNames,
  text,
  vaultName,
  vaultPath,
} from "../cli/validate.js";
import { ConfigError, type Config } from "../config/config.js";
import { AGENT_FLAGS, agentHelp, loadConfig } from "../config/load.js";
import { VaultClient } from "../vault/client.js";
import {
  DEFAULT_SETUP,
  DEFAULT_TIDY_INTERVAL_SECONDS,
  defaultTidySafetyBufferSeconds,
  setupVaultClusters,
  signPathMount,
  type ClusterAccessOptions,
  type VaultRootOptions,
} from "../vault/setup.js";

/** A workload cluster of --cluster NAME[=CONTEXT]. */
export interface ClusterRef {
  name: string;
  /** Its kubeconfig context (NAME when not given). */
  context: string;
}

export interface SetupSettings {
  rootMount: string;
  importCaBundleFile: string | undefined;
  kubernetesHost: string | undefined;
  kubernetesCaFile: string | undefined;
  reviewerJwtFile: string | undefined;
  serviceAccount: string;
  /** istiod revisions whose service accounts (`<service-account>-<rev>`) the role admits too; "default" is the base. */
  revisions: string[];
  namespace: string;
  audience: string;
  policyName: string;
  /** --cluster: one auth mount, role and policy each; empty for the single-cluster setup. */
  clusters: ClusterRef[];
  /** --pki-per-cluster: each cluster signs from its own intermediate mount. */
  pkiPerCluster: boolean;
  /** --cluster-token-reviewer-jwt-file NAME=FILE: each cluster's own TokenReview credential. */
  clusterReviewerJwtFiles: Record<string, string>;
  /** --auto-tidy: configure pki/config/auto-tidy on the signing mount(s). */
  autoTidy: boolean;
  /** --tidy-safety-buffer (seconds); undefined: derived from the agent's --ttl. */
  tidySafetyBufferSeconds: number | undefined;
  /** --tidy-interval (seconds); undefined: Vault's 12h. */
  tidyIntervalSeconds: number | undefined;
}

export const DEFAULT_SETUP_SETTINGS: SetupSettings = {
  rootMount: DEFAULT_SETUP.rootMount,
  importCaBundleFile: undefined,
  kubernetesHost: undefined,
  kubernetesCaFile: undefined,
  reviewerJwtFile: undefined,
  serviceAccount: DEFAULT_SETUP.role.serviceAccounts[0]!,
  revisions: [],
  namespace: DEFAULT_SETUP.role.namespaces[0]!,
  audience: DEFAULT_SETUP.role.audience,
  policyName: DEFAULT_SETUP.policyName,
  clusters: [],
  pkiPerCluster: false,
  clusterReviewerJwtFiles: {},
  autoTidy: false,
  tidySafetyBufferSeconds: undefined,
  tidyIntervalSeconds: undefined,
};

const flag = valueFlag<SetupSettings, string>;
const { option, toggle, seconds } = fieldFlags<SetupSettings>();

/** setup-vault's own flags, beside the agent's. */
export const SETUP_FLAGS: FlagTable<SetupSettings> = {
  "root-mount": option("PKI mount holding the root", vaultPath, (s) => s.rootMount),
  "import-ca-bundle": option(
    "PEM file (certificate + key) of an existing root to import instead of generating one",
    text,
    (s) => s.importCaBundleFile,
    { arg: "FILE" },
  ),
  "kubernetes-host": flag({
    help: "apiserver URL Vault calls for TokenReview",
    arg: "URL",
    parse: text,
    set: (s, v) => (s.kubernetesHost = v),
    defaultText:
      "the kubeconfig context's server (in a pod: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)",
  }),
  "kubernetes-ca-file": option("CA of that apiserver", text, (s) => s.kubernetesCaFile, {
    arg: "FILE",
    defaultText: "the kubeconfig context's CA (in a pod: the service account's ca.crt)",
  }),
  "token-reviewer-jwt-file": option("JWT Vault uses for TokenReview", text, (s) => s.reviewerJwtFile, {
    arg: "FILE",
    defaultText: "each login's own JWT",
  }),
  "service-account": option("istiod's service account, which the role admits", text, (s) => s.serviceAccount),
  revisions: option(
    "comma-separated istiod revisions (e.g. canary,stable): the role also admits each revision's service account, " +
      "<service-account>-<rev> as Istio's chart names it (istiod-canary); \"default\" is the default revision's",
    revisionNames,
    (s) => s.revisions,
    { arg: "REV,..." },
  ),
  namespace: option("istiod's namespace", text, (s) => s.namespace),
  audience: option("audience of the agent's token", text, (s) => s.audience),
  // Not --policy-name: the agent's --policy-name names a RootTrustPolicy.
  "vault-policy-name": option("name of the Vault policy written for the role", vaultName, (s) => s.policyName),
  cluster: {
    kind: "multiple",
    arg: "NAME[=CONTEXT]",
    help:
      "a workload cluster: its own auth mount <auth-mount>-NAME configured with the apiserver URL and CA " +
      "of kubeconfig context CONTEXT (default NAME), the role, and policy <vault-policy-name>-NAME",
    apply: (s, raw) => {
      // Keep the good entries, so one bad entry is reported alone rather than hiding the others' problems.
      const bad: string[] = [];
      s.clusters = raw.split("\n").flatMap((entry) => {
        try {
          return [clusterRef(entry)];
        } catch (err) {
          bad.push((err as Error).message);
          return [];
        }
      });
      if (bad.length) throw new Expected(bad.join("; "));
    },
  },
  "pki-per-cluster": toggle(
    "with --cluster: each cluster signs from its own PKI mount <ca-path's mount>-NAME (an intermediate signed by " +
      "--root-mount), and its policy allows only that mount",
    (s) => s.pkiPerCluster,
  ),
  "cluster-token-reviewer-jwt-file": {
    kind: "multiple",
    arg: "NAME=FILE",
    help:
      "with --cluster: the JWT Vault uses for TokenReview at cluster NAME, a token of that cluster's " +
      "reviewer service account (system:auth-delegator) whose audience its apiserver accepts",
    apply: (s, raw) => {
      for (const entry of raw.split("\n")) {
        const i = entry.indexOf("=");
        const name = entry.slice(0, i).trim();
        const file = entry.slice(i + 1).trim();
        if (i < 0 || !DNS_LABEL.test(name) || !file)
          throw new Expected(`"${entry}" is not NAME=FILE; expected a --cluster NAME, '=', and a JWT file`);
        s.clusterReviewerJwtFiles[name] = file;
      }
    },
  },
  "auto-tidy": toggle(
    "configure pki/config/auto-tidy on the mount that signs the intermediates: every agent start and renewal stores " +
      "one certificate there, and tidy removes them once expired past the safety buffer",
    (s) => s.autoTidy,
  ),
  "tidy-safety-buffer": seconds(
    "with --auto-tidy: how long past its expiry a certificate is kept (safety_buffer)",
    duration("720h", 1),
    (s) => s.tidySafetyBufferSeconds,
    { defaultText: "the intermediate's --ttl, at least 72h" },
  ),
  "tidy-interval": seconds(
    "with --auto-tidy: how often Vault tidies (interval_duration)",
    duration("12h", 60),
    (s) => s.tidyIntervalSeconds,
    { defaultText: "12h" },
  ),
};

/** NAME[=CONTEXT]: NAME names Vault mounts and policies, so a DNS label; CONTEXT is any kubeconfig context name. */
export function clusterRef(raw: string): ClusterRef {
  const i = raw.indexOf("=");
  const name = (i < 0 ? raw : raw.slice(0, i)).trim();
  const context = i < 0 ? name : raw.slice(i + 1).trim();
  if (name.length > 63 || !DNS_LABEL.test(name))
    throw new Expected(
      `"${raw}" is not NAME[=CONTEXT]; expected NAME a DNS label (lower-case letters, digits, '-'), e.g. east=gke_prod_east`,
    );
  if (!context) throw new Expected(`"${raw}" has an empty CONTEXT; expected NAME=CONTEXT or NAME alone`);
  return { name, context };
}

/** The agent's RootTrustPolicy flags: parsed only to be refused with a pointer to --vault-policy-name, never listed. */
const REFUSED_AGENT_FLAGS = ["policy-name", "policy-namespace"] as const;

export const command: Command = {
  name: "setup-vault",
  flags: { ...AGENT_FLAGS, ...SETUP_FLAGS },
  help: () =>
    [
      agentHelp(
        ["istiod-vault-agent setup-vault --vault-addr=URL [flags]   (VAULT_TOKEN: an admin token)"],
        "Configures Vault for the agent, idempotently: PKI mounts and root, Kubernetes auth, the agent's role and policy.",
        {},
        REFUSED_AGENT_FLAGS,
      ),
      "",
      "setup-vault flags:",
      renderFlags(SETUP_FLAGS, DEFAULT_SETUP_SETTINGS),
    ].join("\n"),
  async run(flags) {
    for (const name of REFUSED_AGENT_FLAGS)
      if (flags[name] !== undefined)
        throw new ConfigError([
          `--${name}: names the RootTrustPolicy a sidecar watches, not used by setup-vault; expected --vault-policy-name for the Vault policy`,
        ]);
    return runSetupVault(loadConfig(flags), flags, console.log);
  },
};

/** A target's apiserver as a kubeconfig context (or the pod) names it, or why it could not be read. */
export type FoundApiserver = { server: string; caPem?: string; context: string } | { error: string };

/** What setup-vault will do: the root once, then each cluster's access (one, unnamed, without --cluster). */
export interface SetupPlan {
  root: VaultRootOptions;
  clusters: PlannedCluster[];
}

export interface PlannedCluster extends ClusterAccessOptions {
  /** The --cluster name; undefined for the single-cluster setup. */
  name: string | undefined;
  /** Where the apiserver URL and CA came from, for the report. */
  apiserverFrom: string;
}

/** Phase 1: the setup flags into settings, with every problem found. */
export function setupSettings(flags: FlagValues): { s: SetupSettings; problems: string[] } {
  const s = structuredClone(DEFAULT_SETUP_SETTINGS);
  const problems = applyFlags(SETUP_FLAGS, flags, {}, s);
  const multi = s.clusters.length > 0;
  if (s.pkiPerCluster && !multi)
    problems.push("--pki-per-cluster: needs --cluster; expected one --cluster NAME[=CONTEXT] per workload cluster");
  if (s.clusters.length > 1) {
    const one = "applies to one cluster only; with several --cluster each cluster's comes from its kubeconfig context";
    if (s.kubernetesHost) problems.push(`--kubernetes-host: ${one} (run setup-vault once per cluster to override it)`);
    if (s.kubernetesCaFile)
      problems.push(`--kubernetes-ca-file: ${one} (run setup-vault once per cluster to override it)`);
    // One reviewer JWT for several mounts would have Vault review one cluster's tokens as another cluster's account.
    if (s.reviewerJwtFile)
      problems.push(
        "--token-reviewer-jwt-file: a reviewer JWT belongs to one cluster, and several --cluster were given; expected " +
          "--cluster-token-reviewer-jwt-file NAME=FILE for each cluster",
      );
  }
  for (const name of Object.keys(s.clusterReviewerJwtFiles))
    if (!s.clusters.some((c) => c.name === name))
      problems.push(
        `--cluster-token-reviewer-jwt-file: "${name}" is not a --cluster; expected NAME=FILE for a cluster given with --cluster`,
      );
  if (!s.autoTidy)
    for (const [name, v] of [
      ["tidy-safety-buffer", s.tidySafetyBufferSeconds],
      ["tidy-interval", s.tidyIntervalSeconds],
    ] as const)
      if (v !== undefined) problems.push(`--${name}: needs --auto-tidy; expected --auto-tidy --${name}=DURATION`);
  const seen = new Set<string>();
  for (const c of s.clusters) {
    if (seen.has(c.name)) problems.push(`--cluster: "${c.name}" is given twice; expected each cluster once`);
    seen.add(c.name);
  }
  return { s, problems };
}

/** The Kubernetes targets whose apiserver URL or CA must come from a kubeconfig: "" is the single-cluster target. */
export function kubeLookups(c: Config, s: SetupSettings): Map<string, KubeAccess> {
  const lookups = new Map<string, KubeAccess>();
  const explicit = s.kubernetesHost !== undefined && s.kubernetesCaFile !== undefined;
  if (!s.clusters.length) {
    if (!explicit) lookups.set("", { kubeconfig: c.kube.kubeconfig, context: kubeContext(c) });
  } else if (!(explicit && s.clusters.length === 1)) {
    for (const cl of s.clusters) lookups.set(cl.name, { kubeconfig: c.kube.kubeconfig, context: cl.context });
  }
  return lookups;
}

/** Phase 2: reads each target's apiserver from its kubeconfig context (or the pod); failures are kept per target. */
export async function lookupApiservers(lookups: Map<string, KubeAccess>): Promise<Record<string, FoundApiserver>> {
  const found: Record<string, FoundApiserver> = {};
  for (const [key, access] of lookups) {
    try {
      const info = await kubeClusterInfo(access);
      found[key] = { server: info.server, context: info.context, ...(info.caPem ? { caPem: info.caPem } : {}) };
    } catch (err) {
      found[key] = { error: err instanceof ConfigError ? err.problems.join("; ") : (err as Error).message };
    }
  }
  return found;
}

/** Phase 3: the plan, from the agent's Config, the settings and what phase 2 found. */
export function setupPlan(
  c: Config,
  s: SetupSettings,
  found: Record<string, FoundApiserver>,
): { plan: SetupPlan; problems: string[] } {
  const problems: string[] = [];
  const read = (flag: string, file: string | undefined, what: string) =>
    file === undefined ? undefined : readFlagFile(`--${flag}`, file, what, problems);
  const explicitCa = read("kubernetes-ca-file", s.kubernetesCaFile, "a PEM CA file");
  const reviewerJwt = read("token-reviewer-jwt-file", s.reviewerJwtFile, "a JWT")?.trim();
  const clusterReviewerJwt = (name: string) =>
    read("cluster-token-reviewer-jwt-file", s.clusterReviewerJwtFiles[name], "a JWT")?.trim() ?? reviewerJwt;
  const signMount = c.intermediate.caPath.split("/")[0] ?? s.rootMount;
  const role = {
    ...DEFAULT_SETUP.role,
    name: c.auth.role,
    serviceAccounts: revisionServiceAccounts(s.serviceAccount, s.revisions),
    namespaces: [s.namespace],
    audience: s.audience,
  };

  /** The apiserver of one target: explicit flags first, then its kubeconfig context (or the pod). */
  const apiserver = (key: string, where: string) => {
    const hit = found[key];
    const info = hit && !("error" in hit) ? hit : undefined;
    const why = hit && "error" in hit ? ` (kubeconfig: ${hit.error})` : "";
    const host = (s.clusters.length <= 1 ? s.kubernetesHost : undefined) ?? info?.server;
    if (!host)
      problems.push(
        `${where}--kubernetes-host: missing${why}; expected the apiserver URL Vault should call, or a kubeconfig ` +
          "context that names it (--kubeconfig, --context)",
      );
    const caPem = explicitCa ?? info?.caPem;
    if (!caPem && !info)
      problems.push(`${where}--kubernetes-ca-file: missing${why}; expected the apiserver's CA (PEM)`);
    const from = [
      s.kubernetesHost && s.clusters.length <= 1
        ? "--kubernetes-host"
        : info
          ? `kubeconfig context ${info.context}`
          : "",
      explicitCa ? "--kubernetes-ca-file" : caPem ? "" : "no CA in the kubeconfig: Vault's system CAs verify it",
    ]
      .filter(Boolean)
      .join(", ");
    return { host: host ?? "", caPem: caPem ?? "", from };
  };

  const root: VaultRootOptions = {
    rootMount: s.rootMount,
    rootCommonName: DEFAULT_SETUP.rootCommonName,
    importCaBundlePem: read(
      "import-ca-bundle",
      s.importCaBundleFile,
      "a PEM bundle with the root certificate and its key",
    ),
    autoTidy: s.autoTidy
      ? {
          intervalSeconds: s.tidyIntervalSeconds ?? DEFAULT_TIDY_INTERVAL_SECONDS,
          safetyBufferSeconds: s.tidySafetyBufferSeconds ?? defaultTidySafetyBufferSeconds(c.intermediate.ttlSeconds),
        }
      : undefined,
  };
  const clusters: PlannedCluster[] = [];
  if (!s.clusters.length) {
    const api = apiserver("", "");
    clusters.push({
      name: undefined,
      label: "",
      apiserverFrom: api.from,
      intermediateMount: signMount !== s.rootMount ? signMount : undefined,
      kubernetes: { mount: c.auth.mountPath, host: api.host, caPem: api.caPem, reviewerJwt },
      role,
      policyName: s.policyName,
      signPath: c.intermediate.caPath,
      csrPath: c.intermediate.csrPath,
    });
  }
  if (s.pkiPerCluster && c.intermediate.csrPath)
    problems.push(
      "--csr-path: not supported with --pki-per-cluster; expected the default flow (the agent makes its key) or a shared mount",
    );
  for (const cl of s.clusters) {
    const api = apiserver(cl.name, `cluster ${cl.name}: `);
    // Per-cluster PKI: the --ca-path with its mount renamed <mount>-<NAME>, an intermediate signed by the root.
    const [, ...rest] = c.intermediate.caPath.split("/");
    const ownMount = `${signMount}-${cl.name}`;
    const pkiMount = s.pkiPerCluster ? ownMount : signMount;
    clusters.push({
      name: cl.name,
      label: `cluster ${cl.name}: `,
      apiserverFrom: api.from,
      intermediateMount: pkiMount !== s.rootMount ? pkiMount : undefined,
      intermediateCommonName: s.pkiPerCluster
        ? `${DEFAULT_SETUP.rootCommonName} intermediate for cluster ${cl.name}`
        : undefined,
      kubernetes: {
        mount: `${c.auth.mountPath}-${cl.name}`,
        host: api.host,
        caPem: api.caPem,
        reviewerJwt: clusterReviewerJwt(cl.name),
      },
      role,
      policyName: `${s.policyName}-${cl.name}`,
      signPath: s.pkiPerCluster ? [ownMount, ...rest].join("/") : c.intermediate.caPath,
      csrPath: c.intermediate.csrPath,
    });
  }
  return { plan: { root, clusters }, problems };
}

/** Phases 1 and 3 for callers that already hold what phase 2 found (tests; explicit --kubernetes-host/-ca-file). */
export function setupOptions(
  c: Config,
  flags: FlagValues,
  found: Record<string, FoundApiserver> = {},
): { plan: SetupPlan; problems: string[] } {
  const { s, problems } = setupSettings(flags);
  const planned = setupPlan(c, s, found);
  return { plan: planned.plan, problems: [...problems, ...planned.problems] };
}

export async function runSetupVault(c: Config, flags: FlagValues, out: (s: string) => void): Promise<number> {
  const token = process.env.VAULT_TOKEN;
  if (!token)
    throw new ConfigError([
      "VAULT_TOKEN: missing; setup-vault needs an admin token in the environment (it is never printed)",
    ]);
  const { s, problems } = setupSettings(flags);
  if (s.clusters.length && kubeContext(c) !== undefined)
    problems.push("--context: not used with --cluster; expected each cluster's context as --cluster NAME=CONTEXT");
  if (problems.length) throw new ConfigError(problems);
  const found = await lookupApiservers(kubeLookups(c, s));
  const { plan, problems: planProblems } = setupPlan(c, s, found);
  if (planProblems.length) throw new ConfigError(planProblems);
  const vault = new VaultClient({
    address: c.vault.address,
    namespace: c.vault.namespace,
    tls: c.vault, // the same connection settings as the agent: CA file or directory, client certificate, server name, proxy
  });
  try {
    const changes = await setupVaultClusters(vault, token, plan.root, plan.clusters);
    out(
      changes.length
        ? `setup-vault changed ${changes.length} thing(s):\n  - ${changes.join("\n  - ")}`
        : "setup-vault: Vault is already configured; nothing changed",
    );
    for (const cl of plan.clusters) out(describeCluster(cl));
    const tidy = plan.root.autoTidy;
    if (tidy) {
      const mounts = [...new Set(plan.clusters.map((cl) => `${signPathMount(cl.signPath)}/`))].join(", ");
      out(
        `auto-tidy on ${mounts}: every ${formatDuration(tidy.intervalSeconds)}, expired certificates removed ` +
          `${formatDuration(tidy.safetyBufferSeconds)} past expiry (tidy_cert_store, tidy_revoked_certs)`,
      );
    }
    return 0;
  } finally {
    await vault.close();
  }
}

/** What one cluster's agent needs to be told, as flags and as RootTrustPolicy fields; and how Vault reviews tokens. */
export function describeCluster(cl: PlannedCluster): string {
  const sas = `${cl.role.namespaces.join(",")}/${cl.role.serviceAccounts.join(",")}`;
  // Without a reviewer JWT Vault presents each login's JWT to the apiserver as its own credential: that works only
  // where the apiserver accepts the token's audience (--audience) and the account may create TokenReviews.
  const review = cl.kubernetes.reviewerJwt
    ? "the given reviewer JWT"
    : `each login's own JWT (needs system:auth-delegator for ${sas} and an audience the apiserver accepts; ` +
      "else give a reviewer JWT)";
  return [
    `${cl.name === undefined ? "this cluster" : `cluster ${cl.name}`}: Vault calls ${cl.kubernetes.host} (${cl.apiserverFrom}); TokenReview credential: ${review}`,
    `  agent flags: --auth-mount=${cl.kubernetes.mount} --auth-role=${cl.role.name} --ca-path=${cl.signPath}`,
    `  RootTrustPolicy: spec.config.agentCa.vault.kubernetesAuth.mountPath: ${cl.kubernetes.mount}, ` +
      `kubernetesAuth.role: ${cl.role.name}, caPath: ${cl.signPath}` +
      ` (Gloo: kubernetesAuth.path: /v1/auth/${cl.kubernetes.mount})`,
  ].join("\n");
}

/** The kubeconfig context the agent's flags name (--context), if any. */
function kubeContext(c: Config): string | undefined {
  return c.kube.context;
}

/**
 * The service accounts the role binds: istiod's own (the default revision, always: a revisioned install keeps it
 * during a canary upgrade) and `<base>-<rev>` for each other revision, without repeats.
 */
export function revisionServiceAccounts(base: string, revisions: readonly string[]): string[] {
  return [...new Set([base, ...revisions.map((r) => (r === "default" ? base : `${base}-${r}`))])];
}
