// `istiod-vault-agent inject`: patches an istiod Deployment (by name, or every istiod of a revision) so its pod runs
// the agent. The pod-template surgery is a pure function of the Deployment object (injectPodSpec / removeInjection);
// runInject only reads, compares and writes with optimistic concurrency.
//
// What injection does to the pod template:
//   - the `cacerts` volume (the Istio chart's optional Secret) becomes an in-memory emptyDir the agent fills;
//   - an init container (`init`: fill cacerts, exit) and the sidecar (`sidecar`: serve and renew) are added, the
//     sidecar as a native sidecar (restartable init container gated by a startupProbe) or as a regular container;
//   - a projected service-account token for Vault, an emptyDir for the agent's socket (also mounted in discovery);
//   - pod fsGroup 1337 so istiod (group 1337) can read the 0640 cacerts files;
//   - an annotation holding the original values that were replaced, so --remove restores the original exactly.
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { isDeepStrictEqual, parseArgs } from "node:util";
import { ConfigError } from "../config/config.js";
import { KubeClient } from "../kube/client.js";
import { kubeClientFromKubeconfig } from "../kube/kubeconfig.js";

export interface InjectOptions {
  namespace: string;
  /** Deployment name; ignored when `revision` is set. */
  name?: string;
  /** Select every istiod Deployment labelled istio.io/rev=<revision> instead of one by name. */
  revision?: string;
  image: string;
  vaultAddress: string;
  /** ConfigMap with key ca.crt, mounted for --vault-cacert. */
  vaultCaConfigMap?: string;
  /** Vault Kubernetes-auth role (default istiod-agent). */
  role: string;
  /** Audience of the projected service-account token Vault verifies (default vault). */
  audience: string;
  caPath: string;
  trustDomain?: string;
  /** Port of the agent's /healthz, /readyz and /metrics (15300). */
  httpPort: number;
  /** Run the sidecar as a Kubernetes native sidecar; "auto" uses one when the apiserver is 1.29 or newer. */
  nativeSidecar: boolean | "auto";
  remove: boolean;
  dryRun: boolean;
  /** Extra flags appended to both agent containers' arguments. */
  extraArgs?: string[];
  /** Kubeconfig to use (CLI only); otherwise $KUBECONFIG, the in-cluster service account, or ~/.kube/config. */
  kubeconfig?: string;
  /** --help was given (CLI only); nothing else is validated then. */
  help?: boolean;
}

// --- names and paths ------------------------------------------------------------------------------------------------

export const INJECTED_ANNOTATION = "istiod-vault-agent.io/injected";
export const INIT_CONTAINER = "istiod-vault-agent-init";
export const SIDECAR_CONTAINER = "istiod-vault-agent";
export const DISCOVERY_CONTAINER = "discovery";
export const CACERTS_VOLUME = "cacerts";
export const TOKEN_VOLUME = "vault-token";
export const SOCKET_VOLUME = "istiod-vault-agent-socket";
export const VAULT_CA_VOLUME = "istiod-vault-agent-vault-ca";
export const CACERTS_DIR = "/etc/cacerts";
export const TOKEN_DIR = "/var/run/secrets/tokens";
export const TOKEN_PATH = `${TOKEN_DIR}/vault-token`;
export const SOCKET_DIR = "/var/run/istiod-vault-agent";
export const SOCKET_PATH = `${SOCKET_DIR}/agent.sock`;
export const VAULT_CA_DIR = "/etc/istiod-vault-agent/vault-ca";
export const AGENT_UID = 1337;
export const DEFAULT_IMAGE = "istiod-vault-agent:0.1.0";
export const REVISION_LABEL = "istio.io/rev";

const AGENT_VOLUMES = [TOKEN_VOLUME, SOCKET_VOLUME, VAULT_CA_VOLUME];
const AGENT_CONTAINERS = [INIT_CONTAINER, SIDECAR_CONTAINER];
/** Ports istiod's discovery container listens on in the shared pod network namespace. */
const ISTIOD_PORTS = [8080, 15010, 15012, 15014, 15017, 15053];

// --- loose Kubernetes shapes (only what is touched; everything else is carried through untouched) -------------------

type Obj = Record<string, unknown>;

interface Named extends Obj {
  name: string;
}

interface Container extends Named {
  volumeMounts?: Named[];
}

interface PodSpec extends Obj {
  containers: Container[];
  initContainers?: Container[];
  volumes?: Named[];
  securityContext?: Obj;
}

interface ObjectMeta extends Obj {
  name?: string;
  namespace?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  resourceVersion?: string;
}

