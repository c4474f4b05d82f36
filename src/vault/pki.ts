// The PKI requests the agent and the relay make: one body per operation, whichever mode asks. Their answers are
// validated by authority/chain.ts (validateSignAnswer). Free functions over VaultClient.write, so a scripted stand-in
// with write() alone serves them too.
import type { VaultClient, VaultSecret } from "./client.js";

/** The fields of a PKI sign-intermediate (or sign/<role>) answer that matter; authority/chain.ts validates them. */
export interface PkiSignAnswer {
  certificate?: unknown;
  issuing_ca?: unknown;
  ca_chain?: unknown;
}

/** A CA CSR for a PKI sign-intermediate endpoint. The CSR's own values are never used (use_csr_values=false). */
export interface SignIntermediateRequest {
  csr: string;
  commonName: string;
  ttlSeconds: number;
  /** 0: the intermediate signs leaves only. */
  maxPathLength: number;
  organization?: string | undefined;
  /** DNS name constraints (permitted subtrees); none when empty. */
  permittedDnsDomains?: readonly string[];
}

/** A leaf CSR for a PKI sign/<role> endpoint: the first name is the CN, every name a DNS SAN. */
export interface SignLeafRequest {
  csr: string;
  dnsNames: readonly string[];
  ttlSeconds: number;
}

/** A PKI signing call: `path` is the endpoint, `req` what to sign. */
type PkiSign<R> = (
  vault: Pick<VaultClient, "write">,
  path: string,
  token: string,
  req: R,
) => Promise<VaultSecret<PkiSignAnswer>>;

/** `path` is a PKI sign-intermediate endpoint, e.g. pki/root/sign-intermediate. */
export const signIntermediate: PkiSign<SignIntermediateRequest> = (vault, path, token, req) =>
  vault.write<PkiSignAnswer>(path, token, {
    csr: req.csr,
    common_name: req.commonName,
    ttl: `${Math.round(req.ttlSeconds)}s`,
    format: "pem",
    max_path_length: req.maxPathLength,
    use_csr_values: false,
    ...(req.organization ? { organization: req.organization } : {}),
    ...(req.permittedDnsDomains?.length ? { permitted_dns_domains: req.permittedDnsDomains.join(",") } : {}),
  });

/** `path` is a PKI sign/<role> endpoint; the role decides the extensions. */
export const signLeaf: PkiSign<SignLeafRequest> = (vault, path, token, req) =>
  vault.write<PkiSignAnswer>(path, token, {
    csr: req.csr,
    common_name: req.dnsNames[0],
    alt_names: req.dnsNames.join(","),
    ttl: `${Math.round(req.ttlSeconds)}s`,
    format: "pem",
    exclude_cn_from_sans: false,
  });
