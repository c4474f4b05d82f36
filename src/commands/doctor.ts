// `doctor`: checks everything the agent needs from Vault, as istiod's agent would see it, and says how to fix what
// fails: reachability and TLS, the configured auth method's login, a policy that allows the sign path and nothing broader, and a
// dry-run intermediate whose chain validates (and, with --policy-name, that the RootTrustPolicy exists and is valid).
// In the pod it logs in with the projected token file; from a laptop (a kubeconfig, no pod) it asks the apiserver's
// TokenRequest API for a 10-minute token of istiod's service account, so a setup can be checked before install.
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import type { Command } from "../cli/command.js";
import { applyFlags, fieldFlags, renderFlags, valueFlag, type FlagTable, type FlagValues } from "../cli/flags.js";
import { openKube } from "../cli/kube.js";
import { Expected, dnsName, namespaceName, revisionName } from "../cli/validate.js";
import { ConfigError, type Config } from "../config/config.js";
import { AGENT_FLAGS, agentHelp, loadConfig } from "../config/load.js";
import { generateKeyPair } from "../crypto/keys.js";
import { createIntermediateCsr } from "../authority/csr.js";
import { validateSignAnswer, type PkiSignAnswer } from "../authority/chain.js";
import type { KubeClient } from "../kube/client.js";
import { fetchPolicy, type PolicyObject, type PolicyRef } from "../kube/policy-controller.js";
import { TokenRequestError, requestServiceAccountToken } from "../kube/token-request.js";
import { HttpStatusError, HttpTransportError } from "../net/http-json.js";
import { createAuthMethod } from "../vault/auth-methods.js";
import { VaultClient, trimSlashes } from "../vault/client.js";

/** Where the service-account JWT for the Vault login comes from. */
export type TokenSource = "auto" | "file" | "request";
export type OutputFormat = "text" | "json";

export interface DoctorSettings {
  output: OutputFormat;
  tokenSource: TokenSource;
  /** istiod's namespace and service account, for token requests. */
  namespace: string;
  serviceAccount: string;
  revision: string | undefined;
  /** Audience of the requested token: the one the Vault role is bound to. */
  audience: string;
}

export const DEFAULT_DOCTOR_SETTINGS: DoctorSettings = {
  output: "text",
  tokenSource: "auto",
  namespace: "istio-system",
  serviceAccount: "istiod",
  revision: undefined,
  audience: "vault",
};

/** A requested token lives this long: the shortest the apiserver honours (it raises anything less to 600 s). */
export const REQUESTED_TOKEN_SECONDS = 600;

const { option } = fieldFlags<DoctorSettings>();
const oneOf =
  <T extends string>(values: readonly T[]) =>
  (v: string): T => {
    if (!(values as readonly string[]).includes(v)) throw new Expected(`one of ${values.join(", ")}`);
    return v as T;
  };

/** doctor's own flags, beside the agent's. */
export const DOCTOR_FLAGS: FlagTable<DoctorSettings> = {
  output: {
    ...option(
      "result format: text, or json (one object: ok, failed (the names of the failing checks), checks: [{name, ok, detail, fix}])",
      oneOf(["text", "json"] as const),
      (s) => s.output,
      { arg: "FORMAT" },
    ),
    short: "o",
  },
  "token-source": option(
    "the JWT doctor logs in to Vault with: file (--token-path, as the agent does in its pod), request (a " +
      `${REQUESTED_TOKEN_SECONDS / 60}-minute token for istiod's service account from the apiserver's TokenRequest API, ` +
      "through the kubeconfig, never printed), or auto: file with --token-path, request with --kubeconfig/--context, " +
      "else file in a pod and request outside one",
    oneOf(["auto", "file", "request"] as const),
    (s) => s.tokenSource,
    { arg: "SOURCE" },
  ),
  namespace: option("istiod's namespace (token requests)", namespaceName, (s) => s.namespace),
  "service-account": option("istiod's service account (token requests)", dnsName, (s) => s.serviceAccount),
  revision: valueFlag<DoctorSettings, string>({
    help:
      "istiod revision (token requests): the token is for istiod-<rev>, as Istio's chart names its service account; " +
      '"default" is istiod itself',
    arg: "REV",
    parse: revisionName,
    set: (s, v) => (s.revision = v),
  }),
  audience: option(
    "audience of the requested token: the one the Vault role is bound to (setup-vault --audience, inject --audience)",
    audienceValue,
    (s) => s.audience,
    { defaultText: "the RootTrustPolicy's kubernetesAuth.audience, else vault" },
  ),
};

