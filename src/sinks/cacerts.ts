// The cacerts sink: publishes the four plugged-in CA files istiod reads from /etc/cacerts (an in-memory volume shared
// with istiod). Writes follow kubelet's projected-volume layout so a reader never sees a half-written set:
//
//   ..2025_01_02_03_04_05.678_Ab12Cd/   fresh, fully written and fsynced directory (0750) per write
//   ..data -> ..2025_01_02_03_04_05.678_Ab12Cd   swapped atomically with rename(2)
//   ca-cert.pem -> ..data/ca-cert.pem   (same for the other three; created once, never change)
//
// Another writer of the volume must not be able to redirect these writes (or the key) with a symlink: the data
// directory is opened once (O_NOFOLLOW) and everything inside it is created through that descriptor (O_EXCL |
// O_NOFOLLOW, fchmod, fchown); before `..data` is swapped, both directories must still be the ones opened.
//
// istiod also compares root-cert.pem byte for byte with the root it loaded (bytes.Contains in multi-root mode), so the
// sink decides the bytes of root-cert.pem itself: see planRootCertText.
import { createHash } from "node:crypto";
import { constants as fsConstants, existsSync, type Stats } from "node:fs";
import {
  access,
  lstat,
  mkdtemp,
  open,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  type FileHandle,
} from "node:fs/promises";
import path from "node:path";
import { parsePemBlocks, type PemBlock } from "../crypto/pem.js";

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

/**
 * Test seam: changes the group of a path; `uid` -1 keeps the owner (contract of fs/promises chown). Without it the
 * sink uses fchown on the open descriptor, never a path.
 */
export type ChownFunction = (path: string, uid: number, gid: number) => Promise<void>;

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

const DATA_LINK = "..data";
const DATA_TMP_LINK = "..data_tmp";
/** Temporary name used when a top-level name has to be replaced (wrong link or a plain file). */
const LINK_TMP = "..link_tmp";
/** Our timestamped data directories; kubelet's `..2006_01_02_15_04_05.000000000` matches too. */
const DATA_DIR_PATTERN = /^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\./;
const DATA_DIR_MODE = 0o750;
const DEFAULT_GROUP = 1337;
const DEFAULT_FILE_MODE = 0o640;

