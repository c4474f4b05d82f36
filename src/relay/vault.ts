// The relay's Vault calls: the CA chain's root (unauthenticated read), leaf signing from a CSR on a PKI role, the
// signing intermediate from a CSR, and the identity token in KV v2 (read, or created once with check-and-set cas=0 so
// every cluster ends up with the same value). Tokens, CSRs and the identity token never reach a log or an error.
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { HttpStatusError } from "../net/http-json.js";
import type { AgentMetrics } from "../observability/metrics.js";
import type { PkiSignAnswer } from "../authority/chain.js";
import type { VaultClient, VaultSecret } from "../vault/client.js";
import type { KubernetesAuth } from "../vault/kubernetes-auth.js";
import { splitPemCertificates } from "./inspect.js";
import { x509 } from "../crypto/x509.js";

export interface RelayVaultOptions {
  pkiMount: string;
  kvPath: string;
}

export class RelayVault {
  constructor(
    private readonly vault: VaultClient,
    private readonly auth: KubernetesAuth,
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
      this.metrics.timeVault("sign_leaf", () =>
        this.vault.write<PkiSignAnswer>(path, token, {
          csr,
          common_name: dnsNames[0],
          alt_names: dnsNames.join(","),
          ttl: `${Math.round(ttlSeconds)}s`,
          format: "pem",
          exclude_cn_from_sans: false,
        }),
      ),
    );
  }

  /** `<pki>/root/sign-intermediate` with a CA CSR (path length 0: it signs agent certificates only). */
  async signIntermediate(csr: string, commonName: string, ttlSeconds: number): Promise<VaultSecret<PkiSignAnswer>> {
    const path = `${this.opts.pkiMount}/root/sign-intermediate`;
    return this.auth.withToken((token) =>
      this.metrics.timeVault("sign_intermediate", () =>
        this.vault.write<PkiSignAnswer>(path, token, {
          csr,
          common_name: commonName,
          ttl: `${Math.round(ttlSeconds)}s`,
          format: "pem",
          max_path_length: 0,
          use_csr_values: false,
        }),
      ),
    );
  }

  /**
   * The shared identity token: read from KV v2, or, when absent, 32 random bytes (base64url) stored with cas=0 so
   * that only the first writer wins; a loser (cas mismatch, or 403 because its policy lacks update) reads the winner's.
   */
  async identityToken(): Promise<{ token: string; created: boolean }> {
    const existing = await this.readToken();
    if (existing.token !== undefined) return { token: existing.token, created: false };
    const fresh = randomBytes(32).toString("base64url");
    const stored = await this.auth.withToken(async (token) => {
      try {
        await this.metrics.timeVault("kv_create", () =>
          this.vault.write(this.opts.kvPath, token, { options: { cas: 0 }, data: { token: fresh } }),
        );
        return true;
      } catch (err) {
        // 400: check-and-set mismatch (someone created it first). 403: it exists and this policy may only create.
        if (err instanceof HttpStatusError && (err.status === 400 || err.status === 403)) return false;
        throw err;
      }
    });
    if (stored) return { token: fresh, created: true };
    const again = await this.readToken();
    if (again.token !== undefined) return { token: again.token, created: false };
    throw new Error(
      `Vault KV ${this.opts.kvPath} holds no identity token and creating it with cas=0 was refused` +
        (again.deleted
          ? "; its latest version is deleted: undelete it, or delete the key's metadata so it can be created again"
          : `; the relay policy needs read and create on ${this.opts.kvPath}`),
    );
  }

  private async readToken(): Promise<{ token: string | undefined; deleted: boolean }> {
    const path = this.opts.kvPath;
    const res = await this.auth.withToken((token) =>
      this.metrics.timeVault("kv_read", () =>
        this.vault.call<
          VaultSecret<{ data?: Record<string, unknown> | null; metadata?: { deletion_time?: string } | null }>
        >("GET", path, { token, acceptStatuses: [404] }),
      ),
    );
    const data = res.body?.data;
    if (res.status === 404 || !data?.data) {
      return { token: undefined, deleted: Boolean(data?.metadata?.deletion_time) };
    }
    const value = data.data.token;
    if (typeof value !== "string" || value.length === 0) {
      throw new Error(`Vault KV ${path} has no non-empty string field "token"; expected {"token": "<value>"}`);
    }
    return { token: value, deleted: false };
  }
}
