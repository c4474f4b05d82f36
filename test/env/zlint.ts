// zlint (github.com/zmap/zlint/v3, built from test/env/zlint by build.sh) run on one certificate at a time. zlint
// lints certificates only: it has no CSR input ("unknown PEM type CERTIFICATE REQUEST"), so the CSRs the agent sends
// Vault cannot be linted with it.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serverBinaries } from "./harness.js";

/** Path of the zlint binary, built on first use (cached by build.sh under ~/.cache/istiod-vault-agent). */
export function zlintBinary(): string {
  return serverBinaries(["zlint"]).zlint;
}

export interface ZlintFinding {
  lint: string;
  result: "warn" | "error" | "fatal";
  details: string;
}

export interface ZlintReport {
  /** Lints that ran and applied (pass or a finding); a report with none means zlint checked nothing. */
  applied: number;
  /** Every warn, error or fatal result of the lints not excluded. */
  findings: ZlintFinding[];
}

/** Lints one PEM certificate with every zlint lint except `exclude` (lint name → why it does not apply). */
export function zlint(certPem: string, exclude: Readonly<Record<string, string>>): ZlintReport {
  const dir = mkdtempSync(join(tmpdir(), "zlint-"));
  try {
    const file = join(dir, "cert.pem");
    writeFileSync(file, certPem);
    const names = Object.keys(exclude);
    const args = [...(names.length ? [`-excludeNames=${names.join(",")}`] : []), file];
    const out = execFileSync(zlintBinary(), args, { encoding: "utf8", maxBuffer: 16 << 20 });
    const results = JSON.parse(out) as Record<string, { result: string; details?: string }>;
    let applied = 0;
    const findings: ZlintFinding[] = [];
    for (const [lint, { result, details }] of Object.entries(results)) {
      if (result !== "NA" && result !== "NE") applied++;
      if (result === "warn" || result === "error" || result === "fatal") {
        findings.push({ lint, result, details: details ?? "" });
      }
    }
    return { applied, findings };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Lints that zlint reports for the agent's certificates but that do not apply to a private SPIFFE/mTLS PKI: all are
 * CA/Browser Forum Baseline Requirements for publicly trusted TLS certificates. Every RFC 5280/3279/5480/8813 and
 * Community lint stays on.
 */
export const EXCLUDED_LINTS: Readonly<Record<string, string>> = {
  e_ext_san_uniform_resource_identifier_present:
    "CABF BR 7.1.4.2.1 allows only DNS/IP SANs in public TLS certificates; an X.509-SVID's identity IS its URI SAN",
  e_sub_cert_aia_missing:
    "CABF BR: public certificates point at their issuer over HTTP; mesh peers get the whole chain in the handshake",
  w_sub_cert_aia_does_not_contain_issuing_ca_url: "CABF BR: same as e_sub_cert_aia_missing (no AIA in a private mesh)",
  e_sub_cert_certificate_policies_missing:
    "CABF BR: the policy OID asserts Baseline Requirements compliance, which a private mesh CA does not claim",
  e_sub_cert_cert_policy_empty: "CABF BR: same as e_sub_cert_certificate_policies_missing",
  w_ext_subject_key_identifier_not_recommended_subscriber:
    "CABF BR v2 discourages SKI in subscriber certificates; RFC 5280 4.2.1.2 recommends it and issue 12 requires it",
  e_dnsname_not_valid_tld:
    "CABF BR: public names need a public TLD; the Istio CA serving name is cluster-internal (*.svc)",
  w_subject_common_name_included:
    "CABF BR 7.1.2.7.1 (public TLS) discourages a subject commonName; the relay server certificate is signed by " +
    "Vault's sign/<role>, which requires one by default (require_cn), and relay peers verify the DNS SAN only",
  e_ext_san_contains_reserved_ip:
    "CABF BR: no private/reserved IPs in public certificates; the serving certificate may name a pod or loopback IP",
};

/** The first certificate of a PEM chain (zlint lints one certificate per file). */
export function firstPem(chainPem: string): string {
  const end = "-----END CERTIFICATE-----";
  const i = chainPem.indexOf(end);
  if (i < 0) throw new Error("no PEM certificate in the input");
  return `${chainPem.slice(chainPem.indexOf("-----BEGIN CERTIFICATE-----"), i + end.length)}\n`;
}
