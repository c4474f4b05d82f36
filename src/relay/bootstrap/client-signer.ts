// Signs a relay client certificate with the issuer's in-memory signing intermediate. Only the CSR's public key is used:
// subject CN and the single DNS SAN are the cluster name, and every extension is fixed here (a leaf, clientAuth only).
import { randomBytes } from "node:crypto";
import type { SigningBundle } from "../../authority/bundle.js";
import { algorithmParams, toPem } from "../../crypto/keys.js";
import { x509 } from "../../crypto/x509.js";
import { IssuerRefusal } from "./refusal.js";

export interface SignedClient {
  /** The new certificate, then the intermediate and its issuers up to and including the root. */
  chainPem: string[];
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
}

/** Peers whose clocks run a little behind must still accept a fresh certificate. */
const CLOCK_SKEW_MS = 60_000;
/** Below this much remaining intermediate life the issuer refuses (UNAVAILABLE) rather than hand out a stub. */
const MIN_TTL_MS = 5_000;

export async function signClientCertificate(
  bundle: SigningBundle,
  publicKey: x509.PublicKey,
  cluster: string,
  ttlSeconds: number,
  now: Date,
  opts: { notAfterCap?: Date; subjectAttributes?: string[] } = {},
): Promise<SignedClient> {
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
  const notBefore = new Date(Math.max(floorToSecond(t - CLOCK_SKEW_MS), bundle.notBefore.getTime()));
  const notAfter = new Date(notAfterMs);
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x40; // positive, no leading zero byte: exactly 16 bytes, hex round-trips
  const serialHex = serial.toString("hex");
  const rsa = (publicKey.algorithm as { name?: string }).name === "RSASSA-PKCS1-v1_5";
  const ski = bundle.signingCert.getExtension(x509.SubjectKeyIdentifierExtension);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialHex,
    subject: [`CN=${cluster}`, ...(opts.subjectAttributes ?? [])].join(", "),
    issuer: bundle.signingCert.subjectName,
    notBefore,
    notAfter,
    publicKey,
    signingKey: bundle.privateKey,
    signingAlgorithm: algorithmParams(bundle.keyAlgorithm).sign,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | (rsa ? x509.KeyUsageFlags.keyEncipherment : 0),
        true,
      ),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: "dns", value: cluster }]),
      ski
        ? new x509.AuthorityKeyIdentifierExtension(ski.keyId)
        : await x509.AuthorityKeyIdentifierExtension.create(bundle.signingCert.publicKey),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
    ],
  });
  return { chainPem: [toPem(cert.rawData, "CERTIFICATE"), ...bundle.chainPem], serialHex, notBefore, notAfter };
}

function floorToSecond(ms: number): number {
  return Math.floor(ms / 1000) * 1000;
}
