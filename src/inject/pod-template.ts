// The pod-template edit behind `istiod-vault-agent inject`: pure functions of the Deployment object (injectPodSpec /
// removeInjection), no I/O. The apiserver reads and writes live in src/commands/inject.ts, the --dry-run diff in
// ./diff.ts.
//
// What injection does to the pod template:
//   - the `cacerts` volume (the Istio chart's optional Secret) becomes an in-memory emptyDir the agent fills;
//   - an init container (`init`: fill cacerts, exit) and the sidecar (`sidecar`: serve and renew) are added, the
//     sidecar as a native sidecar (restartable init container gated by a startupProbe) or as a regular container;
//   - a projected service-account token for Vault, an emptyDir for the agent's socket (also mounted in discovery);
//   - pod fsGroup 1337 so istiod (group 1337) can read the 0640 cacerts files;
//   - an annotation holding the original values that were replaced, so --remove restores the original exactly.
//
// --mode=mesh-ca instead: no cacerts and no init container; the agent (native sidecar only: istiod must find its TLS
// files at its start) serves the Istio CA on 15013, writes istiod's serving certificate into an in-memory volume that
// discovery reads through --tlsCertFile/--tlsKeyFile/--caCertFile, and the istio-ca-root-cert ConfigMaps; discovery
// gets ENABLE_CA_SERVER=false. The CA Service and Istio's global.caAddress are not part of the Deployment (project
// chart meshCa.enabled, manifests/overlays/mesh-ca/service.yaml).

export type InjectMode = "cacerts" | "mesh-ca";

