// The Istio CA listener's TLS serving certificate: a fresh P-256 key, signed by the current intermediate. Kept apart
// from the listener so tests (zlint among them) can make one in process exactly as the listener does.
import { webcrypto } from "node:crypto";
import type { SigningBundle } from "../authority/bundle.js";
import { signingAlgorithmFor } from "../authority/csr.js";
import { exportPrivateKeyPem } from "../crypto/keys.js";
import { x509 } from "../crypto/x509.js";

/** Longest life of the serving certificate; the listener re-issues it at 2/3 of that and on every rotation. */
export const SERVING_CERT_TTL_MS = 24 * 3600_000;

export interface ServingCertificate {
  certPem: string;
  /** PKCS#8 PEM; handed to grpc-js in memory only. */
  keyPem: string;
  notAfter: Date;
}

/** A serving certificate for `servingNames` (DNS names, or IP addresses), valid from now (minus skew) for a day. */
export async function issueServingCertificate(
  bundle: SigningBundle,
  servingNames: readonly string[],
  nowMs: number,
): Promise<ServingCertificate> {
  const keys = await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  const notAfter = new Date(Math.min(nowMs + SERVING_CERT_TTL_MS, bundle.notAfter.getTime()));
  const ips = servingNames.filter((n) => /^[\d.]+$|:/.test(n));
  const dns = servingNames.filter((n) => !ips.includes(n));
  const issuerSki = bundle.signingCert.getExtension(x509.SubjectKeyIdentifierExtension);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)))
      .toString("hex")
      .replace(/^[89a-f]/, "7"),
    subject: "",
    issuer: bundle.signingCert.subject,
    notBefore: new Date(Math.max(nowMs - 60_000, bundle.notBefore.getTime())),
    notAfter,
    publicKey: keys.publicKey,
    signingKey: bundle.privateKey,
    signingAlgorithm: signingAlgorithmFor(bundle.keyAlgorithm),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      // The serving key is ECDSA: digitalSignature only (RFC 8813 forbids keyEncipherment for ECDSA keys).
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(
        [
          ...dns.map((value) => ({ type: "dns" as const, value })),
          ...ips.map((value) => ({ type: "ip" as const, value })),
        ],
        true,
      ),
      // The issuer's own SKI when it has one (as the leaf signer does), so path builders match it byte for byte.
      issuerSki
        ? new x509.AuthorityKeyIdentifierExtension(issuerSki.keyId)
        : await x509.AuthorityKeyIdentifierExtension.create(bundle.signingCert.publicKey),
      // RFC 5280 4.2.1.2: every certificate the agent makes names its key, the serving certificate too.
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString("pem"), keyPem: await exportPrivateKeyPem(keys.privateKey), notAfter };
}
