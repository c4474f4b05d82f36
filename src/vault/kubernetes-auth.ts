// The agent's Vault token, from Kubernetes auth. The service-account token file is re-read at every login (the
// kubelet rotates projected tokens); the Vault token is renewed at ~2/3 of its lease until renewal is refused or the
// token is not renewable, then dropped so the next caller logs in again. Any 403 from Vault invalidates it too.
// Neither the JWT nor the Vault token ever reaches a log line or an error message.
import { readFile } from "node:fs/promises";
import type { Logger } from "pino";
import type { AgentMetrics } from "../observability/metrics.js";
import { HttpStatusError } from "../net/http-json.js";
import { systemClock, type Clock, type Timer } from "../util/clock.js";
import type { VaultClient } from "./client.js";
import { certLogin } from "./cert-auth.js";

export interface KubernetesAuthOptions {
  /**
   * kubernetes (default): the service-account JWT. cert: the client certificate the Vault connection presents
   * (src/vault/cert-auth.ts); same token lifecycle (renew at 2/3, re-login when refused, revoke at shutdown).
   */
  method?: "kubernetes" | "cert";
  mountPath: string;
  role: string;
  /** File holding the service-account JWT (a projected token with the Vault audience). */
  tokenPath: string;
}

interface HeldToken {
  value: string;
  accessor: string;
  renewable: boolean;
  leaseSeconds: number;
  obtainedAt: number;
}

export class KubernetesAuth {
  private held: HeldToken | undefined;
  private pendingLogin: Promise<HeldToken> | undefined;
  private renewTimer: Timer | undefined;
  private stopped = false;

  constructor(
    private readonly vault: VaultClient,
    private readonly opts: KubernetesAuthOptions,
    private readonly log: Logger,
    private readonly metrics: AgentMetrics,
    private readonly clock: Clock = systemClock,
  ) {}

  /** A Vault token, logging in first if none is held. Concurrent callers share one login. */
  async token(): Promise<string> {
    if (this.held) return this.held.value;
    this.pendingLogin ??= this.login().finally(() => (this.pendingLogin = undefined));
    return (await this.pendingLogin).value;
  }

  /** Runs fn with a token; on a 403 the token is dropped and fn retried once with a fresh login. */
  async withToken<T>(fn: (token: string) => Promise<T>): Promise<T> {
    const token = await this.token();
    try {
      return await fn(token);
    } catch (err) {
      if (err instanceof HttpStatusError && err.status === 403) {
        this.log.warn({ path: err.path }, "Vault answered 403; logging in again and retrying once");
        this.invalidate(token);
        return fn(await this.token());
      }
      throw err;
    }
  }

  /** Drops the held token (if it is still `token`), so the next call logs in again. */
  invalidate(token?: string): void {
    if (token !== undefined && this.held?.value !== token) return;
    this.held = undefined;
    this.renewTimer?.cancel();
    this.renewTimer = undefined;
  }

  stop(): void {
    this.stopped = true;
    this.invalidate();
  }

  /**
   * Graceful shutdown: stops renewing and revokes the held token (revoke-self, allowed by Vault's `default` policy),
   * so a stopped process leaves no valid token behind until its TTL. Bounded by `timeoutMs`; failures are logged,
   * never thrown (shutdown must go on, and the token then simply expires with its TTL).
   */
  async revokeAndStop(timeoutMs = 3_000): Promise<void> {
    const held = this.held;
    this.stop();
    if (!held) return;
    const started = this.clock.now();
    let timer: Timer | undefined;
    try {
      await Promise.race([
        this.vault.revokeSelf(held.value),
        new Promise((_, reject) => (timer = this.clock.after(timeoutMs, () => reject(new Error("timed out"))))),
      ]);
      this.metrics.vaultTokenRevocations.inc({ outcome: "success" });
      this.log.info({ durationMs: this.clock.now() - started }, "revoked its Vault token at shutdown (revoke-self)");
    } catch (err) {
      this.metrics.vaultTokenRevocations.inc({ outcome: "failure" });
      this.log.warn(
        { err: (err as Error).message },
        "could not revoke its Vault token at shutdown; it stays valid until its TTL",
      );
    } finally {
      timer?.cancel();
    }
  }

