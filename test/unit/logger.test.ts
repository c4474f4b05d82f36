import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { createLogger } from "../../src/observability/logger.js";

describe("logger redaction", () => {
  it("censors tokens, JWTs and keys under the field names the code could use", () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString("utf8"));
        done();
      },
    });
    const log = createLogger({ level: "info", destination: sink });
    const secret = "hvs.SECRETSECRETSECRETSECRET";
    log.info(
      {
        token: secret,
        jwt: "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl",
        auth: { client_token: secret },
        bundle: { privateKeyPem: "-----BEGIN PRIVATE KEY-----x-----END PRIVATE KEY-----" },
        headers: { authorization: `Bearer ${secret}`, "x-vault-token": secret },
        serial: "0a1b",
      },
      "a message",
    );
    const out = lines.join("");
    assert.ok(!out.includes(secret), out);
    assert.doesNotMatch(out, /eyJhbGciOi|PRIVATE KEY/);
    assert.match(out, /"serial":"0a1b"/, "other fields are kept");
    assert.match(out, /\[redacted\]/);
  });
});
