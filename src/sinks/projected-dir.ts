// The atomic directory writer both file sinks share (istiod's cacerts, istiod's TLS serving certificate). Writes
// follow kubelet's projected-volume layout so a reader never sees a half-written set:
//
//   ..2025_01_02_03_04_05.678_Ab12Cd/   fresh, fully written and fsynced directory (0750) per write
//   ..data -> ..2025_01_02_03_04_05.678_Ab12Cd   swapped atomically with rename(2)
//   <name> -> ..data/<name>             one per published file; created once, never change
//
// Another writer of the volume must not be able to redirect these writes (or a key) with a symlink: the data
// directory is opened once (O_NOFOLLOW) and everything inside it is created through that descriptor (O_EXCL |
// O_NOFOLLOW, fchmod, fchown); before `..data` is swapped, both directories must still be the ones opened.
// istiod's file watchers (pkg/filewatcher) watch the parent directory and re-read the top-level names, so the one
// rename of `..data` is the single change they see.
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

/** One file of a generation. */
export interface DataFile {
  name: string;
  content: string;
  /** false: written inside the data directory only, with no top-level link (e.g. the agent's origin record). */
  link?: boolean;
}

/** Test seam: changes the group of a path; `uid` -1 keeps the owner (contract of fs/promises chown). */
export type ChownFunction = (path: string, uid: number, gid: number) => Promise<void>;

export interface ProjectedDirOptions {
  /** The directory the reader (istiod) reads; must exist and be writable. */
  dir: string;
  /** Group given to the files and the data directory (istiod's gid). */
  group: number;
  /** Mode of the files (owner writes, the reader's group reads). */
  fileMode: number;
  /** How messages name the directory ("cacerts", "istiod TLS"). */
  label: string;
  /** Builds the error thrown for an unusable directory or a foreign writer (each sink has its own class). */
  dirError: (message: string) => Error;
  chown?: ChownFunction | undefined;
}

export const DATA_LINK = "..data";
const DATA_TMP_LINK = "..data_tmp";
/** Temporary name used when a top-level name has to be replaced (wrong link or a plain file). */
const LINK_TMP = "..link_tmp";
/** Our timestamped data directories; kubelet's `..2006_01_02_15_04_05.000000000` matches too. */
export const DATA_DIR_PATTERN = /^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\./;
export const DATA_DIR_MODE = 0o750;

export class ProjectedDir {
  readonly dir: string;
  private strayCleanupDone = false;
  /** Serializes writes: two interleaved writes would each remove the other's "previous" directory. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: ProjectedDirOptions) {
    this.dir = path.resolve(opts.dir);
    if (!Number.isInteger(opts.group) || opts.group < 0) throw new Error(`${opts.label} group must be a gid >= 0`);
    if (!Number.isInteger(opts.fileMode) || opts.fileMode < 0 || opts.fileMode > 0o777) {
      throw new Error(`${opts.label} fileMode must be a permission mode between 0 and 0o777`);
    }
  }

  /** Fails with the sink's error naming the path and the permission needed unless the directory is usable. */
  preflight(): Promise<void> {
    return assertWritableDir(this.dir, this.opts.label, this.opts.dirError);
  }

