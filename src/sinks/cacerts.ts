// The cacerts sink: publishes the four plugged-in CA files istiod reads from /etc/cacerts (an in-memory volume shared
// with istiod), atomically and safe against another writer of the volume, through the projected-volume writer in
// ./projected-dir.ts (`..data` swap; the same writer publishes istiod's TLS serving certificate).
//
// istiod also compares root-cert.pem byte for byte with the root it loaded (bytes.Contains in multi-root mode), so the
// sink decides the bytes of root-cert.pem itself: see planRootCertText.
import { createHash } from "node:crypto";
import { constants as fsConstants, existsSync } from "node:fs";
import { open, readFile, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { parsePemBlocks, type PemBlock } from "../crypto/pem.js";
import {
  DATA_DIR_MODE,
  DATA_DIR_PATTERN,
  DATA_LINK,
  ProjectedDir,
  errnoCode,
  readFileIfPresent,
  readLinkIfPresent,
  type ChownFunction,
} from "./projected-dir.js";

export type { ChownFunction } from "./projected-dir.js";

export interface CacertsFiles {
  caCertPem: string;
  caKeyPem: string;
  certChainPem: string;
  rootCertPem: string;
  /**
   * The agent's record of where this set came from (JSON, no secrets), written as `..data/${ORIGIN_FILE}` in the same
   * generation; istiod never reads it. A later agent in the pod adopts the set only with it (src/authority/adopt.ts).
   */
  originJson?: string | undefined;
}

/** The generation `..data` points to, read through readOwnGeneration(): only what this sink's writer wrote. */
export interface OwnGeneration {
  /** Name of the data directory (`..2025_…`). */
  name: string;
  files: CacertsFiles;
}

export interface CacertsSinkOptions {
  /** The directory istiod reads (its /etc/cacerts); must exist and be writable. */
  dir: string;
  /** Group given to the files and the data directory; default 1337 (istiod's gid). */
  group?: number;
  /** Mode of the four files; default 0o640 (owner writes, istiod's group reads, nobody else). */
  fileMode?: number;
  /** Allow changing the root the way istiod's ISTIO_MULTIROOT_MESH=true does; default false. */
  multiRoot?: boolean;
  /** Test seam: replaces fs chown (e.g. to simulate EPERM while running as root). */
  chown?: ChownFunction;
}

/** A write that istiod would reject because it changes the root (trust anchors). */
export class CacertsRootChangeError extends Error {
  override readonly name = "CacertsRootChangeError";
}

/** The cacerts directory is missing, not a directory, or not writable. */
export class CacertsDirError extends Error {
  override readonly name = "CacertsDirError";
}

const FILE_NAMES = {
  caCertPem: "ca-cert.pem",
  caKeyPem: "ca-key.pem",
  certChainPem: "cert-chain.pem",
  rootCertPem: "root-cert.pem",
} as const satisfies Record<Exclude<keyof CacertsFiles, "originJson">, string>;
const FILE_KEYS = Object.keys(FILE_NAMES) as (keyof typeof FILE_NAMES)[];
/** The origin record's name inside a data directory (no top-level link: istiod has no use for it). */
export const ORIGIN_FILE = "istiod-vault-agent-origin.json";
/** Larger files are not ours: the four PEM files and the origin record are a few KiB each. */
const MAX_OWN_FILE_BYTES = 256 * 1024;

const DEFAULT_GROUP = 1337;
const DEFAULT_FILE_MODE = 0o640;

export class CacertsSink {
  readonly dir: string;
  private readonly fileMode: number;
  private readonly multiRoot: boolean;
  private readonly out: ProjectedDir;
  private lastWarnings: readonly string[] = [];

  constructor(opts: CacertsSinkOptions) {
    this.dir = path.resolve(opts.dir);
    this.fileMode = opts.fileMode ?? DEFAULT_FILE_MODE;
    this.multiRoot = opts.multiRoot ?? false;
    this.out = new ProjectedDir({
      dir: this.dir,
      group: opts.group ?? DEFAULT_GROUP,
      fileMode: this.fileMode,
      label: "cacerts",
      dirError: (message) => new CacertsDirError(message),
      chown: opts.chown,
    });
  }

  /**
   * Non-fatal problems of the most recent successful write() (replaced by every write, empty when all went well).
   * Today only: the group could not be set (EPERM/EINVAL), so istiod may be unable to read the files. Callers log
   * these.
   */
  get warnings(): readonly string[] {
    return this.lastWarnings;
  }

  /** Fails with a CacertsDirError naming the path and the permission needed unless the directory is usable. */
  async preflight(): Promise<void> {
    await this.out.preflight();
  }

  /** Atomically publishes a new set of the four files. Concurrent calls run one after the other. */
  async write(files: CacertsFiles): Promise<void> {
    this.lastWarnings = await this.out.write(async () => {
      validateFiles(files);
      await this.out.preflight();
      // Read inside the writer's queue: the root on disk is the one the previous write left.
      const onDiskRoot = await readFileIfPresent(path.join(this.dir, FILE_NAMES.rootCertPem));
      const rootCertPem = planRootCertText(onDiskRoot, files.rootCertPem, this.multiRoot, this.dir);
      return [
        ...FILE_KEYS.map((key) => ({
          name: FILE_NAMES[key],
          content: key === "rootCertPem" ? rootCertPem : files[key],
        })),
        ...(files.originJson === undefined ? [] : [{ name: ORIGIN_FILE, content: files.originJson, link: false }]),
      ];
    });
  }

  /**
   * Why write() would refuse `rootCertPem` over the published root-cert.pem (planRootCertText's rule, the one istiod
   * imposes), or undefined when it would not: lets a caller refuse new roots before any other consumer serves them.
   */
  async rootChangeProblem(rootCertPem: string): Promise<string | undefined> {
    const onDisk = (await this.read())?.rootCertPem;
    try {
      planRootCertText(onDisk, rootCertPem, this.multiRoot, this.dir);
      return undefined;
    } catch (err) {
      if (err instanceof CacertsRootChangeError) return err.message;
      throw err;
    }
  }

  /** The set currently published through `..data`, read consistently; undefined when nothing is published yet. */
  async read(): Promise<CacertsFiles | undefined> {
    // A write may swap `..data` and delete the old directory between readlink and readFile; that shows up as ENOENT
    // and a retry reads the new set.
    for (let attempt = 0; ; attempt++) {
      const target = await readLinkIfPresent(path.join(this.dir, DATA_LINK));
      if (target === undefined) return undefined;
      const dataDir = path.resolve(this.dir, target);
      try {
        const entries = await Promise.all(
          FILE_KEYS.map(async (key) => [key, await readFile(path.join(dataDir, FILE_NAMES[key]), "utf8")] as const),
        );
        return Object.fromEntries(entries) as unknown as CacertsFiles;
      } catch (err) {
        if (errnoCode(err) !== "ENOENT" || attempt >= 3) throw err;
      }
    }
  }

  /**
   * The generation `..data` points to, but only if it is exactly what a writer of this sink (this agent's uid) made:
   * `..data` a symlink to one of our plain `..<timestamp>` names, that directory and its files owned by our uid with
   * our modes (0750, the file mode), single-link regular files, the four top-level names our links into `..data`.
   * Everything is read through the one opened directory (O_NOFOLLOW), so the files are all of one generation even if
   * a write swaps `..data` meanwhile. Answers why not (a refusal) for anything else; never follows another writer's
   * link.
   */
  async readOwnGeneration(): Promise<{ ok: true; generation: OwnGeneration } | { ok: false; reason: string }> {
    const refuse = (reason: string) => ({ ok: false as const, reason });
    const target = await readLinkIfPresent(path.join(this.dir, DATA_LINK));
    if (target === undefined) return refuse(`${this.dir} holds no ${DATA_LINK} (nothing written yet)`);
    if (target.includes("/") || !DATA_DIR_PATTERN.test(target))
      return refuse(`${DATA_LINK} points to "${target}", not to a data directory of this sink`);
    for (const name of Object.values(FILE_NAMES)) {
      const link = await readLinkIfPresent(path.join(this.dir, name)).catch(() => undefined);
      if (link !== `${DATA_LINK}/${name}`)
        return refuse(`${name} is not the link ${DATA_LINK}/${name} this sink makes`);
    }
    const uid = process.geteuid?.();
    let dirHandle: FileHandle;
    try {
      dirHandle = await open(
        path.join(this.dir, target),
        fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW,
      );
    } catch (err) {
      return refuse(`cannot open ${target} (${errnoCode(err) ?? String(err)})`);
    }
    try {
      const st = await dirHandle.stat();
      if (uid !== undefined && st.uid !== uid)
        return refuse(`${target} is owned by uid ${st.uid}, not this agent's ${uid}`);
      if ((st.mode & 0o777) !== DATA_DIR_MODE)
        return refuse(
          `${target} has mode ${(st.mode & 0o777).toString(8)}, not the ${DATA_DIR_MODE.toString(8)} this sink sets`,
        );
      const base = existsSync(`/proc/self/fd/${dirHandle.fd}`)
        ? `/proc/self/fd/${dirHandle.fd}`
        : path.join(this.dir, target);
      const readOwn = async (name: string): Promise<string | { reason: string }> => {
        let file: FileHandle;
        try {
          file = await open(path.join(base, name), fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
        } catch (err) {
          return { reason: `${target}/${name}: cannot open it (${errnoCode(err) ?? String(err)})` };
        }
        try {
          const fst = await file.stat();
          if (!fst.isFile() || fst.nlink !== 1)
            return { reason: `${target}/${name} is not a single-link regular file` };
          if (uid !== undefined && fst.uid !== uid)
            return { reason: `${target}/${name} is owned by uid ${fst.uid}, not ${uid}` };
          if ((fst.mode & 0o777) !== this.fileMode)
            return {
              reason: `${target}/${name} has mode ${(fst.mode & 0o777).toString(8)}, not ${this.fileMode.toString(8)}`,
            };
          if (fst.size > MAX_OWN_FILE_BYTES) return { reason: `${target}/${name} is ${fst.size} bytes, too large` };
          return await file.readFile("utf8");
        } finally {
          await file.close();
        }
      };
      const read: Partial<Record<keyof CacertsFiles, string>> = {};
      for (const key of [...FILE_KEYS, "originJson"] as const) {
        const got = await readOwn(key === "originJson" ? ORIGIN_FILE : FILE_NAMES[key]);
        if (typeof got !== "string") return refuse(got.reason);
        read[key] = got;
      }
      return {
        ok: true,
        generation: { name: target, files: read as CacertsFiles },
      };
    } finally {
      await dirHandle.close();
    }
  }
}

/**
 * The exact text to write as root-cert.pem, or throws CacertsRootChangeError. istiod compares the new file with the
 * root it loaded byte for byte (bytes.Equal, and bytes.Contains either way in multi-root mode), so:
 * - same set of certificates as on disk: the on-disk bytes are kept, so a reformatted PEM is not a "change";
 * - multiRoot, new set is a superset: on-disk bytes followed by the added certificates (old is a literal prefix);
 * - multiRoot, new set is a subset: the on-disk span holding exactly the kept certificates (a literal substring), which
 *   exists only when the dropped certificates are at the start and/or end of the on-disk bundle;
 * - anything else is refused.
 */
export function planRootCertText(onDisk: string | undefined, requested: string, multiRoot: boolean, dir = ""): string {
  const oldBlocks = onDisk === undefined ? [] : parsePemBlocks(onDisk, "on-disk root-cert.pem");
  if (onDisk === undefined || oldBlocks.length === 0) return requested;
  const newBlocks = parsePemBlocks(requested, "root-cert.pem");
  const oldSet = new Set(oldBlocks.map((b) => b.derKey));
  const newSet = new Set(newBlocks.map((b) => b.derKey));
  const newHasAllOld = [...oldSet].every((k) => newSet.has(k));
  const oldHasAllNew = [...newSet].every((k) => oldSet.has(k));
  if (newHasAllOld && oldHasAllNew) return onDisk;

  const where = dir === "" ? "root-cert.pem" : path.join(dir, "root-cert.pem");
  const change = `the new root bundle [${fingerprints(newBlocks)}] differs from ${where} [${fingerprints(oldBlocks)}]`;
  if (!multiRoot) {
    throw new CacertsRootChangeError(
      `refusing to change the root: ${change}, and istiod keeps its old CA when the root changes unless it runs with ` +
        `ISTIO_MULTIROOT_MESH=true. To rotate the root, run istiod with ISTIO_MULTIROOT_MESH=true and this agent in ` +
        `multi-root mode, then 1) publish a root bundle of old + new roots, 2) wait until every workload trusts both, ` +
        `3) switch signing to an intermediate under the new root, 4) publish a root bundle without the old root`,
    );
  }
  if (newHasAllOld) {
    const seen = new Set(oldSet);
    const added: string[] = [];
    for (const block of newBlocks) {
      if (seen.has(block.derKey)) continue;
      seen.add(block.derKey);
      added.push(block.normalized);
    }
    return (onDisk.endsWith("\n") ? onDisk : `${onDisk}\n`) + added.join("");
  }
  if (oldHasAllNew) {
    const keptIndexes = oldBlocks.flatMap((b, i) => (newSet.has(b.derKey) ? [i] : []));
    const first = keptIndexes[0] ?? 0;
    const last = keptIndexes[keptIndexes.length - 1] ?? 0;
    if (keptIndexes.length === last - first + 1) {
      const start = oldBlocks[first]?.start ?? 0;
      let end = oldBlocks[last]?.end ?? onDisk.length;
      if (onDisk.startsWith("\r\n", end)) end += 2;
      else if (onDisk.startsWith("\n", end)) end += 1;
      return onDisk.slice(start, end);
    }
    throw new CacertsRootChangeError(
      `refusing to drop roots: ${change}; istiod accepts a smaller bundle only as a byte-for-byte part of the current ` +
        `one, so only roots at the start or end of the current root-cert.pem can be dropped`,
    );
  }
  throw new CacertsRootChangeError(
    `refusing to change the root: ${change}, and neither bundle contains the other. Even with ` +
      `ISTIO_MULTIROOT_MESH=true istiod needs one to contain the other: first add the new root next to the old one, ` +
      `then drop the old root once every workload trusts the new one`,
  );
}

/** The PEM blocks of `pem`, each re-encoded canonically (64-column base64, `\n` line ends, trailing newline). */
export function splitPemBlocks(pem: string): string[] {
  return parsePemBlocks(pem, "PEM input").map((b) => b.normalized);
}

/** Shape checks only; the sink does not parse certificates (istiod verifies the chain itself). */
function validateFiles(files: CacertsFiles): void {
  for (const key of FILE_KEYS) {
    const name = FILE_NAMES[key];
    if (typeof files[key] !== "string") throw new Error(`${name}: content must be a string`);
    const blocks = parsePemBlocks(files[key], name);
    if (blocks.length === 0) throw new Error(`${name}: no PEM block found`);
    if (key === "caKeyPem") {
      if (blocks.length !== 1 || !blocks[0]?.label.endsWith("PRIVATE KEY")) {
        throw new Error(`${name}: must hold exactly one PRIVATE KEY PEM block`);
      }
    } else {
      const wrong = blocks.find((b) => b.label !== "CERTIFICATE");
      if (wrong) throw new Error(`${name}: holds a "${wrong.label}" PEM block; only CERTIFICATE blocks are allowed`);
    }
  }
}

function fingerprints(blocks: PemBlock[]): string {
  const unique = [...new Set(blocks.map((b) => b.derKey))];
  return unique
    .map((k) => "sha256:" + createHash("sha256").update(Buffer.from(k, "base64")).digest("hex").slice(0, 16))
    .join(", ");
}
