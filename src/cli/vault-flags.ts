// The Vault and Kubernetes-auth section every Vault-using mode shares (sidecar, init, doctor, setup-vault, relay):
// the same flags, environment variables and parsers; each mode's defaults object supplies its own defaults.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { createSecureContext } from "node:tls";
import { AUTH_METHOD_NAMES, DEFAULT_AUTH_MOUNTS, type AuthMethodName, type AuthSettings } from "../vault/auth.js";
import { fieldFlags, valueFlag, type FlagTable } from "./flags.js";
import { Expected, authMount, durationMs, nonEmpty, text, vaultName, vaultUrlProblem } from "./validate.js";
import type { VaultProxySettings } from "../vault/transport.js";

export interface VaultAuthSection {
  vault: {
    address: string;
    caFile: string | undefined;
    /** A directory of PEM CA files (VAULT_CAPATH), read into caPem. */
    caDir: string | undefined;
    namespace: string | undefined;
    /** Disables TLS verification. Loudly logged at start; never a default. */
    insecureSkipVerify: boolean;
    /** Mutual TLS to Vault (VAULT_CLIENT_CERT / VAULT_CLIENT_KEY); the files are re-read when they change. */
    clientCertFile: string | undefined;
    clientKeyFile: string | undefined;
    /** SNI and the name verified in Vault's certificate (VAULT_TLS_SERVER_NAME). */
    tlsServerName: string | undefined;
    proxy: VaultProxySettings;
  };
  auth: AuthSettings;
}

/**
 * The section's defaults, one per mode: every mode logs in the same way by default (Kubernetes auth at `kubernetes`
 * with the projected token) and differs only in the Vault role. `caPem` is filled from the CA file or directory.
 */
export function defaultVaultAuthSection(role: string): {
  vault: VaultAuthSection["vault"] & { caPem: string | undefined };
  auth: AuthSettings;
} {
  return {
    vault: {
      address: "",
      caFile: undefined,
      caPem: undefined,
      caDir: undefined,
      namespace: undefined,
      insecureSkipVerify: false,
      clientCertFile: undefined,
      clientKeyFile: undefined,
      tlsServerName: undefined,
      proxy: { httpsProxy: undefined, httpProxy: undefined, noProxy: undefined },
    },
    auth: {
      method: "kubernetes",
      mountPath: DEFAULT_AUTH_MOUNTS.kubernetes,
      role,
      tokenPath: "/var/run/secrets/tokens/vault-token",
      roleIdFile: "",
      secretIdFile: "",
      vaultTokenFile: "",
    },
  };
}

function proxyUrl(v: string): string {
  const s = v.trim();
  let url: URL;
  try {
    url = new URL(s.includes("://") ? s : `http://${s}`);
  } catch {
    throw new Expected("a proxy URL such as http://proxy.example:3128");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new Expected("a proxy URL with http:// or https://, such as http://proxy.example:3128");
  return url.href;
}

/**
 * The environment with the lower-case proxy variables (http_proxy, https_proxy, no_proxy) standing in for the
 * upper-case ones when those are unset, as Go's and curl's clients read them.
 */
export function withProxyEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out = { ...env };
  for (const name of ["HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"])
    if (out[name] === undefined && env[name.toLowerCase()] !== undefined) out[name] = env[name.toLowerCase()];
  return out;
}

