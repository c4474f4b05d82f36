// `istiod-vault-agent inject`: patches an istiod Deployment (by name, or every istiod of a revision) so its pod runs
// the agent. The pod-template edit is pure (src/inject/pod-template.ts); this command reads, compares and writes with
// optimistic concurrency, and owns the flags.
import { isDeepStrictEqual } from "node:util";
import type { Command } from "../cli/command.js";
import { applyFlags, parseCommandLine, renderHelp, valueFlag, type FlagTable, fieldFlags } from "../cli/flags.js";
import { DNS_NAME, Expected, isDnsName, namespaceName, vaultName, vaultPath, vaultUrl } from "../cli/validate.js";
import { ConfigError } from "../cli/errors.js";
import type { KubeClient } from "../kube/client.js";
import { openKube } from "../cli/kube.js";
import { kubeAccessFlags } from "../cli/kube-flags.js";
import { describeChanges } from "../inject/diff.js";
import {
  DEFAULT_IMAGE,
  DISCOVERY_CONTAINER,
  ISTIOD_PORTS,
  REVISION_LABEL,
  asDeployment,
  injectPodSpec,
  readRecord,
  removeInjection,
  type Deployment,
  type InjectOptions,
} from "../inject/pod-template.js";

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

export const DEFAULT_INJECT_OPTIONS: InjectOptions = {
  namespace: "istio-system",
  mode: "cacerts",
  name: undefined,
  revision: undefined,
  image: DEFAULT_IMAGE,
  vaultAddress: "",
  vaultCaConfigMap: undefined,
  role: "istiod-agent",
  audience: "vault",
  caPath: "pki/root/sign-intermediate",
  trustDomain: undefined,
  httpPort: 15300,
  nativeSidecar: "auto",
  remove: false,
  dryRun: false,
  usePolicy: false,
  extraArgs: [],
  kubeconfig: undefined,
  context: undefined,
  help: false,
};

