// The mesh-CA mode end to end, with Istio's own binaries on loopback: the agent (no --cacerts-dir, no --key-export)
// is the mesh's CA; pilot-agent, run as a workload's Istio agent with only what Istio gives a pod (its projected
// istio-ca token and the root from the istio-ca-root-cert ConfigMap the agent maintains), gets and rotates its
// workload certificate from the agent's CA listener; istiod runs with ENABLE_CA_SERVER=false on the serving
// certificate the agent writes (--istiod-tls-dir) and serves that pilot-agent xDS over TLS verified against the Vault
// root; and no file the agent wrote, nor any file it holds open, carries the intermediate's private key.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { agentSuite, getBundle, type AgentRun } from "../env/agent-process.js";
import { opensslVerify, subjectAltNames } from "../env/crypto-check.js";
import { freePort, serverBinaries, type TestEnv } from "../env/harness.js";
import { startIstiod, type IstiodRun } from "../env/istiod.js";
import { ManagedProcess, waitUntil } from "../env/process.js";

const WORKLOAD_NS = "default";
const WORKLOAD_SA = "sleep";
const WORKLOAD_ID = `spiffe://cluster.local/ns/${WORKLOAD_NS}/sa/${WORKLOAD_SA}`;
/** The agent's --istiod-tls-dir inside istiod's directory; istiod gets it with --tlsCertFile etc., as shipped. */
const ISTIOD_TLS = "etc/istiod-vault-agent/istiod-tls";

/** The root a pod gets: the istio-ca-root-cert ConfigMap of its namespace (mounted at /var/run/secrets/istio). */
async function rootFromConfigMap(env: TestEnv, namespace: string): Promise<string> {
  let pem = "";
  await waitUntil(
    `ConfigMap ${namespace}/istio-ca-root-cert written by the agent (--root-configmaps)`,
    async () => {
      const res = await env.kube.admin.request<{
        data?: Record<string, string>;
      }>("GET", `/api/v1/namespaces/${namespace}/configmaps/istio-ca-root-cert`, undefined, { acceptStatuses: [404] });
      pem = res.status === 200 ? (res.body.data?.["root-cert.pem"] ?? "") : "";
      return pem.includes("BEGIN CERTIFICATE");
    },
    { timeoutMs: 30_000, intervalMs: 300 },
  );
  return pem;
}

// --- a minimal ADS client (protobuf by hand: DiscoveryRequest node + type_url; DiscoveryResponse type_url) ---------

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}
function lengthDelimited(field: number, body: Buffer | string): Buffer {
  const b = typeof body === "string" ? Buffer.from(body) : body;
  return Buffer.concat([varint((field << 3) | 2), varint(b.length), b]);
}
function struct(fields: Record<string, string>): Buffer {
  return Buffer.concat(
    Object.entries(fields).map(([k, v]) =>
      lengthDelimited(1, Buffer.concat([lengthDelimited(1, k), lengthDelimited(2, lengthDelimited(3, v))])),
    ),
  );
}
/** The length-delimited fields of a message, by number (enough for DiscoveryResponse's strings and Anys). */
function fieldsOf(buf: Buffer): Map<number, Buffer[]> {
  const out = new Map<number, Buffer[]>();
  let i = 0;
  const readVarint = () => {
    let v = 0;
    let shift = 0;
    for (;;) {
      const byte = buf[i++]!;
      v += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return v;
      shift += 7;
    }
  };
  while (i < buf.length) {
    const key = readVarint();
    const wire = key & 7;
    const field = Math.floor(key / 8);
    if (wire === 0) readVarint();
    else if (wire === 2) {
      const len = readVarint();
      out.set(field, [...(out.get(field) ?? []), buf.subarray(i, i + len)]);
      i += len;
    } else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else throw new Error(`unexpected wire type ${wire}`);
  }
  return out;
}

const CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/**
 * What a proxyless workload does: one ADS stream on pilot-agent's XDS proxy socket, which pilot-agent forwards to
 * istiod over its own TLS connection. Resolves with the first response's type_url and resource count.
 */
