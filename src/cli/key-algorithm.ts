// The one key-algorithm parser of every mode (kept out of ./validate.ts: it loads the crypto stack).
import { KEY_ALGORITHMS, type KeyAlgorithmName } from "../crypto/keys.js";
import { Expected } from "./validate.js";

/** Case-insensitive: ecdsa_p384 and ECDSA_P384 are the same algorithm. */
export function keyAlgorithm(v: string): KeyAlgorithmName {
  const upper = v.trim().toUpperCase() as KeyAlgorithmName;
  if (!KEY_ALGORITHMS.includes(upper)) throw new Expected(`one of ${KEY_ALGORITHMS.join(", ")} (any case)`);
  return upper;
}
