// The real test environment: etcd → kube-apiserver → OpenBao, built from their Go modules (test/env/build.sh) and
// run on free 127.0.0.1 ports, the way controller-runtime's envtest runs a control plane. Nothing here is a mock.
import { execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, readFileSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { KubeClient } from "../../src/kube/client.js";
import { VaultClient } from "../../src/vault/client.js";
import { ManagedProcess, waitUntil } from "./process.js";
import { parse as parseYaml } from "yaml";
import { makeServiceAccountKeys, makeTestCa } from "./pki.js";

export type ServerName =
  | "etcd"
  | "kube-apiserver"
  | "openbao"
  | "istiod"
  | "pilot-agent"
  | "kubelet"
  | "kube-controller-manager"
  | "kube-scheduler"
  | "helm"
  | "zlint"
  | "promtool";

/** The repository root, found from this file's location in src or in dist. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find the repository root (no package.json above the harness)");
    dir = up;
  }
  return dir;
}

const binaryCache = new Map<ServerName, string>();

/** Paths of the server binaries, building any that are not cached yet (cold builds take minutes). */
export function serverBinaries(names: ServerName[]): Record<ServerName, string> {
  const missing = names.filter((n) => !binaryCache.has(n));
  if (missing.length) {
    const out = execFileSync("bash", [join(repoRoot(), "test/env/build.sh"), ...missing], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
      maxBuffer: 1 << 20,
    });
    for (const line of out.trim().split("\n")) {
      const [name, path] = line.split("=", 2);
      if (name && path) binaryCache.set(name as ServerName, path);
    }
  }
  return Object.fromEntries(names.map((n) => [n, binaryCache.get(n)])) as Record<ServerName, string>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === "object" && addr ? resolvePort(addr.port) : reject(new Error("no port"))));
    });
  });
}

/** Versions the servers report about themselves, for the CI log. */
export function serverVersions(bins: Partial<Record<ServerName, string>>): Record<string, string> {
  const v: Record<string, string> = {};
  const first = (bin: string, args: string[]) =>
    execFileSync(bin, args, { encoding: "utf8" }).split("\n")[0]?.trim() ?? "";
  if (bins.etcd) v.etcd = first(bins.etcd, ["--version"]);
  if (bins["kube-apiserver"]) v["kube-apiserver"] = first(bins["kube-apiserver"], ["--version"]);
  if (bins.openbao) v.openbao = first(bins.openbao, ["version"]);
  if (bins.istiod)
    v.istiod = (execFileSync(bins.istiod, ["version"], { encoding: "utf8" }).match(/Version:"([^"]+)"/) ?? [])[1] ?? "";
  return v;
}

export interface KubeEnv {
  url: string;
  caPem: string;
  admin: KubeClient;
  kubeconfigPath: string;
}

export interface VaultEnv {
  url: string;
  caPem: string;
  rootToken: string;
  /** A client with no token: pass the root token (or any other) per call. */
  client: VaultClient;
  process: ManagedProcess;
  /** PEM file of the CA that signs OpenBao's TLS certificate. */
  caFile: string;
  /** With TestEnv.start({ vaultAudit: true }): OpenBao's file audit log (one JSON entry a line, secrets HMAC'd). */
  auditLogPath?: string;
  /** With TestEnv.start({ vaultMtlsListener }): the URL of that second listener (https://127.0.0.1:PORT). */
  mtlsUrl?: string;
}

/** One line of OpenBao's file audit log: what a test can see of a request without any access to the agent. */
export interface VaultAuditEntry {
  type: "request" | "response";
  time: string;
  error?: string;
  auth?: { accessor?: string; metadata?: Record<string, string> | null };
  request?: { operation?: string; path?: string; data?: Record<string, unknown> };
  response?: { data?: Record<string, unknown>; auth?: { accessor?: string; metadata?: Record<string, string> } };
}

/** The audit device tests read (see VaultAuditEntry); accessors are logged in the clear, they are not credentials. */
export const VAULT_AUDIT_DEVICE = "iva-test";

