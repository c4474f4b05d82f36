// The intermediate CA the agent serves. Every start makes a new key and has Vault sign a new intermediate (nothing is
// persisted), unless an earlier agent of the same pod published a valid one for the same settings in the cacerts
// volume, which the first start then adopts (src/authority/adopt.ts; at most once, never for a renewal); renewal happens when `rotationGraceRatio` of the lifetime remains (±jitter), failures retry with
// backoff while the current bundle keeps serving until it expires, and consumers subscribe to bundle changes.
import { createPrivateKey, createPublicKey } from "node:crypto";
import type { Logger } from "pino";
import {
  exportNodePrivateKeyPem,
  generateNodeKeyPairFor,
  signingCryptoKeys,
  type KeyAlgorithmName,
  type NodeKeyPair,
} from "../crypto/keys.js";
import { csrMount } from "../vault/policies.js";
import type { AgentMetrics } from "../observability/metrics.js";
import { Backoff, type BackoffOptions } from "../util/backoff.js";
import { sleep, systemClock, type Clock, type Timer } from "../util/clock.js";
import type { VaultClient, VaultSecret } from "../vault/client.js";
import type { VaultTokenSession } from "../vault/auth.js";
import { servedRoots, signingRootOf, type SigningBundle } from "./bundle.js";
import { validateSignAnswer } from "./chain.js";
import { signIntermediate } from "../vault/pki.js";
import { createIntermediateCsr } from "./csr.js";
import { jitterFraction, keepOrRenew, MIN_RENEWAL_DELAY_MS, renewalDelayMs } from "./renewal.js";
import type { AdoptionCheck } from "./adopt.js";

export { renewalDelayMs } from "./renewal.js";

/** The intermediate to obtain: the `intermediate` section of the configuration. */
export interface IntermediateProfile {
  /** Vault path that signs the CSR, e.g. pki/root/sign-intermediate or pki_int/root/sign-intermediate. */
  caPath: string;
  /** Gloo-compatible opt-in: Vault generates an exported key+CSR here (and stores the key: deleted after import). */
  csrPath: string | undefined;
  ttlSeconds: number;
  commonName: string;
  organization: string | undefined;
  keyAlgorithm: KeyAlgorithmName;
  maxPathLength: number;
  /** Renew when this fraction of the lifetime remains (Gloo's secretRotationGracePeriodRatio). Default 1/3. */
  rotationGraceRatio: number;
  /** ± jitter on the renewal point, as a fraction of the lifetime. */
  jitterRatio: number;
}

export interface IntermediateAuthorityOptions extends IntermediateProfile {
  /** Keep the key exportable and its PEM in the bundle (needed for istiod's cacerts files). */
  keyExport: boolean;
  backoff: BackoffOptions;
  /** Roots served beside the one that signed the intermediate (multi-root rotation). */
  extraRootsPem: readonly string[];
}

export type BundleListener = (bundle: SigningBundle) => void;
/** Reads and checks what an earlier agent of the pod published (checkAdoptable); the authority decides keep-or-renew. */
export type AdoptionSource = () => Promise<AdoptionCheck>;
/** A failed attempt to obtain an intermediate: the trigger and the error's message (never secrets). */
export type FailureListener = (failure: { trigger: RotationTrigger; message: string }) => void;
export type RotationTrigger = "start" | "schedule" | "retry" | "signal" | "rpc" | "config";

export class IntermediateAuthority {
  private bundle: SigningBundle | undefined;
  private generation = 0;
  private readonly listeners = new Set<BundleListener>();
  private readonly failureListeners = new Set<FailureListener>();
  private timer: Timer | undefined;
  private inflight: Promise<SigningBundle> | undefined;
  private readonly backoff: Backoff;
  private stopped = false;
  /** The last failure, for status reporting (message only; never secrets). */
  lastError: string | undefined;
  private adoptionSource: AdoptionSource | undefined;
  /** The bundle the first start adopted instead of signing one (its files are already published), if any. */
  adopted: SigningBundle | undefined;

