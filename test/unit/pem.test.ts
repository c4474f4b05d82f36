// The one PEM module: splitting bundles, strict single blocks from untrusted input, encoding, and its errors.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  PemFormatError,
  decodeSinglePem,
  parsePemBlocks,
  splitPemCertificates,
  splitPemCertificatesOrNone,
  toPem,
  uniquePemCertificates,
} from "../../src/crypto/pem.js";

const der = (n: number) => Buffer.alloc(n, n);
const CERT_A = toPem(der(70), "CERTIFICATE");
const CERT_B = toPem(der(3), "CERTIFICATE");
const KEY = toPem(der(40), "PRIVATE KEY");

void describe("PEM", () => {
  void it("encodes 64-column base64 with a trailing newline, and decodes back to the same bytes", () => {
    const lines = CERT_A.split("\n");
    assert.equal(lines[0], "-----BEGIN CERTIFICATE-----");
    assert.equal(lines[1]!.length, 64);
    assert.ok(CERT_A.endsWith("-----END CERTIFICATE-----\n"));
    assert.deepEqual(parsePemBlocks(CERT_A)[0]!.der, der(70));
    assert.equal(toPem(new Uint8Array(der(70)).buffer, "CERTIFICATE"), CERT_A);
  });

  void it("splits a bundle into its certificates, canonically re-encoded, skipping other blocks and text", () => {
    const messy = `subject=foo\r\n${CERT_B.replace(/\n/g, "\r\n")}${KEY}junk\n${CERT_A.replace(/\n(?=[A-Za-z0-9])/g, "\n  ")}`;
    assert.deepEqual(splitPemCertificates(messy), [CERT_B, CERT_A]);
    assert.deepEqual(
      parsePemBlocks(messy).map((b) => b.label),
      ["CERTIFICATE", "PRIVATE KEY", "CERTIFICATE"],
    );
    assert.deepEqual(splitPemCertificates("no pem here"), []);
    // Repeats go whatever their wrapping; a bundle counts certificate by certificate.
    assert.deepEqual(uniquePemCertificates([CERT_A, messy, CERT_B.replace(/\n/g, "\r\n"), ""]), [CERT_A, CERT_B]);
  });

  void it("refuses malformed blocks with an error that names the source and never quotes the content", () => {
    const secret = "c2VjcmV0";
    for (const bad of [
      `-----BEGIN PRIVATE KEY-----\n${secret}!\n-----END PRIVATE KEY-----\n`,
      `-----BEGIN CERTIFICATE-----\n${secret}\n-----END PRIVATE KEY-----\n`,
      `-----BEGIN CERTIFICATE-----\n${secret}A\n-----END CERTIFICATE-----\n`,
      `${CERT_A}-----BEGIN CERTIFICATE-----\n${secret}\n`,
    ]) {
      assert.throws(
        () => splitPemCertificates(bad, "tls.crt"),
        (err: unknown) =>
          err instanceof PemFormatError && err.message.startsWith("tls.crt: ") && !err.message.includes(secret),
      );
      assert.deepEqual(splitPemCertificatesOrNone(bad), []);
    }
  });

  void it("reads exactly one strict block of an allowed label from untrusted input", () => {
    const csr = toPem(der(20), "CERTIFICATE REQUEST");
    assert.deepEqual(decodeSinglePem(`\n ${csr}\n`, ["CERTIFICATE REQUEST"]), der(20));
    assert.deepEqual(
      decodeSinglePem(toPem(der(20), "NEW CERTIFICATE REQUEST"), ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"]),
      der(20),
    );
    for (const bad of [
      csr + csr, // two blocks
      `x${csr}`, // text before
      `${csr}x`, // text after
      CERT_A, // another label
      csr.replace("\n", " "), // base64 on the BEGIN line
      csr.replace(/\n(?=[A-Za-z0-9])/, "\n\t"), // tab inside the body
      "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n", // empty
      Buffer.from(csr).toString("base64"), // bare base64
    ]) {
      assert.throws(() => decodeSinglePem(bad, ["CERTIFICATE REQUEST"]), PemFormatError, JSON.stringify(bad));
    }
  });
});