/** Flags that only shape a token request. */
const REQUEST_ONLY_FLAGS = ["namespace", "service-account", "revision", "audience"] as const;

export const command: Command = {
  name: "doctor",
  flags: { ...AGENT_FLAGS, ...DOCTOR_FLAGS },
  help: () =>
    [
      agentHelp(
        [
          "istiod-vault-agent doctor --vault-addr=URL [flags]                 (in istiod's pod: the same flags as the sidecar)",
          "istiod-vault-agent doctor --vault-addr=URL [--kubeconfig=FILE] [--context=NAME] [-o json]   (from a laptop)",
        ],
        "Checks as istiod's agent would: Vault reachable and trusted, its login (--auth-method), a least-privilege policy,\n" +
          "a dry-run intermediate whose chain validates, and with --policy-name the RootTrustPolicy. Outside a pod it\n" +
          "logs in (kubernetes, jwt) with a short-lived token for istiod's service account from the TokenRequest API.\n" +
          "Exit 0 when every check passes, 1 when one fails (each failing check is named), 2 on a usage error.",
      ),
      "",
      "doctor flags:",
      renderFlags(DOCTOR_FLAGS, DEFAULT_DOCTOR_SETTINGS),
    ].join("\n"),
  run: runDoctorCommand,
};

export interface DoctorCheck {
  name: string;
  ok: boolean;
  detail: string;
  fix?: string | undefined;
}

/** Where runDoctor gets the service-account JWT. */
export type JwtSource =
  | { kind: "file"; path: string }
  | { kind: "request"; kube: KubeClient; namespace: string; serviceAccount: string; audience: string };

/** doctor's own settings from the flags; a problem (or a flag that does not fit the token source) is a usage error. */
export function doctorSettings(flags: FlagValues): DoctorSettings {
  const d = structuredClone(DEFAULT_DOCTOR_SETTINGS);
  const problems = applyFlags(DOCTOR_FLAGS, flags, {}, d);
  if (flags.revision !== undefined && flags["service-account"] !== undefined)
    problems.push(
      "--revision and --service-account: give one; --revision=REV means --service-account=istiod-REV (Istio's chart's name)",
    );
  if (problems.length) throw new ConfigError(problems);
  return d;
}

/** The service account a token is requested for: --service-account, or istiod-<rev> for --revision. */
export function requestedServiceAccount(d: DoctorSettings): string {
  if (d.revision === undefined || d.revision === "default") return d.serviceAccount;
  return `${DEFAULT_DOCTOR_SETTINGS.serviceAccount}-${d.revision}`;
}

/**
 * Resolves --token-source=auto: the token file when --token-path is given, a token request when --kubeconfig or
 * --context names a cluster (the operator asking), else the file in a pod (the agent's own case) and a token request
 * outside one (the laptop's case: $KUBECONFIG or ~/.kube/config, by openKube's precedence). Flags that cannot apply
 * to the result are refused rather than silently ignored.
 */
export function resolveTokenSource(
  d: DoctorSettings,
  flags: FlagValues,
  env: NodeJS.ProcessEnv = process.env,
): "file" | "request" {
  const tokenPathGiven = flags["token-path"] !== undefined;
  let source: "file" | "request";
  if (d.tokenSource !== "auto") source = d.tokenSource;
  else if (tokenPathGiven) source = "file";
  else if (given(flags.kubeconfig) || given(flags.context)) source = "request";
  else source = env.KUBERNETES_SERVICE_HOST ? "file" : "request";
  const problems: string[] = [];
  if (source === "request" && tokenPathGiven)
    problems.push(
      "--token-path: not used when doctor requests a token (--token-source=request); drop one of them, or use --token-source=file",
    );
  if (source === "file")
    for (const name of REQUEST_ONLY_FLAGS)
      if (flags[name] !== undefined)
        problems.push(
          `--${name}: only shapes a requested token, but doctor reads the token file here (--token-source=${d.tokenSource}` +
            `${d.tokenSource === "auto" ? (tokenPathGiven ? " with --token-path" : " in a pod") : ""}); expected --token-source=request, or drop --${name}`,
        );
  if (problems.length) throw new ConfigError(problems);
  return source;
}

