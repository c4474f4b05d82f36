// The one auth interface: an AuthMethod turns a credential (a service-account JWT, an AppRole secret-id, a token
// file, a client certificate) into a Vault token; VaultTokenSession holds that token for every caller, renews it at
// ~2/3 of its lease until renewal is refused or the token is not renewable, and logs in again through the method when
// the token is dropped (renewal refused, max TTL reached, a 403 from Vault). Methods re-read their credential at every
// login (projected tokens and secret-ids rotate). No credential and no Vault token ever reaches a log line or an error.
import { readFile } from "node:fs/promises";
import type { Logger } from "pino";
import type { AgentMetrics } from "../observability/metrics.js";
import { HttpStatusError } from "../net/http-json.js";
import { systemClock, type Clock, type Timer } from "../util/clock.js";
import type { VaultAuth, VaultClient } from "./client.js";

/** `--auth-method` values. `cert` (TLS-certificate auth) is the Vault TLS client's. */
export const AUTH_METHOD_NAMES = ["kubernetes", "jwt", "approle", "token", "cert"] as const;
export type AuthMethodName = (typeof AUTH_METHOD_NAMES)[number];

/** The auth section of every Vault-using mode's configuration. Each method reads only the fields it needs. */
export interface AuthSettings {
  method: AuthMethodName;
  /** Auth mount (kubernetes, jwt, approle, cert): `auth/<mountPath>/login`. Unused by `token`. */
  mountPath: string;
  /** Role (kubernetes, jwt; cert: the certificate role name, optional). */
  role: string;
  /** kubernetes and jwt: the projected service-account token file. */
  tokenPath: string;
  /** approle: files holding the role-id and the secret-id. */
  roleIdFile: string;
  secretIdFile: string;
  /** token: the file holding a Vault token. */
  vaultTokenFile: string;
}

/** The mount each method is enabled at by default (`vault auth enable <method>`). */
export const DEFAULT_AUTH_MOUNTS: Readonly<Record<AuthMethodName, string>> = {
  kubernetes: "kubernetes",
  jwt: "jwt",
  approle: "approle",
  token: "token",
  cert: "cert",
};

/** One way of obtaining a Vault token. */
export interface AuthMethod {
  readonly name: AuthMethodName;
  /** How log lines name it: "Kubernetes auth", "JWT auth", ... */
  readonly title: string;
  /** Non-secret facts for log lines (mount, role, file paths). */
  readonly logFields: Readonly<Record<string, string>>;
  /**
   * Reads the credential anew and obtains a token (its lease, renewability, policies). Throws CredentialFileError
   * when a credential file cannot be read; errors name files and mounts, never a secret.
   */
  login(vault: VaultClient): Promise<VaultAuth>;
  /**
   * Whether the token is the agent's own (created by its login): only then is it revoked at shutdown. A token handed
   * in (the token method) is the operator's, and may be shared with the next start.
   */
  readonly ownsToken: boolean;
}

/** A credential file could not be read or was empty (counted as `token_file_error` logins). */
export class CredentialFileError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CredentialFileError";
  }
}

/** The trimmed contents of a credential file; `what` and `expected` word the errors (never the contents). */
export async function readCredentialFile(path: string, what: string, expected: string): Promise<string> {
  let text: string;
  try {
    text = (await readFile(path, "utf8")).trim();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error";
    throw new CredentialFileError(`cannot read the ${what} file ${path} (${code}); expected ${expected} there`, {
      cause: err,
    });
  }
  if (text.length === 0) throw new CredentialFileError(`the ${what} file ${path} is empty; expected ${expected}`);
  return text;
}

interface HeldToken {
  value: string;
  accessor: string;
  renewable: boolean;
  leaseSeconds: number;
  obtainedAt: number;
}

/** The agent's Vault token, obtained and kept current through one AuthMethod. */
export class VaultTokenSession {
  private held: HeldToken | undefined;
  private pendingLogin: Promise<HeldToken> | undefined;
  private renewTimer: Timer | undefined;
  private stopped = false;

  constructor(
    private readonly vault: VaultClient,
    readonly method: AuthMethod,
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
   * so a stopped process leaves no valid token behind until its TTL. A token the method did not create (a token file)
   * is left alone. Bounded by `timeoutMs`; failures are logged, never thrown (shutdown must go on, and the token then
   * simply expires with its TTL).
   */
  async revokeAndStop(timeoutMs = 3_000): Promise<void> {
    const held = this.held;
    this.stop();
    if (!held || !this.method.ownsToken) return;
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
    const started = this.clock.now();
    try {
      const auth = await this.metrics.timeVault("login", () => this.method.login(this.vault));
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
          method: this.method.name,
          ...this.method.logFields,
          leaseSeconds: held.leaseSeconds,
          renewable: held.renewable,
          policies: auth.policies,
          durationMs: this.clock.now() - started,
        },
        `logged in to Vault with ${this.method.title}`,
      );
      if (!this.stopped) {
        this.held = held;
        this.scheduleRenewal(held);
      }
      return held;
    } catch (err) {
      this.metrics.vaultLogins.inc({ outcome: err instanceof CredentialFileError ? "token_file_error" : "failure" });
      throw err;
    }
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
        this.log.debug({ leaseSeconds: auth.lease_duration }, "renewed its Vault token (renew-self)");
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
