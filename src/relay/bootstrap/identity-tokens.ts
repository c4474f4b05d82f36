// The identity tokens the issuer accepts: the one Vault KV holds now and, for an overlap window after it changed, the
// one before it. Only SHA-256 digests are kept; a presented token is hashed and compared with crypto.timingSafeEqual
// against every accepted digest (always all of them, so timing does not say which matched).
//
// The window starts when this process sees the change (it held the old version before); after a restart it starts at
// the new KV version's created_time, so restarts never extend it. The previous token is read from KV by version.
import { createHash, timingSafeEqual } from "node:crypto";
import type { AgentMetrics } from "../../observability/metrics.js";
import type { VaultClient, VaultSecret } from "../../vault/client.js";
import type { KubernetesAuth } from "../../vault/kubernetes-auth.js";

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
      // Seen live: the old token stays valid for the window from now.
      this.previous = { ...cur, validUntil: now + this.overlapMs };
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

/** Reads the identity token (current version, and an older version by number) from KV v2. */
export class KvIdentityTokenSource {
  constructor(
    private readonly vault: VaultClient,
    private readonly auth: KubernetesAuth,
    private readonly metrics: AgentMetrics,
    private readonly kvPath: string,
  ) {}

  async latest(): Promise<KvTokenVersion | undefined> {
    const res = await this.read(undefined);
    if (!res) return undefined;
    return res;
  }

  async version(version: number): Promise<string | undefined> {
    return (await this.read(version))?.token;
  }

  private async read(version: number | undefined): Promise<KvTokenVersion | undefined> {
    const path = version === undefined ? this.kvPath : `${this.kvPath}?version=${version}`;
    type Answer = VaultSecret<{
      data?: Record<string, unknown> | null;
      metadata?: { version?: number; created_time?: string; deletion_time?: string; destroyed?: boolean } | null;
    }>;
    const res = await this.auth.withToken((token) =>
      this.metrics.timeVault("kv_read", () => this.vault.call<Answer>("GET", path, { token, acceptStatuses: [404] })),
    );
    const data = res.body?.data;
    const value = data?.data?.token;
    if (res.status === 404 || typeof value !== "string" || value.length === 0) return undefined;
    const created = Date.parse(data?.metadata?.created_time ?? "");
    return {
      version: Number(data?.metadata?.version ?? version ?? 0),
      token: value,
      createdAt: Number.isFinite(created) ? created : 0,
    };
  }
}