async function runDoctorCommand(flags: FlagValues): Promise<number> {
  const d = doctorSettings(flags);
  const source = resolveTokenSource(d, flags);
  let kube: KubeClient | undefined;
  const str = (v: unknown) => (typeof v === "string" ? v : undefined);
  const openOnce = async () =>
    (kube ??= await openKube({ kubeconfig: str(flags.kubeconfig), context: str(flags.context) }));
  try {
    const checks: DoctorCheck[] = [];
    let policyDoc: PolicyObject | undefined;
    const policyName = typeof flags["policy-name"] === "string" ? flags["policy-name"] : undefined;
    if (policyName) {
      const ref: PolicyRef = {
        namespace:
          (typeof flags["policy-namespace"] === "string" ? flags["policy-namespace"] : undefined) ??
          process.env.POD_NAMESPACE ??
          "istio-system",
        name: policyName,
      };
      const found = await checkPolicy(await openOnce(), ref);
      checks.push(found.check);
      policyDoc = found.doc;
    }
    const config = configWithPolicy(flags, policyDoc, checks);
    if (config) {
      // Only kubernetes and jwt log in with a service-account JWT; approle and token have their own credential files,
      // so no token is requested (and no cluster is needed) for them.
      const jwt: JwtSource | undefined = !usesServiceAccountJwt(config)
        ? undefined
        : source === "file"
          ? { kind: "file", path: config.auth.tokenPath }
          : {
              kind: "request",
              kube: await openOnce(),
              namespace: d.namespace,
              serviceAccount: requestedServiceAccount(d),
              audience: requestAudience(d, flags, policyDoc),
            };
      checks.push(...(await runDoctor(config, jwt)));
    }
    console.log(d.output === "json" ? JSON.stringify(doctorReport(checks), null, 2) : formatReport(checks));
    return checks.every((x) => x.ok) ? 0 : 1;
  } finally {
    await kube?.close();
  }
}

/**
 * The audience to request: --audience, else the one the RootTrustPolicy (--policy-name, else --config) names in
 * spec.config.agentCa.vault.kubernetesAuth.audience, else vault. The agent itself never requests a token (the pod's
 * projected volume does), so only doctor reads that field.
 */
export function requestAudience(d: DoctorSettings, flags: FlagValues, policyDoc?: unknown): string {
  if (flags.audience !== undefined) return d.audience;
  let doc = policyDoc;
  if (doc === undefined && typeof flags.config === "string" && flags.config !== "") {
    try {
      doc = parseYaml(readFileSync(flags.config, "utf8"));
    } catch {
      doc = undefined; // loadConfig has reported the unreadable file already
    }
  }
  const at = (o: unknown, key: string): unknown =>
    typeof o === "object" && o !== null ? (o as Record<string, unknown>)[key] : undefined;
  const audience = ["spec", "config", "agentCa", "vault", "kubernetesAuth", "audience"].reduce(at, doc);
  return typeof audience === "string" && audience !== "" && !/\s/.test(audience) ? audience : d.audience;
}

/** The RootTrustPolicy named by --policy-name: present (and its generation), or a failing check saying why not. */
async function checkPolicy(kube: KubeClient, ref: PolicyRef): Promise<{ check: DoctorCheck; doc?: PolicyObject }> {
  const name = "root trust policy";
  try {
    const doc = await fetchPolicy(kube, ref);
    const generation = doc.metadata.generation !== undefined ? ` (generation ${doc.metadata.generation})` : "";
    return { check: { name, ok: true, detail: `${ref.namespace}/${ref.name} found${generation}` }, doc };
  } catch (err) {
    const forbidden = err instanceof HttpStatusError && (err.status === 403 || err.status === 401);
    return {
      check: {
        name,
        ok: false,
        detail: (err as Error).message,
        fix: forbidden
          ? `allow get on roottrustpolicies in ${ref.namespace} to this user`
          : `create the RootTrustPolicy ${ref.namespace}/${ref.name} (see manifests/examples/), or fix --policy-name/--policy-namespace`,
      },
    };
  }
}

/**
 * The Config from the flags over the RootTrustPolicy. A policy whose settings are refused fails its check (its
 * problems are the detail) and doctor goes on with the flags alone; when the flags alone are not enough either
 * (a missing policy was to supply the Vault address), that is one more failing check, not a usage error: the
 * command line was fine, the cluster was not.
 */