export interface TestEnvOptions {
  /**
   * OpenBao mode: "dev" (default; in-memory, root token chosen by the harness), "persistent" (file storage, initialised
   * and unsealed by the harness, so it can be stopped and started again with its PKI intact), or false for none.
   */
  vault?: "dev" | "persistent" | false;
  /**
   * Prepare the servers for pods on a real node (test/env/node.ts): the apiserver's and (persistent) OpenBao's
   * certificates also name this address (the pod network's gateway, where the node forwards pods to them), and the apiserver runs the
   * ServiceAccount admission plugin so pods get their service-account token volume.
   */
  podGatewayIp?: string;
  /**
   * Dev OpenBao only: a file audit device (declared in a config file: OpenBao refuses to enable one over the API), so
   * a test can see from outside which Vault calls the agent made (renew-self, generate/exported, …).
   */
  vaultAudit?: boolean;
  /**
   * Dev OpenBao only: a second TLS listener (beside the dev one, which the harness and setup keep using) serving
   * `certPem`/`keyPem` and requiring a client certificate signed by `clientCaPem` (tls_require_and_verify_client_cert,
   * tls_client_ca_file). Its URL is vault.mtlsUrl. The test makes the certificates (e.g. one naming only a host that
   * is not the address's, for VAULT_TLS_SERVER_NAME).
   */
  vaultMtlsListener?: { certPem: string; keyPem: string; clientCaPem: string };
}

export class TestEnv {
  private readonly processes: ManagedProcess[] = [];
  kube!: KubeEnv;
  vault!: VaultEnv;
  etcdProcess!: ManagedProcess;
  apiserverProcess!: ManagedProcess;
  /** The apiserver's PKI: ca.crt (also the client CA), serving cert, service-account keys. */
  pkiDir!: string;

  private constructor(
    readonly dir: string,
    private readonly opts: TestEnvOptions,
  ) {}

  static async start(opts: TestEnvOptions = {}): Promise<TestEnv> {
    const env = new TestEnv(mkdtempSync(join(tmpdir(), "iva-env-")), opts);
    try {
      const bins = serverBinaries(
        opts.vault === false ? ["etcd", "kube-apiserver"] : ["etcd", "kube-apiserver", "openbao"],
      );
      const etcdUrl = await env.startEtcd(bins.etcd);
      await env.startApiserver(bins["kube-apiserver"], etcdUrl);
      if (opts.vault === "persistent") await env.startPersistentOpenBao(bins.openbao);
      else if (opts.vault !== false) await env.startOpenBao(bins.openbao);
    } catch (err) {
      await env.stop();
      throw err;
    }
    return env;
  }

