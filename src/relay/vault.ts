// The relay's Vault calls: the CA chain's root (unauthenticated read), leaf signing from a CSR on a PKI role, the
// signing intermediate from a CSR, and identity tokens in KV v2 (read, or created with check-and-set so two writers
// never overwrite each other). Tokens, CSRs and the identity token never reach a log or an error.
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { HttpStatusError } from "../net/http-json.js";
import type { AgentMetrics } from "../observability/metrics.js";
import type { VaultClient, VaultSecret } from "../vault/client.js";
import { signIntermediate, signLeaf, type PkiSignAnswer } from "../vault/pki.js";
import type { VaultTokenSession } from "../vault/auth.js";
import { splitPemCertificatesOrNone as splitPemCertificates } from "../crypto/pem.js";
import { x509 } from "../crypto/x509.js";

export interface RelayVaultOptions {
  pkiMount: string;
}

/** What KV holds at a token path: the token, or none (never written, deleted, destroyed) and the version to CAS. */
interface TokenRead {
  token: string | undefined;
  /** The key's current version (0: no metadata at all); a new token is written with cas = this. */
  version: number;
  /** The latest version exists but is soft-deleted or destroyed. */
  deleted: boolean;
}

export class RelayVault {
  constructor(
    private readonly vault: VaultClient,
    private readonly auth: VaultTokenSession,
    private readonly metrics: AgentMetrics,
    private readonly log: Logger,
    private readonly opts: RelayVaultOptions,
  ) {}

  /** The top of the PKI mount's CA chain (the root), from the unauthenticated `<pki>/cert/ca_chain`. */
  async rootPem(): Promise<string> {
    const path = `${this.opts.pkiMount}/cert/ca_chain`;
    const res = await this.metrics.timeVault("read_ca_chain", () =>
      this.vault.read<{ ca_chain?: unknown; certificate?: unknown }>(path, undefined),
    );
    const raw = res.data?.ca_chain ?? res.data?.certificate;
    const pems = typeof raw === "string" ? splitPemCertificates(raw) : [];
    if (pems.length === 0)
      throw new Error(
        `Vault ${path} returned no CA certificate; is ${this.opts.pkiMount}/ a PKI mount with an issuer?`,
      );
    const certs = pems.map((p) => new x509.X509Certificate(p));
    for (const [i, c] of certs.entries()) if (await c.isSelfSigned()) return pems[i]!;
    this.log.warn({ path }, "Vault's CA chain does not include a self-signed root; using its last certificate");
    return pems[pems.length - 1]!;
  }

  /** `<pki>/sign/<role>` with a leaf CSR. */
  async signLeaf(
    role: string,
    csr: string,
    dnsNames: readonly string[],
    ttlSeconds: number,
  ): Promise<VaultSecret<PkiSignAnswer>> {
    const path = `${this.opts.pkiMount}/sign/${role}`;
    return this.auth.withToken((token) =>
      this.metrics.timeVault("sign_leaf", () => signLeaf(this.vault, path, token, { csr, dnsNames, ttlSeconds })),
    );
  }

  /**
   * `<pki>/root/sign-intermediate` with a CA CSR (path length 0: it signs agent certificates only). A non-empty
   * `permittedDns` becomes the certificate's DNS name constraints (permitted subtrees): a leaked key can then only
   * mint certificates for those names.
   */
  async signIntermediate(
    csr: string,
    commonName: string,
    ttlSeconds: number,
    permittedDns: readonly string[] = [],
  ): Promise<VaultSecret<PkiSignAnswer>> {
    const path = `${this.opts.pkiMount}/root/sign-intermediate`;
    const req = { csr, commonName, ttlSeconds, maxPathLength: 0, permittedDnsDomains: permittedDns };
    return this.auth.withToken((token) =>
      this.metrics.timeVault("sign_intermediate", () => signIntermediate(this.vault, path, token, req)),
    );
  }

  /**
   * The identity token at KV v2 data path `kvPath`: read, or, when absent, 32 random bytes (base64url) stored with
   * check-and-set so only the first writer wins. After a soft delete or destroy the key's current version is that
   * deleted one: the fresh token is written with cas=<that version> (cas=0 would be refused forever). The deleted
   * value is never undeleted or reused. A loser (cas mismatch, or 403) reads the winner's.
   */
  async identityToken(kvPath: string): Promise<{ token: string; created: boolean; replacedDeleted: boolean }> {
    const existing = await this.readToken(kvPath);
    if (existing.token !== undefined) return { token: existing.token, created: false, replacedDeleted: false };
    const fresh = randomBytes(32).toString("base64url");
    const stored = await this.auth.withToken(async (token) => {
      try {
        await this.metrics.timeVault("kv_create", () =>
          this.vault.write(kvPath, token, { options: { cas: existing.version }, data: { token: fresh } }),
        );
        return true;
      } catch (err) {
        // 400: check-and-set mismatch (someone wrote first). 403: this policy may not write here.
        if (err instanceof HttpStatusError && (err.status === 400 || err.status === 403)) return false;
        throw err;
      }
    });
    if (stored) return { token: fresh, created: true, replacedDeleted: existing.deleted };
    const again = await this.readToken(kvPath);
    if (again.token !== undefined) return { token: again.token, created: false, replacedDeleted: false };
    throw new Error(
      `Vault KV ${kvPath} holds no identity token and writing a new one with check-and-set (cas=${existing.version}) ` +
        `was refused; the relay policy needs read, create and update on ${kvPath}`,
    );
  }

  private async readToken(path: string): Promise<TokenRead> {
    const res = await this.auth.withToken((token) =>
      this.metrics.timeVault("kv_read", () =>
        this.vault.call<
          VaultSecret<{
            data?: Record<string, unknown> | null;
            metadata?: { version?: number; deletion_time?: string; destroyed?: boolean } | null;
          }>
        >("GET", path, { token, acceptStatuses: [404] }),
      ),
    );
    const data = res.body?.data;
    const version = Number(data?.metadata?.version ?? 0) || 0;
    if (res.status === 404 || !data?.data) {
      const deleted = Boolean(data?.metadata?.deletion_time) || data?.metadata?.destroyed === true;
      return { token: undefined, version, deleted };
    }
    const value = data.data.token;
    if (typeof value !== "string" || value.length === 0) {
      throw new Error(`Vault KV ${path} has no non-empty string field "token"; expected {"token": "<value>"}`);
    }
    return { token: value, version, deleted: false };
  }
}
