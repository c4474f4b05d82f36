// Test and bench CA certificates: the one place that knows how a test root or intermediate is shaped (CA:true,
// keyCertSign|cRLSign, critical; SKI and AKI unless told otherwise). Test and bench code only.
import type { KeyObject, webcrypto } from "node:crypto";
import type { SigningBundle } from "../../src/authority/bundle.js";
import { toPem, type KeyAlgorithmName } from "../../src/crypto/keys.js";
import { x509 } from "../../src/crypto/x509.js";

/** ECDSA with SHA-256: what every test CA signs with unless it says otherwise. */
export const ECDSA_SHA256 = { name: "ECDSA", hash: "SHA-256" } as const;

export interface CaCertificateOptions {
  /** Subject DN, e.g. "CN=Test Root,O=istiod-vault-agent". */
  subject: string;
  /** The CA's own key pair; only its public key goes into the certificate unless it is self-signed. */
  keys: webcrypto.CryptoKeyPair;
  /** The issuing CA; absent for a self-signed root. */
  issuer?: { cert: x509.X509Certificate; privateKey: webcrypto.CryptoKey };
  notBefore: Date;
  notAfter: Date;
  /** pathlen constraint; absent for none. */
  pathLength?: number;
  serialNumber?: string;
  signingAlgorithm?: webcrypto.Algorithm | webcrypto.EcdsaParams;
  /** Adds a subject key identifier (default true). */
  subjectKeyIdentifier?: boolean;
  /** Adds an authority key identifier naming the issuer's key (default true when there is an issuer). */
  authorityKeyIdentifier?: boolean;
}

/** A CA certificate: a self-signed root without `issuer`, an intermediate with one. */
export async function caCertificate(o: CaCertificateOptions): Promise<x509.X509Certificate> {
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(true, o.pathLength, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
  ];
  if (o.subjectKeyIdentifier ?? true)
    extensions.push(await x509.SubjectKeyIdentifierExtension.create(o.keys.publicKey));
  const common = {
    notBefore: o.notBefore,
    notAfter: o.notAfter,
    signingAlgorithm: o.signingAlgorithm ?? ECDSA_SHA256,
    ...(o.serialNumber === undefined ? {} : { serialNumber: o.serialNumber }),
  };
  if (!o.issuer)
    return x509.X509CertificateGenerator.createSelfSigned({ ...common, name: o.subject, keys: o.keys, extensions });
  if (o.authorityKeyIdentifier ?? true)
    extensions.push(await x509.AuthorityKeyIdentifierExtension.create(o.issuer.cert.publicKey));
  return x509.X509CertificateGenerator.create({
    ...common,
    subject: o.subject,
    issuer: o.issuer.cert.subject,
    publicKey: o.keys.publicKey,
    signingKey: o.issuer.privateKey,
    extensions,
  });
}

/**
 * The SigningBundle an authority would hold for `intermediate` (first generation, no exported key): the chain is the
 * intermediate then `rootPem`, the only trust anchor.
 */
export function testSigningBundle(
  intermediate: x509.X509Certificate,
  rootPem: string,
  keys: { signingKey: KeyObject; privateKey: webcrypto.CryptoKey },
  keyAlgorithm: KeyAlgorithmName,
): SigningBundle {
  const intermediatePem = toPem(intermediate.rawData, "CERTIFICATE");
  return {
    signingCert: intermediate,
    signingCertPem: intermediatePem,
    chainPem: [intermediatePem, rootPem],
    rootsPem: [rootPem],
    ...keys,
    keyAlgorithm,
    privateKeyPem: undefined,
    notBefore: intermediate.notBefore,
    notAfter: intermediate.notAfter,
    serialHex: intermediate.serialNumber.toLowerCase(),
    generation: 1,
  };
}