export class CacertsSink {
  readonly dir: string;
  private readonly group: number;
  private readonly fileMode: number;
  private readonly multiRoot: boolean;
  private readonly chownFn: ChownFunction | undefined;
  private strayCleanupDone = false;
  private lastWarnings: readonly string[] = [];
  /** Serializes write() calls: two interleaved writes would each remove the other's "previous" directory. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: CacertsSinkOptions) {
    this.dir = path.resolve(opts.dir);
    this.group = opts.group ?? DEFAULT_GROUP;
    this.fileMode = opts.fileMode ?? DEFAULT_FILE_MODE;
    this.multiRoot = opts.multiRoot ?? false;
    this.chownFn = opts.chown;
    if (!Number.isInteger(this.group) || this.group < 0) throw new Error(`cacerts group must be a gid >= 0`);
    if (!Number.isInteger(this.fileMode) || this.fileMode < 0 || this.fileMode > 0o777) {
      throw new Error(`cacerts fileMode must be a permission mode between 0 and 0o777`);
    }
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
    await assertWritableDir(this.dir);
  }

  /** Atomically publishes a new set of the four files. Concurrent calls run one after the other. */
  write(files: CacertsFiles): Promise<void> {
    const run = this.queue.then(() => this.writeNow(files));
    this.queue = run.catch(() => undefined);
    return run;
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

  private async writeNow(files: CacertsFiles): Promise<void> {
    validateFiles(files);
    await assertWritableDir(this.dir);
    if (!this.strayCleanupDone) {
      await this.removeStrays();
      this.strayCleanupDone = true;
    }
    const onDiskRoot = await readFileIfPresent(path.join(this.dir, FILE_NAMES.rootCertPem));
    const rootCertPem = planRootCertText(onDiskRoot, files.rootCertPem, this.multiRoot, this.dir);
    const warnings: string[] = [];

    const topDir = await open(this.dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    const dataDir = await mkdtemp(path.join(this.dir, dataDirPrefix(new Date())));
    let dirHandle: FileHandle | undefined;
    try {
      dirHandle = await openOwnDirectory(dataDir);
      await dirHandle.chmod(DATA_DIR_MODE);
      let chownDenied = await this.setGroup(dirHandle, dataDir);
      const created: [string, Stats][] = [];
      for (const key of FILE_KEYS) {
        const name = FILE_NAMES[key];
        const file = await createInDirectory(dirHandle, dataDir, name, this.fileMode);
        try {
          await file.writeFile(key === "rootCertPem" ? rootCertPem : files[key], "utf8");
          await file.chmod(this.fileMode); // open()'s mode is filtered by the umask.
          chownDenied = (await this.setGroup(file, path.join(dataDir, name))) ?? chownDenied;
          await file.sync();
          created.push([name, await file.stat()]);
        } finally {
          await file.close();
        }
      }
      if (files.originJson !== undefined) {
        const file = await createInDirectory(dirHandle, dataDir, ORIGIN_FILE, this.fileMode);
        try {
          await file.writeFile(files.originJson, "utf8");
          await file.chmod(this.fileMode);
          chownDenied = (await this.setGroup(file, path.join(dataDir, ORIGIN_FILE))) ?? chownDenied;
          await file.sync();
          created.push([ORIGIN_FILE, await file.stat()]);
        } finally {
          await file.close();
        }
      }
      await dirHandle.sync();
      // Last check before publishing: the names still lead to what was written through the descriptors.
      await assertSameObject(this.dir, await topDir.stat(), "stat");
      await assertSameObject(dataDir, await dirHandle.stat(), "lstat");
      for (const [name, st] of created) await assertSameObject(path.join(dataDir, name), st, "lstat");
      if (chownDenied !== undefined) warnings.push(this.chownWarning(chownDenied));
    } catch (err) {
      // rm does not follow a symlink planted under our name: it removes the link, never what it points to.
      await rm(dataDir, { recursive: true, force: true });
      throw err;
    } finally {
      await dirHandle?.close();
      await topDir.close();
    }

    const previous = await readLinkIfPresent(path.join(this.dir, DATA_LINK));
    await this.swapDataLink(path.basename(dataDir));
    await this.ensureTopLevelLinks();
    // Only a plain name of ours is removed, never a path a foreign `..data` might have pointed to.
    if (previous !== undefined && DATA_DIR_PATTERN.test(previous) && !previous.includes("/")) {
      await rm(path.join(this.dir, previous), { recursive: true, force: true });
    }
    this.lastWarnings = warnings;
  }

  /** `..data_tmp` -> new dir, then rename over `..data`: rename(2) is the single atomic switch readers observe. */
  private async swapDataLink(dataDirName: string): Promise<void> {
    const tmp = path.join(this.dir, DATA_TMP_LINK);
    await rm(tmp, { recursive: true, force: true });
    await symlink(dataDirName, tmp);
    try {
      await rename(tmp, path.join(this.dir, DATA_LINK));
    } catch (err) {
      await rm(path.join(this.dir, dataDirName), { recursive: true, force: true });
      await rm(tmp, { force: true });
      throw new CacertsDirError(
        `cannot replace ${path.join(this.dir, DATA_LINK)} (${errnoCode(err) ?? String(err)}); it must be a symlink`,
      );
    }
    await fsyncDir(this.dir);
  }

  /** Each top-level name must be the symlink `..data/<name>`; a missing, wrong or plain-file entry is replaced. */
  private async ensureTopLevelLinks(): Promise<void> {
    let changed = false;
    for (const name of Object.values(FILE_NAMES)) {
      const linkPath = path.join(this.dir, name);
      const wanted = `${DATA_LINK}/${name}`;
      let current: string | undefined;
      try {
        current = await readlink(linkPath);
      } catch (err) {
        const code = errnoCode(err);
        if (code === "ENOENT") {
          await symlink(wanted, linkPath);
          changed = true;
          continue;
        }
        if (code !== "EINVAL") throw err; // EINVAL: exists but is not a symlink, replaced below.
      }
      if (current === wanted) continue;
      if ((await lstat(linkPath)).isDirectory()) {
        throw new CacertsDirError(`${linkPath} is a directory; remove it so it can become a link to ${wanted}`);
      }
      // Replacing through rename keeps the name present at every instant.
      const tmp = path.join(this.dir, LINK_TMP);
      await rm(tmp, { force: true });
      await symlink(wanted, tmp);
      await rename(tmp, linkPath);
      changed = true;
    }
    if (changed) await fsyncDir(this.dir);
  }

  /** Leftovers of a writer killed mid-write: `..data_tmp`, `..link_tmp` and data dirs `..data` does not point to. */
  private async removeStrays(): Promise<void> {
    const current = await readLinkIfPresent(path.join(this.dir, DATA_LINK));
    for (const name of await readdir(this.dir)) {
      const stray = name === DATA_TMP_LINK || name === LINK_TMP || (DATA_DIR_PATTERN.test(name) && name !== current);
      if (stray) await rm(path.join(this.dir, name), { recursive: true, force: true });
    }
  }

  /** Gives the open file our group. Returns the errno code when the kernel refuses (EPERM/EINVAL), undefined otherwise. */
  private async setGroup(handle: FileHandle, displayPath: string): Promise<string | undefined> {
    // Skip when already right (setgid fsGroup volume, or we run as that group): no privilege needed then.
    if ((await handle.stat()).gid === this.group) return undefined;
    try {
      if (this.chownFn) await this.chownFn(displayPath, -1, this.group);
      else await handle.chown(-1, this.group);
      return undefined;
    } catch (err) {
      const code = errnoCode(err);
      // EPERM: not root and not a member of the group. EINVAL: the gid is not mapped in this user namespace.
      if (code === "EPERM" || code === "EINVAL") return code;
      throw err;
    }
  }

  private chownWarning(code: string): string {
    const gid = process.getegid?.() ?? "unknown";
    return (
      `could not give the cacerts files in ${this.dir} group ${this.group} (${code}); they keep group ${gid}. ` +
      `istiod can read them only if it is in that group: run this container as root, with group ${this.group} ` +
      `(runAsGroup/supplementalGroups), or set the pod's fsGroup to ${this.group}`
    );
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

async function assertWritableDir(dir: string): Promise<void> {
  const who = `uid ${process.geteuid?.() ?? "?"} gid ${process.getegid?.() ?? "?"}`;
  const needs = `this process (${who}) needs write and search (w+x) permission on it`;
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch (err) {
    if (errnoCode(err) === "ENOENT") {
      throw new CacertsDirError(
        `cacerts directory ${dir} does not exist: mount the in-memory volume shared with istiod there; ${needs}`,
      );
    }
    throw new CacertsDirError(`cannot inspect cacerts directory ${dir} (${errnoCode(err) ?? String(err)}); ${needs}`);
  }
  if (!isDir) throw new CacertsDirError(`cacerts path ${dir} is not a directory`);
  try {
    await access(dir, fsConstants.W_OK | fsConstants.X_OK);
  } catch (err) {
    throw new CacertsDirError(`cacerts directory ${dir} is not writable (${errnoCode(err) ?? String(err)}): ${needs}`);
  }
}

/** `..YYYY_MM_DD_HH_MM_SS.mmm_` in UTC; mkdtemp appends six random characters. */
function dataDirPrefix(now: Date): string {
  const p = (n: number, width = 2): string => String(n).padStart(width, "0");
  const date = `${now.getUTCFullYear()}_${p(now.getUTCMonth() + 1)}_${p(now.getUTCDate())}`;
  const time = `${p(now.getUTCHours())}_${p(now.getUTCMinutes())}_${p(now.getUTCSeconds())}`;
  return `..${date}_${time}.${p(now.getUTCMilliseconds(), 3)}_`;
}

/** Opens a directory this process just created, refusing a symlink or anything not owned by us. */
async function openOwnDirectory(dir: string): Promise<FileHandle> {
  const handle = await open(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW);
  const st = await handle.stat();
  const uid = process.geteuid?.();
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) {
    await handle.close();
    throw new CacertsDirError(`${dir} is not the directory this agent just created; another writer changed it`);
  }
  return handle;
}

/**
 * Creates `name` inside the directory open as `dir`. On Linux the path goes through /proc/self/fd/N, which resolves
 * to the open directory itself (like openat), so renaming or replacing the directory's name cannot redirect the
 * file; elsewhere the name is used and the identity checks before publishing catch a swap.
 */
async function createInDirectory(dir: FileHandle, dirPath: string, name: string, mode: number): Promise<FileHandle> {
  const viaFd = `/proc/self/fd/${dir.fd}`;
  const base = existsSync(viaFd) ? viaFd : dirPath;
  const flags = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;
  return open(path.join(base, name), flags, mode);
}

/** Fails unless `target` (by stat or lstat) is still the object `opened` describes (same device and inode). */
async function assertSameObject(target: string, opened: Stats, how: "stat" | "lstat"): Promise<void> {
  let now: Stats | undefined;
  try {
    now = how === "lstat" ? await lstat(target) : await stat(target);
  } catch (err) {
    if (errnoCode(err) !== "ENOENT") throw err;
  }
  if (!now || now.dev !== opened.dev || now.ino !== opened.ino || now.isSymbolicLink()) {
    throw new CacertsDirError(
      `${target} was replaced while the cacerts files were being written (${now ? (now.isSymbolicLink() ? "now a symlink" : "another file") : "now missing"}); ` +
        `refusing to publish: only this agent may write the cacerts volume`,
    );
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function readLinkIfPresent(linkPath: string): Promise<string | undefined> {
  try {
    return await readlink(linkPath);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw err;
  }
}

async function readFileIfPresent(filePath: string): Promise<string | undefined> {
  try {
    return await readFile(filePath, "utf8");
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw err;
  }
}

function errnoCode(err: unknown): string | undefined {
  if (typeof err === "object" && err !== null && "code" in err && typeof err.code === "string") return err.code;
  return undefined;
}