  constructor(
    private opts: IntermediateAuthorityOptions,
    private vault: VaultClient,
    private auth: VaultTokenSession,
    private readonly log: Logger,
    private readonly metrics: AgentMetrics,
    private readonly clock: Clock = systemClock,
    private readonly random: () => number = Math.random,
  ) {
    this.backoff = new Backoff(opts.backoff, random);
  }

  /** The bundle being served, if one is held and not yet expired. */
  current(): SigningBundle | undefined {
    const b = this.bundle;
    return b && b.notAfter.getTime() > this.clock.now() ? b : undefined;
  }

  /** A bundle is held with more than `marginMs` of life left (/readyz turns false that long before expiry). */
  ready(marginMs = 0): boolean {
    return isReady(this.bundle, this.clock.now(), marginMs);
  }

  /** Why current() has nothing to sign with, for refusals: the held intermediate expired, or none was obtained yet. */
  unavailableReason(): string {
    return unavailableReason(this.bundle, this.clock.now(), this.lastError);
  }

  /** Calls `fn` on every new bundle (and at once with the current one). Returns an unsubscribe function. */
  subscribe(fn: BundleListener): () => void {
    this.listeners.add(fn);
    const cur = this.current();
    if (cur) fn(cur);
    return () => this.listeners.delete(fn);
  }

  /** Calls `fn` after every failed attempt (renewal, retry, start); success is a new bundle (subscribe). */
  onFailure(fn: FailureListener): () => void {
    this.failureListeners.add(fn);
    return () => this.failureListeners.delete(fn);
  }

  /** Obtains the first bundle, retrying with backoff until it succeeds or `signal` aborts; then keeps it renewed. */
  async start(signal?: AbortSignal): Promise<SigningBundle> {
    for (;;) {
      try {
        return await this.rotate("start");
      } catch (err) {
        if (this.stopped || signal?.aborted) throw err;
        const delay = this.backoff.next();
        this.log.warn(
          { err: (err as Error).message, retryInMs: delay },
          "could not obtain the first intermediate; retrying",
        );
        await sleep(this.clock, delay, signal);
      }
    }
  }