interface Deployment extends Obj {
  metadata: ObjectMeta;
  spec: Obj & { template: Obj & { metadata?: ObjectMeta; spec: PodSpec } };
}

/** What the annotation records: the original values injection replaced, and the fields it created. */
interface InjectionRecord {
  version: 1;
  /** The pod's original `cacerts` volume; null when there was none. */
  cacertsVolume: Obj | null;
  /** The pod's original securityContext.fsGroup; null when unset. */
  fsGroup: number | null;
  /** Discovery had no mount of `cacerts`; one was added at /etc/cacerts. */
  addedDiscoveryCacertsMount: boolean;
  /** Fields that did not exist before injection; removal deletes them again when they end up empty. */
  created: CreatedField[];
}

type CreatedField =
  | "deployment.annotations"
  | "template.metadata"
  | "template.annotations"
  | "pod.securityContext"
  | "pod.initContainers"
  | "pod.volumes"
  | "discovery.volumeMounts";

const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

function asDeployment(input: unknown): Deployment {
  const d = input as Partial<Deployment> | null;
  const what = isObj(d) && typeof d.kind === "string" ? d.kind : typeof input;
  if (!isObj(d) || (d.kind !== undefined && d.kind !== "Deployment"))
    throw new Error(`not a Deployment (got ${what}); expected an apps/v1 Deployment object`);
  if (!isObj(d.metadata)) throw new Error("not a Deployment: metadata is missing");
  const spec = d.spec;
  const template = isObj(spec) ? spec.template : undefined;
  if (!isObj(template) || !isObj(template.spec) || !Array.isArray((template.spec as Obj).containers))
    throw new Error(`Deployment ${describeDeployment(d as Deployment)}: spec.template.spec.containers is missing`);
  return d as Deployment;
}

function describeDeployment(d: Deployment): string {
  return `${d.metadata?.namespace ?? "?"}/${d.metadata?.name ?? "?"}`;
}

function podSpecOf(d: Deployment): PodSpec {
  return d.spec.template.spec;
}

function discoveryOf(d: Deployment): Container {
  const c = podSpecOf(d).containers.find((x) => x.name === DISCOVERY_CONTAINER);
  if (!c)
    throw new Error(
      `Deployment ${describeDeployment(d)} has no container named "${DISCOVERY_CONTAINER}"; is it an istiod Deployment?`,
    );
  return c;
}

/** Reads the injection record from the pod template's annotation (or the Deployment's); undefined when absent. */
function readRecord(d: Deployment): InjectionRecord | undefined {
  const raw =
    d.spec.template.metadata?.annotations?.[INJECTED_ANNOTATION] ?? d.metadata.annotations?.[INJECTED_ANNOTATION];
  if (raw === undefined) return undefined;
  let rec: unknown;
  try {
    rec = JSON.parse(raw);
  } catch {
    throw new Error(
      `Deployment ${describeDeployment(d)}: annotation ${INJECTED_ANNOTATION} is not JSON; it was edited by hand?`,
    );
  }
  if (!isObj(rec) || rec.version !== 1 || !Array.isArray(rec.created))
    throw new Error(
      `Deployment ${describeDeployment(d)}: annotation ${INJECTED_ANNOTATION} is not a version-1 injection record`,
    );
  return rec as unknown as InjectionRecord;
}

/** True when the Deployment carries the injection annotation. */
export function isInjected(deployment: unknown): boolean {
  return readRecord(asDeployment(deployment)) !== undefined;
}

// --- the agent containers -------------------------------------------------------------------------------------------

function agentArgs(command: "init" | "sidecar", opts: InjectOptions): string[] {
  return [
    command,
    `--cacerts-dir=${CACERTS_DIR}`,
    `--vault-addr=${opts.vaultAddress}`,
    `--auth-role=${opts.role}`,
    `--ca-path=${opts.caPath}`,
    `--token-path=${TOKEN_PATH}`,
    `--socket=${SOCKET_PATH}`,
    `--http-addr=0.0.0.0:${opts.httpPort}`,
    ...(opts.vaultCaConfigMap ? [`--vault-cacert=${VAULT_CA_DIR}/ca.crt`] : []),
    ...(opts.trustDomain ? [`--trust-domain=${opts.trustDomain}`] : []),
    ...(opts.extraArgs ?? []),
  ];
}

