// Certificate requests for the relay's leaf certificates: a locally generated key, the first DNS name as CN and every
// name as a DNS SAN. Vault's PKI role decides the final extensions (key usage, server/client auth); the request only
// proves possession of the key and names what the certificate is for.
import { x509 } from "../crypto/x509.js";
import type { CryptoKey, KeyAlgorithmName } from "../crypto/keys.js";
import { signingAlgorithmFor } from "../authority/csr.js";

export type LeafUsage = "server" | "client";

export async function createLeafCsr(
  keys: { privateKey: CryptoKey; publicKey: CryptoKey },
  algorithm: KeyAlgorithmName,
  dnsNames: readonly string[],
  usage: LeafUsage,
): Promise<string> {
  const [first] = dnsNames;
  if (!first) throw new Error("a relay leaf certificate needs at least one DNS name");
  const rsa = algorithm.startsWith("RSA");
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${escapeDn(first)}`,
    keys,
    signingAlgorithm: signingAlgorithmFor(algorithm),
    extensions: [
      new x509.SubjectAlternativeNameExtension(dnsNames.map((value) => ({ type: "dns" as const, value }))),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | (rsa ? x509.KeyUsageFlags.keyEncipherment : 0),
        true,
      ),
      new x509.ExtendedKeyUsageExtension([
        usage === "server" ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth,
      ]),
    ],
  });
  return csr.toString("pem") + "\n";
}

function escapeDn(value: string): string {
  return value.replace(/([,+"\\<>;=])/g, "\\$1");
}