/** The flags of the section, in help order. The address is checked with the rest of the config (vaultUrlProblem). */
export function vaultAuthFlags<C extends VaultAuthSection>(): FlagTable<C> {
  const { option } = fieldFlags<C>();
  return {
    "vault-addr": option(
      "Vault (or OpenBao) address, e.g. https://vault.vault:8200; several comma-separated (a cluster's nodes) are tried in order",
      text,
      (c) => c.vault.address,
      {
        env: "VAULT_ADDR",
        arg: "URL",
      },
    ),
    "vault-cacert": valueFlag<C, string>({
      help: "PEM file of the CAs that sign Vault's TLS certificate",
      defaultText: "the system CAs",
      env: "VAULT_CACERT",
      arg: "FILE",
      parse: text,
      set: (c, v) => (c.vault.caFile = v || undefined),
    }),
    "vault-capath": valueFlag<C, string>({
      help: "directory of PEM files of the CAs that sign Vault's TLS certificate (hidden entries skipped)",
      env: "VAULT_CAPATH",
      arg: "DIR",
      parse: text,
      set: (c, v) => (c.vault.caDir = v || undefined),
    }),
    "vault-client-cert": valueFlag<C, string>({
      help: "PEM client certificate for mutual TLS to Vault (and the cert auth method); re-read when it changes",
      env: "VAULT_CLIENT_CERT",
      arg: "FILE",
      parse: text,
      set: (c, v) => (c.vault.clientCertFile = v || undefined),
    }),
    "vault-client-key": valueFlag<C, string>({
      help: "PEM private key of --vault-client-cert; read from the file, never logged",
      env: "VAULT_CLIENT_KEY",
      arg: "FILE",
      parse: text,
      set: (c, v) => (c.vault.clientKeyFile = v || undefined),
    }),
    "vault-tls-server-name": valueFlag<C, string>({
      help: "name sent as SNI and verified in Vault's certificate instead of the address's host",
      env: "VAULT_TLS_SERVER_NAME",
      arg: "NAME",
      parse: text,
      set: (c, v) => (c.vault.tlsServerName = v.trim() || undefined),
    }),
    "vault-skip-verify": {
      kind: "boolean",
      help:
        "DANGEROUS: do not verify Vault's TLS certificate (logged loudly at every start); the variable is read as " +
        "Vault reads it (1/t/true/TRUE/True or 0/f/false/FALSE/False)",
      env: "VAULT_SKIP_VERIFY",
      apply: (c) => (c.vault.insecureSkipVerify = true),
      show: (c) => (c.vault.insecureSkipVerify ? "on" : undefined),
    },
    "vault-https-proxy": valueFlag<C, string>({
      help: "proxy (HTTP CONNECT) for an https:// Vault address; NO_PROXY still applies",
      env: "HTTPS_PROXY",
      arg: "URL",
      parse: proxyUrl,
      set: (c, v) => (c.vault.proxy.httpsProxy = v),
    }),
    "vault-http-proxy": valueFlag<C, string>({
      help: "proxy for an http:// Vault address (a dev server)",
      env: "HTTP_PROXY",
      arg: "URL",
      parse: proxyUrl,
      set: (c, v) => (c.vault.proxy.httpProxy = v),
    }),
    "vault-no-proxy": valueFlag<C, string>({
      help: "comma-separated hosts (host, .domain, *.domain, host:port, *) reached without the proxy",
      env: "NO_PROXY",
      arg: "LIST",
      parse: text,
      set: (c, v) => (c.vault.proxy.noProxy = v),
    }),
    "vault-namespace": valueFlag<C, string>({
      help: "Vault namespace",
      env: "VAULT_NAMESPACE",
      parse: text,
      set: (c, v) => (c.vault.namespace = v || undefined),
    }),
    "auth-method": option(
      "how to log in to Vault: kubernetes (TokenReview by Vault), jwt (the same service-account token checked " +
        "against the issuer's keys: private clusters), approle (--role-id-file, --secret-id-file), token " +
        "(--vault-token-file) or cert (TLS client certificate)",
      authMethod,
      (c) => c.auth.method,
      { arg: "METHOD" },
    ),
    "auth-mount": option(
      "auth mount of that method (kubernetes, auth/kubernetes and /v1/auth/kubernetes/ all mean the same)",
      authMount,
      (c) => c.auth.mountPath,
      { defaultText: "the method's name: kubernetes, jwt, approle, cert" },
    ),
    "auth-role": option("role of the kubernetes, jwt or cert auth method", vaultName, (c) => c.auth.role),
    "token-path": option(
      "kubernetes, jwt: projected service-account token file, re-read at every login",
      nonEmpty,
      (c) => c.auth.tokenPath,
      { arg: "FILE" },
    ),
    "role-id-file": option(
      "approle: file holding the role-id, re-read at every login",
      nonEmpty,
      (c) => c.auth.roleIdFile,
      {
        arg: "FILE",
      },
    ),
    "secret-id-file": option(
      "approle: file holding the secret-id, re-read at every login (it may rotate)",
      nonEmpty,
      (c) => c.auth.secretIdFile,
      { arg: "FILE" },
    ),
    "vault-token-file": option(
      "token: file holding a Vault token; re-read when Vault refuses the held one, renewed while renewable, " +
        "never revoked by the agent",
      nonEmpty,
      (c) => c.auth.vaultTokenFile,
      { arg: "FILE" },
    ),
  };
}