function agentContainer(kind: "init" | "sidecar", opts: InjectOptions, native: boolean): Container {
  const httpGet = (path: string) => ({ path, port: opts.httpPort, scheme: "HTTP" });
  const c: Container = {
    name: kind === "init" ? INIT_CONTAINER : SIDECAR_CONTAINER,
    image: opts.image,
    args: agentArgs(kind, opts),
    env: [
      { name: "POD_NAME", valueFrom: { fieldRef: { apiVersion: "v1", fieldPath: "metadata.name" } } },
      { name: "POD_NAMESPACE", valueFrom: { fieldRef: { apiVersion: "v1", fieldPath: "metadata.namespace" } } },
    ],
    resources: { requests: { cpu: "10m", memory: "64Mi" }, limits: { memory: "256Mi" } },
    securityContext: {
      runAsNonRoot: true,
      runAsUser: AGENT_UID,
      runAsGroup: AGENT_UID,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"] },
    },
    volumeMounts: [
      { name: CACERTS_VOLUME, mountPath: CACERTS_DIR },
      { name: TOKEN_VOLUME, mountPath: TOKEN_DIR, readOnly: true },
      { name: SOCKET_VOLUME, mountPath: SOCKET_DIR },
      ...(opts.vaultCaConfigMap ? [{ name: VAULT_CA_VOLUME, mountPath: VAULT_CA_DIR, readOnly: true }] : []),
    ],
  };
  if (kind === "sidecar") {
    c.ports = [{ name: "agent-http", containerPort: opts.httpPort, protocol: "TCP" }];
    if (native) {
      c.restartPolicy = "Always";
      // Discovery starts only once this passes: the agent holds a valid intermediate. Up to 5 minutes for Vault.
      c.startupProbe = { httpGet: httpGet("/readyz"), periodSeconds: 2, timeoutSeconds: 2, failureThreshold: 150 };
    }
    c.readinessProbe = { httpGet: httpGet("/readyz"), periodSeconds: 5, timeoutSeconds: 2, failureThreshold: 3 };
    c.livenessProbe = { httpGet: httpGet("/healthz"), periodSeconds: 10, timeoutSeconds: 2, failureThreshold: 3 };
  }
  return c;
}

function agentVolumes(opts: InjectOptions): Named[] {
  return [
    {
      name: TOKEN_VOLUME,
      projected: {
        sources: [{ serviceAccountToken: { audience: opts.audience, expirationSeconds: 3600, path: "vault-token" } }],
      },
    },
    { name: SOCKET_VOLUME, emptyDir: {} },
    ...(opts.vaultCaConfigMap
      ? [
          {
            name: VAULT_CA_VOLUME,
            configMap: { name: opts.vaultCaConfigMap, items: [{ key: "ca.crt", path: "ca.crt" }] },
          },
        ]
      : []),
  ];
}

// --- inject / remove (pure) -----------------------------------------------------------------------------------------

/**
 * Returns a deep copy of `deployment` whose pod runs the agent. An already injected Deployment whose agent parts match
 * `opts` comes back deep-equal to the input (fields the apiserver defaulted are left alone); when options changed, the
 * agent parts are rebuilt and the record of the original values is kept.
 */
export function injectPodSpec(deployment: unknown, opts: InjectOptions): unknown {
  if (opts.nativeSidecar === "auto")
    throw new Error('injectPodSpec needs nativeSidecar resolved to true or false (runInject resolves "auto")');
  const input = asDeployment(deployment);
  if (readRecord(input) === undefined) return applyInjection(structuredClone(input), opts);
  const desired = applyInjection(asDeployment(removeInjection(input)), opts);
  // Everything injection sets is already there (the stored object may have more: apiserver defaults).
  return covers(input, desired) ? structuredClone(input) : desired;
}

