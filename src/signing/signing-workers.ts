// How many signing worker threads the agent starts when --signing-workers is not given: from the CPU the container
// may use (its cgroup CPU quota, v2 `cpu.max` or v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`) and the CPUs it may run
// on (os.availableParallelism(), which follows the cpuset/affinity but not the quota). Pure: the files are read
// through `readFile`, so tests script them.
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

/**
 * The most workers the default starts. One main thread (gRPC, HTTP/2, TLS, protobuf) costs ~65 µs per leaf and a
 * worker ~140 µs (bench/RESULTS.md §2 profile), so one main thread feeds little more than two busy workers; two more
 * cover the drop-in listener's TLS work moving to the main thread. Beyond that a thread only costs memory.
 */
export const MAX_DEFAULT_SIGNING_WORKERS = 4;

export interface CpuLimits {
  /** CPUs the cgroup quota allows (quota / period), undefined when there is no quota ("max", -1) or none is found. */
  quotaCpus: number | undefined;
  /** Where the quota was read (for the start-up log), or why none applies. */
  quotaSource: string;
  /** os.availableParallelism(). */
  parallelism: number;
}

export interface SigningWorkersChoice {
  workers: number;
  /** One sentence for the start-up log: the inputs and the rule. */
  reason: string;
}

/**
 * The rule, chosen from bench/RESULTS.md §2 (2 CPUs: 0 workers 3,400-3,800 leaves/s, 1 worker 5,400-5,700, 2 workers
 * 4,400-5,000; 1 CPU: a worker only adds a hand-off): one core stays for the main thread, every further whole CPU
 * (a fractional quota above one CPU rounds up: the worker uses what the main thread leaves) gets a worker, capped at
 * MAX_DEFAULT_SIGNING_WORKERS. With one CPU or less, leaves are signed on the main thread.
 */
export function defaultSigningWorkers(limits: CpuLimits): SigningWorkersChoice {
  const { quotaCpus, parallelism } = limits;
  const cpus = quotaCpus === undefined ? parallelism : Math.min(quotaCpus, parallelism);
  const workers = Math.max(0, Math.min(MAX_DEFAULT_SIGNING_WORKERS, Math.ceil(cpus - 1e-9) - 1));
  const quota =
    quotaCpus === undefined
      ? `no CPU quota (${limits.quotaSource})`
      : `CPU quota ${round(quotaCpus)} (${limits.quotaSource})`;
  const rule =
    workers === 0
      ? "one CPU or less: signing on the main thread"
      : `one CPU for the main thread, a worker per further CPU${workers === MAX_DEFAULT_SIGNING_WORKERS ? `, at most ${MAX_DEFAULT_SIGNING_WORKERS}` : ""}`;
  return { workers, reason: `${quota}, availableParallelism ${parallelism}: ${round(cpus)} CPUs, ${rule}` };
}

function round(n: number): string {
  return String(Math.round(n * 100) / 100);
}

export type ReadFile = (path: string) => string | undefined;

const readIfPresent: ReadFile = (path) => {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
};

/**
 * The cgroup CPU quota of this process in CPUs. /proc/self/cgroup says which cgroup the process is in: a v2 line
 * `0::/path` (its `cpu.max` under /sys/fs/cgroup), v1 lines `N:cpu,cpuacct:/path` (its `cpu.cfs_quota_us` and
 * `cpu.cfs_period_us` under the cpu controller's mount). A v1 controller on a hybrid machine takes precedence, as the
 * v2 tree then holds no cpu controller. In a container the cgroup path shown may not exist below the mount (cgroup
 * namespaces show `/`); the mount root is then the container's own cgroup, so both are tried, the full path first.
 */
export function readCgroupCpuQuota(
  readFile: ReadFile = readIfPresent,
  root = "/sys/fs/cgroup",
): Pick<CpuLimits, "quotaCpus" | "quotaSource"> {
  const self = readFile("/proc/self/cgroup");
  if (self === undefined) return { quotaCpus: undefined, quotaSource: "no /proc/self/cgroup" };
  const lines = self.split("\n").filter(Boolean);
  const v1 = lines.map((l) => /^\d+:([^:]*):(.*)$/.exec(l)).find((m) => m && m[1]!.split(",").includes("cpu"));
  if (v1) {
    const controllers = v1[1]!;
    for (const dir of candidates(`${root}/${mountName(controllers, readFile, root)}`, v1[2]!)) {
      const quota = readFile(`${dir}/cpu.cfs_quota_us`);
      const period = readFile(`${dir}/cpu.cfs_period_us`);
      if (quota === undefined || period === undefined) continue;
      const q = Number(quota.trim());
      const p = Number(period.trim());
      if (!(q > 0) || !(p > 0)) return { quotaCpus: undefined, quotaSource: `cgroup v1 ${dir}: no quota` };
      return { quotaCpus: q / p, quotaSource: `cgroup v1 ${dir}/cpu.cfs_quota_us ${q} / cpu.cfs_period_us ${p}` };
    }
    return { quotaCpus: undefined, quotaSource: `cgroup v1 cpu controller: no cpu.cfs_quota_us readable` };
  }
  const v2 = lines.map((l) => /^0::(.*)$/.exec(l)).find(Boolean);
  if (v2) {
    // On a hybrid host the v2 tree is mounted at /sys/fs/cgroup/unified; on a pure v2 host at /sys/fs/cgroup.
    for (const base of [root, `${root}/unified`]) {
      for (const dir of candidates(base, v2[1]!)) {
        const max = readFile(`${dir}/cpu.max`);
        if (max === undefined) continue;
        const [q = "", p = ""] = max.trim().split(/\s+/);
        if (q === "max") return { quotaCpus: undefined, quotaSource: `cgroup v2 ${dir}/cpu.max: max` };
        const quota = Number(q);
        const period = Number(p || "100000");
        if (!(quota > 0) || !(period > 0))
          return { quotaCpus: undefined, quotaSource: `cgroup v2 ${dir}/cpu.max unreadable` };
        return { quotaCpus: quota / period, quotaSource: `cgroup v2 ${dir}/cpu.max ${quota} ${period}` };
      }
    }
    return { quotaCpus: undefined, quotaSource: "cgroup v2: no cpu.max (no cpu controller)" };
  }
  return { quotaCpus: undefined, quotaSource: "no cpu cgroup in /proc/self/cgroup" };
}

/** The v1 cpu controller's directory name: `cpu,cpuacct` when mounted together (a symlink `cpu` usually exists too). */
function mountName(controllers: string, readFile: ReadFile, root: string): string {
  // Prefer the combined name when its files exist; `cpu` is the common symlink otherwise.
  return readFile(`${root}/${controllers}/cpu.cfs_period_us`) !== undefined ? controllers : "cpu";
}

/** The cgroup's directory below `base`, then `base` itself (a cgroup namespace shows the container's cgroup as /). */
function candidates(base: string, path: string): string[] {
  const clean = path.replace(/\/+$/, "");
  return clean === "" || clean === "/" ? [base] : [`${base}${clean}`, base];
}

/** The machine's limits as this process sees them. */
export function cpuLimits(readFile: ReadFile = readIfPresent, parallelism = availableParallelism()): CpuLimits {
  return { ...readCgroupCpuQuota(readFile), parallelism };
}