function authMethod(v: string): AuthMethodName {
  const m = v.trim().toLowerCase();
  if ((AUTH_METHOD_NAMES as readonly string[]).includes(m)) return m as AuthMethodName;
  throw new Expected(AUTH_METHOD_NAMES.join(", "));
}

/**
 * Defaults that follow --auth-method: another method's mount is the method's name unless --auth-mount names one (the
 * default and the policy's kubernetesAuth mount are Kubernetes auth's). Called by every mode after its flags.
 */
export function resolveAuthDefaults(auth: AuthSettings, mountGiven: boolean): void {
  if (!mountGiven && auth.method !== "kubernetes") auth.mountPath = DEFAULT_AUTH_MOUNTS[auth.method];
}

/** What the chosen method needs and what it would silently ignore, each with the flag to use. */
export function authSettingsProblems(auth: AuthSettings, given: (flag: string) => boolean): string[] {
  const p: string[] = [];
  const m = `--auth-method=${auth.method}`;
  if (auth.method !== "token" && (!auth.mountPath || /\s/.test(auth.mountPath)))
    p.push(`--auth-mount: "${auth.mountPath}" is not a mount path; expected e.g. ${DEFAULT_AUTH_MOUNTS[auth.method]}`);
  if ((auth.method === "kubernetes" || auth.method === "jwt") && !auth.role)
    p.push(`--auth-role: missing; ${m} needs the Vault role name, e.g. istiod-agent`);
  if ((auth.method === "kubernetes" || auth.method === "jwt") && !auth.tokenPath)
    p.push(`--token-path: missing; ${m} needs the path of the projected service-account token`);
  if (auth.method === "approle") {
    if (!auth.roleIdFile) p.push(`--role-id-file: missing; ${m} needs the file holding the AppRole's role-id`);
    if (!auth.secretIdFile) p.push(`--secret-id-file: missing; ${m} needs the file holding a current secret-id`);
  }
  if (auth.method === "token" && !auth.vaultTokenFile)
    p.push(`--vault-token-file: missing; ${m} needs the file holding a Vault token`);
  // A credential flag of another method would be ignored: say so rather than log in some other way than meant.
  const belongs: Record<string, readonly AuthMethodName[]> = {
    "role-id-file": ["approle"],
    "secret-id-file": ["approle"],
    "vault-token-file": ["token"],
  };
  for (const [flag, methods] of Object.entries(belongs)) {
    if (given(flag) && !methods.includes(auth.method))
      p.push(
        `--${flag}: only used with --auth-method=${methods.join("|")}, not with ${m}; remove it or change the method`,
      );
  }
  if (auth.method === "token" && given("auth-mount"))
    p.push(`--auth-mount: not used with ${m} (the token is used as it is); remove it`);
  return p;
}

/**
 * The Vault connection problems every Vault-using mode reports the same way: a missing or unusable address, a CA
 * bundle without a certificate. `name` says how the mode names the field (a config path or a flag).
 */
export function vaultConnectionProblems(
  vault: { address: string; caPem?: string },
  name: { address: string; ca: string },
): string[] {
  const p: string[] = [];
  if (!vault.address) {
    p.push(
      `${name.address}: missing; expected the Vault URL, e.g. https://vault.vault:8200 (flag --vault-addr or VAULT_ADDR)`,
    );
  } else {
    const problem = vaultUrlProblem(vault.address);
    if (problem) p.push(`${name.address}: ${problem}`);
  }
  if (vault.caPem !== undefined && !vault.caPem.includes("BEGIN CERTIFICATE"))
    p.push(`${name.ca}: not a PEM certificate bundle; expected one or more -----BEGIN CERTIFICATE----- blocks`);
  return p;
}

/**
 * Reads the connection files of the section that are checked at start: the CA directory (into caPem) and the client
 * certificate pair (only checked: the transport reads it again whenever it changes). Each problem names the flag and
 * its variable and says what is expected. The cert auth method needs the pair.
 */
