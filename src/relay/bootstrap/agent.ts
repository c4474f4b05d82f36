// The agent side of bootstrap mode (`relay --role agent --bootstrap=HOST:PORT --cluster=NAME`): keeps
// relay-client-tls-secret holding a certificate from the management relay's issuer, with no Vault in this cluster.
// The key is generated here and goes only into that Secret. With no usable certificate (none, expired, or not from
// the relay root in relay-root-tls-secret) the agent bootstraps once with the identity token from
// relay-identity-token-secret; from then on it renews over mutual TLS with the certificate it holds, when
// --grace-ratio of the lifetime remains, and never reads the token again while that certificate is valid.
import { createPrivateKey } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { exportPrivateKeyPem, generateKeyPair, type CryptoKey, type KeyAlgorithmName } from "../../crypto/keys.js";
import { subtle, x509 } from "../../crypto/x509.js";
import { chainProblem } from "../../authority/chain.js";
import type { Issued } from "../../gen/relay/v1/issuer.js";
import { Backoff, nextRunAfterSuccess } from "../../util/backoff.js";
import { systemClock, type Clock, type Timer } from "../../util/clock.js";
import type { RelayConfig } from "../config.js";
import { createLeafCsr } from "../../authority/csr.js";
import { keyAlgorithmOf } from "../../crypto/keys.js";
import { splitPemCertificatesOrNone as splitPemCertificates } from "../../crypto/pem.js";
import { dnsNamesOf, inspectTlsSecret } from "../../kube/tls-secret.js";
import type { RelayMetrics } from "../metrics.js";
import {
  decideForSecret,
  writeIssued,
  type HeldSlot,
  type RenewalSettings,
  type SecretContext,
} from "../keep-or-renew.js";
import { scrub } from "../../observability/logger.js";
import { SecretStore } from "../../kube/secret-store.js";
import { IssuerCallError, type IssuerClient } from "./issuer-client.js";
import type { BootstrapAgentMetrics } from "./metrics.js";

export interface BootstrapAgentDeps {
  secrets: SecretStore;
  client: IssuerClient;
  metrics: RelayMetrics;
  agentMetrics: BootstrapAgentMetrics;
  log: Logger;
  clock?: Clock;
  random?: () => number;
}

/** The issuer's answer failed a check; nothing was written. */
export class InvalidIssuedError extends Error {
  override readonly name = "InvalidIssuedError";
  constructor(message: string) {
    super(`the issuer's certificate was refused: ${message}`);
  }
}

export type BootstrapTrigger = "start" | "schedule" | "retry" | "resync" | "signal" | "once";

export class BootstrapAgent {
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly log: Logger;
  private readonly backoff: Backoff;
  private readonly cluster: string;
  private readonly slot: HeldSlot = {};
  private timer: Timer | undefined;
  private running: Promise<number> | undefined;
  private stopped = false;
  /** The last reconciliation's error, if it failed. */
  lastError: string | undefined;

  constructor(
    private readonly cfg: RelayConfig,
    private readonly deps: BootstrapAgentDeps,
  ) {
    this.clock = deps.clock ?? systemClock;
    this.random = deps.random ?? Math.random;
    this.log = deps.log;
    this.backoff = new Backoff(cfg.backoff, this.random);
    this.cluster = cfg.cluster ?? "";
  }

  /** A certificate is held in the Secret and has not expired. */
  ready(): boolean {
    return this.slot.held !== undefined && this.slot.held.notAfter > this.clock.now();
  }

  /** Reconciles now, then keeps the certificate renewed until stop(). */
  async start(): Promise<void> {
    await this.run("start");
  }

  /** One reconciliation; throws what failed (for --once). */
  async runOnce(): Promise<void> {
    await this.reconcile("once", false);
  }

  /** Renews now (SIGHUP), over mTLS when a usable certificate is held. */
  rotateNow(): void {
    void this.run("signal", true);
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
  }

  private qualified(name: string): string {
    return `${this.deps.secrets.namespace}/${name}`;
  }

  private ctx(): SecretContext {
    const name = this.cfg.secrets.client;
    return {
      name,
      qualified: this.qualified(name),
      secrets: this.deps.secrets,
      metrics: this.deps.metrics,
      log: this.log,
    };
  }

  private get renewal(): RenewalSettings {
    return { graceRatio: this.cfg.graceRatio, jitterRatio: this.cfg.jitterRatio, random: this.random };
  }

