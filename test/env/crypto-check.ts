// Certificate checks tests share: openssl verification and key identity of certificates.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { x509 } from "../../src/crypto/x509.js";
import { generateKeyPair } from "../../src/crypto/keys.js";

/** `openssl verify -CAfile roots [-untrusted intermediates] cert`; returns openssl's output, throws if it fails. */
export function opensslVerify(
  certPem: string,
  rootsPem: string,
  intermediatesPem = "",
  atUnixSeconds?: number,
): string {
  const dir = mkdtempSync(join(tmpdir(), "iva-verify-"));
  try {
    writeFileSync(join(dir, "roots.pem"), rootsPem);
    writeFileSync(join(dir, "cert.pem"), certPem);
    const args = ["verify", "-CAfile", join(dir, "roots.pem")];
    if (atUnixSeconds !== undefined) args.push("-attime", String(Math.floor(atUnixSeconds)));
    if (intermediatesPem) {
      writeFileSync(join(dir, "untrusted.pem"), intermediatesPem);
      args.push("-untrusted", join(dir, "untrusted.pem"));
    }
    return execFileSync("openssl", [...args, join(dir, "cert.pem")], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Hex of a certificate's SubjectPublicKeyInfo: equal for two certificates exactly when they share a key. */
export function publicKeyId(certPem: string): string {
  return Buffer.from(new x509.X509Certificate(certPem).publicKey.rawData).toString("hex");
}

/** A workload CSR with one SPIFFE URI SAN (and optional extras), from a fresh P-256 key. */
export async function workloadCsr(uri: string, extra: { dns?: string[]; ca?: boolean } = {}): Promise<string> {
  const keys = await generateKeyPair("ECDSA_P256", false);
  const san = [
    { type: "url" as const, value: uri },
    ...(extra.dns ?? []).map((value) => ({ type: "dns" as const, value })),
  ];
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions: [
      new x509.SubjectAlternativeNameExtension(san),
      ...(extra.ca ? [new x509.BasicConstraintsExtension(true, undefined, true)] : []),
    ],
  });
  return csr.toString("pem");
}

/** The workload most tests ask certificates for: service account default/sleep in cluster.local. */
export const SLEEP_SPIFFE_ID = "spiffe://cluster.local/ns/default/sa/sleep";

/** Every subjectAltName value of a certificate, in order (URIs, DNS names, …); [] without the extension. */
export function subjectAltNames(certPem: string): string[] {
  const san = new x509.X509Certificate(certPem).getExtension(x509.SubjectAlternativeNameExtension);
  return san?.names.items.map((n) => n.value) ?? [];
}
