// --trust-anchors-file: the one reader and checker of the extra roots, used at start (loadConfig) and by every live
// reload (SIGHUP, the file watch: ./trust-anchors-reload.ts), so a file refused at start is refused the same way later.
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { splitPemCertificates } from "../crypto/pem.js";

/** What the file must hold, said in every refusal. */
export const TRUST_ANCHORS_EXPECTED =
  "expected a PEM file of one or more CA certificates (BEGIN CERTIFICATE blocks, CA:true, not expired)";

export type TrustAnchorsRead = { ok: true; pem: string[] } | { ok: false; problem: string };

/**
 * Checks the text of a trust-anchors file: at least one certificate, every one a CA and not expired at `now`. The
 * problem names the file, the block and what is expected; never any content.
 */
export function checkTrustAnchorsText(text: string, file: string, now: Date): TrustAnchorsRead {
  const refuse = (what: string): TrustAnchorsRead => ({
    ok: false,
    problem: `--trust-anchors-file ${file}: ${what}; ${TRUST_ANCHORS_EXPECTED}`,
  });
  let pem: string[];
  try {
    pem = splitPemCertificates(text, file);
  } catch (err) {
    return refuse((err as Error).message.replace(`${file}: `, ""));
  }
  if (pem.length === 0) return refuse("holds no PEM certificate");
  for (const [i, p] of pem.entries()) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(p);
    } catch {
      return refuse(`certificate ${i + 1} is not a parsable X.509 certificate`);
    }
    if (!cert.ca) return refuse(`certificate ${i + 1} (${cert.subject}) is not a CA (basicConstraints CA:false)`);
    const notAfter = new Date(cert.validTo);
    if (notAfter.getTime() <= now.getTime())
      return refuse(`certificate ${i + 1} (${cert.subject}) expired at ${notAfter.toISOString()}`);
  }
  return { ok: true, pem };
}

/** Reads and checks the file; an unreadable file is a problem like any other (errno code only). */
export function readTrustAnchors(
  file: string,
  now: Date,
  read: (file: string) => string = (f) => readFileSync(f, "utf8"),
): TrustAnchorsRead {
  let text: string;
  try {
    text = read(file);
  } catch (err) {
    return {
      ok: false,
      problem: `--trust-anchors-file ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? "error"}); ${TRUST_ANCHORS_EXPECTED}`,
    };
  }
  return checkTrustAnchorsText(text, file, now);
}
