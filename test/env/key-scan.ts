// Finds private keys at rest: in files (a process's volumes, its logs, what it holds open) and in API objects. Used to
// prove that the intermediate's private key exists only in the agent's memory: each key found is reported by the
// SPKI of its public half, which a test compares with the intermediate certificate's.
import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { existsSync, lstatSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

/** Every regular file under each path (a directory is walked, a file taken as is; symlinks are not followed). */
export function filesUnder(...paths: string[]): string[] {
  return paths.flatMap((p) => {
    const st = lstatSync(p, { throwIfNoEntry: false });
    if (!st) return [];
    if (st.isFile()) return [p];
    if (!st.isDirectory()) return [];
    return readdirSync(p).flatMap((e) => filesUnder(join(p, e)));
  });
}

/**
 * The regular files a process holds open, as /proc/PID/fd/N paths: read through the descriptor, they open the very
 * file the process has, wherever its mount namespace put it (and even if it was unlinked since).
 */
export function openFiles(pid: number): string[] {
  return readdirSync(`/proc/${pid}/fd`)
    .map((fd) => `/proc/${pid}/fd/${fd}`)
    .filter((p) => {
      try {
        return statSync(p).isFile();
      } catch {
        return false; // closed meanwhile
      }
    });
}

/** The SPKI (DER, hex) of a certificate's public key. */
export function spkiHex(certPem: string): string {
  return new X509Certificate(certPem).publicKey.export({ type: "spki", format: "der" }).toString("hex");
}

// PKCS#8 DER of an EC key starts: version 0, then the ecPublicKey algorithm (a certificate's SPKI has no version).
const PKCS8_EC_DER = Buffer.from("020100301306072a8648ce3d0201", "hex");

export interface KeyFinding {
  file: string;
  /** The SPKI (hex) of each PEM private key in the file. */
  pemKeySpkis: string[];
  /** The file holds the start of a DER PKCS#8 EC private key. */
  derKey: boolean;
}

/** The private keys in each file that holds any (PEM of any type, or DER PKCS#8 EC). */
export function privateKeysInFiles(files: string[]): KeyFinding[] {
  const found: KeyFinding[] = [];
  for (const file of new Set(files)) {
    if (!existsSync(file)) continue;
    const bytes = readFileSync(file);
    const pemKeySpkis = privateKeysInText(bytes.toString("latin1"));
    const derKey = bytes.includes(PKCS8_EC_DER);
    if (pemKeySpkis.length || derKey) found.push({ file, pemKeySpkis, derKey });
  }
  return found;
}

/** The SPKI (hex) of each PEM private key in `text`. */
export function privateKeysInText(text: string): string[] {
  return (text.match(/-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----/g) ?? []).map((pem) =>
    createPublicKey(createPrivateKey(pem)).export({ type: "spki", format: "der" }).toString("hex"),
  );
}
