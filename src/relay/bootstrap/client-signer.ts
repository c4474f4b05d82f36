// Signs a relay client certificate with the issuer's in-memory signing intermediate, through the one leaf signer.
// Only the CSR's public key is used: subject CN and the single DNS SAN are the cluster name, and every extension is
// fixed (a leaf, clientAuth only).
import type { SigningBundle } from "../../authority/bundle.js";
import { floorToSecond } from "../../crypto/validity.js";
import { issueLeaf, leafNotBefore, type LeafSubjectKey, type SubjectAttribute } from "../../signing/leaf-signer.js";
import { IssuerRefusal } from "./refusal.js";

export interface SignedClient {
  /** The new certificate, then the intermediate and its issuers up to and including the root. */
  chainPem: string[];
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
}

/** Below this much remaining intermediate life the issuer refuses (UNAVAILABLE) rather than hand out a stub. */
const MIN_TTL_MS = 5_000;

export function signClientCertificate(
  bundle: SigningBundle,
  key: LeafSubjectKey,
  cluster: string,
  ttlSeconds: number,
  now: Date,
  opts: { notAfterCap?: Date; subjectAttributes?: readonly SubjectAttribute[] } = {},
): SignedClient {
  const t = now.getTime();
  const byIssuer = floorToSecond(Math.min(t + ttlSeconds * 1000, bundle.notAfter.getTime()));
  if (byIssuer - t < MIN_TTL_MS)
    throw new IssuerRefusal(
      "UNAVAILABLE",
      "signing_ca_expiring",
      `the issuer's signing intermediate expires at ${bundle.notAfter.toISOString()} and is being renewed; retry shortly`,
    );
  const cap = opts.notAfterCap;
  const notAfterMs = cap ? floorToSecond(Math.min(byIssuer, cap.getTime())) : byIssuer;
  if (cap && notAfterMs - t < MIN_TTL_MS)
    throw new IssuerRefusal(
      "UNAUTHENTICATED",
      "bootstrap_too_old",
      `this certificate chain reaches its maximum age at ${cap.toISOString()}; bootstrap again with the cluster's identity token`,
    );
  const notBefore = leafNotBefore(bundle, now);
  const notAfter = new Date(notAfterMs);
  const { certPem, serialHex } = issueLeaf(bundle, {
    ...key,
    subject: [{ type: "CN", value: cluster }, ...(opts.subjectAttributes ?? [])],
    dnsNames: [cluster],
    extendedKeyUsages: ["clientAuth"],
    notBefore,
    notAfter,
  });
  return { chainPem: [certPem, ...bundle.chainPem], serialHex, notBefore, notAfter };
}