  private async run(trigger: BootstrapTrigger, force = false): Promise<void> {
    if (this.stopped) return;
    this.timer?.cancel();
    try {
      // One reconciliation at a time; a trigger arriving meanwhile runs after it.
      const prev = this.running ?? Promise.resolve(0);
      const next = prev.catch(() => 0).then(() => this.reconcile(trigger, force));
      this.running = next;
      const delay = await next;
      this.backoff.reset();
      this.lastError = undefined;
      const { delayMs, trigger: why } = nextRunAfterSuccess(delay, this.cfg.resyncSeconds * 1000);
      this.schedule(delayMs, why);
    } catch (err) {
      const message = scrub((err as Error).message);
      this.lastError = message;
      const delay = this.backoff.next();
      const reason = failureReason(err);
      this.deps.metrics.failures.inc({ secret: this.cfg.secrets.client, reason });
      this.log.error(
        {
          secret: this.qualified(this.cfg.secrets.client),
          reason,
          trigger,
          err: message,
          retryInMs: delay,
          heldNotAfter: this.slot.held ? new Date(this.slot.held.notAfter).toISOString() : undefined,
        },
        "could not obtain a relay client certificate from the issuer",
      );
      this.schedule(delay, "retry");
    }
  }

  private schedule(delayMs: number, trigger: BootstrapTrigger): void {
    this.timer?.cancel();
    if (this.stopped) return;
    this.timer = this.clock.after(Math.max(0, delayMs), () => void this.run(trigger));
  }

  /** Brings the client Secret to a valid, current certificate; returns the delay until it next needs attention. */
  private async reconcile(trigger: BootstrapTrigger, force: boolean): Promise<number> {
    const s = this.cfg.secrets;
    const rootPem = await this.readRoot();
    const secret = await this.deps.secrets.get(s.client);
    this.deps.secrets.assertWritable(s.client, secret);
    const now = this.clock.now();
    const data = SecretStore.decode(secret);

    // The held key is inspected as what it is; a key of another algorithm than configured is then renewed (mismatch).
    const heldAlgorithm = heldKeyAlgorithm(data["tls.key"], this.cfg);
    const stored = secret
      ? await inspectTlsSecret(
          data,
          { kind: "leaf", dnsNames: [this.cluster], keyAlgorithm: heldAlgorithm },
          rootPem,
          new Date(now),
        )
      : undefined;
    const decision = decideForSecret(this.ctx(), this.renewal, this.slot, {
      secret,
      stored,
      force,
      mismatch: heldAlgorithm !== this.cfg.keyAlgorithm ? `the key is not ${this.cfg.keyAlgorithm}` : undefined,
      trigger,
      now,
      what: "client certificate",
    });
    if (decision.action === "keep") return decision.held.renewAt - now;
    const { reason } = decision;
    // A certificate still valid for this cluster and the relay root authenticates its own renewal (mTLS); without
    // one, the agent falls back to bootstrapping with the identity token.
    const usable = decision.usable ? { certPem: data["tls.crt"]!, keyPem: data["tls.key"]! } : undefined;

    const keys = await generateKeyPair(this.cfg.keyAlgorithm, true);
    const csr = await createLeafCsr(keys, this.cfg.keyAlgorithm, [this.cluster], "client");
    const method = usable ? "renew" : "bootstrap";
    let issued: Issued;
    try {
      if (usable) {
        // mTLS with the certificate held now: the identity token is not read, unless the issuer says this chain
        // needs re-authorisation (too long since its Bootstrap): then the cluster's token authorises a new one.
        issued = await this.deps.client.renew(rootPem, usable.certPem, usable.keyPem, csr).catch(async (err) => {
          if (!(err instanceof IssuerCallError) || !/^bootstrap_(too_old|time_missing): /.test(err.details)) throw err;
          this.deps.log.warn(
            { reason: err.details.split(":")[0] },
            "the issuer asks for a new Bootstrap; using the token",
          );
          return this.deps.client.bootstrap(rootPem, csr, await this.readToken(), this.cluster);
        });
      } else {
        const token = await this.readToken();
        issued = await this.deps.client.bootstrap(rootPem, csr, token, this.cluster);
      }
      this.deps.agentMetrics.requests.inc({ method, outcome: "ok" });
    } catch (err) {
      const outcome = err instanceof IssuerCallError ? (grpcName(err.code) ?? "error") : "error";
      this.deps.agentMetrics.requests.inc({ method, outcome });
      throw err;
    }
    const checked = await validateIssued(issued, keys.publicKey, rootPem, this.cluster, new Date(this.clock.now()));
    const {
      outcome,
      held,
      renewInMs: renewIn,
    } = await writeIssued(
      this.ctx(),
      this.renewal,
      secret,
      {
        ...checked,
        keyPem: await exportPrivateKeyPem(keys.privateKey),
        rootPem,
        source: `issuer ${this.cfg.bootstrap.address ?? ""} (${method})`,
      },
      trigger,
      () => this.clock.now(),
    );
    this.slot.held = held;
    this.log.info(
      {
        secret: this.qualified(s.client),
        write: outcome,
        method,
        trigger,
        reason,
        cluster: this.cluster,
        serial: checked.serialHex,
        notAfter: checked.notAfter.toISOString(),
        renewInMs: renewIn,
      },
      method === "renew"
        ? "renewed the relay client certificate over mTLS and wrote it into the Secret"
        : "bootstrapped a relay client certificate with the identity token and wrote it into the Secret",
    );
    return renewIn;
  }

