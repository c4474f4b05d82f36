// Key generation for CA and relay keys, held in memory only. The intermediate CA key is a node:crypto KeyObject (what
// node:crypto signs with); libraries that speak WebCrypto (@peculiar/x509) get a non-extractable CryptoKey view of it
// made with keyObject.toCryptoKey(). The reverse, KeyObject.from() on a non-extractable CryptoKey, is deprecated
// (DEP0204) because it makes the key exportable again. Relay keys are plain WebCrypto keys.
import { generateKeyPair as generateNodeKeyPair, webcrypto, type KeyObject } from "node:crypto";
import { promisify } from "node:util";
import { toPem } from "./pem.js";
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

export { toPem };

/** A node:crypto key pair: the private half signs leaves directly; see signingCryptoKeys() for WebCrypto users. */
export interface NodeKeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

const generateNode = promisify(generateNodeKeyPair);

/** A new key pair of the given kind, made by node:crypto (off the main thread). */
export async function generateNodeKeyPairFor(name: KeyAlgorithmName): Promise<NodeKeyPair> {
  switch (name) {
    case "ECDSA_P256":
    case "ECDSA_P384":
      return await generateNode("ec", { namedCurve: name === "ECDSA_P256" ? "P-256" : "P-384" });
    case "RSA_2048":
    case "RSA_3072":
    case "RSA_4096":
      return await generateNode("rsa", { modulusLength: Number(name.slice(4)), publicExponent: 0x10001 });
  }
}

/** The WebCrypto algorithm a key of this kind is imported as (for toCryptoKey). */
function importParams(name: KeyAlgorithmName): webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams {
  const { generate } = algorithmParams(name);
  return "namedCurve" in generate
    ? { name: generate.name, namedCurve: generate.namedCurve }
    : { name: generate.name, hash: "SHA-256" };
}

/**
 * WebCrypto views of a node:crypto key pair for libraries that need CryptoKeys: the private key non-extractable
 * (sign only), the public key extractable (it is public).
 */
export function signingCryptoKeys(keys: NodeKeyPair, name: KeyAlgorithmName): CryptoKeyPair {
  const params = importParams(name);
  return {
    privateKey: keys.privateKey.toCryptoKey(params, false, ["sign"]),
    publicKey: keys.publicKey.toCryptoKey(params, true, ["verify"]),
  };
}

/** PKCS#8 PEM of a node:crypto private key (for istiod's ca-key.pem, or key export over the socket). */
export function exportNodePrivateKeyPem(key: KeyObject): string {
  return key.export({ type: "pkcs8", format: "pem" }).toString();
}

/** The kind of a node:crypto private or public key, or undefined for a kind not in KEY_ALGORITHMS. */
export function keyAlgorithmOf(key: KeyObject): KeyAlgorithmName | undefined {
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === "ec") {
    if (d?.namedCurve === "prime256v1") return "ECDSA_P256";
    if (d?.namedCurve === "secp384r1") return "ECDSA_P384";
    return undefined;
  }
  if (key.asymmetricKeyType === "rsa") {
    const bits = d?.modulusLength;
    if (bits === 2048 || bits === 3072 || bits === 4096) return `RSA_${bits}`;
  }
  return undefined;
}
