// Which Kubernetes objects the project owns, and the one way it writes them. An object is ours when it carries
// app.kubernetes.io/managed-by=istiod-vault-agent; one without that label is never written unless adoption was asked
// for, and nothing here deletes an object. Writes are a create (POST) or a full update (PUT) carrying the
// resourceVersion read just before, so every key changes in one request and a concurrent writer is never overwritten
// blindly: a conflict (409) means someone else wrote in between, so the object is read again, its ownership checked
// again, and the write retried. The relay's Secrets (secret-store.ts) and the sidecar's root ConfigMaps
// (root-configmaps.ts) both write through writeOwned().
import { HttpStatusError } from "../net/http-json.js";
import type { KubeClient } from "./client.js";

export const MANAGED_BY_LABEL = "app.kubernetes.io/managed-by";
export const MANAGED_BY_VALUE = "istiod-vault-agent";

export interface ObjectMeta {
  name: string;
  namespace?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  managedFields?: unknown;
  [key: string]: unknown;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  [key: string]: unknown;
}

export type WriteOutcome = "created" | "updated" | "adopted";
/** writeOwned's answer: "unchanged" only when `upToDate` was given and the object (ours) already holds what it says. */
export type OwnedWriteOutcome = WriteOutcome | "unchanged";

export function isManaged(obj: { metadata: { labels?: Record<string, string> } } | undefined): boolean {
  return obj?.metadata.labels?.[MANAGED_BY_LABEL] === MANAGED_BY_VALUE;
}

/** An object of the same kind and name exists but is not ours, and adoption is off. */
export class UnmanagedObjectError extends Error {
  constructor(
    readonly kind: string,
    readonly namespace: string,
    readonly objectName: string,
    /** Who would take it over with --adopt, for the message: "the relay", "the agent". */
    who: string,
  ) {
    super(
      `${kind} ${namespace}/${objectName} exists without the label ${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}, so it was ` +
        `left untouched; delete it, add that label, or run with --adopt to let ${who} take it over`,
    );
    this.name = "UnmanagedObjectError";
  }
}

const MAX_CONFLICT_RETRIES = 5;

export interface OwnedWrite<T extends KubeObject> {
  kube: KubeClient;
  kind: string;
  namespace: string;
  name: string;
  /** The collection's path (POST goes here; PUT to `${collection}/${name}`). */
  collection: string;
  adopt: boolean;
  /** The copy just read, if any. */
  current: T | undefined;
  get: () => Promise<T | undefined>;
  /** Throws when `current` (ours or adoptable) cannot be written, e.g. UnmanagedObjectError for someone else's. */
  assertWritable: (current: T | undefined) => void;
  /**
   * Whether an object of ours, as read again after a conflict, already holds what would be written: then nothing is
   * written (a create that lost to another writer of the same content is not followed by an empty update).
   */
  upToDate?: (current: T) => boolean;
  /** The new object's body; the ownership label is added here. */
  createBody: () => KubeObject;
  /** The full replacement of `current` (its resourceVersion kept); the ownership label is added, managedFields dropped. */
  updateBody: (current: T) => KubeObject;
  /** Who writes, for the error after too many conflicts: "the relay", "the agent". */
  who: string;
}

/** Creates or updates one owned object, retrying on conflicts and re-checking ownership each time. */
export async function writeOwned<T extends KubeObject>(w: OwnedWrite<T>): Promise<OwnedWriteOutcome> {
  const path = `${w.collection}/${encodeURIComponent(w.name)}`;
  let cur = w.current;
  for (let attempt = 0; attempt <= MAX_CONFLICT_RETRIES; attempt++) {
    if (attempt > 0) cur = await w.get();
    if (!cur) {
      const body = w.createBody();
      body.metadata = { ...body.metadata, labels: withOwnerLabel(body.metadata.labels) };
      const res = await w.kube.request("POST", w.collection, body, { acceptStatuses: [409] });
      if (res.status === 409) continue; // created by someone else meanwhile: read it and decide again
      return "created";
    }
    w.assertWritable(cur);
    const adopting = !isManaged(cur);
    if (!adopting && w.upToDate?.(cur)) return "unchanged";
    const body = w.updateBody(cur);
    const { managedFields: _managedFields, ...metadata } = body.metadata;
    body.metadata = { ...metadata, labels: withOwnerLabel(body.metadata.labels) };
    const res = await w.kube.request("PUT", path, body, { acceptStatuses: [409] });
    if (res.status === 409) continue; // changed since we read it: read again, re-check, retry
    return adopting ? "adopted" : "updated";
  }
  throw new HttpStatusError("kubernetes", "PUT", path, 409, [
    `${w.kind} ${w.namespace}/${w.name} kept changing under ${w.who} (${MAX_CONFLICT_RETRIES + 1} conflicts in a row)`,
  ]);
}

function withOwnerLabel(labels: Record<string, string> | undefined): Record<string, string> {
  return { ...(labels ?? {}), [MANAGED_BY_LABEL]: MANAGED_BY_VALUE };
}
