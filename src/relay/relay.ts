// The relay controller: keeps each relay Secret in its desired state. Each Secret is an item reconciled on its own
// schedule (renewal point, resync, or retry with backoff); all reconciliations run one at a time. A certificate
// Secret that still holds a valid, matching, current pair that is not due for renewal is kept; otherwise a new key
// is generated here, Vault signs its CSR, the answer is validated, and certificate and key are written in one update.
import type { Logger } from "pino";
import { InvalidIssuerAnswerError, validateSignAnswer } from "../authority/chain.js";
import { createIntermediateCsr } from "../authority/csr.js";
import type { HeldCertificate } from "../authority/renewal.js";
import { exportPrivateKeyPem, generateKeyPair } from "../crypto/keys.js";
import { x509 } from "../crypto/x509.js";
import { HttpStatusError, HttpTransportError } from "../net/http-json.js";
import { scrub } from "../observability/logger.js";
import { Backoff, nextRunAfterSuccess } from "../util/backoff.js";
import { sleep, systemClock, type Clock, type Timer } from "../util/clock.js";
import type { RelayConfig } from "./config.js";
import { createLeafCsr, type LeafUsage } from "../authority/csr.js";
import { splitPemCertificatesOrNone as splitPemCertificates } from "../crypto/pem.js";
import { dnsNamesOf, inspectTlsSecret, type TlsExpectation } from "../kube/tls-secret.js";
import {
  ANNOTATION_PREFIX,
  decideForSecret,
  writeIssued,
  writeSecret,
  type RenewalSettings,
  type SecretContext,
} from "./keep-or-renew.js";
import type { RelayMetrics } from "./metrics.js";
import { IncompatibleSecretError, SecretStore, UnmanagedSecretError, type KubeSecret } from "../kube/secret-store.js";
import type { RelayVault } from "./vault.js";

export type RelayTrigger = "start" | "schedule" | "retry" | "resync" | "signal" | "once";

interface ItemBase {
  secret: string;
  timer?: Timer | undefined;
  backoff: Backoff;
  /** The last reconciliation succeeded at least once (the Secret has held good content). */
  everOk: boolean;
  lastError?: string | undefined;
  /** What the Secret holds, for certificate items. */
  held?: HeldCertificate | undefined;
}

type Item =
  | (ItemBase & { kind: "root" })
  | (ItemBase & { kind: "token"; kvPath: string; cluster: string | undefined })
  | (ItemBase & { kind: "leaf"; usage: LeafUsage; vaultRole: string; dnsNames: string[] })
  | (ItemBase & { kind: "signing" });

export interface RelayDeps {
  vault: RelayVault;
  secrets: SecretStore;
  metrics: RelayMetrics;
  log: Logger;
  clock?: Clock;
  random?: () => number;
}

/** Attempts per Secret in --once mode when the failure looks transient (network, 5xx, 429). */
const ONCE_ATTEMPTS = 4;