/** Mutates `d` (a private copy): adds the agent. `d` must not be injected. */
function applyInjection(d: Deployment, opts: InjectOptions): Deployment {
  const native = opts.nativeSidecar === true;
  const pod = podSpecOf(d);
  const discovery = discoveryOf(d);
  for (const name of AGENT_VOLUMES)
    if (pod.volumes?.some((v) => v.name === name))
      throw new Error(
        `Deployment ${describeDeployment(d)} already has a volume named "${name}" but no ${INJECTED_ANNOTATION} annotation; refusing to replace it`,
      );
  for (const name of AGENT_CONTAINERS)
    if ([...pod.containers, ...(pod.initContainers ?? [])].some((c) => c.name === name))
      throw new Error(
        `Deployment ${describeDeployment(d)} already has a container named "${name}" but no ${INJECTED_ANNOTATION} annotation; remove it first`,
      );

  const created: CreatedField[] = [];
  const record: InjectionRecord = {
    version: 1,
    cacertsVolume: null,
    fsGroup: null,
    addedDiscoveryCacertsMount: false,
    created,
  };

  // (a) cacerts: an in-memory emptyDir in place of the Secret, at the same position.
  if (!pod.volumes) {
    pod.volumes = [];
    created.push("pod.volumes");
  }
  const cacerts: Named = { name: CACERTS_VOLUME, emptyDir: { medium: "Memory" } };
  const at = pod.volumes.findIndex((v) => v.name === CACERTS_VOLUME);
  if (at >= 0) {
    record.cacertsVolume = structuredClone(pod.volumes[at]!);
    pod.volumes[at] = cacerts;
  } else {
    pod.volumes.push(cacerts);
  }
  if (!discovery.volumeMounts) {
    discovery.volumeMounts = [];
    created.push("discovery.volumeMounts");
  }
  if (!discovery.volumeMounts.some((m) => m.name === CACERTS_VOLUME)) {
    discovery.volumeMounts.push({ name: CACERTS_VOLUME, mountPath: CACERTS_DIR, readOnly: true });
    record.addedDiscoveryCacertsMount = true;
  }
  // (c), (d) token and socket volumes; the socket is shared with discovery.
  pod.volumes.push(...agentVolumes(opts));
  discovery.volumeMounts.push({ name: SOCKET_VOLUME, mountPath: SOCKET_DIR });

  // (b) init container, then the sidecar (native: a restartable init container after it).
  if (!pod.initContainers) {
    pod.initContainers = [];
    created.push("pod.initContainers");
  }
  pod.initContainers.push(agentContainer("init", opts, native));
  if (native) pod.initContainers.push(agentContainer("sidecar", opts, native));
  else pod.containers.push(agentContainer("sidecar", opts, native));

  // (e) fsGroup for istiod's group.
  if (!pod.securityContext) {
    pod.securityContext = {};
    created.push("pod.securityContext");
  }
  if (typeof pod.securityContext.fsGroup === "number") record.fsGroup = pod.securityContext.fsGroup;
  pod.securityContext.fsGroup = AGENT_UID;

  // (g) the record, on the pod template and on the Deployment.
  const template = d.spec.template;
  if (!template.metadata) {
    template.metadata = {};
    created.push("template.metadata");
  }
  if (!template.metadata.annotations) {
    template.metadata.annotations = {};
    created.push("template.annotations");
  }
  if (!d.metadata.annotations) {
    d.metadata.annotations = {};
    created.push("deployment.annotations");
  }
  const json = JSON.stringify(record);
  template.metadata.annotations[INJECTED_ANNOTATION] = json;
  d.metadata.annotations[INJECTED_ANNOTATION] = json;
  return d;
}

/**
 * Returns a deep copy of `deployment` without the agent: the original `cacerts` volume, fsGroup and every other
 * replaced value come back from the annotation, and everything injection added is removed. A Deployment that was never
 * injected comes back unchanged.
 */
export function removeInjection(deployment: unknown): unknown {
  const d = structuredClone(asDeployment(deployment));
  const record = readRecord(d);
  const pod = podSpecOf(d);
  const hasAgentParts =
    [...pod.containers, ...(pod.initContainers ?? [])].some((c) => AGENT_CONTAINERS.includes(c.name)) ||
    (pod.volumes ?? []).some((v) => AGENT_VOLUMES.includes(v.name));
  if (!record && !hasAgentParts) return d;
  const created = new Set(record?.created ?? []);
  const notOurs = (x: Named) => !AGENT_CONTAINERS.includes(x.name);

  pod.containers = pod.containers.filter(notOurs);
  if (pod.initContainers) {
    pod.initContainers = pod.initContainers.filter(notOurs);
    if (pod.initContainers.length === 0 && created.has("pod.initContainers")) delete pod.initContainers;
  }

  if (pod.volumes) {
    pod.volumes = pod.volumes.filter((v) => !AGENT_VOLUMES.includes(v.name));
    if (record) {
      const at = pod.volumes.findIndex((v) => v.name === CACERTS_VOLUME);
      if (record.cacertsVolume) {
        if (at >= 0) pod.volumes[at] = record.cacertsVolume as Named;
        else pod.volumes.push(record.cacertsVolume as Named);
      } else if (at >= 0) {
        pod.volumes.splice(at, 1);
      }
    }
    if (pod.volumes.length === 0 && created.has("pod.volumes")) delete pod.volumes;
  }

  const discovery = pod.containers.find((c) => c.name === DISCOVERY_CONTAINER);
  if (discovery?.volumeMounts) {
    discovery.volumeMounts = discovery.volumeMounts.filter(
      (m) => m.name !== SOCKET_VOLUME && !(record?.addedDiscoveryCacertsMount && m.name === CACERTS_VOLUME),
    );
    if (discovery.volumeMounts.length === 0 && created.has("discovery.volumeMounts")) delete discovery.volumeMounts;
  }

  if (record && pod.securityContext) {
    if (record.fsGroup === null) delete pod.securityContext.fsGroup;
    else pod.securityContext.fsGroup = record.fsGroup;
    if (Object.keys(pod.securityContext).length === 0 && created.has("pod.securityContext")) delete pod.securityContext;
  }

  const template = d.spec.template;
  if (template.metadata?.annotations) {
    delete template.metadata.annotations[INJECTED_ANNOTATION];
    if (Object.keys(template.metadata.annotations).length === 0 && created.has("template.annotations"))
      delete template.metadata.annotations;
  }
  if (template.metadata && Object.keys(template.metadata).length === 0 && created.has("template.metadata"))
    delete template.metadata;
  if (d.metadata.annotations) {
    delete d.metadata.annotations[INJECTED_ANNOTATION];
    if (Object.keys(d.metadata.annotations).length === 0 && created.has("deployment.annotations"))
      delete d.metadata.annotations;
  }
  return d;
}

