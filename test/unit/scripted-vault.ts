// Scripted stand-ins for Vault in unit tests: a test root CA that signs CSRs the way PKI sign-intermediate does, with
// dates from the fake clock. No server is involved.
import { webcrypto } from "node:crypto";
import type { IntermediateAuthorityOptions } from "../../src/authority/intermediate-authority.js";
import { x509 } from "../../src/crypto/x509.js";
import { ECDSA_SHA256 as SIGN, caCertificate } from "../env/ca-certs.js";

const EC = { name: "ECDSA", namedCurve: "P-256" } as const;

export interface ScriptedCa {
  rootPem: string;
  /** Signs `csrPem` for `ttlMs` from `now` (notBefore backdated 30 s, as Vault does), as a CA or a leaf. */
  sign(
    csrPem: string,
    now: number,
    ttlMs: number,
    opts?: { ca?: boolean; dnsNames?: string[] },
  ): Promise<{ certificate: string; issuing_ca: string; ca_chain: string[]; serialHex: string }>;
}

export async function scriptedCa(now: number): Promise<ScriptedCa> {
  const keys = await webcrypto.subtle.generateKey(EC, false, ["sign", "verify"]);
  // No subject key identifier: the shape of the root these tests were written against.
  const root = await caCertificate({
    subject: "CN=scripted test root",
    keys,
    serialNumber: "01",
    notBefore: new Date(now - 3600_000),
    notAfter: new Date(now + 3650 * 24 * 3600_000),
    subjectKeyIdentifier: false,
  });
  const rootPem = root.toString("pem") + "\n";
  let serial = 0x100;
  return {
    rootPem,
    async sign(csrPem, at, ttlMs, opts = {}) {
      const csr = new x509.Pkcs10CertificateRequest(csrPem);
      const serialHex = (serial++).toString(16);
      const san = (opts.dnsNames ?? []).map((value) => ({ type: "dns" as const, value }));
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: serialHex,
        subject: csr.subject,
        issuer: root.subject,
        notBefore: new Date(at - 30_000),
        notAfter: new Date(at + ttlMs),
        publicKey: csr.publicKey,
        signingKey: keys.privateKey,
        signingAlgorithm: SIGN,
        extensions: [
          new x509.BasicConstraintsExtension(opts.ca ?? false, opts.ca ? 0 : undefined, true),
          new x509.KeyUsagesExtension(
            opts.ca ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign : x509.KeyUsageFlags.digitalSignature,
            true,
          ),
          ...(san.length ? [new x509.SubjectAlternativeNameExtension(san)] : []),
        ],
      });
      const pem = cert.toString("pem") + "\n";
      return { certificate: pem, issuing_ca: rootPem, ca_chain: [rootPem], serialHex };
    },
  };
}

/** The intermediate's lifetime the unit tests of the authority use (seconds). */
export const UNIT_TTL_S = 3_000;

/** Authority options for unit tests against the scripted CA; `o` overrides any of them. */
export const unitAuthorityOptions = (o: Partial<IntermediateAuthorityOptions> = {}): IntermediateAuthorityOptions => ({
  caPath: "pki/root/sign-intermediate",
  csrPath: undefined,
  ttlSeconds: UNIT_TTL_S,
  commonName: "unit intermediate",
  organization: undefined,
  keyAlgorithm: "ECDSA_P256",
  maxPathLength: 0,
  rotationGraceRatio: 1 / 3,
  jitterRatio: 0.05,
  keyExport: false,
  backoff: { initialMs: 1_000, maxMs: 300_000 },
  extraRootsPem: [],
  ...o,
});