  private async readRoot(): Promise<string> {
    const name = this.cfg.secrets.root;
    const root = SecretStore.decode(await this.deps.secrets.get(name))["ca.crt"];
    const pems = splitPemCertificates(root ?? "");
    if (pems.length === 0)
      throw new Error(
        `Secret ${this.qualified(name)} is missing or holds no PEM certificate under ca.crt; copy the management ` +
          "relay's root CA (its relay-root-tls-secret ca.crt) into it",
      );
    return pems.join("");
  }

  private async readToken(): Promise<string> {
    const name = this.cfg.secrets.token;
    const token = SecretStore.decode(await this.deps.secrets.get(name)).token?.trim();
    if (!token)
      throw new Error(
        `Secret ${this.qualified(name)} is missing or has no "token"; bootstrapping needs the relay identity token ` +
          "(the management relay's relay-identity-token-secret)",
      );
    return token;
  }
}

function heldKeyAlgorithm(keyPem: string | undefined, cfg: RelayConfig): KeyAlgorithmName {
  try {
    return (keyPem && keyAlgorithmOf(createPrivateKey(keyPem))) || cfg.keyAlgorithm;
  } catch {
    return cfg.keyAlgorithm;
  }
}

function grpcName(code: number): string | undefined {
  return grpc.status[code];
}

function failureReason(err: unknown): string {
  if (err instanceof IssuerCallError) return `issuer_${(grpcName(err.code) ?? String(err.code)).toLowerCase()}`;
  if (err instanceof InvalidIssuedError) return "invalid_issuer_answer";
  const name = (err as Error).name;
  if (name === "UnmanagedSecretError") return "unmanaged_secret";
  if (name === "IncompatibleSecretError") return "incompatible_secret";
  if (name === "HttpStatusError" || name === "HttpTransportError") return "kubernetes";
  return "error";
}

export interface CheckedIssued {
  /** The certificate and its intermediates (not the root), PEM: tls.crt. */
  tlsCrt: string;
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
}

/**
 * Checks the issuer's answer before anything is written: the certificate is for our key, names exactly our cluster,
 * is a current leaf, and its chain verifies up to the relay root we trust.
 */
export async function validateIssued(
  issued: Issued,
  publicKey: CryptoKey,
  rootPem: string,
  cluster: string,
  now: Date,
): Promise<CheckedIssued> {
  let chain: x509.X509Certificate[];
  let root: x509.X509Certificate;
  try {
    chain = (issued.certChainPem ?? []).flatMap(splitPemCertificates).map((p) => new x509.X509Certificate(p));
    root = new x509.X509Certificate(splitPemCertificates(rootPem)[0]!);
  } catch {
    throw new InvalidIssuedError("cert_chain_pem is not a list of PEM certificates");
  }
  const same = (a: x509.X509Certificate, b: x509.X509Certificate) =>
    Buffer.from(a.rawData).equals(Buffer.from(b.rawData));
  const withoutRoot = chain.filter((c) => !same(c, root));
  const leaf = withoutRoot[0];
  if (!leaf) throw new InvalidIssuedError("cert_chain_pem holds no certificate");
  const spki = Buffer.from(await subtle.exportKey("spki", publicKey));
  if (!Buffer.from(leaf.publicKey.rawData).equals(spki))
    throw new InvalidIssuedError("the certificate is not for the key this agent generated");
  const names = dnsNamesOf(leaf);
  if (names.length !== 1 || names[0] !== cluster)
    throw new InvalidIssuedError(`the certificate names [${names.join(", ")}], expected [${cluster}]`);
  if (leaf.getExtension(x509.BasicConstraintsExtension)?.ca === true)
    throw new InvalidIssuedError("the certificate is a CA, expected a leaf");
  if (leaf.notAfter.getTime() <= now.getTime())
    throw new InvalidIssuedError(`the certificate expired at ${leaf.notAfter.toISOString()}`);
  const broken = await chainProblem([...withoutRoot, root]);
  if (broken !== undefined) throw new InvalidIssuedError(`${broken}; is ca.crt the relay root?`);
  return {
    tlsCrt: withoutRoot.map((c) => c.toString("pem") + "\n").join(""),
    serialHex: leaf.serialNumber.toLowerCase(),
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
  };
}
