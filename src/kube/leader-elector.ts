// One writer among the replicas, elected with a coordination.k8s.io/v1 Lease the way client-go's leader election
// works: the holder renews the Lease every retry period and gives up leading when it could not renew for the renew
// deadline (shorter than the lease duration); a candidate takes the Lease only after it has observed no change to it
// for a full lease duration by its own clock (clocks of different pods are never compared), or when it is free. Every
// write carries the resourceVersion it read, so two candidates cannot both win. A graceful stop releases the Lease.
import type { Logger } from "pino";
import { HttpStatusError } from "../net/http-json.js";
import { sleep, systemClock, type Clock } from "../util/clock.js";
import type { KubeClient } from "./client.js";

export interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

export interface StoredLease {
  spec: LeaseSpec;
  resourceVersion: string;
}

/** Another writer changed the Lease since it was read (HTTP 409): the attempt lost. */
export class LeaseConflict extends Error {}

/** The Lease's storage: the apiserver (KubeLeaseStore) or a scripted stand-in in unit tests. */
export interface LeaseStore {
  get(): Promise<StoredLease | undefined>;
  /** Creates the Lease; LeaseConflict when it exists already. Returns the new resourceVersion. */
  create(spec: LeaseSpec): Promise<string>;
  /** Replaces the spec if the Lease is still at `resourceVersion`; LeaseConflict otherwise. */
  update(spec: LeaseSpec, resourceVersion: string): Promise<string>;
}

export interface LeaderElectorOptions {
  store: LeaseStore;
  /** This replica's name in the Lease (the pod name). */
  identity: string;
  leaseDurationMs: number;
  /** The holder stops leading when it could not renew for this long; below the lease duration. Default 2/3 of it. */
  renewDeadlineMs?: number;
  /** Time between attempts (renewals when leading). Default lease duration / 7.5. */
  retryPeriodMs?: number;
  /** Told every time leading starts (true) or stops (false). */
  onChange: (leading: boolean) => void;
  /** What the Lease elects a writer of, for logs; default "the policy status". */
  purpose?: string;
  log: Logger;
  clock?: Clock;
}

export class LeaderElector {
  private readonly clock: Clock;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  /** The Lease as last seen (its resourceVersion) and when, by the local clock, it was first seen like that. */
  private observed: { resourceVersion: string; spec: LeaseSpec; atMs: number } | undefined;
  private lastRenewMs: number | undefined;
  private isLeading = false;

  constructor(private readonly opts: LeaderElectorOptions) {
    this.clock = opts.clock ?? systemClock;
    this.renewDeadlineMs = opts.renewDeadlineMs ?? Math.round((opts.leaseDurationMs * 2) / 3);
    this.retryPeriodMs = opts.retryPeriodMs ?? Math.max(50, Math.round(opts.leaseDurationMs / 7.5));
    if (!(this.renewDeadlineMs < opts.leaseDurationMs && this.retryPeriodMs < this.renewDeadlineMs))
      throw new Error("leader election: expected retry period < renew deadline < lease duration");
  }

  private get purpose(): string {
    return this.opts.purpose ?? "the policy status";
  }

  get leading(): boolean {
    return this.isLeading;
  }

  /** Tries every retry period until `signal` aborts; then releases the Lease if it holds it. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await this.tryOnce();
      await sleep(this.clock, this.retryPeriodMs, signal).catch(() => undefined);
    }
    await this.release();
  }

  /** One attempt to acquire or renew; returns whether this replica leads afterwards. */
  async tryOnce(): Promise<boolean> {
    const now = this.clock.now();
    try {
      if (await this.acquireOrRenew(now)) {
        this.lastRenewMs = now;
        this.setLeading(true);
        return true;
      }
    } catch (err) {
      if (!(err instanceof LeaseConflict))
        this.opts.log.warn({ err: (err as Error).message }, `could not read or write the Lease for ${this.purpose}`);
    }
    // A holder that cannot renew gives up before others may take over (the renew deadline is below the duration).
    if (this.isLeading && (this.lastRenewMs === undefined || now - this.lastRenewMs >= this.renewDeadlineMs))
      this.setLeading(false);
    return this.isLeading;
  }