/** Every field of `wanted` is present with the same value in `actual` (arrays: same length, element-wise). */
function covers(actual: unknown, wanted: unknown): boolean {
  if (Array.isArray(wanted))
    return Array.isArray(actual) && actual.length === wanted.length && wanted.every((w, i) => covers(actual[i], w));
  if (isObj(wanted)) return isObj(actual) && Object.entries(wanted).every(([k, v]) => covers(actual[k], v));
  return actual === wanted;
}

// --- a readable diff for --dry-run ----------------------------------------------------------------------------------

/** Lines describing how `after` differs from `before`; arrays of named objects are matched by name. */
export function describeChanges(before: unknown, after: unknown, path = ""): string[] {
  if (isDeepStrictEqual(before, after)) return [];
  const show = (v: unknown) => JSON.stringify(v);
  if (isObj(before) && isObj(after)) {
    const lines: string[] = [];
    for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
      const p = path ? `${path}.${key}` : key;
      if (!(key in after)) lines.push(`- ${p}: ${show(before[key])}`);
      else if (!(key in before)) lines.push(`+ ${p}: ${show(after[key])}`);
      else lines.push(...describeChanges(before[key], after[key], p));
    }
    return lines;
  }
  const named = (v: unknown): v is Named[] =>
    Array.isArray(v) && v.every((x) => isObj(x) && typeof x.name === "string");
  if (named(before) && named(after)) {
    const lines: string[] = [];
    const names = [...new Set([...before.map((x) => x.name), ...after.map((x) => x.name)])];
    for (const name of names) {
      const [b, a] = [before.find((x) => x.name === name), after.find((x) => x.name === name)];
      const p = `${path}[name=${name}]`;
      if (!a) lines.push(`- ${p}: ${show(b)}`);
      else if (!b) lines.push(`+ ${p}: ${show(a)}`);
      else lines.push(...describeChanges(b, a, p));
    }
    if (lines.length === 0)
      lines.push(`~ ${path}: order ${show(before.map((x) => x.name))} → ${show(after.map((x) => x.name))}`);
    return lines;
  }
  return [`~ ${path}: ${show(before)} → ${show(after)}`];
}

// --- talking to the apiserver ---------------------------------------------------------------------------------------

const MAX_ATTEMPTS = 5;

const deploymentPath = (namespace: string, name: string) =>
  `/apis/apps/v1/namespaces/${encodeURIComponent(namespace)}/deployments/${encodeURIComponent(name)}`;

async function readDeployment(kube: KubeClient, namespace: string, name: string): Promise<Deployment> {
  const res = await kube.request<Deployment>("GET", deploymentPath(namespace, name), undefined, {
    acceptStatuses: [404],
  });
  if (res.status === 404) throw new Error(`Deployment ${namespace}/${name} not found`);
  return withTypeMeta(res.body);
}

/** List items carry no apiVersion/kind; PUT bodies should. */
function withTypeMeta(d: Deployment): Deployment {
  return { apiVersion: "apps/v1", kind: "Deployment", ...d };
}

/** Native sidecars (restartable init containers) are on by default from Kubernetes 1.29. */
export async function supportsNativeSidecars(kube: KubeClient): Promise<boolean> {
  const v = await kube.get<{ major?: string; minor?: string; gitVersion?: string }>("/version");
  const major = Number.parseInt(v.major ?? "", 10);
  const minor = Number.parseInt(v.minor ?? "", 10);
  if (!Number.isFinite(major) || !Number.isFinite(minor))
    throw new Error(
      `cannot tell the Kubernetes version from /version (${JSON.stringify(v)}); pass --native-sidecar=true or false`,
    );
  return major > 1 || (major === 1 && minor >= 29);
}

