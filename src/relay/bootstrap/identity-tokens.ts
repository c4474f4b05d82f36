// The identity tokens the issuer accepts. By default one per registered cluster (KV v2 entry <prefix>/<cluster>), so a
// token authorises Bootstrap for its own cluster only; with --shared-identity-token one entry serves every cluster.
// Per entry: the version KV holds now and, for an overlap window after it changed, the one before it. Only SHA-256
// digests are kept; a presented token is hashed and compared with crypto.timingSafeEqual against every accepted digest
// (always all of them, so timing does not say which matched).
//
// Revocation: an entry whose latest version is deleted or destroyed (or whose metadata is gone) is dropped at the next
// refresh, current and previous alike; an old version only gets the overlap while KV still serves it, so a deleted
// token is never accepted again (no resurrection through the overlap or a restart).
//
// The window starts when this process sees the change (it held the old version before); after a restart it starts at
// the new KV version's created_time, so restarts never extend it. The previous token is read from KV by version.
import { createHash, timingSafeEqual } from "node:crypto";
import { isDnsName } from "../../cli/validate.js";
import type { AgentMetrics } from "../../observability/metrics.js";
import type { VaultClient, VaultSecret } from "../../vault/client.js";
import type { VaultTokenSession } from "../../vault/auth.js";

export function tokenDigest(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}

interface Accepted {
  version: number;
  digest: Buffer;
}

export type TokenMatch = "current" | "previous";

export interface KvTokenVersion {
  version: number;
  /** The token itself: hashed at once by IdentityTokenSet and never stored. */
  token: string;
  /** created_time of this version, Unix ms. */
  createdAt: number;
}

export class IdentityTokenSet {
  private current: Accepted | undefined;
  private previous: (Accepted & { validUntil: number }) | undefined;

  constructor(
    private readonly overlapMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether a token is held (the issuer refuses every Bootstrap until then). */
  get loaded(): boolean {
    return this.current !== undefined;
  }

  /** When the previous token stops being accepted, if one is. */
  get previousValidUntil(): number | undefined {
    const p = this.previous;
    return p && p.validUntil > this.now() ? p.validUntil : undefined;
  }

  get currentVersion(): number | undefined {
    return this.current?.version;
  }

  /**
   * Applies what KV holds now. `loadPrevious` reads version `current.version - 1` when this process did not see the
   * change itself (start-up within the window). Returns what changed, for the log.
   */
  async update(
    latest: KvTokenVersion,
    loadPrevious: (version: number) => Promise<string | undefined>,
  ): Promise<"unchanged" | "loaded" | "rotated"> {
    const digest = tokenDigest(latest.token);
    const cur = this.current;
    if (cur && cur.version === latest.version && timingSafeEqual(cur.digest, digest)) return "unchanged";
    const now = this.now();
    if (cur && !timingSafeEqual(cur.digest, digest)) {
      // Seen live: the old token stays valid for the window from now, but only if KV still serves it (a version that
      // was deleted or destroyed before the rewrite was revoked, and stays so).
      const old = await loadPrevious(cur.version);
      const stillServed = old !== undefined && timingSafeEqual(tokenDigest(old), cur.digest);
      this.previous = stillServed ? { ...cur, validUntil: now + this.overlapMs } : undefined;
      this.current = { version: latest.version, digest };
      return "rotated";
    }
    this.current = { version: latest.version, digest };
    if (cur) return "unchanged"; // same token, new version number (e.g. metadata rewrite)
    const validUntil = latest.createdAt + this.overlapMs;
    if (latest.version > 1 && validUntil > now) {
      const prev = await loadPrevious(latest.version - 1);
      if (prev !== undefined && !timingSafeEqual(tokenDigest(prev), digest))
        this.previous = { version: latest.version - 1, digest: tokenDigest(prev), validUntil };
    }
    return "loaded";
  }

  /** Which accepted token `presented` is, if any. Constant time in the presented value. */
  match(presented: string): TokenMatch | undefined {
    const d = tokenDigest(presented);
    const now = this.now();
    const cur = this.current;
    const prev = this.previous;
    const isCurrent = cur ? timingSafeEqual(cur.digest, d) : false;
    const isPrevious = prev ? timingSafeEqual(prev.digest, d) && prev.validUntil > now : false;
    if (isCurrent) return "current";
    if (isPrevious) return "previous";
    return undefined;
  }
}

/** Where the issuer reads identity tokens: a list of entries (cluster names, or the one shared entry) and each entry's
 * latest version and older versions by number. */
export interface IdentityTokenSource {
  /** The registered entries (cluster names); the shared source lists only SHARED_ENTRY. */
  list(): Promise<string[]>;
  latest(entry: string): Promise<KvTokenVersion | undefined>;
  version(entry: string, version: number): Promise<string | undefined>;
}

export const SHARED_ENTRY = "*";

export interface RefreshReport {
  loaded: string[];
  rotated: string[];
  removed: string[];
}

/** Every entry's accepted tokens, refreshed from KV as a whole; remembers when the last refresh succeeded. */
export class IdentityTokenRegistry {
  private readonly sets = new Map<string, IdentityTokenSet>();
  private lastRefreshAt: number | undefined;