export function loadVaultTlsFiles(
  vault: VaultAuthSection["vault"] & { caPem: string | undefined },
  auth: Pick<VaultAuthSection["auth"], "method">,
): string[] {
  const p: string[] = [];
  if (vault.caFile && vault.caDir)
    p.push(
      `--vault-capath (VAULT_CAPATH) ${vault.caDir}: not used together with --vault-cacert (VAULT_CACERT) ${vault.caFile}; expected one of them`,
    );
  else if (vault.caDir && vault.caPem === undefined) {
    const read = readCaDir(vault.caDir);
    if (typeof read === "string") vault.caPem = read;
    else p.push(`--vault-capath (VAULT_CAPATH) ${vault.caDir}: ${read.problem}`);
  }
  const { clientCertFile: cert, clientKeyFile: key } = vault;
  if (!!cert !== !!key)
    p.push(
      cert
        ? `--vault-client-key (VAULT_CLIENT_KEY): missing; expected the PEM private key of the client certificate ${cert}`
        : `--vault-client-cert (VAULT_CLIENT_CERT): missing; expected the PEM certificate of the client key ${key}`,
    );
  else if (cert && key) {
    let certPem: string | undefined;
    let keyPem: string | undefined;
    try {
      certPem = readFileSync(cert, "utf8");
    } catch (err) {
      p.push(
        `--vault-client-cert (VAULT_CLIENT_CERT) ${cert}: cannot read it (${code(err)}); expected a PEM certificate`,
      );
    }
    try {
      keyPem = readFileSync(key, "utf8");
    } catch (err) {
      p.push(`--vault-client-key (VAULT_CLIENT_KEY) ${key}: cannot read it (${code(err)}); expected a PEM private key`);
    }
    if (certPem !== undefined && keyPem !== undefined) {
      try {
        createSecureContext({ cert: certPem, key: keyPem });
      } catch (err) {
        // OpenSSL's reason ("key values mismatch", "no start line") carries no key material.
        p.push(
          `--vault-client-cert ${cert} / --vault-client-key ${key}: not usable (${(err as Error).message.split("\n")[0]}); expected a PEM certificate and its matching PEM private key`,
        );
      }
    }
  }
  if (auth.method === "cert" && !cert)
    p.push(
      "--auth-method=cert: needs the client certificate Vault checks; set --vault-client-cert and --vault-client-key (VAULT_CLIENT_CERT, VAULT_CLIENT_KEY)",
    );
  return p;
}

/**
 * The PEM certificates of the files directly in `dir` (symlinks followed, hidden entries such as a mounted
 * ConfigMap's ..data skipped, subdirectories not walked), or the problem. Like Vault's client, a file that holds no
 * PEM certificate is an error rather than skipped silently.
 */
export function readCaDir(dir: string): string | { problem: string } {
  let names: string[];
  try {
    names = readdirSync(dir)
      .filter((n) => !n.startsWith("."))
      .sort();
  } catch (err) {
    return { problem: `cannot read the directory (${code(err)}); expected a directory of PEM CA certificate files` };
  }
  const pems: string[] = [];
  for (const name of names) {
    const path = join(dir, name);
    try {
      if (!statSync(path).isFile()) continue;
      const text = readFileSync(path, "utf8");
      if (!text.includes("-----BEGIN CERTIFICATE-----"))
        return { problem: `${name} holds no PEM certificate; expected only PEM CA certificate files there` };
      pems.push(text.trim());
    } catch (err) {
      return { problem: `cannot read ${name} (${code(err)})` };
    }
  }
  if (pems.length === 0)
    return { problem: "holds no PEM certificate file; expected the CA that signs Vault's certificate" };
  return `${pems.join("\n")}\n`;
}

function code(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? "error";
}

/** --vault-probe-interval (sidecar and relay): the help, and its parser: 0 (off) or 1s to 1h. */
export const VAULT_PROBE_HELP =
  "probe Vault's sys/health this often for the vault_up metric (alerts within a minute of an outage); 0 disables";

export function vaultProbeInterval(v: string): number {
  const ms = durationMs("15s (0 disables)", 0, 3600)(v);
  // Faster would only load Vault; the alert waits a minute anyway.
  if (ms !== 0 && ms < 1000) throw new Expected("0 (off) or a duration from 1s to 1h, such as 15s");
  return ms;
}