/**
 * Injects the agent into (or, with `remove`, removes it from) the selected istiod Deployment(s). `changed` is true when
 * a Deployment differed from the wanted state: it was written, or with `dryRun` it would have been.
 */
export async function runInject(
  kube: KubeClient,
  opts: InjectOptions,
  out: (line: string) => void,
): Promise<{ changed: boolean; deployments: string[] }> {
  const ns = opts.namespace;
  let targets: Deployment[];
  if (opts.revision) {
    const selector = `${REVISION_LABEL}=${opts.revision}`;
    const list = await kube.get<{ items?: Deployment[] }>(
      `/apis/apps/v1/namespaces/${encodeURIComponent(ns)}/deployments?labelSelector=${encodeURIComponent(selector)}`,
    );
    const items = (list.items ?? []).map(withTypeMeta);
    targets = items.filter((d) =>
      (d.spec?.template?.spec?.containers ?? []).some((c) => c.name === DISCOVERY_CONTAINER),
    );
    for (const d of items)
      if (!targets.includes(d))
        out(`deployment ${ns}/${d.metadata.name}: skipped (no "${DISCOVERY_CONTAINER}" container)`);
    if (targets.length === 0) throw new Error(`no istiod Deployment in namespace ${ns} has the label ${selector}`);
  } else {
    targets = [await readDeployment(kube, ns, opts.name ?? "istiod")];
  }

  let native = false;
  if (!opts.remove) {
    native = opts.nativeSidecar === "auto" ? await supportsNativeSidecars(kube) : opts.nativeSidecar;
    if (opts.nativeSidecar === "auto")
      out(`kubernetes ${native ? "supports" : "does not support"} native sidecars: using ${sidecarMode(native)}`);
  }
  const resolved: InjectOptions = { ...opts, nativeSidecar: native };

  let changed = false;
  const deployments: string[] = [];
  for (const first of targets) {
    let current = first;
    const name = current.metadata.name ?? "";
    const id = `${ns}/${name}`;
    deployments.push(id);
    for (let attempt = 1; ; attempt++) {
      const wanted = asDeployment(opts.remove ? removeInjection(current) : injectPodSpec(current, resolved));
      if (isDeepStrictEqual(wanted, current)) {
        out(`deployment ${id}: ${opts.remove ? "not injected; nothing to remove" : "already injected and up to date"}`);
        break;
      }
      changed = true;
      if (opts.dryRun) {
        out(
          `deployment ${id}: would ${opts.remove ? "remove the agent" : "inject the agent"} (dry run; nothing written):`,
        );
        for (const line of describeChanges(current, wanted)) out(`  ${line}`);
        break;
      }
      const res = await kube.request<Deployment>("PUT", deploymentPath(ns, name), wanted, { acceptStatuses: [409] });
      if (res.status === 409) {
        if (attempt >= MAX_ATTEMPTS)
          throw new Error(`deployment ${id}: still conflicting after ${MAX_ATTEMPTS} attempts; try again`);
        out(`deployment ${id}: changed while patching (conflict); re-reading (attempt ${attempt + 1})`);
        current = await readDeployment(kube, ns, name);
        continue;
      }
      const rv = `resourceVersion ${current.metadata.resourceVersion ?? "?"} → ${res.body.metadata?.resourceVersion ?? "?"}`;
      if (opts.remove) out(`deployment ${id}: removed the agent and restored the original pod template (${rv})`);
      else
        out(
          `deployment ${id}: ${readRecord(current) ? "updated" : "injected"} the agent ${opts.image} as ${sidecarMode(native)} (${rv})`,
        );
      break;
    }
  }
  return { changed, deployments };
}

function sidecarMode(native: boolean): string {
  return native ? "a native sidecar (restartable init container)" : "a sidecar container with an init container";
}

// --- flags ----------------------------------------------------------------------------------------------------------

