// `setup-vault`: configures Vault for the agent, idempotently (PKI mounts, root, Kubernetes auth, role, policy). The
// agent's own flags say where and as whom the agent will log in; the flags below say how Vault reaches the apiserver
// and whom the role admits. VAULT_TOKEN holds the admin token (never printed).
import { readFileSync } from "node:fs";
import type { Command } from "../cli/command.js";
import { applyFlags, renderFlags, valueFlag, type FlagTable, type FlagValues, fieldFlags } from "../cli/flags.js";
import { revisionNames, text, vaultName, vaultPath } from "../cli/validate.js";
import { ConfigError, type Config } from "../config/config.js";
import { AGENT_FLAGS, agentHelp, loadConfig } from "../config/load.js";
import { VaultClient } from "../vault/client.js";
import { DEFAULT_SETUP, setupVault, type VaultSetupOptions } from "../vault/setup.js";

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
};

const flag = valueFlag<SetupSettings, string>;
const { option } = fieldFlags<SetupSettings>();

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
    defaultText: "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT",
  }),
  "kubernetes-ca-file": option("CA of that apiserver", text, (s) => s.kubernetesCaFile, {
    arg: "FILE",
    defaultText: "the pod's service-account ca.crt",
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
};

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

/** Builds setupVault() options from the agent's Config and the setup flags. */
export function setupOptions(c: Config, flags: FlagValues): { opts: VaultSetupOptions; problems: string[] } {
  const s = structuredClone(DEFAULT_SETUP_SETTINGS);
  const problems = applyFlags(SETUP_FLAGS, flags, {}, s);
  const read = (flag: string, file: string | undefined, what: string) => {
    if (!file) return undefined;
    try {
      return readFileSync(file, "utf8");
    } catch (err) {
      problems.push(`--${flag} ${file}: cannot read it (${(err as NodeJS.ErrnoException).code}); expected ${what}`);
      return undefined;
    }
  };
  const host =
    s.kubernetesHost ??
    (process.env.KUBERNETES_SERVICE_HOST
      ? `https://${process.env.KUBERNETES_SERVICE_HOST}:${process.env.KUBERNETES_SERVICE_PORT ?? "443"}`
      : undefined);
  if (!host)
    problems.push(
      "--kubernetes-host: missing; expected the apiserver URL Vault should call, e.g. https://kubernetes.default.svc",
    );
  const caPem =
    read("kubernetes-ca-file", s.kubernetesCaFile, "a PEM CA file") ??
    tryRead("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt");
  if (!caPem) problems.push("--kubernetes-ca-file: missing; expected the apiserver's CA (PEM)");
  const signMount = c.intermediate.caPath.split("/")[0] ?? s.rootMount;
  const opts: VaultSetupOptions = {
    ...DEFAULT_SETUP,
    rootMount: s.rootMount,
    intermediateMount: signMount !== s.rootMount ? signMount : undefined,
    importCaBundlePem: read(
      "import-ca-bundle",
      s.importCaBundleFile,
      "a PEM bundle with the root certificate and its key",
    ),
    kubernetes: {
      mount: c.auth.mountPath,
      host: host ?? "",
      caPem: caPem ?? "",
      reviewerJwt: read("token-reviewer-jwt-file", s.reviewerJwtFile, "a JWT")?.trim(),
    },
    role: {
      ...DEFAULT_SETUP.role,
      name: c.auth.role,
      serviceAccounts: revisionServiceAccounts(s.serviceAccount, s.revisions),
      namespaces: [s.namespace],
      audience: s.audience,
    },
    policyName: s.policyName,
    signPath: c.intermediate.caPath,
    csrPath: c.intermediate.csrPath,
  };
  return { opts, problems };
}

export async function runSetupVault(c: Config, flags: FlagValues, out: (s: string) => void): Promise<number> {
  const token = process.env.VAULT_TOKEN;
  if (!token)
    throw new ConfigError([
      "VAULT_TOKEN: missing; setup-vault needs an admin token in the environment (it is never printed)",
    ]);
  const { opts, problems } = setupOptions(c, flags);
  if (problems.length) throw new ConfigError(problems);
  const vault = new VaultClient({
    address: c.vault.address,
    namespace: c.vault.namespace,
    tls: { caPem: c.vault.caPem, insecureSkipVerify: c.vault.insecureSkipVerify },
  });
  try {
    const changes = await setupVault(vault, token, opts);
    out(
      changes.length
        ? `setup-vault changed ${changes.length} thing(s):\n  - ${changes.join("\n  - ")}`
        : "setup-vault: Vault is already configured; nothing changed",
    );
    return 0;
  } finally {
    await vault.close();
  }
}

/**
 * The service accounts the role binds: istiod's own (the default revision, always: a revisioned install keeps it
 * during a canary upgrade) and `<base>-<rev>` for each other revision, without repeats.
 */
export function revisionServiceAccounts(base: string, revisions: readonly string[]): string[] {
  return [...new Set([base, ...revisions.map((r) => (r === "default" ? base : `${base}-${r}`))])];
}

function tryRead(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}
