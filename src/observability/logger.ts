// JSON logs (pino). Redaction paths cover every field name under which a token, JWT or key could be passed, as a
// second line of defence: the code never logs those values on purpose.
import { pino, type Logger } from "pino";

export type { Logger };

export const REDACT_PATHS = [
  "token",
  "jwt",
  "client_token",
  "clientToken",
  "privateKey",
  "privateKeyPem",
  "private_key",
  "keyPem",
  "caKeyPem",
  "authorization",
  "*.token",
  "*.jwt",
  "*.client_token",
  "*.privateKey",
  "*.privateKeyPem",
  "*.private_key",
  "*.keyPem",
  "*.authorization",
  "headers.authorization",
  'headers["x-vault-token"]',
];

export function createLogger(
  opts: { level?: string; name?: string; destination?: NodeJS.WritableStream } = {},
): Logger {
  return pino(
    {
      name: opts.name ?? "istiod-vault-agent",
      level: opts.level ?? "info",
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    opts.destination ?? pino.destination({ dest: 2, sync: true }),
  );
}

/** Masks anything key- or token-like in a message before it is logged (a second line of defence). */
export function scrub(message: string): string {
  return message
    .replace(/-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)/g, "<private key>")
    .replace(/eyJ[\w-]+\.[\w-]+\.[\w-]+/g, "<jwt>")
    .replace(/\b(hvs|hvb|hvr|s|b)\.[A-Za-z0-9]{20,}/g, "<token>");
}
