// Certificate requests made here: the intermediate's (from a key that never leaves this process) and the relay's leaf
// requests to Vault's sign/<role>.
import { x509 } from "../crypto/x509.js";
import { algorithmParams, type CryptoKey, type KeyAlgorithmName } from "../crypto/keys.js";

export interface IntermediateSubject {
  commonName: string;
  organization?: string | undefined;
}

export async function createIntermediateCsr(
  keys: CsrKeys,
  algorithm: KeyAlgorithmName,
  subject: IntermediateSubject,
): Promise<string> {
  const name = [`CN=${escapeDn(subject.commonName)}`];
  if (subject.organization) name.push(`O=${escapeDn(subject.organization)}`);
  return createCsr(keys, algorithm, name.join(", "), [
    new x509.BasicConstraintsExtension(true, 0, true),
    new x509.KeyUsagesExtension(
      x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
      true,
    ),
  ]);
}

export type LeafUsage = "server" | "client";

/**
 * A leaf CSR for Vault's sign/<role>: the first DNS name as CN, every name as a DNS SAN. Vault's PKI role decides the
 * final extensions; the request only proves possession of the key and names what the certificate is for.
 */
export async function createLeafCsr(
  keys: CsrKeys,
  algorithm: KeyAlgorithmName,
  dnsNames: readonly string[],
  usage: LeafUsage,
): Promise<string> {
  const [first] = dnsNames;
  if (!first) throw new Error("a leaf certificate request needs at least one DNS name");
  const rsa = algorithm.startsWith("RSA");
  return createCsr(keys, algorithm, `CN=${escapeDn(first)}`, [
    new x509.SubjectAlternativeNameExtension(dnsNames.map((value) => ({ type: "dns" as const, value }))),
    new x509.KeyUsagesExtension(
      x509.KeyUsageFlags.digitalSignature | (rsa ? x509.KeyUsageFlags.keyEncipherment : 0),
      true,
    ),
    new x509.ExtendedKeyUsageExtension([
      usage === "server" ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth,
    ]),
  ]);
}

type CsrKeys = { privateKey: CryptoKey; publicKey: CryptoKey };

async function createCsr(
  keys: CsrKeys,
  algorithm: KeyAlgorithmName,
  name: string,
  extensions: x509.Extension[],
): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name,
    keys,
    signingAlgorithm: signingAlgorithmFor(algorithm),
    extensions,
  });
  return csr.toString("pem") + "\n";
}

/** The full WebCrypto signing algorithm (with hash) for certificates made with a key of this kind. */
export function signingAlgorithmFor(algorithm: KeyAlgorithmName): { name: string; hash: string } {
  const { sign, generate } = algorithmParams(algorithm);
  const hash =
    "hash" in sign && typeof sign.hash === "string" ? sign.hash : ((generate as { hash?: string }).hash ?? "SHA-256");
  return { name: sign.name, hash };
}

function escapeDn(value: string): string {
  return value.replace(/([,+"\\<>;=])/g, "\\$1");
}
