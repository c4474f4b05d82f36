// Test-only PKI for the local kube-apiserver: a CA, a serving certificate for 127.0.0.1, an admin client certificate
// in system:masters, and the service-account signing key. These keys live in the test's temp dir and die with it.
import { webcrypto } from "node:crypto";
import { x509 } from "../../src/crypto/x509.js";
import { exportPrivateKeyPem, toPem } from "../../src/crypto/keys.js";
import { ECDSA_SHA256 as SIGN, caCertificate } from "./ca-certs.js";

const EC = { name: "ECDSA", namedCurve: "P-256" } as const;

export interface IssuedPem {
  certPem: string;
  keyPem: string;
}

export interface TestCa extends IssuedPem {
  issue(opts: {
    commonName: string;
    organization?: string;
    dnsNames?: string[];
    ips?: string[];
    client?: boolean;
  }): Promise<IssuedPem>;
}

export async function makeTestCa(commonName: string): Promise<TestCa> {
  const keys = await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"]);
  const now = Date.now();
  const caCert = await caCertificate({
    subject: `CN=${commonName}`,
    keys,
    serialNumber: randomSerial(),
    notBefore: new Date(now - 3600_000),
    notAfter: new Date(now + 7 * 24 * 3600_000),
  });
  return {
    certPem: caCert.toString("pem") + "\n",
    keyPem: await exportPrivateKeyPem(keys.privateKey),
    async issue(o) {
      const leafKeys = await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"]);
      const san = [
        ...(o.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
        ...(o.ips ?? []).map((value) => ({ type: "ip" as const, value })),
      ];
      const name = o.organization ? `CN=${o.commonName}, O=${o.organization}` : `CN=${o.commonName}`;
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: randomSerial(),
        subject: name,
        issuer: caCert.subject,
        notBefore: new Date(now - 3600_000),
        notAfter: new Date(now + 7 * 24 * 3600_000),
        publicKey: leafKeys.publicKey,
        signingKey: keys.privateKey,
        signingAlgorithm: SIGN,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
          new x509.ExtendedKeyUsageExtension([
            o.client ? x509.ExtendedKeyUsage.clientAuth : x509.ExtendedKeyUsage.serverAuth,
          ]),
          ...(san.length ? [new x509.SubjectAlternativeNameExtension(san)] : []),
          await x509.AuthorityKeyIdentifierExtension.create(caCert),
        ],
      });
      return { certPem: cert.toString("pem") + "\n", keyPem: await exportPrivateKeyPem(leafKeys.privateKey) };
    },
  };
}

/** An RSA key pair in PEM for kube-apiserver's service-account token signing. */
export async function makeServiceAccountKeys(): Promise<{ privatePem: string; publicPem: string }> {
  const keys = await webcrypto.subtle.generateKey(
    { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
    true,
    ["sign", "verify"],
  );
  return {
    privatePem: await exportPrivateKeyPem(keys.privateKey),
    publicPem: toPem(await webcrypto.subtle.exportKey("spki", keys.publicKey), "PUBLIC KEY"),
  };
}

function randomSerial(): string {
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0] ?? 0) & 0x7f;
  return Buffer.from(b).toString("hex");
}