  constructor(
    readonly shared: boolean,
    private readonly overlapMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** A refresh has succeeded at least once. */
  get loaded(): boolean {
    return this.lastRefreshAt !== undefined;
  }

  /** When the last refresh succeeded (Unix ms). */
  get refreshedAt(): number | undefined {
    return this.lastRefreshAt;
  }

  get size(): number {
    return this.sets.size;
  }

  /** The latest time any previous token is still accepted. */
  get previousValidUntil(): number | undefined {
    let max: number | undefined;
    for (const s of this.sets.values()) {
      const u = s.previousValidUntil;
      if (u !== undefined && (max === undefined || u > max)) max = u;
    }
    return max;
  }

  async refresh(source: IdentityTokenSource): Promise<RefreshReport> {
    const report: RefreshReport = { loaded: [], rotated: [], removed: [] };
    const entries = this.shared ? [SHARED_ENTRY] : await source.list();
    const live = new Set<string>();
    for (const entry of entries) {
      const latest = await source.latest(entry);
      if (!latest) continue; // deleted, destroyed or empty: not accepted
      live.add(entry);
      const set = this.sets.get(entry) ?? new IdentityTokenSet(this.overlapMs, this.now);
      const outcome = await set.update(latest, (v) => source.version(entry, v));
      this.sets.set(entry, set);
      if (outcome === "loaded") report.loaded.push(entry);
      if (outcome === "rotated") report.rotated.push(entry);
    }
    for (const entry of [...this.sets.keys()]) {
      if (!live.has(entry)) {
        this.sets.delete(entry);
        report.removed.push(entry);
      }
    }
    this.lastRefreshAt = this.now();
    return report;
  }

  /** Whether `presented` is an accepted token of `cluster` (any entry's token, with a shared token). */
  match(cluster: string, presented: string): TokenMatch | undefined {
    const set = this.sets.get(this.shared ? SHARED_ENTRY : cluster);
    if (!set) {
      tokenDigest(presented); // same work as a real comparison: timing does not say whether the cluster exists
      return undefined;
    }
    return set.match(presented);
  }

  /** The cluster may hold a relay client certificate (always true with a shared token: there is no registry). */
  isRegistered(cluster: string): boolean {
    return this.shared || this.sets.has(cluster);
  }
}

/** Reads identity tokens from KV v2: the shared entry at `kvPath`, or one entry per cluster under `clusterPrefix`. */
export class KvIdentityTokenSource implements IdentityTokenSource {
  constructor(
    private readonly vault: VaultClient,
    private readonly auth: VaultTokenSession,
    private readonly metrics: AgentMetrics,
    private readonly paths: { shared: boolean; kvPath: string; clusterPrefix: string },
  ) {}

  /** LIST <mount>/metadata/<prefix>/: the registered clusters (entries that are not cluster names are ignored). */
  async list(): Promise<string[]> {
    if (this.paths.shared) return [SHARED_ENTRY];
    const meta = this.paths.clusterPrefix.replace(/^([^/]+)\/data\//, "$1/metadata/");
    const res = await this.auth.withToken((token) =>
      this.metrics.timeVault("kv_list", () =>
        this.vault.call<VaultSecret<{ keys?: unknown }>>("GET", `${meta}/?list=true`, {
          token,
          acceptStatuses: [404],
        }),
      ),
    );
    if (res.status === 404) return [];
    const keys = res.body?.data?.keys;
    return Array.isArray(keys) ? keys.filter((k): k is string => typeof k === "string" && isDnsName(k)) : [];
  }

  latest(entry: string): Promise<KvTokenVersion | undefined> {
    return this.read(this.pathOf(entry), undefined);
  }

  async version(entry: string, version: number): Promise<string | undefined> {
    return (await this.read(this.pathOf(entry), version))?.token;
  }

  private pathOf(entry: string): string {
    return this.paths.shared ? this.paths.kvPath : `${this.paths.clusterPrefix}/${entry}`;
  }

  private async read(kvPath: string, version: number | undefined): Promise<KvTokenVersion | undefined> {
    const path = version === undefined ? kvPath : `${kvPath}?version=${version}`;
    type Answer = VaultSecret<{
      data?: Record<string, unknown> | null;
      metadata?: { version?: number; created_time?: string; deletion_time?: string; destroyed?: boolean } | null;
    }>;
    const res = await this.auth.withToken((token) =>
      this.metrics.timeVault("kv_read", () => this.vault.call<Answer>("GET", path, { token, acceptStatuses: [404] })),
    );
    const data = res.body?.data;
    const value = data?.data?.token;
    // OpenBao answers 404 for a deleted or destroyed version; a deletion_time also means not to be used.
    const deletedAt = Date.parse(data?.metadata?.deletion_time ?? "");
    if (res.status === 404 || data?.metadata?.destroyed || deletedAt <= Date.now()) return undefined;
    if (typeof value !== "string" || value.length === 0) return undefined;
    const created = Date.parse(data?.metadata?.created_time ?? "");
    return {
      version: Number(data?.metadata?.version ?? version ?? 0),
      token: value,
      createdAt: Number.isFinite(created) ? created : 0,
    };
  }
}
