// When a relay client certificate chain was first authorised: the Bootstrap that started it. The issuer writes this
// time into every client certificate it signs (a non-critical private extension) and copies it unchanged on Renew,
// so "how long has this chain renewed itself without the identity token" is answered from a certificate the issuer
// itself signed, with no server-side state to lose on restart. Renew refuses once --max-bootstrap-age has passed.
//
// The OID sits under 2.25 (ITU-T X.667: an OID made from a UUID, no registration needed); the value is a DER
// GeneralizedTime, YYYYMMDDHHMMSSZ.
import { x509 } from "../../crypto/x509.js";

export const BOOTSTRAP_TIME_OID = "2.25.334453003566845607255560680789735076944";

export function bootstrapTimeExtension(at: Date): x509.Extension {
  const text = at.toISOString().replace(/[-:T]/g, "").slice(0, 14) + "Z";
  const der = Buffer.concat([Buffer.from([0x18, text.length]), Buffer.from(text, "ascii")]);
  return new x509.Extension(BOOTSTRAP_TIME_OID, false, der);
}

/** The bootstrap time a certificate carries, or undefined when it carries none (or a malformed one). */
export function readBootstrapTime(cert: x509.X509Certificate): Date | undefined {
  const ext = cert.getExtension(BOOTSTRAP_TIME_OID);
  if (!ext) return undefined;
  const der = Buffer.from(ext.value);
  if (der.length !== 17 || der[0] !== 0x18 || der[1] !== 15) return undefined;
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(der.subarray(2).toString("ascii"));
  if (!m) return undefined;
  const t = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
  return Number.isFinite(t) ? new Date(t) : undefined;
}
