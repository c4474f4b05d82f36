// The signing bundle: the Vault-signed intermediate, its chain, the trust roots and the in-memory key. It is the one
// value that flows from the authority to every consumer (gRPC server, cacerts sink, leaf signer).
import type { x509 } from "../crypto/x509.js";
import type { KeyObject } from "node:crypto";
import type { CryptoKey, KeyAlgorithmName } from "../crypto/keys.js";
import { uniquePemCertificates } from "../crypto/pem.js";

export interface SigningBundle {
  /** The intermediate certificate the agent signs with. */
  readonly signingCert: x509.X509Certificate;
  readonly signingCertPem: string;
  /** Intermediate first, then every issuer up to and including the root. */
  readonly chainPem: readonly string[];
  /** Trust anchors (the root; several in multi-root mode). */
  readonly rootsPem: readonly string[];
  /** The intermediate's private key as the authority holds it: a node:crypto KeyObject, which the leaf signer uses. */
  readonly signingKey: KeyObject;
  /** A non-extractable WebCrypto view of signingKey (keyObject.toCryptoKey) for @peculiar/x509. */
  readonly privateKey: CryptoKey;
  readonly keyAlgorithm: KeyAlgorithmName;
  /** PKCS#8 PEM of the key, present only when key export is on (cacerts sink or socket export). */
  readonly privateKeyPem: string | undefined;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Lower-case hex serial of the intermediate. */
  readonly serialHex: string;
  /** 1 for the first bundle since start, +1 per rotation. */
  readonly generation: number;
}

/**
 * The roots an intermediate is served with: the root its chain ends at first (istiod signs under it), then the
 * configured extra trust anchors, each once. One rule for a new, an adopted and a re-rooted bundle, and for what a
 * trust-anchors reload is checked against.
 */
export function servedRoots(signingRootPem: string, extraRootsPem: readonly string[]): string[] {
  return uniquePemCertificates([signingRootPem, ...extraRootsPem]);
}

/** The root a bundle's chain ends at. */
export function signingRootOf(bundle: Pick<SigningBundle, "chainPem">): string {
  return bundle.chainPem[bundle.chainPem.length - 1] ?? "";
}