function configWithPolicy(flags: FlagValues, policyDoc: PolicyObject | undefined, checks: DoctorCheck[]) {
  const policyCheck = checks.find((x) => x.name === "root trust policy");
  if (!policyCheck) return loadConfig(flags);
  if (policyDoc) {
    try {
      const c = loadConfig(flags, process.env, { needVault: true, policyDoc });
      policyCheck.detail += ": its settings are used for the checks below";
      return c;
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      policyCheck.ok = false;
      policyCheck.detail += `, but its settings are refused: ${err.problems.join("; ")}`;
      policyCheck.fix = "fix the RootTrustPolicy's spec (the sidecar would refuse it the same way)";
    }
  }
  try {
    return loadConfig(flags);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    checks.push({
      name: "configuration",
      ok: false,
      detail: `without the RootTrustPolicy the flags are not enough: ${err.problems.join("; ")}`,
      fix: "fix the RootTrustPolicy, or pass the missing settings as flags",
    });
    return undefined;
  }
}

/** Paths an agent token must not be able to touch; any capability there means the policy is over-broad. */
export function probePaths(c: Config): string[] {
  const mount = c.intermediate.caPath.split("/")[0] ?? "pki";
  return [
    `${mount}/issue/doctor-probe`,
    `${mount}/sign/doctor-probe`,
    `${mount}/root/generate/internal`,
    `${mount}/config/ca`,
    `${mount}/issuers`,
    "sys/mounts/doctor-probe",
    "sys/policy/doctor-probe",
    "sys/auth/doctor-probe",
    "auth/token/create",
    "secret/data/doctor-probe",
    "doctor-probe/anything",
  ];
}

/** Whether the configured auth method logs in with a service-account JWT (the token file or a requested one). */
export function usesServiceAccountJwt(c: Config): boolean {
  return c.auth.method === "kubernetes" || c.auth.method === "jwt";
}

/**
 * The checks. `jwtSource` matters only to the kubernetes and jwt methods (default: the token file); the login is the
 * configured auth method's own, so `--auth-method=approle|token` checks exactly what the agent would do.
 */
