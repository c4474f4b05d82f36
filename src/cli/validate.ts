// The value parsers every command's flag table shares: one DNS-name pattern, one Vault-URL check, one host:port
// splitter, one duration parser, one auth-mount normaliser (the key-algorithm parser is in ./key-algorithm.ts). A
// parser returns the value or throws Expected, whose message says what was expected; the flag layer adds the flag's
// name and the raw value.
import { vaultAddressList } from "../vault/client.js";

/** Thrown by a parser: the message completes "expected …". */
export class Expected extends Error {}

const LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
/** A lower-case DNS name (RFC 1123 subdomain): Kubernetes object names, cluster names, certificate DNS SANs. */
export const DNS_NAME = new RegExp(`^${LABEL}(\\.${LABEL})*$`);
/** A single DNS label (RFC 1123): Kubernetes namespaces. */
export const DNS_LABEL = new RegExp(`^${LABEL}$`);

export function isDnsName(v: string, maxLength = 253): boolean {
  return v.length <= maxLength && DNS_NAME.test(v);
}

export function dnsName(v: string): string {
  const s = v.trim().toLowerCase();
  if (!isDnsName(s)) throw new Expected("a DNS name (lower-case letters, digits, '-', '.'), e.g. cluster1");
  return s;
}

export function namespaceName(v: string): string {
  const s = v.trim();
  if (s.length > 63 || !DNS_LABEL.test(s)) throw new Expected("a Kubernetes namespace name, e.g. istio-system");
  return s;
}

/** A comma-separated list; empty items dropped, duplicates kept out. */
export function list(v: string): string[] {
  return [
    ...new Set(
      v
        .split(",")
        .map((x) => x.trim())
        .filter(Boolean),
    ),
  ];
}

/**
 * Comma-separated istiod revision names (each a DNS label, as Istio's `revision` value must be: it becomes part of
 * object names such as the service account istiod-<rev>); "default" names the default revision.
 */
export function revisionNames(v: string): string[] {
  return list(v).map((r) => {
    if (r.length > 63 || !DNS_LABEL.test(r))
      throw new Expected(
        `istiod revision names, each a DNS label (lower-case letters, digits, '-'; "${r}" is not), e.g. canary,stable`,
      );
    return r;
  });
}

/** One istiod revision name (a DNS label); "default" is istiod's default revision. */
export function revisionName(v: string): string {
  if (v.length > 63 || !DNS_LABEL.test(v))
    throw new Expected(
      "an istiod revision, a DNS label (lower-case letters, digits, '-'), e.g. canary; \"default\" is istiod",
    );
  return v;
}

export function dnsNames(v: string): string[] {
  return list(v.toLowerCase()).map(dnsName);
}

/** Why `v` is not a usable Vault address (one URL, or several comma-separated: a cluster's nodes), or undefined. */
export function vaultUrlProblem(v: string): string | undefined {
  const list = vaultAddressList(v);
  if (list.length === 0) return `"${v}" is not a URL; expected e.g. https://vault.vault:8200`;
  const schemes = new Set<string>();
  for (const one of list) {
    let url: URL;
    try {
      url = new URL(one);
    } catch {
      return `"${one}" is not a URL; expected e.g. https://vault.vault:8200 (several: comma-separated)`;
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") return `"${one}" must be an https:// (or http://) URL`;
    schemes.add(url.protocol);
  }
  if (schemes.size > 1) return `"${v}" mixes http:// and https://; expected every address with the same scheme`;
  return undefined;
}

export function vaultUrl(v: string): string {
  const s = v.trim();
  const problem = vaultUrlProblem(s);
  if (problem) throw new Expected("an https:// (or http://) URL such as https://vault.vault:8200");
  return s;
}

/** host:port, [v6]:port, or :port (all interfaces). */
export function isHostPort(v: string): boolean {
  return /^[^\s:[\]]*:\d{1,5}$/.test(v) || /^\[[0-9a-f:.]+\]:\d{1,5}$/i.test(v);
}

export function hostPort(v: string): string {
  const s = v.trim();
  if (!isHostPort(s)) throw new Expected("host:port, e.g. 0.0.0.0:15300");
  return s;
}

/** Like hostPort, but empty means "off". */
export function optionalHostPort(v: string): string {
  return v.trim() === "" ? "" : hostPort(v);
}

export function splitHostPort(address: string, defaultHost = "0.0.0.0"): { host: string; port: number } {
  const i = address.lastIndexOf(":");
  const host = address.slice(0, i).replace(/^\[|\]$/g, "") || defaultHost;
  return { host, port: Number(address.slice(i + 1)) };
}

/** Parses a duration: a number of seconds, or Go/Vault style "720h", "30m", "45s", "2h30m", "500ms", or "90d". */
export function parseDuration(value: string | number): number {
  if (typeof value === "number") return value;
  const s = value.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s);
  const re = /(\d+(?:\.\d+)?)(ms|d|h|m|s)/gy;
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    const n = Number(m[1]);
    total += n * { d: 86400, h: 3600, m: 60, s: 1, ms: 0.001 }[m[2] as "d" | "h" | "m" | "s" | "ms"];
    consumed = re.lastIndex;
  }
  if (consumed !== s.length || s.length === 0) return Number.NaN;
  return total;
}

