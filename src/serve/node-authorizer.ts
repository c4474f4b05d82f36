// Node authorisation for the drop-in Istio CA: which identity a CreateCertificate caller may be certified for.
//
// Facts from istiod (istio.io/istio security/pkg/server/ca: server.go CreateCertificate, node_auth.go) this follows:
// - The identity is the caller's own (the TokenReview'd service account) unless the request's `metadata` Struct has a
//   non-empty string field `ImpersonatedIdentity` (pkg/security.ImpersonatedIdentity). ztunnel sets it to the
//   workload's SPIFFE ID when it asks on a workload's behalf (ztunnel src/identity/caclient.rs).
// - Impersonation is allowed only to callers whose namespace/service account is in CA_TRUSTED_NODE_ACCOUNTS
//   (features.CATrustedNodeAccounts, "ns/sa" comma list; Istio's chart sets istio-system/ztunnel for ambient). With
//   the list empty istiod refuses every impersonation. Our flag is --trusted-node-agents, default istio-system/ztunnel.
// - The caller's node is never taken from the request: istiod reads the pod name and UID the apiserver puts in the
//   TokenReview's status.user.extra (authentication.kubernetes.io/pod-name, pod-uid; present only for pod-bound
//   tokens), looks that pod up, requires its UID and service account to match the token's, and uses its
//   spec.nodeName. A token with no pod binding finds no pod and is refused. We also accept the node-name extra
//   (apiservers 1.30+, a token bound to a pod or node), and when both are present require them to agree.
// - The requested identity must parse as spiffe://<td>/ns/<ns>/sa/<sa> (spiffe.ParseIdentity), and at least one pod
//   of that namespace/service account, not in phase Failed (the informer's field selector status.phase!=Failed),
//   must have spec.nodeName equal to the caller's node. Pods without a nodeName or service account never match.
// - Every impersonation failure is Unauthenticated in istiod, with an opaque message; we keep the codes for the
//   authorisation refusals and say what was wrong (the caller learns nothing it could not see from its own node),
//   INVALID_ARGUMENT for a malformed ImpersonatedIdentity, and UNAVAILABLE when the apiserver could not be asked (a
//   lookup error refuses; it never allows).
// - istiod checks the trust domain nowhere here; we require the impersonated ID to be in our trust domain (the leaf
//   policy would refuse any other anyway).
// - istiod answers from a watch-backed pod cache; we ask the apiserver per request (the caller pod's node is cached
//   by UID: a pod never changes node), with a field-selected, paged and bounded list.
import { HttpStatusError } from "../net/http-json.js";
import type { KubeClient } from "../kube/client.js";
import type { ReviewedIdentity } from "../kube/token-review.js";
import { systemClock, type Clock } from "../util/clock.js";

/** A namespace/service account pair, e.g. istio-system/ztunnel. */
export interface NodeAccount {
  namespace: string;
  serviceAccount: string;
}

/** Istio's default for ambient (its chart's CA_TRUSTED_NODE_ACCOUNTS). */
export const DEFAULT_TRUSTED_NODE_AGENTS = "istio-system/ztunnel";
/** The request metadata field istiod reads (pkg/security.ImpersonatedIdentity). */
export const IMPERSONATED_IDENTITY = "ImpersonatedIdentity";

const DNS_LABEL = /^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?$/;

/** Parses `ns/sa[,ns/sa]` (the --trusted-node-agents value); throws naming the bad entry and the expected form. */
export function parseNodeAccounts(value: string): NodeAccount[] {
  const out: NodeAccount[] = [];
  for (const raw of value.split(",")) {
    const entry = raw.trim();
    if (!entry) continue;
    const [ns = "", sa = "", more] = entry.split("/");
    if (more !== undefined || !DNS_LABEL.test(ns) || !DNS_SUBDOMAIN.test(sa))
      throw new Error(`"${entry}" is not namespace/serviceaccount; expected e.g. istio-system/ztunnel`);
    if (!out.some((a) => a.namespace === ns && a.serviceAccount === sa))
      out.push({ namespace: ns, serviceAccount: sa });
  }
  return out;
}

