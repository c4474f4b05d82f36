// When a relay client certificate chain was first authorised: the Bootstrap that started it. The issuer writes this
// time into the subject of every client certificate it signs (an OU attribute, `relay-bootstrapped-at-<time>`) and
// copies it unchanged on Renew, so "how long has this chain renewed itself without the identity token" is answered
// from a certificate the issuer itself signed, with no server-side state to lose on restart. Renew refuses once
// --max-bootstrap-age has passed. The subject is set by the issuer alone (the CSR's subject is ignored), so a caller
// cannot choose this value.
//
// Why an OU and not a private extension: an extension needs an OID; the registration-free kind (2.25.<UUID>) has a
// 128-bit arc that the certificate library truncates, and borrowing someone else's enterprise arc would be dishonest.
import type { x509 } from "../../crypto/x509.js";
import type { SubjectAttribute } from "../../signing/leaf-signer.js";

const PREFIX = "relay-bootstrapped-at-";

/** The subject attribute that records `at` (whole seconds, UTC): `OU=relay-bootstrapped-at-YYYYMMDDHHMMSSZ`. */
export function bootstrapTimeAttribute(at: Date): SubjectAttribute {
  return { type: "OU", value: `${PREFIX}${at.toISOString().replace(/[-:T]/g, "").slice(0, 14)}Z` };
}

/** The bootstrap time a certificate's subject carries, or undefined when it carries none (or a malformed one). */
export function readBootstrapTime(cert: x509.X509Certificate): Date | undefined {
  const values = cert.subjectName.getField("OU").filter((v) => v.startsWith(PREFIX));
  if (values.length !== 1) return undefined;
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(values[0]!.slice(PREFIX.length));
  if (!m) return undefined;
  const t = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
  return Number.isFinite(t) ? new Date(t) : undefined;
}
