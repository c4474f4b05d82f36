// What relay tests share: the relay issuer's gRPC calls as outcomes (never thrown, so a test asserts on refusals),
// and the Kubernetes Secrets the relay writes, read back with the admin client.
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { RelayCertificateIssuerClient, type Issued } from "../../src/gen/relay/v1/issuer.js";
import type { KubeSecret } from "../../src/kube/secret-store.js";
import type { TestEnv } from "./harness.js";

/** The relay server's DNS name, as Gloo's management server is addressed. */
export const RELAY_SERVER_DNS = "gloo-mesh-mgmt-server.gloo-mesh";

export type IssuerOutcome = { ok: true; issued: Issued } | { ok: false; code: grpc.status; details: string };

/** Where the issuer listens and the root its serving certificate chains to. */
export interface IssuerTarget {
  port: number;
  rootPem: string;
}

/** A client certificate and its key, in PEM. */
export interface ClientPair {
  cert: string;
  key: string;
}

/** A direct gRPC client of the issuer: server verified with the root (as RELAY_SERVER_DNS), optional client cert. */
export function issuerClient(target: IssuerTarget, pair?: ClientPair): RelayCertificateIssuerClient {
  const creds = pair
    ? grpc.credentials.createSsl(Buffer.from(target.rootPem), Buffer.from(pair.key), Buffer.from(pair.cert))
    : grpc.credentials.createSsl(Buffer.from(target.rootPem));
  return new RelayCertificateIssuerClient(`127.0.0.1:${target.port}`, creds, {
    "grpc.ssl_target_name_override": RELAY_SERVER_DNS,
    "grpc.default_authority": RELAY_SERVER_DNS,
  });
}

type IssuerMethod = "bootstrap" | "renew";

/** One call on a fresh connection, closed afterwards. */
function issuerCall<M extends IssuerMethod>(
  target: IssuerTarget,
  method: M,
  req: Parameters<RelayCertificateIssuerClient[M]>[0],
  pair?: ClientPair,
): Promise<IssuerOutcome> {
  const c = issuerClient(target, pair);
  const call = c[method].bind(c) as (
    req: unknown,
    md: grpc.Metadata,
    opts: Partial<grpc.CallOptions>,
    cb: (err: grpc.ServiceError | null, res: Issued) => void,
  ) => grpc.ClientUnaryCall;
  return new Promise((resolve) =>
    call(req, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err, res) => {
      c.close();
      resolve(err ? { ok: false, code: err.code, details: err.details } : { ok: true, issued: res });
    }),
  );
}

export function bootstrapCall(
  target: IssuerTarget,
  req: { csrPem: string; identityToken: string; clusterName: string },
): Promise<IssuerOutcome> {
  return issuerCall(target, "bootstrap", req);
}

export function renewCall(target: IssuerTarget, csrPem: string, pair?: ClientPair): Promise<IssuerOutcome> {
  return issuerCall(target, "renew", { csrPem }, pair);
}

/** The outcome is a refusal with `code` and a details text starting with `reason: `. */
export function assertRefused(o: IssuerOutcome, code: grpc.status, reason: string, what: string): void {
  assert.equal(o.ok, false, `${what}: expected a refusal`);
  if (o.ok) return;
  assert.equal(grpc.status[o.code], grpc.status[code], `${what}: status (${o.details})`);
  assert.ok(o.details.startsWith(`${reason}: `), `${what}: reason ${reason}, got "${o.details}"`);
}

export const secretPath = (ns: string, name: string) => `/api/v1/namespaces/${ns}/secrets/${name}`;

export async function getSecret(env: TestEnv, ns: string, name: string): Promise<KubeSecret | undefined> {
  const res = await env.kube.admin.request<KubeSecret>("GET", secretPath(ns, name), undefined, {
    acceptStatuses: [404],
  });
  return res.status === 404 ? undefined : res.body;
}

/** A Secret's data, decoded; undefined when the Secret does not exist. */
export async function secretDataIfExists(
  env: TestEnv,
  ns: string,
  name: string,
): Promise<Record<string, string> | undefined> {
  const s = await getSecret(env, ns, name);
  if (!s) return undefined;
  return Object.fromEntries(Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64").toString()]));
}

/** A Secret's data, decoded; asserts that the Secret exists. */
export async function secretData(env: TestEnv, ns: string, name: string): Promise<Record<string, string>> {
  const d = await secretDataIfExists(env, ns, name);
  assert.ok(d, `Secret ${ns}/${name} exists`);
  return d;
}

export const EKU_SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
export const EKU_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";

/** A relay TLS Secret's three PEMs. */
export interface TlsPair {
  cert: string;
  key: string;
  ca: string;
}

/** The relay TLS Secret `ns/name`, asserting it holds tls.crt, tls.key and ca.crt. */
export async function tlsPair(env: TestEnv, ns: string, name: string): Promise<TlsPair> {
  const d = await secretData(env, ns, name);
  assert.ok(d["tls.crt"] && d["tls.key"] && d["ca.crt"], `${ns}/${name} has tls.crt, tls.key and ca.crt`);
  return { cert: d["tls.crt"], key: d["tls.key"], ca: d["ca.crt"] };
}

/** The issuer's audit line for each certificate it issued (JSON log lines with audit=relay_certificate_issued). */
export interface RelayIssuedAudit {
  audit: string;
  method: "bootstrap" | "renew";
  cluster: string;
  serial: string;
  notAfter: string;
  bootstrappedAt: string;
  peer: string;
  acceptedToken?: string;
  time: string;
}

export function issuedAudits(issuerLog: string): RelayIssuedAudit[] {
  return issuerLog
    .split("\n")
    .filter((l) => l.includes('"audit":"relay_certificate_issued"'))
    .map((l) => JSON.parse(l) as RelayIssuedAudit);
}

/** The relay's flags for the test's Vault (Kubernetes auth with the token at `tokenPath`) and apiserver. */
export function relayConnectionArgs(env: TestEnv, tokenPath: string): string[] {
  return [
    `--vault-addr=${env.vault.url}`,
    `--vault-cacert=${env.vault.caFile}`,
    `--token-path=${tokenPath}`,
    `--kubeconfig=${env.kube.kubeconfigPath}`,
  ];
}