  spawn(name: string, binary: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}): ManagedProcess {
    const p = new ManagedProcess(name, binary, args, join(this.dir, `${name}.log`), { ...cleanEnv(), ...extraEnv });
    this.processes.push(p);
    return p;
  }

  private async startEtcd(bin: string): Promise<string> {
    const [clientPort, peerPort] = [await freePort(), await freePort()];
    const clientUrl = `http://127.0.0.1:${clientPort}`;
    const peerUrl = `http://127.0.0.1:${peerPort}`;
    this.etcdProcess = this.spawn("etcd", bin, [
      `--data-dir=${join(this.dir, "etcd")}`,
      "--name=default",
      `--listen-client-urls=${clientUrl}`,
      `--advertise-client-urls=${clientUrl}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=default=${peerUrl}`,
      "--unsafe-no-fsync=true",
      "--log-level=warn",
    ]);
    await waitUntil(
      "etcd /health",
      async () => {
        const res = await fetch(`${clientUrl}/health`);
        return res.ok && ((await res.json()) as { health?: string }).health === "true";
      },
      { timeoutMs: 30_000, process: this.etcdProcess },
    );
    return clientUrl;
  }

  private async startApiserver(bin: string, etcdUrl: string): Promise<void> {
    const pki = join(this.dir, "pki");
    this.pkiDir = pki;
    mkdirSync(pki, { mode: 0o700 });
    const ca = await makeTestCa("iva-test-kube-ca");
    const serving = await ca.issue({
      commonName: "kube-apiserver",
      dnsNames: ["localhost", "kubernetes.default.svc"],
      ips: ["127.0.0.1", ...(this.opts.podGatewayIp ? [this.opts.podGatewayIp] : [])],
    });
    const admin = await ca.issue({ commonName: "iva-admin", organization: "system:masters", client: true });
    const sa = await makeServiceAccountKeys();
    const files: Record<string, string> = {
      "ca.crt": ca.certPem,
      "serving.crt": serving.certPem,
      "serving.key": serving.keyPem,
      "sa.key": sa.privatePem,
      "sa.pub": sa.publicPem,
    };
    for (const [name, content] of Object.entries(files)) writeFileSync(join(pki, name), content, { mode: 0o600 });
    const port = await freePort();
    const url = `https://127.0.0.1:${port}`;
    this.apiserverProcess = this.spawn("kube-apiserver", bin, [
      `--etcd-servers=${etcdUrl}`,
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      `--secure-port=${port}`,
      `--cert-dir=${pki}`,
      `--tls-cert-file=${join(pki, "serving.crt")}`,
      `--tls-private-key-file=${join(pki, "serving.key")}`,
      `--client-ca-file=${join(pki, "ca.crt")}`,
      "--authorization-mode=RBAC",
      "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
      `--service-account-key-file=${join(pki, "sa.pub")}`,
      `--service-account-signing-key-file=${join(pki, "sa.key")}`,
      "--service-cluster-ip-range=10.0.0.0/24",
      // Without a controller-manager nothing creates the default service accounts this plugin insists on; a real
      // node runs one (test/env/node.ts) and needs the plugin for pods' token volumes.
      ...(this.opts.podGatewayIp ? [] : ["--disable-admission-plugins=ServiceAccount"]),
      "--allow-privileged=true",
      "--endpoint-reconciler-type=none",
    ]);
    const adminClient = new KubeClient({
      server: url,
      tls: { caPem: ca.certPem, certPem: admin.certPem, keyPem: admin.keyPem },
    });
    await waitUntil(
      "kube-apiserver /readyz",
      async () =>
        (await adminClient.request<string>("GET", "/readyz", undefined, { acceptStatuses: [500], text: true }))
          .status === 200,
      { timeoutMs: 90_000, process: this.apiserverProcess, intervalMs: 500 },
    );
    const kubeconfigPath = join(this.dir, "kubeconfig");
    writeFileSync(kubeconfigPath, JSON.stringify(kubeconfig(url, ca.certPem, admin.certPem, admin.keyPem), null, 2), {
      mode: 0o600,
    });
    this.kube = { url, caPem: ca.certPem, admin: adminClient, kubeconfigPath };
  }

  private async startOpenBao(bin: string): Promise<void> {
    const port = await freePort();
    const certDir = join(this.dir, "openbao-tls");
    mkdirSync(certDir, { mode: 0o700 });
    const rootToken = `root-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
    const auditLogPath = this.opts.vaultAudit ? join(this.dir, "openbao-audit.log") : undefined;
    const configArgs: string[] = [];
    if (auditLogPath) {
      const configPath = join(this.dir, "openbao-audit.hcl");
      writeFileSync(
        configPath,
        `audit "file" "${VAULT_AUDIT_DEVICE}" {\n  options {\n    file_path = "${auditLogPath}"\n    hmac_accessor = "false"\n  }\n}\n`,
      );
      configArgs.push(`-config=${configPath}`);
    }
    let mtlsUrl: string | undefined;
    const mtls = this.opts.vaultMtlsListener;
    if (mtls) {
      const mtlsPort = await freePort();
      const dir = join(this.dir, "openbao-mtls");
      mkdirSync(dir, { mode: 0o700 });
      const file = (name: string, content: string) => {
        writeFileSync(join(dir, name), content, { mode: 0o600 });
        return join(dir, name);
      };
      const configPath = join(this.dir, "openbao-mtls.hcl");
      writeFileSync(
        configPath,
        [
          `listener "tcp" {`,
          `  address = "127.0.0.1:${mtlsPort}"`,
          `  tls_cert_file = "${file("tls.crt", mtls.certPem)}"`,
          `  tls_key_file = "${file("tls.key", mtls.keyPem)}"`,
          `  tls_client_ca_file = "${file("client-ca.crt", mtls.clientCaPem)}"`,
          `  tls_require_and_verify_client_cert = true`,
          `}`,
        ].join("\n"),
      );
      configArgs.push(`-config=${configPath}`);
      mtlsUrl = `https://127.0.0.1:${mtlsPort}`;
    }
    const proc = this.spawn(
      "openbao",
      bin,
      [
        "server",
        "-dev",
        "-dev-tls",
        `-dev-tls-cert-dir=${certDir}`,
        `-dev-root-token-id=${rootToken}`,
        `-dev-listen-address=127.0.0.1:${port}`,
        "-dev-no-store-token",
        "-log-level=warn",
        ...configArgs,
      ],
      { HOME: this.dir },
    );
    const url = `https://127.0.0.1:${port}`;
    const caFile = join(certDir, "vault-ca.pem");
    await waitUntil("OpenBao TLS certificate", () => Promise.resolve(existsSync(caFile)), {
      timeoutMs: 30_000,
      process: proc,
    });
    const caPem = readFileSync(caFile, "utf8");
    const client = new VaultClient({ address: url, tls: { caPem } });
    await waitUntil("OpenBao /v1/sys/health", async () => (await client.health()).status === 200, {
      timeoutMs: 30_000,
      process: proc,
    });
    this.vault = {
      url,
      caPem,
      rootToken,
      client,
      process: proc,
      caFile,
      ...(auditLogPath ? { auditLogPath } : {}),
      ...(mtlsUrl ? { mtlsUrl } : {}),
    };
  }

  /** Where the audit log ends now: pass it to vaultAudit() to read only what happened after this point. */
  vaultAuditOffset(): number {
    const path = this.auditLog();
    return existsSync(path) ? readFileSync(path).length : 0;
  }

  /** The audit log's entries after `fromOffset` (a vaultAuditOffset()). */
  vaultAudit(fromOffset = 0): VaultAuditEntry[] {
    const path = this.auditLog();
    if (!existsSync(path)) return [];
    return readFileSync(path)
      .subarray(fromOffset)
      .toString("utf8")
      .split("\n")
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as VaultAuditEntry);
  }

  /** The audit log's HMAC of `input` (sys/audit-hash), to compare a known value with the log's hashed fields. */
  async vaultAuditHash(input: string): Promise<string> {
    this.auditLog();
    const res = await this.vault.client.write<{ hash: string }>(
      `sys/audit-hash/${VAULT_AUDIT_DEVICE}`,
      this.vault.rootToken,
      {
        input,
      },
    );
    return res.data.hash;
  }

  private auditLog(): string {
    const path = this.vault?.auditLogPath;
    if (!path) throw new Error("the Vault audit log needs TestEnv.start({ vaultAudit: true })");
    return path;
  }

  private persistent: { bin: string; configPath: string; unsealKey: string } | undefined;

  /** OpenBao with file storage and a real TLS listener, initialised with one unseal key. */
  private async startPersistentOpenBao(bin: string): Promise<void> {
    const port = await freePort();
    const certDir = join(this.dir, "openbao-tls");
    mkdirSync(certDir, { mode: 0o700 });
    const ca = await makeTestCa("iva-test-openbao-ca");
    const serving = await ca.issue({
      commonName: "openbao",
      dnsNames: ["localhost"],
      ips: ["127.0.0.1", ...(this.opts.podGatewayIp ? [this.opts.podGatewayIp] : [])],
    });
    const caFile = join(certDir, "vault-ca.pem");
    writeFileSync(caFile, ca.certPem);
    writeFileSync(join(certDir, "tls.crt"), serving.certPem, { mode: 0o600 });
    writeFileSync(join(certDir, "tls.key"), serving.keyPem, { mode: 0o600 });
    const configPath = join(this.dir, "openbao.hcl");
    writeFileSync(
      configPath,
      [
        `storage "file" { path = "${join(this.dir, "openbao-data")}" }`,
        `listener "tcp" {`,
        `  address = "127.0.0.1:${port}"`,
        `  tls_cert_file = "${join(certDir, "tls.crt")}"`,
        `  tls_key_file = "${join(certDir, "tls.key")}"`,
        `}`,
        `api_addr = "https://127.0.0.1:${port}"`,
        `disable_mlock = true`,
        `log_level = "warn"`,
      ].join("\n"),
    );
    const url = `https://127.0.0.1:${port}`;
    const client = new VaultClient({ address: url, tls: { caPem: ca.certPem } });
    const proc = this.spawnPersistentOpenBao(bin, configPath);
    await waitUntil("OpenBao listener", async () => (await client.health()).status === 501, {
      timeoutMs: 30_000,
      process: proc,
    });
    const init = await client.call<{ keys_base64: string[]; root_token: string }>("PUT", "sys/init", {
      body: { secret_shares: 1, secret_threshold: 1 },
    });
    const unsealKey = init.body.keys_base64[0]!;
    this.persistent = { bin, configPath, unsealKey };
    this.vault = { url, caPem: ca.certPem, rootToken: init.body.root_token, client, process: proc, caFile };
    await this.unsealOpenBao();
  }

  private spawnPersistentOpenBao(bin: string, configPath: string): ManagedProcess {
    return this.spawn("openbao", bin, ["server", `-config=${configPath}`], { HOME: this.dir });
  }

  /** Unseals the persistent OpenBao (after a test sealed it). */
  async unsealVault(): Promise<void> {
    if (!this.persistent) throw new Error("unsealVault needs TestEnv.start({ vault: 'persistent' })");
    await this.unsealOpenBao();
  }

  private async unsealOpenBao(): Promise<void> {
    const p = this.persistent!;
    await this.vault.client.call("PUT", "sys/unseal", { body: { key: p.unsealKey } });
    await waitUntil("OpenBao unsealed and active", async () => (await this.vault.client.health()).status === 200, {
      timeoutMs: 30_000,
      process: this.vault.process,
    });
  }

  /** Stops the persistent OpenBao server completely (its data stays on disk). */
  async stopVault(): Promise<void> {
    if (!this.persistent) throw new Error("stopVault needs TestEnv.start({ vault: 'persistent' })");
    await this.vault.process.stop();
  }

  /** Starts the persistent OpenBao server again on the same address and unseals it. */
  async startVaultAgain(): Promise<void> {
    const p = this.persistent;
    if (!p) throw new Error("startVaultAgain needs TestEnv.start({ vault: 'persistent' })");
    this.vault.process = this.spawnPersistentOpenBao(p.bin, p.configPath);
    await waitUntil("OpenBao listener after restart", async () => (await this.vault.client.health()).status === 503, {
      timeoutMs: 30_000,
      process: this.vault.process,
    });
    await this.unsealOpenBao();
  }

  // --- Kubernetes helpers -----------------------------------------------------------------------------------------

  async createNamespace(name: string): Promise<void> {
    await this.kube.admin.request(
      "POST",
      "/api/v1/namespaces",
      { apiVersion: "v1", kind: "Namespace", metadata: { name } },
      { acceptStatuses: [409] },
    );
  }

  async createServiceAccount(namespace: string, name: string): Promise<void> {
    await this.createNamespace(namespace);
    await this.kube.admin.request(
      "POST",
      `/api/v1/namespaces/${namespace}/serviceaccounts`,
      { apiVersion: "v1", kind: "ServiceAccount", metadata: { name, namespace } },
      { acceptStatuses: [409] },
    );
  }

  /** A bound service-account token from the TokenRequest API (expirationSeconds ≥ 600). */
  async requestToken(namespace: string, serviceAccount: string, audience: string, ttlSeconds = 3600): Promise<string> {
    const res = await this.kube.admin.create<{ status?: { token?: string } }>(
      `/api/v1/namespaces/${namespace}/serviceaccounts/${serviceAccount}/token`,
      {
        apiVersion: "authentication.k8s.io/v1",
        kind: "TokenRequest",
        spec: { audiences: [audience], expirationSeconds: ttlSeconds },
      },
    );
    const token = res.status?.token;
    if (!token) throw new Error(`TokenRequest for ${namespace}/${serviceAccount} returned no token`);
    return token;
  }

  /** Creates the CRD in `file` (YAML) and waits until the apiserver serves it. */
  async installCrd(file: string): Promise<void> {
    const crd = parseYaml(readFileSync(file, "utf8")) as { metadata: { name: string } };
    await this.kube.admin.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd, {
      acceptStatuses: [409],
    });
    await waitUntil(
      `CRD ${crd.metadata.name} established`,
      async () => {
        const got = await this.kube.admin.get<{ status?: { conditions?: { type: string; status: string }[] } }>(
          `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`,
        );
        return (got.status?.conditions ?? []).some((c) => c.type === "Established" && c.status === "True");
      },
      { timeoutMs: 30_000 },
    );
  }

  /** Binds a ClusterRole (e.g. system:auth-delegator) to a service account. */
  async bindClusterRole(clusterRole: string, namespace: string, serviceAccount: string): Promise<void> {
    await this.kube.admin.request(
      "POST",
      "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
      {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "ClusterRoleBinding",
        metadata: { name: `${clusterRole.replace(/:/g, "-")}-${namespace}-${serviceAccount}` },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: clusterRole },
        subjects: [{ kind: "ServiceAccount", name: serviceAccount, namespace }],
      },
      { acceptStatuses: [409] },
    );
  }

  async stop(): Promise<void> {
    for (const p of [...this.processes].reverse()) await p.stop();
    await this.kube?.admin.close().catch(() => undefined);
    await this.vault?.client.close().catch(() => undefined);
    if (!process.env.IVA_KEEP_ENV) rmSync(this.dir, { recursive: true, force: true });
  }
}

function kubeconfig(server: string, caPem: string, certPem: string, keyPem: string): unknown {
  const b64 = (s: string) => Buffer.from(s).toString("base64");
  return {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "iva-test", cluster: { server, "certificate-authority-data": b64(caPem) } }],
    users: [{ name: "iva-admin", user: { "client-certificate-data": b64(certPem), "client-key-data": b64(keyPem) } }],
    contexts: [{ name: "iva-test", context: { cluster: "iva-test", user: "iva-admin" } }],
    "current-context": "iva-test",
  };
}

/** The test's environment minus anything that would point a server at another Vault or cluster. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(VAULT_|BAO_|KUBECONFIG$|KUBERNETES_)/.test(k)) env[k] = v;
  }
  return env;
}
