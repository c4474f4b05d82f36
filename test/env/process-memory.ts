// Reads another process's memory from outside (/proc/<pid>/mem, allowed for a child of the test process) to check
// what the process holds: e.g. that a private key never exists in it in an exportable (PEM) form.
import { closeSync, openSync, readFileSync, readSync } from "node:fs";

const PEM_PRIVATE_KEY = /-----BEGIN (?:EC |RSA )?PRIVATE KEY-----\r?\n[A-Za-z0-9+/]{40}/g;

/** How many PEM-encoded private keys the readable memory of process `pid` holds (Linux only). */
export function pemPrivateKeysInMemory(pid: number): number {
  const regions = readFileSync(`/proc/${pid}/maps`, "utf8").trim().split("\n");
  const fd = openSync(`/proc/${pid}/mem`, "r");
  const buf = Buffer.alloc(1 << 20);
  let found = 0;
  try {
    for (const line of regions) {
      const [range = "", perms = "", , , , name = ""] = line.split(/\s+/);
      if (!perms.startsWith("r") || /^\[(vvar|vvar_vclock|vsyscall)\]$/.test(name)) continue;
      const [start, end] = range.split("-").map((h) => BigInt(`0x${h}`)) as [bigint, bigint];
      let tail = ""; // a match may straddle two reads
      for (let at = start; at < end; at += BigInt(buf.length)) {
        const len = Number(end - at < BigInt(buf.length) ? end - at : BigInt(buf.length));
        let n: number;
        try {
          n = readSync(fd, buf, 0, len, at);
        } catch {
          break; // a region that cannot be read (guard pages): skip it
        }
        const text = tail + buf.toString("latin1", 0, n);
        // Count a match once: those lying wholly in the carried-over tail were counted with the previous read.
        for (const m of text.matchAll(PEM_PRIVATE_KEY)) if (m.index + m[0].length > tail.length) found++;
        tail = text.slice(-80);
      }
    }
  } finally {
    closeSync(fd);
  }
  return found;
}
