// Key generation for CA and relay keys. Keys are WebCrypto CryptoKeys held in memory; a key is made extractable only
// when the caller needs its PKCS#8 form (the cacerts files istiod reads, or key export over the socket).
import { webcrypto } from "node:crypto";
import { subtle } from "./x509.js";

export type KeyAlgorithmName = "ECDSA_P256" | "ECDSA_P384" | "RSA_2048" | "RSA_3072" | "RSA_4096";

export const KEY_ALGORITHMS: readonly KeyAlgorithmName[] = [
  "ECDSA_P256",
  "ECDSA_P384",
  "RSA_2048",
  "RSA_3072",
  "RSA_4096",
];

type CryptoKeyPair = webcrypto.CryptoKeyPair;
export type CryptoKey = webcrypto.CryptoKey;

/** WebCrypto parameters for generating a key and for signing with it. */
export function algorithmParams(name: KeyAlgorithmName): {
  generate: webcrypto.EcKeyGenParams | webcrypto.RsaHashedKeyGenParams;
  sign: webcrypto.EcdsaParams | webcrypto.Algorithm;
} {
  switch (name) {
    case "ECDSA_P256":
      return { generate: { name: "ECDSA", namedCurve: "P-256" }, sign: { name: "ECDSA", hash: "SHA-256" } };
    case "ECDSA_P384":
      return { generate: { name: "ECDSA", namedCurve: "P-384" }, sign: { name: "ECDSA", hash: "SHA-384" } };
    case "RSA_2048":
    case "RSA_3072":
    case "RSA_4096":
      return {
        generate: {
          name: "RSASSA-PKCS1-v1_5",
          modulusLength: Number(name.slice(4)),
          publicExponent: new Uint8Array([1, 0, 1]),
          hash: "SHA-256",
        },
        sign: { name: "RSASSA-PKCS1-v1_5" },
      };
  }
}

export async function generateKeyPair(name: KeyAlgorithmName, extractable: boolean): Promise<CryptoKeyPair> {
  const { generate } = algorithmParams(name);
  return await subtle.generateKey(generate, extractable, ["sign", "verify"]);
}

/** PKCS#8 PEM of an extractable private key (istiod accepts the PRIVATE KEY type for ca-key.pem). */
export async function exportPrivateKeyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await subtle.exportKey("pkcs8", key));
  return toPem(der, "PRIVATE KEY");
}

export function toPem(der: Uint8Array | ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der instanceof ArrayBuffer ? new Uint8Array(der) : der).toString("base64");
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}
