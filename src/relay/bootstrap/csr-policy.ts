// What a relay agent may ask the issuer for: a leaf for exactly one cluster. The checks are the shared ones in
// crypto/csr-policy.ts (one strict PEM block, the one bounded parser, a supported key, proof of possession, no CA
// request) with the relay cluster DNS identity profile (exactly one DNS SAN equal to the cluster name, no other SAN,
// a subject CN only if it is that name). The issued certificate takes only the public key from the CSR; every
// extension is set by the issuer.
import { CsrPolicyError, DEFAULT_MAX_CSR_BYTES, checkCsrBasics, clusterDnsIdentity } from "../../crypto/csr-policy.js";
import type { LeafSubjectKey } from "../../signing/leaf-signer.js";
import { IssuerRefusal, invalid, printable } from "./refusal.js";
import { DNS_NAME } from "../../cli/validate.js";

const MAX_CLUSTER_NAME = 253;
/** A cluster name: a lower-case DNS name (it is the DNS SAN of the cluster's client certificate). */
export const CLUSTER_NAME = DNS_NAME;

/** Checks that `cluster` is a usable cluster name (the DNS SAN of a relay client certificate). */
export function checkClusterName(cluster: unknown): string {
  if (typeof cluster !== "string" || cluster.length === 0)
    throw invalid("cluster_name_missing", "cluster_name is empty; expected the workload cluster's name, e.g. cluster1");
  if (cluster.length > MAX_CLUSTER_NAME || !CLUSTER_NAME.test(cluster))
    throw invalid(
      "cluster_name_invalid",
      `cluster_name "${printable(cluster)}" is not a DNS name; expected lower-case letters, digits, '-' and '.'`,
    );
  return cluster;
}

/** Checks a CSR for the relay client certificate of `cluster`; returns its subject key. */
export function checkClusterCsr(csrPem: unknown, cluster: string): Promise<LeafSubjectKey> {
  return new Promise((resolve) => {
    try {
      const { csr, keyType } = checkCsrBasics(csrPem, DEFAULT_MAX_CSR_BYTES);
      clusterDnsIdentity(csr, cluster);
      resolve({ spki: csr.spki, subjectPublicKey: csr.subjectPublicKey, keyType });
    } catch (err) {
      if (err instanceof CsrPolicyError) throw new IssuerRefusal(err.code, err.rule, err.detail);
      throw err;
    }
  });
}
