// The `setup-vault` and `doctor` commands.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ConfigError, type Config } from "../config/config.js";
import { VaultClient } from "./client.js";
import { DEFAULT_SETUP, setupVault, type VaultSetupOptions } from "./setup.js";
import { formatChecks, runDoctor } from "./doctor.js";

export const SETUP_FLAGS = {
  "root-mount": ["PKI mount holding the root (default pki)", "string"],
  "import-ca-bundle": [
    "PEM file (certificate + key) of an existing root to import instead of generating one",
    "string",
  ],
  "kubernetes-host": ["apiserver URL Vault calls for TokenReview (default: the in-cluster service)", "string"],
  "kubernetes-ca-file": ["CA of that apiserver (default: the pod's service-account ca.crt)", "string"],
  "token-reviewer-jwt-file": ["JWT Vault uses for TokenReview (default: each login's own JWT)", "string"],
  "service-account": ["istiod's service account (default istiod)", "string"],
  namespace: ["istiod's namespace (default istio-system)", "string"],
  audience: ["audience of the agent's token (default vault)", "string"],
  "policy-name": ["Vault policy name (default istiod-agent)", "string"],
} as const;

/** Builds setupVault() options from the agent's Config and the setup flags. */
export function setupOptions(
  c: Config,
  flags: Record<string, string | boolean | undefined>,
): { opts: VaultSetupOptions; problems: string[] } {
  const problems: string[] = [];
  const str = (k: string) => (typeof flags[k] === "string" ? flags[k] : undefined);
  const read = (k: string, what: string) => {
    const f = str(k);
    if (!f) return undefined;
    try {
      return readFileSync(f, "utf8");
    } catch (err) {
      problems.push(`--${k} ${f}: cannot read it (${(err as NodeJS.ErrnoException).code}); expected ${what}`);
      return undefined;
    }
  };
  const host =
    str("kubernetes-host") ??
    (process.env.KUBERNETES_SERVICE_HOST
      ? `https://${process.env.KUBERNETES_SERVICE_HOST}:${process.env.KUBERNETES_SERVICE_PORT ?? "443"}`
      : undefined);
  if (!host)
    problems.push(
      "--kubernetes-host: missing; expected the apiserver URL Vault should call, e.g. https://kubernetes.default.svc",
    );
  const caPem =
    read("kubernetes-ca-file", "a PEM CA file") ?? tryRead("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt");
  if (!caPem) problems.push("--kubernetes-ca-file: missing; expected the apiserver's CA (PEM)");
  const rootMount = str("root-mount") ?? "pki";
  const signMount = c.intermediate.caPath.split("/")[0] ?? rootMount;
  const opts: VaultSetupOptions = {
    ...DEFAULT_SETUP,
    rootMount,
    intermediateMount: signMount !== rootMount ? signMount : undefined,
    importCaBundlePem: read("import-ca-bundle", "a PEM bundle with the root certificate and its key"),
    kubernetes: {
      mount: c.auth.mountPath,
      host: host ?? "",
      caPem: caPem ?? "",
      reviewerJwt: read("token-reviewer-jwt-file", "a JWT")?.trim(),
    },
    role: {
      ...DEFAULT_SETUP.role,
      name: c.auth.role,
      serviceAccounts: [str("service-account") ?? "istiod"],
      namespaces: [str("namespace") ?? "istio-system"],
      audience: str("audience") ?? "vault",
    },
    policyName: str("policy-name") ?? "istiod-agent",
    signPath: c.intermediate.caPath,
    csrPath: c.intermediate.csrPath,
  };
  return { opts, problems };
}

export function parseSetupFlags(argv: string[], agentOptions: Record<string, { type: "string" | "boolean" }>) {
  const options = {
    ...agentOptions,
    ...Object.fromEntries(Object.entries(SETUP_FLAGS).map(([n]) => [n, { type: "string" as const }])),
  };
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as Record<
      string,
      string | boolean | undefined
    >;
  } catch (err) {
    throw new ConfigError([`flags: ${(err as Error).message}`]);
  }
}

export async function runSetupVault(
  c: Config,
  flags: Record<string, string | boolean | undefined>,
  out: (s: string) => void,
): Promise<number> {
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

export async function runDoctorCommand(c: Config, out: (s: string) => void): Promise<number> {
  const checks = await runDoctor(c);
  out(formatChecks(checks));
  const failed = checks.filter((x) => !x.ok).length;
  out(failed ? `\n${failed} check(s) failed` : "\nall checks passed");
  return failed ? 1 : 0;
}

function tryRead(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}