const flag = valueFlag<InjectOptions, string>;
const { option, toggle } = fieldFlags<InjectOptions>();
const LABEL_VALUE = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/** inject's flags: one table drives parsing, defaults and --help. */
export const INJECT_FLAGS: FlagTable<InjectOptions> = {
  namespace: option("namespace of the istiod Deployment", namespaceName, (o) => o.namespace),
  name: option(
    "istiod Deployment name",
    (v) => {
      if (!isDnsName(v)) throw new Expected("a Deployment name, e.g. istiod");
      return v;
    },
    (o) => o.name,
    { defaultText: "istiod" },
  ),
  revision: option(
    "select every istiod Deployment labelled istio.io/rev=REVISION instead of --name",
    (v) => {
      if (v.length > 63 || !LABEL_VALUE.test(v)) throw new Expected("a label value, e.g. 1-24-0 or canary");
      return v;
    },
    (o) => o.revision,
  ),
  image: option(
    "agent image",
    (v) => {
      if (!v || /\s/.test(v)) throw new Expected(`an image reference, e.g. ${DEFAULT_IMAGE}`);
      return v;
    },
    (o) => o.image,
  ),
  mode: option(
    "cacerts: istiod signs with the delivered intermediate (init container + sidecar, in-memory cacerts); mesh-ca: " +
      "the agent is the mesh's CA and the key never leaves it (native sidecar with --istio-ca-addr, --istiod-tls-dir " +
      "and --root-configmaps; discovery gets ENABLE_CA_SERVER=false and its serving certificate from the agent). " +
      "mesh-ca also needs the CA Service and Istio's global.caAddress (project chart meshCa.enabled=true)",
    (v) => {
      if (v !== "cacerts" && v !== "mesh-ca") throw new Expected("cacerts or mesh-ca");
      return v;
    },
    (o) => o.mode,
  ),
  "use-policy": toggle(
    "configure the agent from the RootTrustPolicy named after each Deployment (istiod, istiod-<rev>): only " +
      "--policy-name and pod-layout flags are injected, and the Vault flags below are refused (the policy sets them)",
    (o) => o.usePolicy === true,
  ),
  "vault-addr": flag({
    help: "Vault address the agent uses, e.g. https://vault.vault:8200 (required unless --remove or --use-policy)",
    arg: "URL",
    parse: vaultUrl,
    set: (o, v) => (o.vaultAddress = v),
  }),
  "vault-ca-configmap": option(
    "ConfigMap (key ca.crt) with the CAs that sign Vault's TLS certificate",
    (v) => {
      if (!DNS_NAME.test(v)) throw new Expected("a ConfigMap name, e.g. vault-ca");
      return v;
    },
    (o) => o.vaultCaConfigMap,
  ),
  "auth-role": option("Vault Kubernetes-auth role", vaultName, (o) => o.role),
  audience: option(
    "audience of the projected service-account token for Vault",
    (v) => {
      if (!v || /\s/.test(v)) throw new Expected("a token audience, e.g. vault");
      return v;
    },
    (o) => o.audience,
  ),
  "ca-path": option(
    "Vault path that signs the intermediate",
    (v) => {
      const s = vaultPath(v);
      if (!s.includes("sign")) throw new Expected("a PKI sign path, e.g. pki/root/sign-intermediate");
      return s;
    },
    (o) => o.caPath,
  ),
  "trust-domain": option(
    "SPIFFE trust domain passed to the agent",
    (v) => {
      if (!/^[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$/.test(v))
        throw new Expected("a trust domain, e.g. cluster.local");
      return v;
    },
    (o) => o.trustDomain,
    { defaultText: "the agent's own" },
  ),
  "http-port": option(
    `port of the agent's /healthz, /readyz, /metrics (not one of istiod's: ${ISTIOD_PORTS.join(", ")})`,
    (v) => {
      const n = /^\d+$/.test(v) ? Number(v) : NaN;
      if (!(n >= 1 && n <= 65535) || ISTIOD_PORTS.includes(n))
        throw new Expected(
          `a port from 1 to 65535 not used by istiod in the same pod (${ISTIOD_PORTS.join(", ")}), e.g. 15300`,
        );
      return n;
    },
    (o) => o.httpPort,
  ),
  "native-sidecar": option(
    "true, false or auto (auto: native when Kubernetes is 1.29 or newer)",
    (v) => {
      if (v === "true") return true;
      if (v === "false") return false;
      if (v === "auto") return "auto";
      throw new Expected("true, false or auto");
    },
    (o) => o.nativeSidecar,
  ),
  "agent-arg": {
    kind: "multiple",
    help: "extra flag for both agent containers, e.g. --agent-arg=--ttl=24h",
    apply: (o, raw) => {
      o.extraArgs = raw.split("\n");
      for (const a of o.extraArgs)
        if (!a.startsWith("--")) throw new Expected(`flags such as --agent-arg=--ttl=24h; "${a}" is not a flag`);
    },
  },
  remove: toggle("remove the agent and restore the original pod template", (o) => o.remove),
  "dry-run": toggle("print what would change and write nothing", (o) => o.dryRun),
  ...kubeAccessFlags<InjectOptions>((o) => o),
};

export function injectHelp(): string {
  return renderHelp(
    [
      "istiod-vault-agent inject --use-policy [flags]",
      "istiod-vault-agent inject --vault-addr=URL [flags]",
      "istiod-vault-agent inject --remove [flags]",
    ],
    [
      "Patches an istiod Deployment so its pod runs the agent (init container + sidecar, in-memory cacerts, a Vault",
      "service-account token, the agent socket shared with discovery). Running it again changes nothing; --remove",
      "restores the original pod template exactly.",
    ].join("\n"),
    INJECT_FLAGS,
    DEFAULT_INJECT_OPTIONS,
  );
}

export function parseInjectArgs(argv: string[]): InjectOptions {
  const { values } = parseCommandLine(INJECT_FLAGS, argv);
  const opts: InjectOptions = structuredClone(DEFAULT_INJECT_OPTIONS);
  if (values.help === true) return { ...opts, help: true };
  const problems = applyFlags(INJECT_FLAGS, values, {}, opts);
  if (opts.revision !== undefined) {
    if (opts.name !== undefined)
      problems.push("--name and --revision: give one; --revision selects every istiod Deployment of that revision");
  } else opts.name ??= "istiod";
  if (opts.usePolicy) {
    // The policy is authoritative in the agent: these would shadow its fields, and the agent would refuse to start.
    for (const name of ["vault-addr", "vault-ca-configmap", "auth-role", "ca-path", "trust-domain"])
      if (values[name] !== undefined)
        problems.push(
          `--${name}: not with --use-policy; the RootTrustPolicy sets this (the agent refuses flags that shadow it)`,
        );
  } else if (!opts.remove && values["vault-addr"] === undefined)
    problems.push(
      "--vault-addr: missing; expected the Vault URL the agent uses, e.g. https://vault.vault:8200 (or --use-policy)",
    );
  if (opts.mode === "mesh-ca" && opts.nativeSidecar === false)
    problems.push(
      "--native-sidecar=false: not with --mode=mesh-ca; istiod reads its TLS files only at its start, so the agent " +
        "must be a native sidecar whose startupProbe holds istiod back (Kubernetes 1.29+)",
    );
  if (problems.length) throw new ConfigError(problems);
  return opts;
}

export const command: Command = {
  name: "inject",
  flags: INJECT_FLAGS,
  help: injectHelp,
  async run(_values, _positionals, argv) {
    const opts = parseInjectArgs(argv);
    let kube: KubeClient | undefined;
    try {
      kube = await openKube({ kubeconfig: opts.kubeconfig, context: opts.context });
      await runInject(kube, opts, (line) => console.log(line));
      return 0;
    } finally {
      await kube?.close();
    }
  },
};
