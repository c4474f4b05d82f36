// Kubernetes Secrets written by a component that owns them (today the relay's), under the ownership rule of
// ownership.ts: a Secret is ours when it carries app.kubernetes.io/managed-by=istiod-vault-agent; one without that
// label is never written unless adoption was asked for, and nothing here deletes a Secret. A certificate and its key
// always change in one request (a full update with the resourceVersion read just before; conflicts are retried).
import {
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  UnmanagedObjectError,
  isManaged,
  writeOwned,
  type KubeObject,
  type WriteOutcome,
} from "./ownership.js";
import type { KubeClient } from "./client.js";

export { MANAGED_BY_LABEL, MANAGED_BY_VALUE, type WriteOutcome };

export interface KubeSecret extends KubeObject {
  type?: string;
  data?: Record<string, string>;
}

export interface DesiredSecret {
  type: "Opaque" | "kubernetes.io/tls";
  /** Plain (not base64) values; every key is written in the same request. */
  data: Record<string, string>;
  annotations: Record<string, string>;
}

/** A Secret of the same name exists but is not ours. */
export class UnmanagedSecretError extends UnmanagedObjectError {
  constructor(
    namespace: string,
    readonly secretName: string,
  ) {
    super("Secret", namespace, secretName, "the relay");
    this.name = "UnmanagedSecretError";
  }
}

/** The Secret's type cannot hold what the relay writes (the type of a Secret cannot change). */
export class IncompatibleSecretError extends Error {
  constructor(namespace: string, secretName: string, have: string, want: string) {
    super(
      `Secret ${namespace}/${secretName} has type ${have}, which cannot hold the relay's ${want} data (a Secret's ` +
        `type is immutable); delete it or choose another name`,
    );
    this.name = "IncompatibleSecretError";
  }
}

export class SecretStore {
  constructor(
    private readonly kube: KubeClient,
    readonly namespace: string,
    private readonly adopt: boolean,
  ) {}

  private path(name?: string): string {
    const base = `/api/v1/namespaces/${encodeURIComponent(this.namespace)}/secrets`;
    return name === undefined ? base : `${base}/${encodeURIComponent(name)}`;
  }

  async get(name: string): Promise<KubeSecret | undefined> {
    const res = await this.kube.request<KubeSecret>("GET", this.path(name), undefined, { acceptStatuses: [404] });
    return res.status === 404 ? undefined : res.body;
  }

  static isManaged(secret: KubeSecret): boolean {
    return isManaged(secret);
  }

  /** Throws UnmanagedSecretError when `secret` exists, is not ours and adoption is off. */
  assertWritable(name: string, secret: KubeSecret | undefined): void {
    if (secret && !SecretStore.isManaged(secret) && !this.adopt) throw new UnmanagedSecretError(this.namespace, name);
  }

  static decode(secret: KubeSecret | undefined): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(secret?.data ?? {})) {
      if (typeof v === "string") out[k] = Buffer.from(v, "base64").toString("utf8");
    }
    return out;
  }

  /**
   * Creates or updates Secret `name` to hold `desired` (other data keys, labels and annotations already on it are
   * kept). `current` is the copy just read, if any. Retries on conflicts, re-checking ownership each time.
   */
  async write(name: string, desired: DesiredSecret, current: KubeSecret | undefined): Promise<WriteOutcome> {
    const encoded = Object.fromEntries(
      Object.entries(desired.data).map(([k, v]) => [k, Buffer.from(v, "utf8").toString("base64")]),
    );
    const outcome = await writeOwned<KubeSecret>({
      kube: this.kube,
      kind: "Secret",
      namespace: this.namespace,
      name,
      collection: this.path(),
      adopt: this.adopt,
      current,
      get: () => this.get(name),
      assertWritable: (cur) => this.assertWritable(name, cur),
      who: "the relay",
      createBody: (): KubeObject => ({
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name, namespace: this.namespace, annotations: desired.annotations },
        type: desired.type,
        data: encoded,
      }),
      updateBody: (cur): KubeObject => {
        const type = compatibleType(cur.type ?? "Opaque", desired.type);
        if (!type) throw new IncompatibleSecretError(this.namespace, name, cur.type ?? "Opaque", desired.type);
        return {
          ...cur,
          apiVersion: "v1",
          kind: "Secret",
          metadata: {
            ...cur.metadata,
            annotations: { ...(cur.metadata.annotations ?? {}), ...desired.annotations },
          },
          type,
          data: { ...(cur.data ?? {}), ...encoded },
        };
      },
    });
    // No upToDate was given, so writeOwned always wrote.
    if (outcome === "unchanged") throw new Error("unreachable: Secret write reported unchanged");
    return outcome;
  }
}

/** The type to keep when updating: Opaque can hold TLS data; a TLS Secret can hold only TLS data. */
function compatibleType(have: string, want: DesiredSecret["type"]): string | undefined {
  if (have === want) return have;
  if (have === "Opaque") return have;
  return undefined;
}