export type NodeAuthFailure =
  | "impersonation_invalid"
  | "impersonation_not_trusted"
  | "impersonation_unbound_token"
  | "impersonation_caller_pod"
  | "impersonation_not_on_node"
  | "impersonation_check_failed";

export class NodeAuthorizationError extends Error {
  override readonly name = "NodeAuthorizationError";
  constructor(
    readonly reason: NodeAuthFailure,
    readonly code: "INVALID_ARGUMENT" | "UNAUTHENTICATED" | "UNAVAILABLE",
    message: string,
  ) {
    super(message);
  }
}

/**
 * The ImpersonatedIdentity of a request's metadata Struct (unwrapped to a plain object), or undefined when absent or
 * empty (istiod's GetStringValue() == "" means none). Anything but a string is refused rather than ignored.
 */
export function impersonatedIdentityOf(metadata: unknown): string | undefined {
  if (metadata === undefined || metadata === null || typeof metadata !== "object") return undefined;
  const v = (metadata as Record<string, unknown>)[IMPERSONATED_IDENTITY];
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v !== "string")
    throw new NodeAuthorizationError(
      "impersonation_invalid",
      "INVALID_ARGUMENT",
      `metadata.${IMPERSONATED_IDENTITY} is not a string; expected spiffe://<trust domain>/ns/<namespace>/sa/<service account>`,
    );
  return v;
}

/** spiffe://<td>/ns/<ns>/sa/<sa> in `trustDomain` → its namespace and service account; throws INVALID_ARGUMENT. */
export function parseWorkloadSpiffeId(id: string, trustDomain: string): NodeAccount {
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id);
  const shown = printable(id);
  if (!m || !DNS_LABEL.test(m[2]!) || !DNS_SUBDOMAIN.test(m[3]!))
    throw new NodeAuthorizationError(
      "impersonation_invalid",
      "INVALID_ARGUMENT",
      `metadata.${IMPERSONATED_IDENTITY} ${shown} is not a workload SPIFFE ID; expected spiffe://${trustDomain}/ns/<namespace>/sa/<service account>`,
    );
  if (m[1] !== trustDomain)
    throw new NodeAuthorizationError(
      "impersonation_invalid",
      "INVALID_ARGUMENT",
      `metadata.${IMPERSONATED_IDENTITY} ${shown} is outside trust domain ${trustDomain}; expected spiffe://${trustDomain}/ns/<namespace>/sa/<service account>`,
    );
  return { namespace: m[2]!, serviceAccount: m[3]! };
}

/** What the node check needs to know about one pod. */
export interface PodFacts {
  uid: string;
  serviceAccount: string;
  nodeName: string;
}

/** Pod lookups in one cluster (the cluster whose apiserver reviewed the caller's token). */
export interface PodDirectory {
  /** The pod, or undefined when it does not exist; throws when the apiserver cannot be asked. */
  getPod(namespace: string, name: string): Promise<PodFacts | undefined>;
  /** Whether a pod (not Failed) of namespace/serviceAccount has spec.nodeName = node; throws when it cannot tell. */
  serviceAccountOnNode(node: string, namespace: string, serviceAccount: string): Promise<boolean>;
}

/** Pods listed per page, and pages read, for one node-and-namespace lookup: 1000 pods, far above a node's pod cap. */
const POD_PAGE = 250;
const POD_PAGES = 4;

/** PodDirectory over the apiserver: GET one pod; list a namespace's pods field-selected by node, paged and bounded. */
export class ApiserverPodDirectory implements PodDirectory {
  constructor(private readonly kube: KubeClient) {}

  async getPod(namespace: string, name: string): Promise<PodFacts | undefined> {
    try {
      const pod = await this.kube.get<PodObject>(
        `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`,
      );
      return podFacts(pod);
    } catch (err) {
      if (err instanceof HttpStatusError && err.status === 404) return undefined;
      throw err;
    }
  }