  /**
   * Publishes one generation atomically; `files` may be computed inside the queue (from what is on disk now).
   * Concurrent calls run one after the other. Answers non-fatal warnings (the group could not be set).
   */
  write(files: readonly DataFile[] | (() => Promise<readonly DataFile[]>)): Promise<string[]> {
    const run = this.queue.then(async () => this.writeNow(typeof files === "function" ? await files() : files));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async writeNow(files: readonly DataFile[]): Promise<string[]> {
    await this.preflight();
    if (!this.strayCleanupDone) {
      await this.removeStrays();
      this.strayCleanupDone = true;
    }
    const warnings: string[] = [];
    const topDir = await open(this.dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    const dataDir = await mkdtemp(path.join(this.dir, dataDirPrefix(new Date())));
    let dirHandle: FileHandle | undefined;
    try {
      dirHandle = await openOwnDirectory(dataDir, this.opts.dirError);
      await dirHandle.chmod(DATA_DIR_MODE);
      let chownDenied = await this.setGroup(dirHandle, dataDir);
      const created: [string, Stats][] = [];
      for (const { name, content } of files) {
        const file = await createInDirectory(dirHandle, dataDir, name, this.opts.fileMode);
        try {
          await file.writeFile(content, "utf8");
          await file.chmod(this.opts.fileMode); // open()'s mode is filtered by the umask.
          chownDenied = (await this.setGroup(file, path.join(dataDir, name))) ?? chownDenied;
          await file.sync();
          created.push([name, await file.stat()]);
        } finally {
          await file.close();
        }
      }
      await dirHandle.sync();
      // Last check before publishing: the names still lead to what was written through the descriptors.
      await this.assertSameObject(this.dir, await topDir.stat(), "stat");
      await this.assertSameObject(dataDir, await dirHandle.stat(), "lstat");
      for (const [name, st] of created) await this.assertSameObject(path.join(dataDir, name), st, "lstat");
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
    await this.ensureTopLevelLinks(files.filter((f) => f.link !== false).map((f) => f.name));
    // Only a plain name of ours is removed, never a path a foreign `..data` might have pointed to.
    if (previous !== undefined && DATA_DIR_PATTERN.test(previous) && !previous.includes("/")) {
      await rm(path.join(this.dir, previous), { recursive: true, force: true });
    }
    return warnings;
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
      throw this.opts.dirError(
        `cannot replace ${path.join(this.dir, DATA_LINK)} (${errnoCode(err) ?? String(err)}); it must be a symlink`,
      );
    }
    await fsyncDir(this.dir);
  }

  /** Each top-level name must be the symlink `..data/<name>`; a missing, wrong or plain-file entry is replaced. */
  private async ensureTopLevelLinks(names: readonly string[]): Promise<void> {
    let changed = false;
    for (const name of names) {
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
        throw this.opts.dirError(`${linkPath} is a directory; remove it so it can become a link to ${wanted}`);
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
    if ((await handle.stat()).gid === this.opts.group) return undefined;
    try {
      if (this.opts.chown) await this.opts.chown(displayPath, -1, this.opts.group);
      else await handle.chown(-1, this.opts.group);
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
    const group = this.opts.group;
    return (
      `could not give the ${this.opts.label} files in ${this.dir} group ${group} (${code}); they keep group ${gid}. ` +
      `istiod can read them only if it is in that group: run this container as root, with group ${group} ` +
      `(runAsGroup/supplementalGroups), or set the pod's fsGroup to ${group}`
    );
  }

  /** Fails unless `target` (by stat or lstat) is still the object `opened` describes (same device and inode). */
  private async assertSameObject(target: string, opened: Stats, how: "stat" | "lstat"): Promise<void> {
    let now: Stats | undefined;
    try {
      now = how === "lstat" ? await lstat(target) : await stat(target);
    } catch (err) {
      if (errnoCode(err) !== "ENOENT") throw err;
    }
    if (!now || now.dev !== opened.dev || now.ino !== opened.ino || now.isSymbolicLink()) {
      throw this.opts.dirError(
        `${target} was replaced while the ${this.opts.label} files were being written (${now ? (now.isSymbolicLink() ? "now a symlink" : "another file") : "now missing"}); ` +
          `refusing to publish: only this agent may write the ${this.opts.label} volume`,
      );
    }
  }
}

async function assertWritableDir(dir: string, label: string, dirError: (message: string) => Error): Promise<void> {
  const who = `uid ${process.geteuid?.() ?? "?"} gid ${process.getegid?.() ?? "?"}`;
  const needs = `this process (${who}) needs write and search (w+x) permission on it`;
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch (err) {
    if (errnoCode(err) === "ENOENT") {
      throw dirError(
        `${label} directory ${dir} does not exist: mount the in-memory volume shared with istiod there; ${needs}`,
      );
    }
    throw dirError(`cannot inspect ${label} directory ${dir} (${errnoCode(err) ?? String(err)}); ${needs}`);
  }
  if (!isDir) throw dirError(`${label} path ${dir} is not a directory`);
  try {
    await access(dir, fsConstants.W_OK | fsConstants.X_OK);
  } catch (err) {
    throw dirError(`${label} directory ${dir} is not writable (${errnoCode(err) ?? String(err)}): ${needs}`);
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
async function openOwnDirectory(dir: string, dirError: (message: string) => Error): Promise<FileHandle> {
  const handle = await open(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW);
  const st = await handle.stat();
  const uid = process.geteuid?.();
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) {
    await handle.close();
    throw dirError(`${dir} is not the directory this agent just created; another writer changed it`);
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

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function readLinkIfPresent(linkPath: string): Promise<string | undefined> {
  try {
    return await readlink(linkPath);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw err;
  }
}

export async function readFileIfPresent(filePath: string): Promise<string | undefined> {
  try {
    return await readFile(filePath, "utf8");
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw err;
  }
}

export function errnoCode(err: unknown): string | undefined {
  if (typeof err === "object" && err !== null && "code" in err && typeof err.code === "string") return err.code;
  return undefined;
}