  /** Obtains a new key and intermediate now. Concurrent calls share one attempt. On failure, a retry is scheduled. */
  rotate(trigger: RotationTrigger): Promise<SigningBundle> {
    this.inflight ??= this.obtainAndServe(trigger).finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  /** Applies new options (e.g. from a changed RootTrustPolicy); the next rotation uses them. */
  reconfigure(opts: IntermediateAuthorityOptions): void {
    this.opts = opts;
  }

  /** Switches to another Vault (address, TLS, namespace or auth changed); the next rotation uses it. */
  setBackend(vault: VaultClient, auth: VaultTokenSession): void {
    this.vault = vault;
    this.auth = auth;
  }

  /** The first start("start" trigger) tries `source` before asking Vault; later rotations always ask Vault. */
  adoptAtStart(source: AdoptionSource): void {
    this.adoptionSource = source;
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
  }

  private async obtainAndServe(trigger: RotationTrigger): Promise<SigningBundle> {
    const started = this.clock.now();
    try {
      const adopted = trigger === "start" ? await this.tryAdopt() : undefined;
      const bundle = adopted?.bundle ?? (await this.obtain());
      this.bundle = bundle;
      this.backoff.reset();
      this.lastError = undefined;
      this.metrics.rotations.inc({ outcome: "success", trigger });
      this.metrics.intermediateNotAfter.set(bundle.notAfter.getTime() / 1000);
      this.metrics.intermediateLastRotation.set(this.clock.now() / 1000);
      this.metrics.intermediateGeneration.set(bundle.generation);
      this.log.info(
        {
          trigger,
          generation: bundle.generation,
          serial: bundle.serialHex,
          notAfter: bundle.notAfter.toISOString(),
          chainLength: bundle.chainPem.length,
          durationMs: this.clock.now() - started,
          ...(adopted ? { adopted: true } : {}),
        },
        "serving a new intermediate",
      );
      this.scheduleRenewal(bundle, adopted?.renewAt);
      this.notify(bundle);
      return bundle;
    } catch (err) {
      const message = (err as Error).message;
      this.lastError = message;
      this.metrics.rotations.inc({ outcome: "failure", trigger });
      if (!this.stopped && trigger !== "start") this.scheduleRetry();
      const cur = this.current();
      this.log.error(
        {
          trigger,
          err: message,
          servingGeneration: cur?.generation,
          servingNotAfter: cur?.notAfter.toISOString(),
          durationMs: this.clock.now() - started,
        },
        cur ? "could not renew the intermediate; still serving the current one" : "could not obtain an intermediate",
      );
      for (const fn of this.failureListeners) {
        try {
          fn({ trigger, message });
        } catch (listenerErr) {
          this.log.error({ err: (listenerErr as Error).message }, "a failure subscriber failed");
        }
      }
      throw err;
    }
  }

  /**
   * Serves the extra roots the options now name (reconfigure) beside the held intermediate's own root, without a new
   * intermediate: the same bundle with new rootsPem and the next generation, published to every subscriber (socket
   * Watch streams, cacerts root-cert.pem, the root ConfigMaps) as a rotation is. Waits for a rotation in flight, which
   * read the old options. Returns the bundle served afterwards; nothing is published when the roots are unchanged or
   * no intermediate is held yet (the next one gets the new roots).
   */
  async republishRoots(): Promise<SigningBundle | undefined> {
    await this.inflight?.catch(() => undefined);
    const held = this.bundle;
    if (!held) return undefined;
    const rootsPem = servedRoots(signingRootOf(held), this.opts.extraRootsPem);
    if (rootsPem.length === held.rootsPem.length && rootsPem.every((p, i) => p === held.rootsPem[i])) return held;
    const bundle: SigningBundle = { ...held, rootsPem, generation: ++this.generation };
    this.bundle = bundle;
    this.metrics.intermediateGeneration.set(bundle.generation);
    this.log.info(
      { generation: bundle.generation, serial: bundle.serialHex, roots: rootsPem.length },
      "serving new trust anchors with the same intermediate",
    );
    this.notify(bundle);
    return bundle;
  }

  private notify(bundle: SigningBundle): void {
    for (const fn of this.listeners) {
      try {
        fn(bundle);
      } catch (err) {
        this.log.error({ err: (err as Error).message }, "a bundle subscriber failed");
      }
    }
  }

  private async obtain(): Promise<SigningBundle> {
    const o = this.opts;
    const { nodeKeys, csr } = o.csrPath ? await this.vaultGeneratedKey() : await this.localKey();
    const { privateKey, publicKey } = signingCryptoKeys(nodeKeys, o.keyAlgorithm);
    const answer = await this.auth.withToken((token) =>
      this.metrics.timeVault("sign_intermediate", () =>
        signIntermediate(this.vault, o.caPath, token, {
          csr,
          commonName: o.commonName,
          ttlSeconds: o.ttlSeconds,
          maxPathLength: o.maxPathLength,
          organization: o.organization,
        }),
      ),
    );
    const chain = await validateSignAnswer(answer?.data ?? {}, publicKey, new Date(this.clock.now()), {
      expectCa: true,
    });
    if ((answer.warnings ?? []).length)
      this.log.warn({ warnings: answer.warnings }, "Vault warned while signing the intermediate");
    return {
      signingCert: chain.cert,
      signingCertPem: chain.certPem,
      chainPem: chain.chainPem,
      rootsPem: servedRoots(chain.rootPem, o.extraRootsPem),
      signingKey: nodeKeys.privateKey,
      privateKey,
      keyAlgorithm: o.keyAlgorithm,
      privateKeyPem: o.keyExport ? exportNodePrivateKeyPem(nodeKeys.privateKey) : undefined,
      notBefore: chain.cert.notBefore,
      notAfter: chain.cert.notAfter,
      serialHex: chain.cert.serialNumber.toLowerCase(),
      generation: ++this.generation,
    };
  }

  /** The default: the key is made here and never leaves the process (unless key export is on). */
  private async localKey(): Promise<{ nodeKeys: NodeKeyPair; csr: string }> {
    const o = this.opts;
    const nodeKeys = await generateNodeKeyPairFor(o.keyAlgorithm);
    const csr = await createIntermediateCsr(signingCryptoKeys(nodeKeys, o.keyAlgorithm), o.keyAlgorithm, {
      commonName: o.commonName,
      organization: o.organization,
    });
    return { nodeKeys, csr };
  }

  /** Gloo-compatible opt-in: Vault generates the key (exported once, in this answer); it is then held only here. */
  private async vaultGeneratedKey(): Promise<{ nodeKeys: NodeKeyPair; csr: string }> {
    const o = this.opts;
    const isRsa = o.keyAlgorithm.startsWith("RSA");
    const res = await this.auth.withToken((token) =>
      this.metrics.timeVault(
        "generate_exported",
        () =>
          this.vault.write<{ csr?: string; private_key?: string; key_id?: string }>(o.csrPath!, token, {
            common_name: o.commonName,
            key_type: isRsa ? "rsa" : "ec",
            key_bits: isRsa ? Number(o.keyAlgorithm.slice(4)) : o.keyAlgorithm === "ECDSA_P384" ? 384 : 256,
            private_key_format: "pkcs8",
            ...(o.organization ? { organization: o.organization } : {}),
          }) as Promise<VaultSecret<{ csr?: string; private_key?: string; key_id?: string }>>,
      ),
    );
    const { csr, private_key: keyPem, key_id: keyId } = res.data ?? {};
    if (typeof csr !== "string" || typeof keyPem !== "string") {
      throw new Error(
        `Vault ${o.csrPath} returned no csr/private_key; expected an exported key (path .../generate/exported)`,
      );
    }
    const privateKey = createPrivateKey(keyPem);
    // The key is held here now; the copy Vault stored in the mount would otherwise outlive it (one per rotation).
    if (typeof keyId === "string" && keyId.length > 0) await this.deleteVaultKey(keyId);
    return { nodeKeys: { privateKey, publicKey: createPublicKey(privateKey) }, csr };
  }

  /**
   * `DELETE <mount>/key/<key_id>`: removes Vault's stored copy of a key this process imported. Needs `delete` on
   * `<mount>/key/*` (vault-policies, setup-vault); without it the key stays in Vault and this is logged, not fatal.
   */
  private async deleteVaultKey(keyId: string): Promise<void> {
    const path = `${csrMount(this.opts.csrPath!)}/key/${encodeURIComponent(keyId)}`;
    try {
      await this.auth.withToken((token) =>
        this.metrics.timeVault("delete_key", () => this.vault.call("DELETE", path, { token })),
      );
      this.metrics.vaultKeyDeletions.inc({ outcome: "success" });
      this.log.info({ keyId }, "deleted Vault's stored copy of the generated intermediate key");
    } catch (err) {
      this.metrics.vaultKeyDeletions.inc({ outcome: "failure" });
      this.log.warn(
        { keyId, path: `${csrMount(this.opts.csrPath!)}/key/<key_id>`, err: (err as Error).message },
        "could not delete Vault's stored copy of the generated key; it stays in the mount (grant delete on " +
          "<mount>/key/* as in vault-policies/istiod-agent.hcl)",
      );
    }
  }

  /**
   * The one adoption attempt (see adopt.ts for what is checked): the source's checks, then the same keep-or-renew
   * decision the relay makes for stored certificates, measured from the recorded issue time. Undefined (and the reason
   * logged) when a new intermediate must be signed.
   */
  private async tryAdopt(): Promise<{ bundle: SigningBundle; renewAt: number } | undefined> {
    const source = this.adoptionSource;
    this.adoptionSource = undefined;
    if (!source) return undefined;
    const checked = await source().catch((err: Error): AdoptionCheck => ({ ok: false, reason: err.message }));
    const notAdopted = (reason: string) =>
      void this.log.info({ reason }, "not adopting the intermediate in the cacerts directory; obtaining a new one");
    if (!checked.ok) return notAdopted(checked.reason);
    const c = checked.candidate;
    const decision = keepOrRenew({
      stored: { ok: true, serialHex: c.serialHex, notBefore: c.notBefore, notAfter: c.notAfter },
      managed: true,
      held: undefined,
      issuedAt: c.issuedAt,
      now: this.clock.now(),
      graceRatio: this.opts.rotationGraceRatio,
      jitter: jitterFraction(this.random, this.opts.jitterRatio),
    });
    if (decision.action === "renew") return notAdopted(`it is ${decision.reason}`);
    const bundle: SigningBundle = {
      signingCert: c.signingCert,
      signingCertPem: c.signingCertPem,
      chainPem: c.chainPem,
      rootsPem: c.rootsPem,
      signingKey: c.nodeKeys.privateKey,
      privateKey: signingCryptoKeys(c.nodeKeys, c.keyAlgorithm).privateKey,
      keyAlgorithm: c.keyAlgorithm,
      privateKeyPem: this.opts.keyExport ? exportNodePrivateKeyPem(c.nodeKeys.privateKey) : undefined,
      notBefore: c.notBefore,
      notAfter: c.notAfter,
      serialHex: c.serialHex,
      generation: ++this.generation,
    };
    this.adopted = bundle;
    this.log.info(
      {
        serial: c.serialHex,
        notAfter: c.notAfter.toISOString(),
        renewAt: new Date(decision.held.renewAt).toISOString(),
      },
      "adopted the intermediate an earlier agent of this pod published in the cacerts directory; Vault signs none now",
    );
    return { bundle, renewAt: decision.held.renewAt };
  }

  /** Renews at `renewAt` when given (an adopted intermediate's decided point), else at the grace point from now. */
  private scheduleRenewal(bundle: SigningBundle, renewAt?: number): void {
    this.timer?.cancel();
    if (this.stopped) return;
    const delay =
      renewAt !== undefined
        ? Math.max(MIN_RENEWAL_DELAY_MS, renewAt - this.clock.now())
        : renewalDelayMs(
            bundle.notBefore,
            bundle.notAfter,
            this.clock.now(),
            this.opts.rotationGraceRatio,
            jitterFraction(this.random, this.opts.jitterRatio),
          );
    // Only a new bundle moves the renewal point: retries leave it in the past, which is what "overdue" alerts on.
    this.metrics.intermediateNextRenewal.set((this.clock.now() + delay) / 1000);
    this.log.debug({ renewInMs: delay }, "scheduled intermediate renewal");
    this.timer = this.clock.after(delay, () => void this.rotate("schedule").catch(() => undefined));
  }

  private scheduleRetry(): void {
    this.timer?.cancel();
    const delay = this.backoff.next();
    this.log.info({ retryInMs: delay, attempt: this.backoff.attempts }, "will retry the intermediate renewal");
    this.timer = this.clock.after(delay, () => void this.rotate("retry").catch(() => undefined));
  }
}

/** Ready: an intermediate is held and more than `marginMs` of its life is left (pure, for tests). */
export function isReady(held: SigningBundle | undefined, now: number, marginMs: number): boolean {
  return held !== undefined && held.notAfter.getTime() - now > marginMs;
}

/** The reason behind an UNAVAILABLE answer when current() is undefined (pure, for tests). */
export function unavailableReason(held: SigningBundle | undefined, now: number, lastError: string | undefined): string {
  const last = lastError ? ` (last error: ${lastError})` : "";
  if (held && held.notAfter.getTime() <= now) {
    return `the intermediate (generation ${held.generation}) expired at ${held.notAfter.toISOString()} and could not be renewed yet${last}`;
  }
  return `no valid intermediate is held yet${last}`;
}