/** Renders seconds the way the duration parser reads them back: 720h, 5m, 30s, 90d. */
export function formatDuration(seconds: number): string {
  if (seconds === 0) return "0s";
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  // Days only for long spans (90d); a month reads as 720h, as Vault writes it.
  if (seconds % 86400 === 0 && seconds >= 60 * 86400) return `${seconds / 86400}d`;
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
}

const MAX_DURATION = 20 * 365 * 86400;

/** A duration parser bounded to [min, max] seconds; `example` shows the form in errors. */
export function duration(example: string, min = 0, max = MAX_DURATION): (v: string) => number {
  const range = min === 0 && max === MAX_DURATION ? "" : ` from ${formatDuration(min)} to ${formatDuration(max)}`;
  return (v) => {
    const s = parseDuration(v);
    if (!Number.isFinite(s) || s < min || s > max) throw new Expected(`a duration such as ${example}${range}`);
    return s;
  };
}

/** Milliseconds from a duration flag. */
export function durationMs(example: string, min = 0, max = MAX_DURATION): (v: string) => number {
  const d = duration(example, min, max);
  return (v) => Math.round(d(v) * 1000);
}

export function wholeNumber(min = 0, max = Number.MAX_SAFE_INTEGER): (v: string) => number {
  return (v) => {
    const n = /^\d+$/.test(v.trim()) ? Number(v) : Number.NaN;
    if (!(n >= min && n <= max))
      throw new Expected(
        max === Number.MAX_SAFE_INTEGER ? `a whole number ≥ ${min}` : `a whole number from ${min} to ${max}`,
      );
    return n;
  };
}

/** A decimal number strictly between `above` and `below`. */
export function ratio(above: number, below: number): (v: string) => number {
  return (v) => {
    const n = /^\d*\.?\d+$/.test(v.trim()) ? Number(v) : Number.NaN;
    if (!(n > above && n < below)) throw new Expected(`a number between ${above} and ${below}, e.g. 0.333`);
    return n;
  };
}

/** A positive decimal number up to `max`. */
export function positive(max: number): (v: string) => number {
  return (v) => {
    const n = /^\d*\.?\d+$/.test(v.trim()) ? Number(v) : Number.NaN;
    if (!(n > 0 && n <= max)) throw new Expected(`a number above 0 and at most ${max}`);
    return n;
  };
}

/**
 * A Vault auth mount as the login path needs it: `kubernetes` from `kubernetes`, `/kubernetes/`,
 * `auth/kubernetes/` or `/v1/auth/kubernetes`.
 */
export function normalizeAuthMount(v: string): string {
  return v
    .trim()
    .replace(/^\/+|\/+$/g, "")
    .replace(/^(v1\/)?auth\//, "")
    .replace(/\/+$/, "");
}

export function authMount(v: string): string {
  const s = normalizeAuthMount(v);
  if (!/^[\w\-./]+$/.test(s)) throw new Expected("a mount path such as kubernetes");
  return s;
}

/** A Vault path: slashes trimmed, a leading v1/ dropped. */
export function vaultPath(v: string): string {
  const s = v
    .trim()
    .replace(/^\/+|\/+$/g, "")
    .replace(/^v1\//, "");
  if (!/^[\w\-./]+$/.test(s)) throw new Expected("a Vault path such as pki/root/sign-intermediate");
  return s;
}

/** A Vault object name (role, policy): letters, digits, '_', '-', '.'. */
export function vaultName(v: string): string {
  const s = v.trim();
  if (!/^[\w\-.]+$/.test(s)) throw new Expected("a Vault name such as istiod-agent");
  return s;
}

export function text(v: string): string {
  return v.trim();
}

export function nonEmpty(v: string): string {
  const s = v.trim();
  if (!s) throw new Expected("a value");
  return s;
}

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export function logLevel(v: string): string {
  const s = v.trim();
  if (!LOG_LEVELS.includes(s)) throw new Expected("one of error, warn, info, debug");
  return s;
}