export class Relay {
  private readonly items: Item[];
  private readonly vault: RelayVault;
  private readonly secrets: SecretStore;
  private readonly metrics: RelayMetrics;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly random: () => number;
  private rootPem: string | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly cfg: RelayConfig,
    deps: RelayDeps,
  ) {
    this.vault = deps.vault;
    this.secrets = deps.secrets;
    this.metrics = deps.metrics;
    this.log = deps.log;
    this.clock = deps.clock ?? systemClock;
    this.random = deps.random ?? Math.random;
    const base = (secret: string): ItemBase => ({
      secret,
      backoff: new Backoff(cfg.backoff, this.random),
      everOk: false,
    });
    const s = cfg.secrets;
    this.items = [{ ...base(s.root), kind: "root" }];
    if (cfg.role === "server") {
      this.items.push({
        ...base(s.server),
        kind: "leaf",
        usage: "server",
        vaultRole: cfg.serverRole,
        dnsNames: cfg.serverDns,
      });
      if (cfg.signingIntermediate) this.items.push({ ...base(s.signing), kind: "signing" });
    } else {
      this.items.push({
        ...base(s.client),
        kind: "leaf",
        usage: "client",
        vaultRole: cfg.clientRole,
        dnsNames: [cfg.cluster ?? ""],
      });
    }
    if (cfg.sharedToken) {
      this.items.push({ ...base(s.token), kind: "token", kvPath: cfg.kvPath, cluster: undefined });
    } else if (cfg.role === "server") {
      // One token per registered cluster, each in its own KV entry and Secret (copied to that cluster only).
      for (const cluster of cfg.clusters)
        this.items.push({
          ...base(clusterTokenSecretName(s.token, cluster)),
          kind: "token",
          kvPath: `${cfg.clusterTokensPath}/${cluster}`,
          cluster,
        });
    }
    // An agent with Vault access needs no identity token (its certificate comes from Vault); with per-cluster tokens
    // it gets none, so its policy need not read any token.
  }

  /** The names of the Secrets this relay keeps, in reconciliation order. */
  secretNames(): string[] {
    return this.items.map((i) => i.secret);
  }

  /** Reconciles every Secret once (retrying transient failures a few times). Returns the ones that failed. */
  async runOnce(): Promise<{ failed: { secret: string; error: string }[] }> {
    const failed: { secret: string; error: string }[] = [];
    for (const item of this.items) {
      for (let attempt = 1; ; attempt++) {
        try {
          await this.exclusive(() => this.reconcile(item, "once", false));
          item.everOk = true;
          break;
        } catch (err) {
          if (attempt < ONCE_ATTEMPTS && isTransient(err) && !this.stopped) {
            const delay = item.backoff.next();
            this.log.warn(
              { secret: this.qualified(item), err: scrub((err as Error).message), attempt, retryInMs: delay },
              "transient failure; retrying",
            );
            await sleep(this.clock, delay);
            continue;
          }
          this.recordFailure(item, err, "once", undefined);
          failed.push({ secret: this.qualified(item), error: scrub((err as Error).message) });
          break;
        }
      }
    }
    return { failed };
  }

  /** Reconciles every Secret now, then keeps each on its own schedule until stop(). */
  async start(): Promise<void> {
    for (const item of this.items) await this.runItem(item, "start");
  }

  /** Issues new certificates for every certificate Secret now (SIGHUP). */
  rotateNow(trigger: RelayTrigger = "signal"): void {
    for (const item of this.items) {
      if (item.kind === "leaf" || item.kind === "signing") void this.runItem(item, trigger, true);
    }
  }

  /** Every Secret has been put in place and no held certificate has expired. */
  ready(): boolean {
    const now = this.clock.now();
    return this.items.every((i) => i.everOk && (i.held === undefined || i.held.notAfter > now));
  }

  stop(): void {
    this.stopped = true;
    for (const item of this.items) item.timer?.cancel();
  }

  private qualified(item: Item): string {
    return `${this.secrets.namespace}/${item.secret}`;
  }

  private ctx(item: Item): SecretContext {
    const { secrets, metrics, log } = this;
    return { name: item.secret, qualified: this.qualified(item), secrets, metrics, log };
  }

  private get renewal(): RenewalSettings {
    return { graceRatio: this.cfg.graceRatio, jitterRatio: this.cfg.jitterRatio, random: this.random };
  }

  /** Runs fn after every reconciliation queued before it. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async runItem(item: Item, trigger: RelayTrigger, force = false): Promise<void> {
    if (this.stopped) return;
    item.timer?.cancel();
    item.timer = undefined;
    try {
      const next = await this.exclusive(() => this.reconcile(item, trigger, force));
      item.backoff.reset();
      item.everOk = true;
      item.lastError = undefined;
      const { delayMs, trigger: why } = nextRunAfterSuccess(next, this.cfg.resyncSeconds * 1000);
      this.schedule(item, delayMs, why);
    } catch (err) {
      const delay = item.backoff.next();
      this.recordFailure(item, err, trigger, delay);
      this.schedule(item, delay, "retry");
    }
  }

  private schedule(item: Item, delayMs: number, trigger: RelayTrigger): void {
    item.timer?.cancel();
    if (this.stopped) return;
    item.timer = this.clock.after(Math.max(0, delayMs), () => void this.runItem(item, trigger));
  }

  private recordFailure(item: Item, err: unknown, trigger: RelayTrigger, retryInMs: number | undefined): void {
    const message = scrub((err as Error).message ?? String(err));
    item.lastError = message;
    const reason = failureReason(err);
    this.metrics.failures.inc({ secret: item.secret, reason });
    const fields = {
      secret: this.qualified(item),
      reason,
      trigger,
      err: message,
      retryInMs,
      heldNotAfter: item.held ? new Date(item.held.notAfter).toISOString() : undefined,
    };
    if (err instanceof UnmanagedSecretError) this.log.error(fields, message);
    else this.log.error(fields, `could not reconcile Secret ${this.qualified(item)}`);
  }

  /** Brings one Secret to its desired state; returns the delay until it next needs attention. */
  private async reconcile(item: Item, trigger: RelayTrigger, force: boolean): Promise<number> {
    switch (item.kind) {
      case "root":
        return this.reconcileRoot(item, trigger);
      case "token":
        return this.reconcileToken(item, trigger);
      case "leaf":
      case "signing":
        return this.reconcileCertificate(item, trigger, force);
    }
  }

  private async reconcileRoot(item: Item, trigger: RelayTrigger): Promise<number> {
    const root = await this.vault.rootPem();
    this.rootPem = root;
    const notAfter = new x509.X509Certificate(root).notAfter;
    const secret = await this.secrets.get(item.secret);
    this.secrets.assertWritable(item.secret, secret);
    if (secret && SecretStore.isManaged(secret) && samePem(SecretStore.decode(secret)["ca.crt"], root)) {
      this.metrics.held(item.secret, notAfter);
      return Number.POSITIVE_INFINITY;
    }
    const outcome = await writeSecret(
      this.ctx(item),
      secret,
      {
        type: "Opaque",
        data: { "ca.crt": root },
        annotations: {
          [`${ANNOTATION_PREFIX}source`]: `${this.cfg.pkiMount}/cert/ca_chain`,
          [`${ANNOTATION_PREFIX}not-after`]: notAfter.toISOString(),
        },
      },
      trigger,
    );
    this.metrics.held(item.secret, notAfter);
    this.log.info(
      { secret: this.qualified(item), write: outcome, trigger, rootSubject: new x509.X509Certificate(root).subject },
      "wrote Vault's root CA certificate into the Secret",
    );
    return Number.POSITIVE_INFINITY;
  }

  private async reconcileToken(item: Item & { kind: "token" }, trigger: RelayTrigger): Promise<number> {
    const { token, created, replacedDeleted } = await this.vault.identityToken(item.kvPath);
    if (created) {
      this.log.info(
        { kvPath: item.kvPath, cluster: item.cluster, replacedDeleted },
        replacedDeleted
          ? "the identity token in Vault was deleted; generated a new one (the deleted value is never reused)"
          : "generated the relay identity token and stored it in Vault (check-and-set)",
      );
    }
    const secret = await this.secrets.get(item.secret);
    this.secrets.assertWritable(item.secret, secret);
    if (secret && SecretStore.isManaged(secret) && SecretStore.decode(secret).token === token) {
      return Number.POSITIVE_INFINITY;
    }
    const outcome = await writeSecret(
      this.ctx(item),
      secret,
      {
        type: "Opaque",
        data: { token },
        annotations: {
          [`${ANNOTATION_PREFIX}source`]: item.kvPath,
          ...(item.cluster ? { [`${ANNOTATION_PREFIX}cluster`]: item.cluster } : {}),
        },
      },
      trigger,
    );
    this.log.info(
      { secret: this.qualified(item), write: outcome, trigger, kvPath: item.kvPath, cluster: item.cluster },
      "wrote the identity token from Vault into the Secret",
    );
    return Number.POSITIVE_INFINITY;
  }

  private expectationFor(item: Item): TlsExpectation {
    return item.kind === "leaf"
      ? { kind: "leaf", dnsNames: item.dnsNames, keyAlgorithm: this.cfg.keyAlgorithm }
      : { kind: "ca", keyAlgorithm: this.cfg.keyAlgorithm };
  }

  private async reconcileCertificate(item: Item, trigger: RelayTrigger, force: boolean): Promise<number> {
    // Vault's current root; if Vault cannot be reached, a Secret is judged by its own ca.crt (and re-judged later).
    const trusted =
      this.rootPem ??
      (await this.vault.rootPem().then(
        (root) => (this.rootPem = root),
        (err: unknown) => {
          this.log.warn(
            { secret: this.qualified(item), err: scrub((err as Error).message) },
            "cannot read Vault's CA chain; checking the Secret against its own ca.crt",
          );
          return undefined;
        },
      ));
    const secret = await this.secrets.get(item.secret);
    this.secrets.assertWritable(item.secret, secret);
    const now = this.clock.now();
    const decision = decideForSecret(this.ctx(item), this.renewal, item, {
      secret,
      stored: secret
        ? await inspectTlsSecret(SecretStore.decode(secret), this.expectationFor(item), trusted, new Date(now))
        : undefined,
      force,
      trigger,
      now,
      what: "certificate",
    });
    if (decision.action === "keep") return decision.held.renewAt - now;
    return this.issue(item, secret, trigger, decision.reason);
  }

  private async issue(item: Item, secret: KubeSecret | undefined, trigger: RelayTrigger, reason: string) {
    const alg = this.cfg.keyAlgorithm;
    const keys = await generateKeyPair(alg, true);
    let answer;
    let vaultPath: string;
    if (item.kind === "leaf") {
      vaultPath = `${this.cfg.pkiMount}/sign/${item.vaultRole}`;
      const csr = await createLeafCsr(keys, alg, item.dnsNames, item.usage);
      answer = await this.vault.signLeaf(item.vaultRole, csr, item.dnsNames, this.cfg.ttlSeconds);
    } else {
      vaultPath = `${this.cfg.pkiMount}/root/sign-intermediate`;
      const csr = await createIntermediateCsr(keys, alg, { commonName: this.cfg.signingCommonName });
      answer = await this.vault.signIntermediate(
        csr,
        this.cfg.signingCommonName,
        this.cfg.signingTtlSeconds,
        this.cfg.signingPermittedDns,
      );
    }
    const chain = await validateSignAnswer(answer?.data ?? {}, keys.publicKey, new Date(this.clock.now()), {
      expectCa: item.kind === "signing",
    });
    if (item.kind === "leaf") {
      const got = dnsNamesOf(chain.cert).sort().join(",");
      const want = [...item.dnsNames].sort().join(",");
      if (got !== want) {
        throw new InvalidIssuerAnswerError(
          `${vaultPath} issued DNS names [${got}] instead of [${want}]; check the PKI role's allowed domains and use_csr_sans`,
        );
      }
    }
    const warnings = answer.warnings ?? [];
    const notable = warnings.filter((w) => !BENIGN_VAULT_WARNINGS.some((re) => re.test(w)));
    if (notable.length) this.log.warn({ path: vaultPath, warnings: notable }, "Vault warned while signing");
    if (notable.length < warnings.length)
      this.log.debug({ path: vaultPath, warnings: warnings.filter((w) => !notable.includes(w)) }, "Vault notes");
    if (this.rootPem !== undefined && !samePem(this.rootPem, chain.rootPem)) {
      this.log.warn({ path: vaultPath }, "Vault signed with a different root than before; refreshing the root Secret");
      this.rootPem = chain.rootPem;
      const rootItem = this.items.find((i) => i.kind === "root");
      if (rootItem && !this.cfg.once) this.schedule(rootItem, 0, "resync");
    }
    const serialHex = chain.cert.serialNumber.toLowerCase();
    const {
      outcome,
      held,
      renewInMs: renewIn,
    } = await writeIssued(
      this.ctx(item),
      this.renewal,
      secret,
      {
        tlsCrt: chain.chainPem.slice(0, -1).join(""),
        keyPem: await exportPrivateKeyPem(keys.privateKey),
        rootPem: chain.rootPem,
        serialHex,
        notBefore: chain.cert.notBefore,
        notAfter: chain.cert.notAfter,
        source: vaultPath,
      },
      trigger,
      () => this.clock.now(),
    );
    item.held = held;
    this.log.info(
      {
        secret: this.qualified(item),
        write: outcome,
        trigger,
        reason,
        serial: serialHex,
        notAfter: chain.cert.notAfter.toISOString(),
        dnsNames: item.kind === "leaf" ? item.dnsNames : undefined,
        chainLength: chain.chainPem.length,
        renewInMs: renewIn,
      },
      `wrote a new ${item.kind === "leaf" ? `${item.usage} certificate` : "signing intermediate"} and its key into the Secret`,
    );
    return renewIn;
  }
}