/** Flag name → [description, kind]. One table drives parsing and --help. */
export const INJECT_FLAGS = {
  namespace: ["namespace of the istiod Deployment (default istio-system)", "string"],
  name: ["istiod Deployment name (default istiod)", "string"],
  revision: ["select every istiod Deployment labelled istio.io/rev=REVISION instead of --name", "string"],
  image: [`agent image (default ${DEFAULT_IMAGE})`, "string"],
  "vault-addr": ["Vault address the agent uses, e.g. https://vault.vault:8200 (required unless --remove)", "string"],
  "vault-ca-configmap": ["ConfigMap (key ca.crt) with the CAs that sign Vault's TLS certificate", "string"],
  "auth-role": ["Vault Kubernetes-auth role (default istiod-agent)", "string"],
  audience: ["audience of the projected service-account token for Vault (default vault)", "string"],
  "ca-path": ["Vault path that signs the intermediate (default pki/root/sign-intermediate)", "string"],
  "trust-domain": ["SPIFFE trust domain passed to the agent (default: the agent's, cluster.local)", "string"],
  "http-port": ["port of the agent's /healthz, /readyz, /metrics (default 15300)", "string"],
  "native-sidecar": ["true, false or auto (default auto: native when Kubernetes is 1.29 or newer)", "string"],
  "agent-arg": ["extra flag for both agent containers, e.g. --agent-arg=--ttl=24h (repeatable)", "multi"],
  remove: ["remove the agent and restore the original pod template", "boolean"],
  "dry-run": ["print what would change and write nothing", "boolean"],
  kubeconfig: ["kubeconfig to use (default $KUBECONFIG, in-cluster, then ~/.kube/config)", "string"],
  help: ["show this help", "boolean"],
} as const;

