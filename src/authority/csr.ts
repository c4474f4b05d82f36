// The intermediate's certificate request, made from a key that never leaves this process.
import { x509 } from "../crypto/x509.js";
import { algorithmParams, type CryptoKey, type KeyAlgorithmName } from "../crypto/keys.js";

export interface IntermediateSubject {
  commonName: string;
  organization?: string | undefined;
}

export async function createIntermediateCsr(
  keys: { privateKey: CryptoKey; publicKey: CryptoKey },
  algorithm: KeyAlgorithmName,
  subject: IntermediateSubject,
): Promise<string> {
  const name = [`CN=${escapeDn(subject.commonName)}`];
  if (subject.organization) name.push(`O=${escapeDn(subject.organization)}`);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: name.join(", "),
    keys,
    signingAlgorithm: signingAlgorithmFor(algorithm),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
        true,
      ),
    ],
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
