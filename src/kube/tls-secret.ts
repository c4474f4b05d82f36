// Checks whether a TLS Secret (tls.crt, tls.key, ca.crt) still holds a usable certificate and key: the pair matches,
// the certificate is current, has the expected names, kind and key algorithm, and chains to the trusted root. The
// relay uses it at start (an existing Secret is kept rather than rotated needlessly) and at every resync. Reasons
// never quote key material.
import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { x509 } from "../crypto/x509.js";
import { keyAlgorithmOf, type KeyAlgorithmName } from "../crypto/keys.js";
import { chainProblem, validityProblem } from "../authority/chain.js";
// A malformed bundle holds no certificate here: the Secret is rewritten, a root is reported missing.
import { splitPemCertificatesOrNone as splitPemCertificates } from "../crypto/pem.js";

export interface TlsExpectation {
  /** A leaf (end-entity) certificate, or a CA (the signing intermediate). */
  kind: "leaf" | "ca";
  /** For leaves: exactly these DNS SANs (order does not matter). */
  dnsNames?: readonly string[];
  keyAlgorithm: KeyAlgorithmName;
}

export type TlsInspection =
  | {
      ok: true;
      cert: x509.X509Certificate;
      serialHex: string;
      notBefore: Date;
      notAfter: Date;
      rootPem: string;
    }
  | { ok: false; reason: string };

/**
 * Inspects the decoded data of a TLS Secret (`tls.crt` = certificate then its intermediates, `tls.key`, `ca.crt` =
 * the root). With `trustedRootPem`, `ca.crt` must be that root.
 */
export async function inspectTlsSecret(
  data: Record<string, string>,
  expect: TlsExpectation,
  trustedRootPem: string | undefined,
  now: Date,
): Promise<TlsInspection> {
  const fail = (reason: string): TlsInspection => ({ ok: false, reason });
  const crt = data["tls.crt"];
  const key = data["tls.key"];
  const ca = data["ca.crt"];
  if (!crt || !key || !ca) {
    const missing = ["tls.crt", "tls.key", "ca.crt"].filter((k) => !data[k]);
    return fail(`missing ${missing.join(", ")}`);
  }
  let chain: x509.X509Certificate[];
  let roots: x509.X509Certificate[];
  try {
    chain = splitPemCertificates(crt).map((p) => new x509.X509Certificate(p));
    roots = splitPemCertificates(ca).map((p) => new x509.X509Certificate(p));
  } catch {
    return fail("tls.crt or ca.crt is not a parseable PEM certificate");
  }
  const cert = chain[0];
  const root = roots[0];
  if (!cert) return fail("tls.crt holds no certificate");
  if (!root) return fail("ca.crt holds no certificate");

  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch {
    return fail("tls.key is not a parseable private key");
  }
  const spki = createPublicKey(privateKey).export({ type: "spki", format: "der" });
  if (!Buffer.from(cert.publicKey.rawData).equals(spki)) return fail("tls.key does not match tls.crt");
  const alg = keyAlgorithmOf(privateKey);
  if (alg !== expect.keyAlgorithm) return fail(`the key is ${alg ?? "of another kind"}, not ${expect.keyAlgorithm}`);

  const invalidAt = validityProblem(cert, now);
  if (invalidAt !== undefined) return fail(invalidAt);

  const isCa = cert.getExtension(x509.BasicConstraintsExtension)?.ca === true;
  if (expect.kind === "ca" && !isCa) return fail("the certificate is not a CA");
  if (expect.kind === "leaf" && isCa) return fail("the certificate is a CA, expected a leaf");
  if (expect.dnsNames) {
    const have = dnsNamesOf(cert).sort();
    const want = [...expect.dnsNames].map((d) => d.toLowerCase()).sort();
    if (have.join(",") !== want.join(","))
      return fail(`the certificate's DNS names (${have.join(", ") || "none"}) are not ${want.join(", ")}`);
  }

  if (!(await root.isSelfSigned().catch(() => false))) return fail("ca.crt is not a self-signed root");
  const broken = await chainProblem([...chain, root]);
  if (broken !== undefined) return fail(broken);
  if (trustedRootPem !== undefined) {
    const trusted = splitPemCertificates(trustedRootPem)[0];
    if (!trusted || !sameCertificate(new x509.X509Certificate(trusted), root))
      return fail("ca.crt is not Vault's current root");
  }
  return {
    ok: true,
    cert,
    serialHex: cert.serialNumber.toLowerCase(),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    rootPem: root.toString("pem") + "\n",
  };
}

function sameCertificate(a: x509.X509Certificate, b: x509.X509Certificate): boolean {
  return Buffer.from(a.rawData).equals(Buffer.from(b.rawData));
}

export function dnsNamesOf(cert: x509.X509Certificate): string[] {
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  return (san?.names.items ?? []).filter((n) => n.type === "dns").map((n) => n.value.toLowerCase());
}