  /** Gives the Lease up (a graceful stop), so another replica takes over at once instead of after a duration. */
  async release(): Promise<void> {
    if (!this.isLeading || !this.observed) return this.setLeading(false);
    const spec: LeaseSpec = {
      ...this.observed.spec,
      holderIdentity: "",
      leaseDurationSeconds: 1,
      renewTime: microTime(this.clock.now()),
    };
    try {
      await this.opts.store.update(spec, this.observed.resourceVersion);
    } catch (err) {
      this.opts.log.debug(
        { err: (err as Error).message },
        `could not release the Lease for ${this.purpose} (it expires instead)`,
      );
    }
    this.setLeading(false);
  }

  private async acquireOrRenew(now: number): Promise<boolean> {
    const me = this.opts.identity;
    const leaseSeconds = Math.max(1, Math.ceil(this.opts.leaseDurationMs / 1000));
    const lease = await this.opts.store.get();
    if (!lease) {
      const spec: LeaseSpec = {
        holderIdentity: me,
        leaseDurationSeconds: leaseSeconds,
        acquireTime: microTime(now),
        renewTime: microTime(now),
        leaseTransitions: 0,
      };
      this.observe(await this.opts.store.create(spec), spec, now);
      return true;
    }
    if (this.observed?.resourceVersion !== lease.resourceVersion) this.observe(lease.resourceVersion, lease.spec, now);
    const holder = lease.spec.holderIdentity ?? "";
    const heldFor = (lease.spec.leaseDurationSeconds ?? leaseSeconds) * 1000;
    // Someone else holds it, and it has changed within a lease duration as seen from here: it is alive.
    if (holder !== "" && holder !== me && this.observed!.atMs + heldFor > now) return false;
    const mine = holder === me;
    const spec: LeaseSpec = {
      holderIdentity: me,
      leaseDurationSeconds: leaseSeconds,
      acquireTime: mine && lease.spec.acquireTime ? lease.spec.acquireTime : microTime(now),
      renewTime: microTime(now),
      leaseTransitions: (lease.spec.leaseTransitions ?? 0) + (mine ? 0 : 1),
    };
    if (!mine) this.opts.log.info({ previousHolder: holder || null }, `taking over the Lease for ${this.purpose}`);
    this.observe(await this.opts.store.update(spec, lease.resourceVersion), spec, now);
    return true;
  }

  private observe(resourceVersion: string, spec: LeaseSpec, atMs: number): void {
    this.observed = { resourceVersion, spec, atMs };
  }

  private setLeading(leading: boolean): void {
    if (leading === this.isLeading) return;
    this.isLeading = leading;
    this.opts.log.info(
      { identity: this.opts.identity },
      leading ? `now writing ${this.purpose}` : `no longer writing ${this.purpose}`,
    );
    this.opts.onChange(leading);
  }
}

/** metav1.MicroTime: RFC 3339 with exactly six fractional digits. */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/** The Lease `name` in `namespace` through the apiserver. */
export class KubeLeaseStore implements LeaseStore {
  private readonly path: string;

  constructor(
    private readonly kube: KubeClient,
    private readonly namespace: string,
    private readonly name: string,
  ) {
    this.path = `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`;
  }

  async get(): Promise<StoredLease | undefined> {
    try {
      const l = await this.kube.get<{ spec?: LeaseSpec; metadata: { resourceVersion: string } }>(
        `${this.path}/${this.name}`,
      );
      return { spec: l.spec ?? {}, resourceVersion: l.metadata.resourceVersion };
    } catch (err) {
      if (err instanceof HttpStatusError && err.status === 404) return undefined;
      throw err;
    }
  }

  async create(spec: LeaseSpec): Promise<string> {
    const body = { apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: this.meta(), spec };
    return this.write(() => this.kube.create<{ metadata: { resourceVersion: string } }>(this.path, body));
  }

  async update(spec: LeaseSpec, resourceVersion: string): Promise<string> {
    const body = {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: { ...this.meta(), resourceVersion },
      spec,
    };
    return this.write(async () => {
      const res = await this.kube.request<{ metadata: { resourceVersion: string } }>(
        "PUT",
        `${this.path}/${this.name}`,
        body,
      );
      return res.body;
    });
  }

  private meta() {
    return { name: this.name, namespace: this.namespace };
  }

  private async write(call: () => Promise<{ metadata: { resourceVersion: string } }>): Promise<string> {
    try {
      return (await call()).metadata.resourceVersion;
    } catch (err) {
      if (err instanceof HttpStatusError && err.status === 409) throw new LeaseConflict("the Lease changed meanwhile");
      throw err;
    }
  }
}