export async function runDoctor(c: Config, jwtSource?: JwtSource): Promise<DoctorCheck[]> {
  const source: JwtSource = jwtSource ?? { kind: "file", path: c.auth.tokenPath };
  const checks: DoctorCheck[] = [];
  const vault = new VaultClient({
    address: c.vault.address,
    namespace: c.vault.namespace,
    tls: c.vault, // the same connection settings as the agent: CA file or directory, client certificate, server name, proxy
  });
  let token: string | undefined;
  let revokeWhenDone = false; // only a token doctor's own login created; the token method's is the operator's
  try {
    // 1. Reachability and TLS.
    try {
      const h = await vault.health();
      const ok = h.status === 200 || h.status === 429;
      checks.push({
        name: "vault reachable",
        ok,
        detail: `${c.vault.address} answered sys/health ${h.status} (version ${h.version}, sealed ${h.sealed})`,
        fix: ok ? undefined : h.sealed ? "unseal Vault" : "Vault is not initialised or not active",
      });
      if (!ok) return checks;
    } catch (err) {
      const tls =
        err instanceof HttpTransportError &&
        /certificate|self.signed|CERT|UNABLE_TO/i.test(`${err.causeCode} ${err.message}`);
      checks.push({
        name: "vault reachable",
        ok: false,
        detail: (err as Error).message,
        fix: tls
          ? "Vault's TLS certificate is not trusted: pass its CA with --vault-cacert (or spec.config.agentCa.vault.caBundle)"
          : source.kind === "request"
            ? "check --vault-addr, and that this machine can reach it"
            : "check --vault-addr, DNS and network policies from the istiod pod",
      });
      return checks;
    }
    if (c.vault.insecureSkipVerify) {
      checks.push({
        name: "tls verification",
        ok: false,
        detail: "TLS verification is OFF",
        fix: "remove --vault-skip-verify and pass --vault-cacert",
      });
    }

    // 2. The service-account JWT: requested from the apiserver (held only in this variable, never printed), or the
    // pod's file.
    let jwt: string | undefined;
    if (source.kind === "request" && usesServiceAccountJwt(c)) {
      const who = `${source.namespace}/${source.serviceAccount}`;
      try {
        const got = await requestServiceAccountToken(source.kube, {
          namespace: source.namespace,
          serviceAccount: source.serviceAccount,
          audience: source.audience,
          expirationSeconds: REQUESTED_TOKEN_SECONDS,
        });
        jwt = got.token;
        checks.push({
          name: "service-account token",
          ok: true,
          detail: `TokenRequest issued a token for ${who}, audience ${source.audience}${got.expiresAt ? `, expiring ${got.expiresAt.toISOString()}` : ""} (not shown)`,
        });
      } catch (err) {
        const reason = err instanceof TokenRequestError ? err.reason : "other";
        checks.push({
          name: "service-account token",
          ok: false,
          detail: (err as Error).message,
          fix:
            reason === "not_found"
              ? `istiod's service account is not ${who}: pass --namespace and --service-account (or --revision for istiod-<rev>), or install istiod's service account first`
              : reason === "forbidden"
                ? `the kubeconfig's user needs create on serviceaccounts/token in ${source.namespace} (e.g. kubectl auth can-i create serviceaccounts/token -n ${source.namespace})`
                : reason === "unauthenticated"
                  ? "the kubeconfig's credentials are expired or of another cluster: log in again, or pick another --context"
                  : "check --kubeconfig/--context and that the apiserver is reachable",
        });
        return checks;
      }
    }

    // 3. Login, through the configured auth method (the agent's own code path); a requested JWT replaces the file.
    const method = createAuthMethod(c.auth, jwt !== undefined ? { serviceAccountJwt: jwt } : {});
    const loginCheck = `${method.name} login`;
    try {
      const auth = await method.login(vault);
      token = auth.client_token;
      revokeWhenDone = method.ownsToken;
      const as =
        source.kind === "request" && jwt !== undefined ? ` as ${source.namespace}/${source.serviceAccount}` : "";
      checks.push({
        name: loginCheck,
        ok: true,
        detail: `${loginWhat(c)}${as}: policies ${auth.policies.join(", ")}`,
      });
    } catch (err) {
      checks.push({
        name: loginCheck,
        ok: false,
        detail: (err as Error).message,
        fix: loginFix(c, source, err),
      });
      return checks;
    }

    // 4. Policy: the sign path (and csrPath when used) must be allowed; nothing broader.
    const needed = [c.intermediate.caPath, ...(c.intermediate.csrPath ? [c.intermediate.csrPath] : [])];
    const probes = probePaths(c);
    let caps: Record<string, string[]>;
    try {
      caps = (
        await vault.write<Record<string, string[]>>("sys/capabilities-self", token, {
          paths: [...needed, ...probes],
        })
      ).data;
    } catch (err) {
      checks.push({
        name: "policy capabilities",
        ok: false,
        detail: (err as Error).message,
        fix: "sys/capabilities-self comes from Vault's default policy: keep it among the role's policies",
      });
      return checks;
    }
    for (const p of needed) {
      const have = caps[p] ?? [];
      const ok = have.includes("update") || have.includes("root");
      checks.push({
        name: `policy allows ${p}`,
        ok,
        detail: `capabilities: ${have.join(", ") || "none"}`,
        fix: ok
          ? undefined
          : `add path "${p}" { capabilities = ["update"] } to the role's policy (see vault-policies/istiod-agent.hcl)`,
      });
    }
    const broad = probes.filter((p) => (caps[p] ?? ["deny"]).some((x) => x !== "deny"));
    checks.push({
      name: "policy is least-privilege",
      ok: broad.length === 0,
      detail: broad.length
        ? `the token can also use: ${broad.map((p) => `${p} (${(caps[p] ?? []).join(",")})`).join("; ")}`
        : "no capability beyond the sign path",
      fix: broad.length
        ? "narrow the role's policies to vault-policies/istiod-agent.hcl: update on the sign path only (with --csr-path also update on it and delete on <mount>/key/*)"
        : undefined,
    });

    // 5. Dry run: sign a short-lived intermediate (not served) and validate its chain.
    try {
      const keys = await generateKeyPair(c.intermediate.keyAlgorithm, false);
      const csr = await createIntermediateCsr(keys, c.intermediate.keyAlgorithm, {
        commonName: `${c.intermediate.commonName} (doctor dry run)`,
      });
      const answer = await vault.write<PkiSignAnswer>(c.intermediate.caPath, token, {
        csr,
        common_name: `${c.intermediate.commonName} (doctor dry run)`,
        ttl: "10m",
        format: "pem",
        max_path_length: c.intermediate.maxPathLength,
      });
      const chain = await validateSignAnswer(answer.data, keys.publicKey, new Date(), { expectCa: true });
      checks.push({
        name: "dry-run intermediate",
        ok: true,
        detail: `chain of ${chain.chainPem.length} validates to ${chain.cert.issuer === chain.cert.subject ? "itself" : "the root"}`,
      });
    } catch (err) {
      checks.push({
        name: "dry-run intermediate",
        ok: false,
        detail: (err as Error).message,
        fix: `check that ${c.intermediate.caPath} is a PKI sign-intermediate path with an issuer`,
      });
    }
    return checks;
  } finally {
    if (token && revokeWhenDone) await vault.write("auth/token/revoke-self", token, {}).catch(() => undefined);
    await vault.close();
  }
}

