// Signs workload leaf certificates with the in-memory intermediate. The CSR contributes only its public key and its
// (policy-checked) URI SANs; every other field and extension is set here, so nothing requested can widen the leaf.
import { randomBytes } from "node:crypto";
import type { SigningBundle } from "../authority/bundle.js";
import { algorithmParams, toPem } from "../crypto/keys.js";
import { x509 } from "../crypto/x509.js";
import { CaValidityError, checkCsr, resolveTtl, type CheckCsrOptions, type LeafPolicy } from "./leaf-policy.js";

export type SignLeafOptions = CheckCsrOptions;

export interface SignedLeaf {
  certPem: string;
  /** The leaf, then the bundle's chain (intermediate .. root). */
  chainPem: string[];
  notAfter: Date;
  /** Lower-case hex, as in SigningBundle.serialHex. */
  serialHex: string;
}

// Peers whose clocks run a little behind must still accept a fresh leaf.
const CLOCK_SKEW_MS = 60_000;

export async function signLeaf(
  bundle: SigningBundle,
  csrPem: string,
  ttlSeconds: number,
  policy: LeafPolicy,
  now: Date,
  opts: SignLeafOptions = {},
): Promise<SignedLeaf> {
  // TTL first: it is the cheapest check and also refuses early when the intermediate has expired.
  const ttl = resolveTtl(ttlSeconds, policy, bundle.notAfter, now);
  const { publicKey, uriSans } = await checkCsr(csrPem, policy, opts);

  // Certificates carry whole seconds; truncating here makes the returned notAfter exactly the encoded one.
  const notBefore = new Date(Math.max(floorToSecond(now.getTime() - CLOCK_SKEW_MS), bundle.notBefore.getTime()));
  const notAfter = new Date(floorToSecond(now.getTime() + ttl * 1000));
  if (notAfter.getTime() <= notBefore.getTime()) {
    throw new CaValidityError("ca_not_yet_valid", `intermediate is valid only from ${bundle.notBefore.toISOString()}`);
  }

  const serialHex = randomSerialHex();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialHex,
    issuer: bundle.signingCert.subjectName,
    // No subject: identity lives in the SAN only (as Istio does), so subject is the empty SEQUENCE.
    notBefore,
    notAfter,
    publicKey,
    // Only subtle.sign is used with this key, so a non-extractable key works.
    signingKey: bundle.privateKey,
    signingAlgorithm: algorithmParams(bundle.keyAlgorithm).sign,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      // RFC 5280 4.2.1.6: with an empty subject the SAN extension must be critical.
      new x509.SubjectAlternativeNameExtension(
        uriSans.map((uri) => ({ type: "url" as const, value: uri })),
        true,
      ),
      await authorityKeyIdentifier(bundle.signingCert),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
    ],
  });

  const certPem = toPem(cert.rawData, "CERTIFICATE");
  return { certPem, chainPem: [certPem, ...bundle.chainPem], notAfter, serialHex };
}

function floorToSecond(ms: number): number {
  return Math.floor(ms / 1000) * 1000;
}

/**
 * 16 random bytes with the top bit cleared (a positive INTEGER without a 0x00 pad) and the next bit set (no leading
 * zero byte to strip), so the serial is always exactly 16 bytes and its hex round-trips through the certificate.
 */
function randomSerialHex(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return bytes.toString("hex");
}

// Per intermediate, computed once: the AKI is the same for every leaf the intermediate signs.
const akiCache = new WeakMap<x509.X509Certificate, x509.AuthorityKeyIdentifierExtension>();

async function authorityKeyIdentifier(issuer: x509.X509Certificate): Promise<x509.AuthorityKeyIdentifierExtension> {
  const cached = akiCache.get(issuer);
  if (cached) return cached;
  // Copy the issuer's SKI when it has one (RFC 5280 4.2.1.1) so path builders match it byte for byte, whatever
  // method the issuing CA (Vault) used to derive it; otherwise derive it from the issuer's key.
  const ski = issuer.getExtension(x509.SubjectKeyIdentifierExtension);
  const aki = ski
    ? new x509.AuthorityKeyIdentifierExtension(ski.keyId)
    : await x509.AuthorityKeyIdentifierExtension.create(issuer.publicKey);
  akiCache.set(issuer, aki);
  return aki;
}