export interface InjectOptions {
  namespace: string;
  /** cacerts (default): istiod signs with the delivered intermediate; mesh-ca: the agent is the mesh's CA. */
  mode?: InjectMode;
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
  /**
   * Configure the agent from the RootTrustPolicy named after the Deployment (istiod, istiod-<rev>) instead of flags:
   * the containers get --policy-name and only pod-layout flags (the policy is authoritative; a flag setting one of its
   * fields would be refused by the agent).
   */
  usePolicy?: boolean;
  /** Extra flags appended to both agent containers' arguments. */
  extraArgs?: string[];
  /** Kubeconfig file(s) and context to use (CLI only); see src/cli/kube.ts for the precedence. */
  kubeconfig?: string;
  context?: string;
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
export const ISTIOD_TLS_VOLUME = "istiod-vault-agent-istiod-tls";
export const ISTIOD_TLS_DIR = "/etc/istiod-vault-agent/istiod-tls";
/** The agent's Istio CA port in istiod's pod (istiod holds 15012); the CA Service maps 15012 to it. */
export const MESH_CA_PORT = 15013;
/** What discovery gets in the mesh-CA mode: its serving certificate from the agent's files. */
export const MESH_CA_DISCOVERY_ARGS = [
  `--tlsCertFile=${ISTIOD_TLS_DIR}/tls.crt`,
  `--tlsKeyFile=${ISTIOD_TLS_DIR}/tls.key`,
  `--caCertFile=${ISTIOD_TLS_DIR}/ca.crt`,
];
export const CACERTS_DIR = "/etc/cacerts";
export const TOKEN_DIR = "/var/run/secrets/tokens";
export const TOKEN_PATH = `${TOKEN_DIR}/vault-token`;
export const SOCKET_DIR = "/var/run/istiod-vault-agent";
export const SOCKET_PATH = `${SOCKET_DIR}/agent.sock`;
export const VAULT_CA_DIR = "/etc/istiod-vault-agent/vault-ca";
/** The agent's user: the image's own USER (65532:1337), the same in every shipped manifest. */
/**
 * The agent container's memory, here and in every shipped manifest (a unit test keeps them equal): the request is its
 * idle RSS (88-99 MiB measured with the bundle) rounded up, the limit its measured peak under 64-in-flight signing with
 * the image's heap flags (132-190 MiB) with headroom (bench/RESULTS.md §4).
 */
export const AGENT_RESOURCES = { requests: { cpu: "10m", memory: "160Mi" }, limits: { memory: "256Mi" } };

export const AGENT_UID = 65532;
/** istiod's group (Istio's images run 1337:1337): the agent's primary group and the pod's fsGroup, so istiod reads the
 * 0640 cacerts files through its group while only the agent's user can write them. */
export const ISTIOD_GID = 1337;
/** The published image; its tag is package.json's version (a unit test fails when they drift). */
export const DEFAULT_IMAGE = "ghcr.io/istiod-vault-agent/istiod-vault-agent:0.1.0";
export const REVISION_LABEL = "istio.io/rev";

const AGENT_VOLUMES = [TOKEN_VOLUME, SOCKET_VOLUME, VAULT_CA_VOLUME, ISTIOD_TLS_VOLUME];
const AGENT_CONTAINERS = [INIT_CONTAINER, SIDECAR_CONTAINER];
/** Ports istiod's discovery container listens on in the shared pod network namespace. */
export const ISTIOD_PORTS = [8080, 15010, 15012, 15014, 15017, 15053];
const ENABLE_CA_SERVER = "ENABLE_CA_SERVER";

// --- loose Kubernetes shapes (only what is touched; everything else is carried through untouched) -------------------

export type Obj = Record<string, unknown>;

export interface Named extends Obj {
  name: string;
}

export interface Container extends Named {
  volumeMounts?: Named[];
  env?: Named[];
  args?: string[];
}

export interface PodSpec extends Obj {
  containers: Container[];
  initContainers?: Container[];
  volumes?: Named[];
  securityContext?: Obj;
}

export interface ObjectMeta extends Obj {
  name?: string;
  namespace?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  resourceVersion?: string;
}

export interface Deployment extends Obj {
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
  /** mesh-ca mode only: discovery's original ENABLE_CA_SERVER entry (null: none), and the args appended to it. */
  mode?: "mesh-ca";
  caServerEnv?: Obj | null;
  addedDiscoveryArgs?: string[];
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
  | "discovery.volumeMounts"
  | "discovery.env"
  | "discovery.args";

export const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

export function asDeployment(input: unknown): Deployment {
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
export function readRecord(d: Deployment): InjectionRecord | undefined {
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

function agentArgs(
  command: "init" | "sidecar",
  opts: InjectOptions,
  deployment: { name: string; ns: string },
): string[] {
  const mode = opts.mode === "mesh-ca" ? meshCaArgs(deployment) : [`--cacerts-dir=${CACERTS_DIR}`];
  const layout = [`--token-path=${TOKEN_PATH}`, `--socket=${SOCKET_PATH}`, `--http-addr=0.0.0.0:${opts.httpPort}`];
  if (opts.usePolicy)
    return [command, `--policy-name=${deployment.name}`, ...mode, ...layout, ...(opts.extraArgs ?? [])];
  return [
    command,
    ...mode,
    `--vault-addr=${opts.vaultAddress}`,
    `--auth-role=${opts.role}`,
    `--ca-path=${opts.caPath}`,
    ...layout,
    ...(opts.vaultCaConfigMap ? [`--vault-cacert=${VAULT_CA_DIR}/ca.crt`] : []),
    ...(opts.trustDomain ? [`--trust-domain=${opts.trustDomain}`] : []),
    ...(opts.extraArgs ?? []),
  ];
}

/** The mesh-CA sidecar's flags: CA listener named after its Service, istiod's TLS files, the root ConfigMaps. */
function meshCaArgs(deployment: { name: string; ns: string }): string[] {
  const revision = deployment.name.startsWith("istiod-") ? deployment.name.slice("istiod-".length) : undefined;
  const service = revision ? `istiod-vault-agent-${revision}` : "istiod-vault-agent";
  return [
    `--istio-ca-addr=0.0.0.0:${MESH_CA_PORT}`,
    `--istio-ca-names=${service}.${deployment.ns}.svc`,
    `--istiod-tls-dir=${ISTIOD_TLS_DIR}`,
    ...(revision ? [`--revision=${revision}`] : []),
    "--root-configmaps",
  ];
}

function agentContainer(
  kind: "init" | "sidecar",
  opts: InjectOptions,
  native: boolean,
  deployment: { name: string; ns: string },
): Container {
  const httpGet = (path: string) => ({ path, port: opts.httpPort, scheme: "HTTP" });
  const c: Container = {
    name: kind === "init" ? INIT_CONTAINER : SIDECAR_CONTAINER,
    image: opts.image,
    args: agentArgs(kind, opts, deployment),
    env: [
      { name: "POD_NAME", valueFrom: { fieldRef: { apiVersion: "v1", fieldPath: "metadata.name" } } },
      { name: "POD_NAMESPACE", valueFrom: { fieldRef: { apiVersion: "v1", fieldPath: "metadata.namespace" } } },
    ],
    resources: AGENT_RESOURCES,
    securityContext: {
      runAsNonRoot: true,
      runAsUser: AGENT_UID,
      runAsGroup: ISTIOD_GID,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"] },
    },
    volumeMounts: [
      opts.mode === "mesh-ca"
        ? { name: ISTIOD_TLS_VOLUME, mountPath: ISTIOD_TLS_DIR }
        : { name: CACERTS_VOLUME, mountPath: CACERTS_DIR },
      { name: TOKEN_VOLUME, mountPath: TOKEN_DIR, readOnly: true },
      { name: SOCKET_VOLUME, mountPath: SOCKET_DIR },
      ...(opts.vaultCaConfigMap ? [{ name: VAULT_CA_VOLUME, mountPath: VAULT_CA_DIR, readOnly: true }] : []),
    ],
  };
  if (kind === "sidecar") {
    c.ports = [
      { name: "agent-http", containerPort: opts.httpPort, protocol: "TCP" },
      ...(opts.mode === "mesh-ca" ? [{ name: "grpc-istio-ca", containerPort: MESH_CA_PORT, protocol: "TCP" }] : []),
    ];
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
    // istiod's serving key: in memory, shared by the agent (writes) and discovery (reads) only.
    ...(opts.mode === "mesh-ca" ? [{ name: ISTIOD_TLS_VOLUME, emptyDir: { medium: "Memory", sizeLimit: "1Mi" } }] : []),
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
  const meshCa = opts.mode === "mesh-ca";
  if (meshCa && !native)
    throw new Error(
      "--mode=mesh-ca needs a native sidecar (Kubernetes 1.29+): istiod reads its TLS files only at its start, so " +
        "the agent's startupProbe must hold it back until they exist; do not pass --native-sidecar=false",
    );
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

  if (!pod.volumes) {
    pod.volumes = [];
    created.push("pod.volumes");
  }
  if (!discovery.volumeMounts) {
    discovery.volumeMounts = [];
    created.push("discovery.volumeMounts");
  }
  if (meshCa) injectMeshCaDiscovery(discovery, record, created);
  else {
    // (a) cacerts: an in-memory emptyDir in place of the Secret, at the same position.
    const cacerts: Named = { name: CACERTS_VOLUME, emptyDir: { medium: "Memory" } };
    const at = pod.volumes.findIndex((v) => v.name === CACERTS_VOLUME);
    if (at >= 0) {
      record.cacertsVolume = structuredClone(pod.volumes[at]!);
      pod.volumes[at] = cacerts;
    } else {
      pod.volumes.push(cacerts);
    }
    if (!discovery.volumeMounts.some((m) => m.name === CACERTS_VOLUME)) {
      discovery.volumeMounts.push({ name: CACERTS_VOLUME, mountPath: CACERTS_DIR, readOnly: true });
      record.addedDiscoveryCacertsMount = true;
    }
  }
  // (c), (d) token and socket volumes; the socket is shared with discovery.
  pod.volumes.push(...agentVolumes(opts));
  discovery.volumeMounts.push({ name: SOCKET_VOLUME, mountPath: SOCKET_DIR });

  // (b) init container (cacerts mode: fills cacerts before istiod starts), then the sidecar (native: a restartable
  // init container after it).
  if (!pod.initContainers) {
    pod.initContainers = [];
    created.push("pod.initContainers");
  }
  const deployment = { name: d.metadata?.name ?? "istiod", ns: d.metadata?.namespace ?? opts.namespace };
  if (!meshCa) pod.initContainers.push(agentContainer("init", opts, native, deployment));
  if (native) pod.initContainers.push(agentContainer("sidecar", opts, native, deployment));
  else pod.containers.push(agentContainer("sidecar", opts, native, deployment));

  // (e) fsGroup for istiod's group.
  if (!pod.securityContext) {
    pod.securityContext = {};
    created.push("pod.securityContext");
  }
  if (typeof pod.securityContext.fsGroup === "number") record.fsGroup = pod.securityContext.fsGroup;
  pod.securityContext.fsGroup = ISTIOD_GID;

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

/** mesh-ca: discovery reads the agent's TLS files and runs without its CA server; the originals go in the record. */
function injectMeshCaDiscovery(discovery: Container, record: InjectionRecord, created: CreatedField[]): void {
  record.mode = "mesh-ca";
  discovery.volumeMounts!.push({ name: ISTIOD_TLS_VOLUME, mountPath: ISTIOD_TLS_DIR, readOnly: true });
  if (!discovery.env) {
    discovery.env = [];
    created.push("discovery.env");
  }
  const at = discovery.env.findIndex((e) => e.name === ENABLE_CA_SERVER);
  record.caServerEnv = at >= 0 ? structuredClone(discovery.env[at]!) : null;
  const off = { name: ENABLE_CA_SERVER, value: "false" };
  if (at >= 0) discovery.env[at] = off;
  else discovery.env.push(off);
  if (!discovery.args) {
    discovery.args = [];
    created.push("discovery.args");
  }
  const clashing = discovery.args.filter((a) => /^--(tlsCertFile|tlsKeyFile|caCertFile)(=|$)/.test(a));
  if (clashing.length)
    throw new Error(
      `discovery already has ${clashing.join(" ")}; --mode=mesh-ca sets istiod's serving certificate itself (remove them first)`,
    );
  record.addedDiscoveryArgs = [...MESH_CA_DISCOVERY_ARGS];
  discovery.args.push(...MESH_CA_DISCOVERY_ARGS);
}

/** Undoes injectMeshCaDiscovery from the record. */
function removeMeshCaDiscovery(discovery: Container, record: InjectionRecord, created: Set<CreatedField>): void {
  if (discovery.env) {
    const at = discovery.env.findIndex((e) => e.name === ENABLE_CA_SERVER);
    if (record.caServerEnv) {
      if (at >= 0) discovery.env[at] = record.caServerEnv as Named;
      else discovery.env.push(record.caServerEnv as Named);
    } else if (at >= 0) discovery.env.splice(at, 1);
    if (discovery.env.length === 0 && created.has("discovery.env")) delete discovery.env;
  }
  if (discovery.args) {
    const added = new Set(record.addedDiscoveryArgs ?? []);
    discovery.args = discovery.args.filter((a) => !added.has(a));
    if (discovery.args.length === 0 && created.has("discovery.args")) delete discovery.args;
  }
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
    // The mesh-CA mode never touched cacerts (Istio's own optional Secret stays).
    if (record && record.mode !== "mesh-ca") {
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
      (m) =>
        m.name !== SOCKET_VOLUME &&
        m.name !== ISTIOD_TLS_VOLUME &&
        !(record?.addedDiscoveryCacertsMount && m.name === CACERTS_VOLUME),
    );
    if (discovery.volumeMounts.length === 0 && created.has("discovery.volumeMounts")) delete discovery.volumeMounts;
  }

  if (discovery && record?.mode === "mesh-ca") removeMeshCaDiscovery(discovery, record, created);

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