function adsThroughPilotAgent(udsPath: string): Promise<{ typeUrl: string; resources: number }> {
  const client = new grpc.Client(`unix:${udsPath}`, grpc.credentials.createInsecure());
  const node = Buffer.concat([
    lengthDelimited(1, `sidecar~127.0.0.1~sleep-1.${WORKLOAD_NS}~${WORKLOAD_NS}.svc.cluster.local`),
    lengthDelimited(
      2,
      struct({
        NAMESPACE: WORKLOAD_NS,
        SERVICE_ACCOUNT: WORKLOAD_SA,
        CLUSTER_ID: "Kubernetes",
        ISTIO_VERSION: "1.31.0",
        GENERATOR: "grpc",
      }),
    ),
  ]);
  const request = Buffer.concat([lengthDelimited(2, node), lengthDelimited(4, CLUSTER_TYPE)]);
  return new Promise((resolve, reject) => {
    const call = client.makeBidiStreamRequest(
      "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
      (b: Buffer) => b,
      (b: Buffer) => b,
      new grpc.Metadata(),
      { deadline: Date.now() + 20_000 },
    );
    call.on("data", (b: Buffer) => {
      const f = fieldsOf(b);
      resolve({
        typeUrl: f.get(4)?.[0]?.toString() ?? "",
        resources: f.get(2)?.length ?? 0,
      });
      call.cancel();
      client.close();
    });
    call.on("error", (err: grpc.ServiceError) => {
      client.close();
      if (err.code !== grpc.status.CANCELLED) reject(err);
    });
    call.write(request);
  });
}

// --- key scan -------------------------------------------------------------------------------------------------------

function walk(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return walk(p);
    return e.isFile() ? [p] : [];
  });
}

/** PEM private keys in `text`, each with the SPKI (DER, hex) of its public half. */
function privateKeysIn(text: string): string[] {
  return (text.match(/-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----/g) ?? []).map((pem) =>
    createPublicKey(createPrivateKey(pem)).export({ type: "spki", format: "der" }).toString("hex"),
  );
}

function spkiHex(certPem: string): string {
  return new X509Certificate(certPem).publicKey.export({ type: "spki", format: "der" }).toString("hex");
}