/** Vault notes expected here: the role takes CN and SANs from the CSR we built; the signing CA has path length 0. */
const BENIGN_VAULT_WARNINGS = [
  /use_csr_common_name/,
  /use_csr_sans/,
  /authority information access/i,
  /max path length of the signed certificate is zero/i,
];

function samePem(a: string | undefined, b: string): boolean {
  if (a === undefined) return false;
  const norm = (s: string) => splitPemCertificates(s).map((p) => p.replace(/\s+/g, ""));
  return norm(a).join("") === norm(b).join("") && norm(b).length > 0;
}

function isTransient(err: unknown): boolean {
  if (err instanceof HttpTransportError) return true;
  return err instanceof HttpStatusError && (err.status >= 500 || err.status === 429);
}

function failureReason(err: unknown): string {
  if (err instanceof UnmanagedSecretError) return "unmanaged_secret";
  if (err instanceof IncompatibleSecretError) return "incompatible_secret";
  if (err instanceof InvalidIssuerAnswerError) return "invalid_vault_answer";
  if (err instanceof HttpStatusError) return `${err.service}_http_${err.status}`;
  if (err instanceof HttpTransportError) return `${err.service}_unreachable`;
  return "error";
}

/** The Secret that carries one registered cluster's identity token on the management cluster. */
export function clusterTokenSecretName(tokenSecret: string, cluster: string): string {
  return `${tokenSecret}-${cluster}`;
}