  async serviceAccountOnNode(node: string, namespace: string, serviceAccount: string): Promise<boolean> {
    const selector = encodeURIComponent(`spec.nodeName=${node},status.phase!=Failed`);
    let cont: string | undefined;
    for (let page = 0; page < POD_PAGES; page++) {
      const list = await this.kube.get<{ items?: PodObject[]; metadata?: { continue?: string } }>(
        `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods?fieldSelector=${selector}&limit=${POD_PAGE}` +
          (cont ? `&continue=${encodeURIComponent(cont)}` : ""),
      );
      for (const pod of list.items ?? []) {
        const f = podFacts(pod);
        // The field selector already filtered; checking again keeps a misbehaving server from widening the match.
        if (f.nodeName === node && f.serviceAccount === serviceAccount) return true;
      }
      cont = list.metadata?.continue || undefined;
      if (!cont) return false;
    }
    throw new Error(
      `more than ${POD_PAGE * POD_PAGES} pods of namespace ${namespace} on node ${node}; the check stops there`,
    );
  }
}

interface PodObject {
  metadata?: { uid?: string };
  spec?: { nodeName?: string; serviceAccountName?: string };
}

function podFacts(pod: PodObject): PodFacts {
  return {
    uid: pod.metadata?.uid ?? "",
    serviceAccount: pod.spec?.serviceAccountName ?? "",
    nodeName: pod.spec?.nodeName ?? "",
  };
}

/** How long a caller pod's node is remembered (by pod UID: a pod's node never changes once set). */
const CALLER_NODE_CACHE_MS = 5 * 60_000;
const CALLER_NODE_CACHE_MAX = 10_000;

export class NodeAuthorizer {
  private readonly callerNodes = new Map<string, { node: string; until: number }>();

  constructor(
    readonly trusted: readonly NodeAccount[],
    private readonly trustDomain: string,
    private readonly clock: Clock = systemClock,
  ) {}

  isTrusted(who: { namespace: string; serviceAccount: string }): boolean {
    return this.trusted.some((a) => a.namespace === who.namespace && a.serviceAccount === who.serviceAccount);
  }

  /**
   * The SPIFFE ID to certify for `who` (reviewed by `cluster`'s apiserver): its own, or `impersonated` when `who` is a
   * trusted node agent and a pod of that identity runs on the caller's own node. Throws NodeAuthorizationError.
   */
  async identityFor(
    who: ReviewedIdentity,
    impersonated: string | undefined,
    pods: PodDirectory,
    cluster: string,
  ): Promise<string> {
    if (impersonated === undefined) return who.spiffeId;
    const caller = `${who.namespace}/${who.serviceAccount}`;
    if (!this.isTrusted(who))
      throw new NodeAuthorizationError(
        "impersonation_not_trusted",
        "UNAUTHENTICATED",
        `caller ${caller} may only request its own identity ${who.spiffeId}; metadata.${IMPERSONATED_IDENTITY} is ` +
          `accepted only from the node agents in --trusted-node-agents (${this.trustedText()})`,
      );
    const target = parseWorkloadSpiffeId(impersonated, this.trustDomain);
    const node = await this.callerNode(who, pods, cluster);
    let found: boolean;
    try {
      found = await pods.serviceAccountOnNode(node, target.namespace, target.serviceAccount);
    } catch (err) {
      throw lookupFailed(err, `the pods of ${target.namespace} on node ${node}`, cluster);
    }
    if (!found)
      throw new NodeAuthorizationError(
        "impersonation_not_on_node",
        "UNAUTHENTICATED",
        `node agent ${caller} asked for ${impersonated}, but no pod of service account ` +
          `${target.namespace}/${target.serviceAccount} runs on its node ${node} (cluster ${cluster}); a node agent ` +
          "may only request identities of pods on its own node",
      );
    return impersonated;
  }