/** The login's non-secret facts for its check's detail (mount, role, credential files). */
function loginWhat(c: Config): string {
  const mount = `auth/${trimSlashes(c.auth.mountPath)}`;
  switch (c.auth.method) {
    case "approle":
      return `AppRole at ${mount} (role-id ${c.auth.roleIdFile}, secret-id ${c.auth.secretIdFile})`;
    case "token":
      return `the token in ${c.auth.vaultTokenFile}`;
    default:
      return `role ${c.auth.role} at ${mount}`;
  }
}

/** What to do about a refused login, from Vault's own reason (it names the role, the audience or the binding). */
export function loginFix(c: Config, source: JwtSource, err: unknown): string {
  const role = c.auth.role;
  const mount = trimSlashes(c.auth.mountPath);
  const message = err instanceof HttpStatusError ? err.serverMessages.join("; ") : "";
  const who = source.kind === "request" ? `${source.namespace}/${source.serviceAccount}` : "this pod's service account";
  if (c.auth.method === "approle")
    return err instanceof HttpStatusError
      ? `check that auth/${mount} is an AppRole mount (--auth-mount) and that ${c.auth.roleIdFile} and ${c.auth.secretIdFile} hold a role-id and a live secret-id of one role (secret-ids expire and may be single-use)`
      : `${c.auth.roleIdFile} and ${c.auth.secretIdFile} must hold the AppRole's role-id and secret-id (--role-id-file, --secret-id-file)`;
  if (c.auth.method === "token")
    return `write a valid, unexpired Vault token to ${c.auth.vaultTokenFile} (--vault-token-file)`;
  if (/invalid role name|role .*not found|unknown role/i.test(message))
    return `role ${role} does not exist at auth/${mount}: create it (setup-vault), or pass the right --auth-role/--auth-mount`;
  if (/audience|\baud\b/i.test(message))
    return source.kind === "request"
      ? `the role is bound to another audience than the token's (${source.audience}): set the role's audience to the one istiod's projected token carries (setup-vault --audience, inject --audience), or pass that one with --audience`
      : "the role is bound to another audience than the projected token's: make the role's audience (setup-vault --audience) and the pod's (inject --audience) the same";
  if (/service account|namespace/i.test(message))
    return `role ${role} does not bind ${who}: add it to the role's bound_service_account_names/namespaces (setup-vault --service-account, --namespace, --revisions)`;
  if (err instanceof HttpStatusError && (err.status === 403 || err.status === 400))
    return `check that role ${role} binds ${who} and its namespace, that its audience matches the token's, and that Vault's auth/${mount}/config can reach the apiserver (TokenReview)`;
  if (err instanceof HttpStatusError)
    return `check that auth/${mount} is a Kubernetes auth mount (--auth-mount) and that Vault's auth/${mount}/config can reach the apiserver (TokenReview)`;
  return source.kind === "file"
    ? `the token file ${source.path} must hold a projected service-account token`
    : "check that Vault is reachable from here";
}

/** The machine-readable result (-o json): every check, and the names of the failing ones. */
export function doctorReport(checks: DoctorCheck[]): { ok: boolean; failed: string[]; checks: DoctorCheck[] } {
  const failed = checks.filter((x) => !x.ok).map((x) => x.name);
  return {
    ok: failed.length === 0,
    failed,
    checks: checks.map((x) => ({ name: x.name, ok: x.ok, detail: x.detail, ...(x.fix ? { fix: x.fix } : {}) })),
  };
}

export function formatChecks(checks: DoctorCheck[]): string {
  return checks
    .map((c) => `${c.ok ? "ok  " : "FAIL"} ${c.name}: ${c.detail}${c.fix ? `\n       fix: ${c.fix}` : ""}`)
    .join("\n");
}

/** The text result: each check, then a summary naming the failing checks. */
export function formatReport(checks: DoctorCheck[]): string {
  const { failed } = doctorReport(checks);
  const summary = failed.length ? `${failed.length} check(s) failed: ${failed.join(", ")}` : "all checks passed";
  return `${formatChecks(checks)}\n\n${summary}`;
}

function given(v: string | boolean | string[] | undefined): boolean {
  return typeof v === "string" && v !== "";
}

function audienceValue(v: string): string {
  if (!v || /\s/.test(v)) throw new Expected("a token audience without spaces, e.g. vault");
  return v;
}
