// The default number of signing workers: the rule over CPU quota and parallelism, and reading the quota from scripted
// cgroup v1, v2 and hybrid file trees.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  MAX_DEFAULT_SIGNING_WORKERS,
  cpuLimits,
  defaultSigningWorkers,
  readCgroupCpuQuota,
} from "../../src/signing/signing-workers.js";
import { loadConfig, parseFlags } from "../../src/config/load.js";
import { ConfigError } from "../../src/cli/errors.js";

/** A ReadFile over a fixed map of paths. */
const files = (tree: Record<string, string>) => (path: string) => tree[path];

void describe("defaultSigningWorkers (the rule)", () => {
  const rule = (quotaCpus: number | undefined, parallelism: number) =>
    defaultSigningWorkers({ quotaCpus, parallelism, quotaSource: "test" }).workers;

  void it("keeps one CPU for the main thread and gives each further CPU a worker", () => {
    assert.equal(rule(undefined, 1), 0);
    assert.equal(rule(undefined, 2), 1);
    assert.equal(rule(undefined, 3), 2);
    assert.equal(rule(2, 8), 1, "the quota limits");
    assert.equal(rule(8, 2), 1, "the CPUs limit");
  });

  void it("signs on the main thread with one CPU or less", () => {
    assert.equal(rule(0.5, 8), 0);
    assert.equal(rule(1, 8), 0);
    assert.equal(rule(0.01, 1), 0);
  });

  void it("rounds a fractional quota above one CPU up", () => {
    assert.equal(rule(1.5, 8), 1);
    assert.equal(rule(2.5, 8), 2);
  });

  void it(`starts at most ${MAX_DEFAULT_SIGNING_WORKERS}`, () => {
    assert.equal(rule(undefined, 64), MAX_DEFAULT_SIGNING_WORKERS);
    assert.equal(rule(32, 64), MAX_DEFAULT_SIGNING_WORKERS);
  });

  void it("says why", () => {
    const c = defaultSigningWorkers({ quotaCpus: 2, parallelism: 8, quotaSource: "cgroup v1 /x" });
    assert.match(
      c.reason,
      /CPU quota 2 \(cgroup v1 \/x\), availableParallelism 8: 2 CPUs, one CPU for the main thread/,
    );
    assert.match(
      defaultSigningWorkers({ quotaCpus: undefined, parallelism: 1, quotaSource: "none" }).reason,
      /main thread/,
    );
  });

  void it("reads this machine's limits without throwing", () => {
    const l = cpuLimits();
    assert.ok(l.parallelism >= 1);
    assert.ok(l.quotaCpus === undefined || l.quotaCpus > 0);
  });
});

void describe("readCgroupCpuQuota (scripted cgroup files)", () => {
  void it("cgroup v1: quota / period of the process's cpu cgroup", () => {
    const q = readCgroupCpuQuota(
      files({
        "/proc/self/cgroup": "12:memory:/kubepods/pod1/c1\n4:cpu,cpuacct:/kubepods/pod1/c1\n1:name=systemd:/x\n",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1/cpu.cfs_quota_us": "150000\n",
        "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1/cpu.cfs_period_us": "100000\n",
      }),
    );
    assert.equal(q.quotaCpus, 1.5);
    assert.match(q.quotaSource, /cgroup v1 .*kubepods\/pod1\/c1\/cpu.cfs_quota_us 150000/);
  });

  void it("cgroup v1: quota -1 is no quota", () => {
    const q = readCgroupCpuQuota(
      files({
        "/proc/self/cgroup": "1:cpu:/\n",
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
      }),
    );
    assert.equal(q.quotaCpus, undefined);
    assert.match(q.quotaSource, /no quota/);
  });

  void it("cgroup v1 in a cgroup namespace: the path shown is absent below the mount, so the mount root is read", () => {
    const q = readCgroupCpuQuota(
      files({
        "/proc/self/cgroup": "3:cpu,cpuacct:/kubepods/burstable/pod9/abc\n0::/\n",
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "200000",
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000",
      }),
    );
    assert.equal(q.quotaCpus, 2);
  });

  void it("hybrid (v1 cpu controller beside a v2 tree without it): v1 wins", () => {
    const q = readCgroupCpuQuota(
      files({
        "/proc/self/cgroup": "9:name=systemd:/\n1:cpu:/bench\n0::/\n",
        "/sys/fs/cgroup/cpu/bench/cpu.cfs_quota_us": "50000",
        "/sys/fs/cgroup/cpu/bench/cpu.cfs_period_us": "100000",
      }),
    );
    assert.equal(q.quotaCpus, 0.5);
  });

  void it("cgroup v2: cpu.max of the process's cgroup; max is no quota", () => {
    const tree = {
      "/proc/self/cgroup": "0::/kubepods.slice/pod2/c2\n",
      "/sys/fs/cgroup/kubepods.slice/pod2/c2/cpu.max": "250000 100000\n",
    };
    assert.equal(readCgroupCpuQuota(files(tree)).quotaCpus, 2.5);
    const unlimited = { ...tree, "/sys/fs/cgroup/kubepods.slice/pod2/c2/cpu.max": "max 100000\n" };
    assert.equal(readCgroupCpuQuota(files(unlimited)).quotaCpus, undefined);
    assert.match(readCgroupCpuQuota(files(unlimited)).quotaSource, /cpu.max: max/);
  });

  void it("cgroup v2 in a namespace (0::/) reads the root's cpu.max", () => {
    const q = readCgroupCpuQuota(files({ "/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "100000 100000" }));
    assert.equal(q.quotaCpus, 1);
  });

  void it("no cgroup files: no quota", () => {
    assert.equal(readCgroupCpuQuota(files({})).quotaCpus, undefined);
    assert.equal(readCgroupCpuQuota(files({ "/proc/self/cgroup": "0::/\n" })).quotaCpus, undefined);
  });
});

void describe("--signing-workers", () => {
  const base = ["--vault-addr=https://vault:8200"];
  const load = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
    loadConfig(parseFlags([...base, ...argv]), env, { needVault: false });

  void it("is unset by default (the rule decides at start), read from the flag or its variable", () => {
    assert.equal(load([]).serve.signingWorkers, undefined);
    assert.equal(load(["--signing-workers=0"]).serve.signingWorkers, 0);
    assert.equal(load([], { ISTIOD_VAULT_AGENT_SIGNING_WORKERS: "3" }).serve.signingWorkers, 3);
    assert.equal(load(["--signing-workers=2"], { ISTIOD_VAULT_AGENT_SIGNING_WORKERS: "3" }).serve.signingWorkers, 2);
  });

  void it("refuses what is not a whole number from 0 to 64, naming the flag", () => {
    for (const bad of ["-1", "1.5", "many", "65"]) {
      assert.throws(
        () => load([`--signing-workers=${bad}`]),
        (e: unknown) => e instanceof ConfigError && /--signing-workers: .*whole number from 0 to 64/.test(e.message),
      );
    }
  });
});