  private async login(): Promise<HeldToken> {
    const method = this.opts.method ?? "kubernetes";
    const credential = method === "cert" ? undefined : await this.readJwt();
    const started = this.clock.now();
    try {
      const auth = await this.metrics.timeVault("login", () =>
        credential === undefined
          ? certLogin(this.vault, this.opts.mountPath, this.opts.role)
          : this.vault.kubernetesLogin(this.opts.mountPath, this.opts.role, credential),
      );
      const held: HeldToken = {
        value: auth.client_token,
        accessor: auth.accessor,
        renewable: auth.renewable,
        leaseSeconds: auth.lease_duration,
        obtainedAt: this.clock.now(),
      };
      this.metrics.vaultLogins.inc({ outcome: "success" });
      this.log.info(
        {
          role: this.opts.role,
          mount: this.opts.mountPath,
          leaseSeconds: held.leaseSeconds,
          renewable: held.renewable,
          policies: auth.policies,
          durationMs: this.clock.now() - started,
        },
        method === "cert" ? "logged in to Vault with TLS certificate auth" : "logged in to Vault with Kubernetes auth",
      );
      if (!this.stopped) {
        this.held = held;
        this.scheduleRenewal(held);
      }
      return held;
    } catch (err) {
      this.metrics.vaultLogins.inc({ outcome: "failure" });
      throw err;
    }
  }

  private async readJwt(): Promise<string> {
    let jwt: string;
    try {
      jwt = (await readFile(this.opts.tokenPath, "utf8")).trim();
    } catch (err) {
      this.metrics.vaultLogins.inc({ outcome: "token_file_error" });
      const code = (err as NodeJS.ErrnoException).code ?? "error";
      throw new Error(
        `cannot read the service-account token file ${this.opts.tokenPath} (${code}); expected a projected token with the Vault audience there`,
        { cause: err },
      );
    }
    if (jwt.length === 0) {
      this.metrics.vaultLogins.inc({ outcome: "token_file_error" });
      throw new Error(`the service-account token file ${this.opts.tokenPath} is empty`);
    }
    return jwt;
  }

  private scheduleRenewal(held: HeldToken): void {
    this.renewTimer?.cancel();
    if (held.leaseSeconds <= 0) return; // a non-expiring token (only seen with root-like tokens)
    const renewInMs = (held.leaseSeconds * 1000 * 2) / 3;
    this.renewTimer = this.clock.after(renewInMs, () => void this.renew(held));
  }

  private async renew(held: HeldToken): Promise<void> {
    if (this.held !== held || this.stopped) return;
    if (!held.renewable) {
      this.log.info("Vault token is not renewable; will log in again on next use");
      this.invalidate(held.value);
      return;
    }
    try {
      const auth = await this.metrics.timeVault("renew_self", () => this.vault.renewSelf(held.value));
      this.metrics.vaultTokenRenewals.inc({ outcome: "success" });
      // Vault caps the lease at the token's max TTL: once it stops growing, the next expiry forces a new login.
      const next: HeldToken = {
        ...held,
        leaseSeconds: auth.lease_duration,
        renewable: auth.renewable,
        obtainedAt: this.clock.now(),
      };
      if (this.held === held) {
        this.held = next;
        if (auth.lease_duration < 10) {
          this.log.info({ leaseSeconds: auth.lease_duration }, "Vault token reached its max TTL; will log in again");
          this.invalidate(held.value);
        } else {
          this.scheduleRenewal(next);
        }
      }
    } catch (err) {
      this.metrics.vaultTokenRenewals.inc({ outcome: "failure" });
      this.log.warn({ err: (err as Error).message }, "Vault token renewal refused; will log in again on next use");
      this.invalidate(held.value);
    }
  }
}