void describe("mesh-CA mode: Istio's pilot-agent and istiod (CA server off) on the agent", () => {
  const suite = agentSuite();
  let agent: AgentRun;
  let caPort: number;
  let istiodRoot: string;
  let podRoot: string;
  let istiod: IstiodRun;
  let pilotAgent: ManagedProcess;
  let meshRootPem: string;
  let vaultRoot: string;

  before(async () => {
    const env = suite.env;
    await env.createServiceAccount(WORKLOAD_NS, WORKLOAD_SA);
    vaultRoot = (await env.vault.client.read<{ certificate: string }>("pki/cert/ca", undefined)).data.certificate;
    istiodRoot = mkdtempSync(join(tmpdir(), "iva-istiod-root-"));
    mkdirSync(join(istiodRoot, ISTIOD_TLS), { recursive: true, mode: 0o750 });
    caPort = await freePort();
    // The mesh-CA sidecar: CA listener, istiod's serving certificate, the root ConfigMaps; no cacerts, no key export.
    agent = await suite.start(
      "sidecar",
      [
        `--istio-ca-addr=127.0.0.1:${caPort}`,
        "--istio-ca-names=127.0.0.1",
        `--kubeconfig=${env.kube.kubeconfigPath}`,
        `--istiod-tls-dir=${join(istiodRoot, ISTIOD_TLS)}`,
        "--root-configmaps",
        "--leaf-max-ttl=1h",
      ],
      {
        cacerts: false,
        env: {
          ...process.env,
          POD_NAMESPACE: "istio-system",
          POD_NAME: "istiod-test",
        },
      },
    );
    meshRootPem = await rootFromConfigMap(env, WORKLOAD_NS);

    // The workload's pod, as Istio lays it out (paths relative to pilot-agent's working directory).
    podRoot = mkdtempSync(join(tmpdir(), "iva-pod-"));
    for (const d of [
      "var/run/secrets/istio",
      "var/run/secrets/tokens",
      "var/run/secrets/workload-spiffe-uds",
      "etc/istio/proxy",
      "var/lib/istio/data",
      "certs",
    ])
      mkdirSync(join(podRoot, d), { recursive: true });
    writeFileSync(join(podRoot, "var/run/secrets/istio/root-cert.pem"), meshRootPem);
    writeFileSync(
      join(podRoot, "var/run/secrets/tokens/istio-token"),
      await env.requestToken(WORKLOAD_NS, WORKLOAD_SA, "istio-ca", 3600),
      { mode: 0o600 },
    );

    // As manifests/helm/istiod-values-mesh-ca.yaml runs it: CA server off, serving certificate from the agent's files.
    const tls = join(istiodRoot, ISTIOD_TLS);
    istiod = await startIstiod(env, join(istiodRoot, "etc/cacerts"), { ENABLE_CA_SERVER: "false" }, istiodRoot, [
      `--tlsCertFile=${tls}/tls.crt`,
      `--tlsKeyFile=${tls}/tls.key`,
      `--caCertFile=${tls}/ca.crt`,
    ]);

    const statusPort = await freePort();
    pilotAgent = new ManagedProcess(
      "pilot-agent",
      serverBinaries(["pilot-agent"])["pilot-agent"],
      ["proxy", "sidecar", "--log_output_level=default:info"],
      join(env.dir, `pilot-agent-${Date.now()}.log`),
      {
        PATH: process.env.PATH,
        HOME: podRoot,
        // Proxyless: no Envoy; the certificate goes to files, xDS through pilot-agent's proxy socket.
        DISABLE_ENVOY: "true",
        OUTPUT_CERTS: join(podRoot, "certs"),
        // pilot-agent checks the CA's certificate for CA_ADDR's host (an IP SAN here), and istiod's for
        // istiod.istio-system.svc when dialling "localhost" (pilot/pkg/grpc/tls.go maps localhost to that name).
        CA_ADDR: `127.0.0.1:${caPort}`,
        PROXY_CONFIG: JSON.stringify({
          discoveryAddress: `localhost:${istiod.secureGrpcPort}`,
          statusPort,
        }),
        // Short leaves, so a rotation shows within the test (renewed at half their life).
        SECRET_TTL: "60s",
        POD_NAME: "sleep-1",
        POD_NAMESPACE: WORKLOAD_NS,
        SERVICE_ACCOUNT: WORKLOAD_SA,
        INSTANCE_IP: "127.0.0.1",
        ISTIO_META_CLUSTER_ID: "Kubernetes",
      },
      podRoot,
    );
  });

  after(async () => {
    await pilotAgent?.stop();
    await istiod?.process.stop();
    if (!process.env.IVA_KEEP_ENV) {
      for (const d of [istiodRoot, podRoot]) if (d) rmSync(d, { recursive: true, force: true });
    }
  });

  it("the root pods get from the istio-ca-root-cert ConfigMap is the Vault root the agent serves", async () => {
    const served = (await getBundle(agent.client)).rootCertPem.join("");
    assert.equal(meshRootPem.trim(), served.trim());
    assert.equal(meshRootPem.trim(), vaultRoot.trim());
  });

  it("pilot-agent obtains its workload certificate from the agent: Vault root, its SPIFFE ID", async () => {
    const chainPath = join(podRoot, "certs/cert-chain.pem");
    await waitUntil("pilot-agent wrote cert-chain.pem", () => Promise.resolve(existsSync(chainPath)), {
      timeoutMs: 60_000,
      process: pilotAgent,
      intervalMs: 300,
    });
    const chain = readFileSync(chainPath, "utf8");
    const certs = chain.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g) ?? [];
    assert.ok(certs.length >= 2, "leaf and intermediate");
    assert.deepEqual(subjectAltNames(certs[0]!), [WORKLOAD_ID]);
    assert.match(opensslVerify(certs[0]!, vaultRoot, certs.slice(1).join("")), /OK/);
    const intermediate = (await getBundle(agent.client)).signingCertPem;
    assert.ok(new X509Certificate(certs[0]!).checkIssued(new X509Certificate(intermediate)), "signed by the agent");
    const key = readFileSync(join(podRoot, "certs/key.pem"), "utf8");
    assert.ok(new X509Certificate(certs[0]!).checkPrivateKey(createPrivateKey(key)), "pilot-agent's own key");
  });

  it("pilot-agent rotates it before expiry (a second certificate from the agent)", async () => {
    const chainPath = join(podRoot, "certs/cert-chain.pem");
    const first = new X509Certificate(readFileSync(chainPath, "utf8"));
    let next: X509Certificate = first;
    await waitUntil(
      "pilot-agent rotated its workload certificate",
      () => {
        next = new X509Certificate(readFileSync(chainPath, "utf8"));
        return Promise.resolve(next.serialNumber !== first.serialNumber);
      },
      { timeoutMs: 120_000, process: pilotAgent, intervalMs: 1000 },
    );
    assert.ok(new Date(next.validTo).getTime() > new Date(first.validTo).getTime());
    assert.equal(next.subjectAltName, `URI:${WORKLOAD_ID}`);
    assert.match(opensslVerify(next.toString(), vaultRoot, (await getBundle(agent.client)).signingCertPem), /OK/);
  });

  it("istiod, CA server off, serves the agent-issued certificate and pilot-agent's xDS over verified TLS", async () => {
    const tlsCrt = readFileSync(join(istiodRoot, ISTIOD_TLS, "tls.crt"), "utf8");
    const leaf = new X509Certificate(tlsCrt);
    assert.equal(leaf.subjectAltName, "DNS:istiod.istio-system.svc", "the default name for POD_NAMESPACE");
    assert.match(opensslVerify(tlsCrt.split(/(?<=-----END CERTIFICATE-----\n)/)[0]!, vaultRoot, tlsCrt), /OK/);
    // The certificate istiod presents on its xDS port is exactly that one.
    const presented = await new Promise<string>((resolve, reject) => {
      import("node:tls")
        .then(({ connect }) => {
          const s = connect(
            {
              host: "127.0.0.1",
              port: istiod.secureGrpcPort,
              servername: "istiod.istio-system.svc",
              ca: vaultRoot,
              ALPNProtocols: ["h2"],
            },
            () => {
              const raw = s.getPeerX509Certificate();
              s.end();
              if (!raw) reject(new Error("istiod presented no certificate"));
              else resolve(raw.toString());
            },
          );
          s.on("error", reject);
        })
        .catch(reject);
    });
    assert.equal(new X509Certificate(presented).fingerprint256, leaf.fingerprint256);

    const uds = join(podRoot, "etc/istio/proxy/XDS");
    await waitUntil("pilot-agent's XDS proxy socket", () => Promise.resolve(existsSync(uds)), {
      timeoutMs: 60_000,
      process: pilotAgent,
      intervalMs: 200,
    });
    const answer = await adsThroughPilotAgent(uds);
    assert.equal(answer.typeUrl, CLUSTER_TYPE);
    assert.ok(answer.resources > 0, "istiod sent clusters");
    // istiod's side: it accepted the stream for the workload's node (authenticated by its istio-ca token).
    await waitUntil(
      "istiod logged the workload's ADS connection",
      () => Promise.resolve(/ADS: new connection for node:sleep-1\.default/.test(readFileSync(istiod.logPath, "utf8"))),
      { timeoutMs: 10_000, intervalMs: 200 },
    );
  });

  it("the intermediate's private key is in no file the agent wrote or holds open; the key-export RPC refuses", async () => {
    const bundle = await getBundle(agent.client);
    assert.equal(bundle.privateKeyPem, "", "GetSigningBundle returns no key without --key-export");
    const intermediateSpki = spkiHex(bundle.signingCertPem);
    const istiodKeySpki = spkiHex(readFileSync(join(istiodRoot, ISTIOD_TLS, "tls.crt"), "utf8"));
    assert.notEqual(istiodKeySpki, intermediateSpki);

    const files = [...walk(agent.dir), ...walk(istiodRoot)];
    const pid = agent.process.pid!;
    const open = readdirSync(`/proc/${pid}/fd`)
      .map((fd) => {
        try {
          return readlinkSync(`/proc/${pid}/fd/${fd}`);
        } catch {
          return "";
        }
      })
      .filter((p) => p.startsWith("/") && existsSync(p) && statSync(p).isFile());
    assert.ok(files.length > 0 && files.some((f) => f.endsWith("tls.key")));
    const withKeys: string[] = [];
    // PKCS#8 DER of an EC key starts: version 0, then the ecPublicKey algorithm (a certificate's SPKI has no version).
    const pkcs8EcDer = Buffer.from("020100301306072a8648ce3d0201", "hex");
    for (const f of new Set([...files, ...open])) {
      const bytes = readFileSync(f);
      assert.ok(!bytes.includes(pkcs8EcDer), `${f} holds a DER private key`);
      const spkis = privateKeysIn(bytes.toString("latin1"));
      // The key's DER too: the SPKI of the intermediate never sits in a file beside its private half.
      assert.ok(!spkis.includes(intermediateSpki), `${f} holds the intermediate's private key`);
      if (spkis.length) withKeys.push(f);
    }
    // The only private key the agent writes is istiod's own serving key.
    assert.deepEqual(
      [...new Set(withKeys.map((f) => f.split("/").at(-1)))],
      ["tls.key"],
      `private keys found in: ${withKeys.join(", ")}`,
    );
  });
});
