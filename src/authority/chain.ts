// Validation of Vault's answer to sign-intermediate. Nothing Vault returns is served until it passes every check
// here: a bad answer is an error naming what was wrong, and the caller keeps its last good bundle.
import { x509 } from "../crypto/x509.js";
import { subtle } from "../crypto/x509.js";
import { PemFormatError, splitPemCertificates } from "../crypto/pem.js";
import { MAX_FUTURE_NOT_BEFORE_MS } from "../crypto/validity.js";
import type { CryptoKey } from "../crypto/keys.js";
import type { PkiSignAnswer } from "../vault/pki.js";

export class InvalidIssuerAnswerError extends Error {
  constructor(message: string) {
    super(`Vault's signed intermediate was refused: ${message}`);
    this.name = "InvalidIssuerAnswerError";
  }
}

export type { PkiSignAnswer };

export interface ValidatedChain {
  cert: x509.X509Certificate;
  certPem: string;
  /** The signed certificate first, then each issuer up to and including the root. */
  chainPem: string[];
  rootPem: string;
}

/**
 * Checks that `answer` holds a certificate for `publicKey`, that it is a CA (when `expectCa`), that each certificate
 * is signed by the next one, that the chain ends at a self-signed root and that the certificate is valid at `now`.
 * The root is the last element of `ca_chain`; Vault's repetition of the signed certificate at its head is dropped.
 */
export async function validateSignAnswer(
  answer: PkiSignAnswer,
  publicKey: CryptoKey,
  now: Date,
  opts: { expectCa: boolean },
): Promise<ValidatedChain> {
  if (typeof answer.certificate !== "string" || !answer.certificate.includes("BEGIN CERTIFICATE")) {
    throw new InvalidIssuerAnswerError("data.certificate is missing or is not a PEM certificate (ask for format=pem)");
  }
  const cert = parseOne(answer.certificate, "data.certificate");
  const chainIn = Array.isArray(answer.ca_chain) ? answer.ca_chain : [];
  const issuers: x509.X509Certificate[] = [];
  for (const [i, pem] of chainIn.entries()) {
    if (typeof pem !== "string") throw new InvalidIssuerAnswerError(`data.ca_chain[${i}] is not a string`);
    for (const c of parseAll(pem, `data.ca_chain[${i}]`)) issuers.push(c);
  }
  if (issuers.length === 0 && typeof answer.issuing_ca === "string") {
    issuers.push(...parseAll(answer.issuing_ca, "data.issuing_ca"));
  }
  // Vault repeats the newly signed certificate at the head of ca_chain; drop it (and any other repeat).
  const seen = new Set([hexOf(cert.rawData)]);
  const dedup = issuers.filter((c) => {
    const k = hexOf(c.rawData);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  if (dedup.length === 0)
    throw new InvalidIssuerAnswerError("no issuer certificates (data.ca_chain and data.issuing_ca are empty)");

  const ours = hexOf(await subtle.exportKey("spki", publicKey));
  if (hexOf(cert.publicKey.rawData) !== ours) {
    throw new InvalidIssuerAnswerError("the certificate's public key is not the key this agent generated");
  }
  if (opts.expectCa) {
    const bc = cert.getExtension(x509.BasicConstraintsExtension);
    if (!bc?.ca)
      throw new InvalidIssuerAnswerError("the certificate is not a CA (basicConstraints CA:TRUE is missing)");
    const ku = cert.getExtension(x509.KeyUsagesExtension);
    if (ku && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) {
      throw new InvalidIssuerAnswerError("the certificate's keyUsage does not allow keyCertSign");
    }
  }
  const invalidAt = validityProblem(cert, now);
  if (invalidAt !== undefined) throw new InvalidIssuerAnswerError(invalidAt);

  const chain = [cert, ...dedup];
  const broken = await chainProblem(chain);
  if (broken !== undefined) throw new InvalidIssuerAnswerError(broken);
  const root = chain[chain.length - 1]!;
  const toPem = (c: x509.X509Certificate) => c.toString("pem") + "\n";
  return { cert, certPem: toPem(cert), chainPem: chain.map(toPem), rootPem: toPem(root) };
}

/**
 * Why `cert` cannot be used at `now`, or undefined: expired, or starting later than the tolerated clock difference
 * with its issuer (MAX_FUTURE_NOT_BEFORE_MS).
 */
export function validityProblem(cert: x509.X509Certificate, now: Date): string | undefined {
  if (cert.notAfter.getTime() <= now.getTime()) return `the certificate expired at ${cert.notAfter.toISOString()}`;
  if (cert.notBefore.getTime() > now.getTime() + MAX_FUTURE_NOT_BEFORE_MS)
    return `the certificate is not valid before ${cert.notBefore.toISOString()} (clock skew?)`;
  return undefined;
}

/**
 * The one chain check: why `chain` (a certificate first, then each issuer up to the root) is not a chain, or
 * undefined when each element is signed by the next and the last is a self-signed root. Signatures only: validity
 * and extensions are the caller's checks.
 */
export async function chainProblem(chain: readonly x509.X509Certificate[]): Promise<string | undefined> {
  for (let i = 0; i < chain.length - 1; i++) {
    const child = chain[i]!;
    const parent = chain[i + 1]!;
    const ok = await child.verify({ publicKey: parent, signatureOnly: true }).catch(() => false);
    if (!ok) return `chain element ${i} (${child.subject}) is not signed by the next (${parent.subject})`;
  }
  const root = chain[chain.length - 1];
  if (!root) return "the chain is empty";
  if (!(await root.isSelfSigned().catch(() => false)))
    return `the chain does not end at a self-signed root (last: ${root.subject})`;
  return undefined;
}

function parseAll(pem: string, where: string): x509.X509Certificate[] {
  let blocks: string[];
  try {
    blocks = splitPemCertificates(pem, where);
  } catch (err) {
    throw new InvalidIssuerAnswerError(err instanceof PemFormatError ? err.message : `${where} is not PEM`);
  }
  if (blocks.length === 0) throw new InvalidIssuerAnswerError(`${where} holds no PEM certificate`);
  return blocks.map((b) => parseOne(b, where));
}

function parseOne(pem: string, where: string): x509.X509Certificate {
  try {
    return new x509.X509Certificate(pem);
  } catch {
    throw new InvalidIssuerAnswerError(`${where} is not a parseable X.509 certificate`);
  }
}

function hexOf(data: ArrayBuffer): string {
  return Buffer.from(data).toString("hex");
}