export function injectHelp(): string {
  return [
    "usage: istiod-vault-agent inject --vault-addr=URL [flags]",
    "       istiod-vault-agent inject --remove [flags]",
    "",
    "Patches an istiod Deployment so its pod runs the agent (init container + sidecar, in-memory cacerts, a Vault",
    "service-account token, the agent socket shared with discovery). Running it again changes nothing; --remove",
    "restores the original pod template exactly.",
    "",
    "flags:",
    ...Object.entries(INJECT_FLAGS).map(
      ([name, [desc, type]]) => `  --${name}${type === "boolean" ? "" : " VALUE"}\n      ${desc}`,
    ),
  ].join("\n");
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

export function parseInjectArgs(argv: string[]): InjectOptions {
  const options = Object.fromEntries(
    Object.entries(INJECT_FLAGS).map(([name, [, kind]]) => [
      name,
      kind === "multi" ? { type: "string" as const, multiple: true } : { type: kind },
    ]),
  );
  let values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new ConfigError([`flags: ${(err as Error).message}`]);
  }
  const str = (k: keyof typeof INJECT_FLAGS): string | undefined => {
    const v = values[k];
    return typeof v === "string" ? v : undefined;
  };
  const problems: string[] = [];
  const remove = values.remove === true;
  const opts: InjectOptions = {
    namespace: str("namespace") ?? "istio-system",
    name: str("name"),
    revision: str("revision"),
    image: str("image") ?? DEFAULT_IMAGE,
    vaultAddress: str("vault-addr") ?? "",
    vaultCaConfigMap: str("vault-ca-configmap"),
    role: str("auth-role") ?? "istiod-agent",
    audience: str("audience") ?? "vault",
    caPath: str("ca-path") ?? "pki/root/sign-intermediate",
    trustDomain: str("trust-domain"),
    httpPort: 15300,
    nativeSidecar: "auto",
    remove,
    dryRun: values["dry-run"] === true,
    extraArgs: ((values["agent-arg"] as string[] | undefined) ?? []).slice(),
    kubeconfig: str("kubeconfig"),
    help: values.help === true,
  };
  if (opts.help) return opts;

  if (!DNS_LABEL.test(opts.namespace) || opts.namespace.length > 63)
    problems.push(`--namespace: "${opts.namespace}" is not a namespace name; expected e.g. istio-system`);
  if (opts.revision !== undefined) {
    if (opts.name !== undefined)
      problems.push("--name and --revision: give one; --revision selects every istiod Deployment of that revision");
    if (!LABEL_VALUE.test(opts.revision) || opts.revision.length > 63)
      problems.push(`--revision: "${opts.revision}" is not a label value; expected e.g. 1-24-0 or canary`);
  } else {
    opts.name ??= "istiod";
    if (!DNS_SUBDOMAIN.test(opts.name) || opts.name.length > 253)
      problems.push(`--name: "${opts.name}" is not a Deployment name; expected e.g. istiod`);
  }
  if (!opts.image || /\s/.test(opts.image))
    problems.push(`--image: "${opts.image}" is not an image reference; expected e.g. ${DEFAULT_IMAGE}`);
  if (!remove) {
    if (!opts.vaultAddress)
      problems.push("--vault-addr: missing; expected the Vault URL the agent uses, e.g. https://vault.vault:8200");
    else {
      let url: URL | undefined;
      try {
        url = new URL(opts.vaultAddress);
      } catch {
        problems.push(`--vault-addr: "${opts.vaultAddress}" is not a URL; expected e.g. https://vault.vault:8200`);
      }
      if (url && url.protocol !== "https:" && url.protocol !== "http:")
        problems.push(`--vault-addr: "${opts.vaultAddress}" must be an https:// (or http://) URL`);
    }
  }
  if (opts.vaultCaConfigMap !== undefined && !DNS_SUBDOMAIN.test(opts.vaultCaConfigMap))
    problems.push(`--vault-ca-configmap: "${opts.vaultCaConfigMap}" is not a ConfigMap name; expected e.g. vault-ca`);
  if (!opts.role || /\s/.test(opts.role))
    problems.push(`--auth-role: "${opts.role}" is not a role name; expected e.g. istiod-agent`);
  if (!opts.audience || /\s/.test(opts.audience))
    problems.push(`--audience: "${opts.audience}" is not a token audience; expected e.g. vault`);
  if (!/^[\w\-./]+$/.test(opts.caPath) || !opts.caPath.includes("sign"))
    problems.push(`--ca-path: "${opts.caPath}" is not a PKI sign path; expected e.g. pki/root/sign-intermediate`);
  if (opts.trustDomain !== undefined && !/^[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$/.test(opts.trustDomain))
    problems.push(`--trust-domain: "${opts.trustDomain}" is not a trust domain; expected e.g. cluster.local`);
  const port = str("http-port");
  if (port !== undefined) {
    const n = /^\d+$/.test(port) ? Number(port) : NaN;
    if (!Number.isInteger(n) || n < 1 || n > 65535)
      problems.push(`--http-port: "${port}" is not a port; expected 1-65535, e.g. 15300`);
    else if (ISTIOD_PORTS.includes(n))
      problems.push(`--http-port: ${n} is used by istiod in the same pod (${ISTIOD_PORTS.join(", ")}); pick another`);
    else opts.httpPort = n;
  }
  const nativeFlag = str("native-sidecar");
  if (nativeFlag !== undefined) {
    if (nativeFlag === "true") opts.nativeSidecar = true;
    else if (nativeFlag === "false") opts.nativeSidecar = false;
    else if (nativeFlag !== "auto")
      problems.push(`--native-sidecar: "${nativeFlag}" is invalid; expected true, false or auto`);
  }
  for (const a of opts.extraArgs ?? [])
    if (!a.startsWith("--")) problems.push(`--agent-arg: "${a}" is not a flag; expected e.g. --agent-arg=--ttl=24h`);
  if (problems.length) throw new ConfigError(problems);
  return opts;
}

// --- CLI entry ------------------------------------------------------------------------------------------------------

/** The Kubernetes client for the CLI: --kubeconfig, $KUBECONFIG, the pod's service account, then ~/.kube/config. */
export async function injectKubeClient(kubeconfig?: string): Promise<KubeClient> {
  if (kubeconfig) return kubeClientFromKubeconfig(kubeconfig);
  const fromEnv = process.env.KUBECONFIG?.split(":").find((p) => p && existsSync(p));
  if (fromEnv) return kubeClientFromKubeconfig(fromEnv);
  if (process.env.KUBERNETES_SERVICE_HOST) return KubeClient.inCluster();
  const home = join(homedir(), ".kube", "config");
  if (existsSync(home)) return kubeClientFromKubeconfig(home);
  throw new Error("no Kubernetes credentials: pass --kubeconfig, set KUBECONFIG, or run in a pod");
}

/**
 * `istiod-vault-agent inject [flags]` end to end; returns the exit code (0 done, 1 failed, 2 bad flags). For
 * src/main.ts: dispatch `inject` here before the agent's own flag parsing.
 */
export async function injectMain(
  argv: string[],
  out: (line: string) => void = (l) => console.log(l),
  err: (line: string) => void = (l) => console.error(l),
): Promise<number> {
  let opts: InjectOptions;
  try {
    opts = parseInjectArgs(argv);
  } catch (e) {
    err((e as Error).message);
    return 2;
  }
  if (opts.help) {
    out(injectHelp());
    return 0;
  }
  let kube: KubeClient | undefined;
  try {
    kube = await injectKubeClient(opts.kubeconfig);
    await runInject(kube, opts, out);
    return 0;
  } catch (e) {
    err(`istiod-vault-agent inject: ${(e as Error).message}`);
    return 1;
  } finally {
    await kube?.close();
  }
}
