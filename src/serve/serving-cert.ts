// TLS serving certificates the agent issues itself (the Istio CA listener's, and istiod's own in the mesh-CA mode,
// src/serve/istiod-cert.ts): a fresh P-256 key, signed by the current intermediate through the one leaf signer. Kept
// apart from their users so tests (zlint among them) can make one in process exactly as they do.
import type { SigningBundle } from "../authority/bundle.js";
import { exportNodePrivateKeyPem, generateNodeKeyPairFor } from "../crypto/keys.js";
import { spkiSubjectPublicKey } from "../crypto/csr-parse.js";
import { issueLeaf, leafNotBefore } from "../signing/leaf-signer.js";

/** Longest life of the serving certificate; the listener re-issues it at 2/3 of that and on every rotation. */
export const SERVING_CERT_TTL_MS = 24 * 3600_000;

export interface ServingCertificate {
  certPem: string;
  /** PKCS#8 PEM; handed to grpc-js in memory only. */
  keyPem: string;
  notAfter: Date;
}

/**
 * A serving certificate for `servingNames` (DNS names, or IP addresses), valid from now (minus skew) for `ttlMs` (a
 * day by default), never past the intermediate. Every call makes a new key: it is the server's, not the intermediate's.
 */
export async function issueServingCertificate(
  bundle: SigningBundle,
  servingNames: readonly string[],
  nowMs: number,
  ttlMs: number = SERVING_CERT_TTL_MS,
): Promise<ServingCertificate> {
  const keys = await generateNodeKeyPairFor("ECDSA_P256");
  const spki = keys.publicKey.export({ type: "spki", format: "der" });
  const notAfter = new Date(Math.floor(Math.min(nowMs + ttlMs, bundle.notAfter.getTime()) / 1000) * 1000);
  const ips = servingNames.filter((n) => /^[\d.]+$|:/.test(n));
  const { certPem } = issueLeaf(bundle, {
    spki,
    subjectPublicKey: spkiSubjectPublicKey(spki),
    keyType: "EC",
    dnsNames: servingNames.filter((n) => !ips.includes(n)),
    ips,
    extendedKeyUsages: ["serverAuth"],
    notBefore: leafNotBefore(bundle, new Date(nowMs)),
    notAfter,
  });
  return { certPem, keyPem: exportNodePrivateKeyPem(keys.privateKey), notAfter };
}