  /** The caller's node, from what its bound token proves (never from the request). */
  private async callerNode(who: ReviewedIdentity, pods: PodDirectory, cluster: string): Promise<string> {
    const caller = `${who.namespace}/${who.serviceAccount}`;
    if (!who.podName || !who.podUid) {
      if (who.nodeName && DNS_SUBDOMAIN.test(who.nodeName)) return who.nodeName;
      throw new NodeAuthorizationError(
        "impersonation_unbound_token",
        "UNAUTHENTICATED",
        `node agent ${caller}'s token is not bound to a pod or node (TokenReview returned no ` +
          "authentication.kubernetes.io/pod-name, pod-uid or node-name); expected the pod's projected " +
          "service-account token, so its node can be proven",
      );
    }
    const key = `${cluster}\u0000${who.namespace}\u0000${who.podName}\u0000${who.podUid}`;
    const now = this.clock.now();
    const hit = this.callerNodes.get(key);
    let node: string;
    if (hit && hit.until > now) node = hit.node;
    else {
      let pod: PodFacts | undefined;
      try {
        pod = await pods.getPod(who.namespace, who.podName);
      } catch (err) {
        throw lookupFailed(err, `the caller's pod ${who.namespace}/${who.podName}`, cluster);
      }
      const refuse = (why: string) =>
        new NodeAuthorizationError(
          "impersonation_caller_pod",
          "UNAUTHENTICATED",
          `node agent ${caller}: ${why} (cluster ${cluster}); retry once the pod is current`,
        );
      if (!pod) throw refuse(`its pod ${who.namespace}/${who.podName} (from its token) does not exist`);
      if (pod.uid !== who.podUid)
        throw refuse(`its pod ${who.namespace}/${who.podName} has UID ${pod.uid}, not ${who.podUid} (from its token)`);
      if (pod.serviceAccount !== who.serviceAccount)
        throw refuse(
          `its pod ${who.namespace}/${who.podName} runs as service account ${pod.serviceAccount || "(none)"}`,
        );
      if (!pod.nodeName || !DNS_SUBDOMAIN.test(pod.nodeName))
        throw refuse(`its pod ${who.namespace}/${who.podName} is not scheduled to a node`);
      node = pod.nodeName;
      if (this.callerNodes.size >= CALLER_NODE_CACHE_MAX) this.callerNodes.clear();
      this.callerNodes.set(key, { node, until: now + CALLER_NODE_CACHE_MS });
    }
    if (who.nodeName && who.nodeName !== node)
      throw new NodeAuthorizationError(
        "impersonation_caller_pod",
        "UNAUTHENTICATED",
        `node agent ${caller}: its token names node ${printable(who.nodeName)} but its pod runs on ${node} (cluster ${cluster})`,
      );
    return node;
  }

  private trustedText(): string {
    return this.trusted.map((a) => `${a.namespace}/${a.serviceAccount}`).join(", ") || "none configured";
  }
}

function lookupFailed(err: unknown, what: string, cluster: string): NodeAuthorizationError {
  const forbidden = err instanceof HttpStatusError && err.status === 403;
  const detail = ((err as Error).message || String(err)).split("\n")[0]!.slice(0, 300);
  return new NodeAuthorizationError(
    "impersonation_check_failed",
    "UNAVAILABLE",
    `could not read ${what} from cluster ${cluster}'s apiserver to verify the node agent's request: ${detail}` +
      (forbidden
        ? "; the agent needs pods get/list there (manifests/base/istio-ca-tokenreview.yaml, chart rbac.nodeAuthorization)"
        : "; retry"),
  );
}

/** Text from a request, made safe for one log line or status message: printable ASCII, at most 200 chars. */
function printable(text: string): string {
  const clean = text.replace(/[^\x20-\x7e]/g, "?");
  return clean.length > 200 ? `${clean.slice(0, 200)}…` : clean;
}
