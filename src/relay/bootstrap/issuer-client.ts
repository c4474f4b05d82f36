// The agent's calls to the issuer. Every call opens its own channel (the client certificate changes with each renewal)
// and verifies the issuer's certificate against the relay root (ca.crt of relay-root-tls-secret) for `serverName`.
// Errors carry the issuer's status and reason, never the request (which may hold the identity token).
import * as grpc from "@grpc/grpc-js";
import { RelayCertificateIssuerClient, type Issued } from "../../gen/relay/v1/issuer.js";

export class IssuerCallError extends Error {
  override readonly name = "IssuerCallError";
  constructor(
    readonly method: "bootstrap" | "renew",
    readonly code: grpc.status,
    readonly details: string,
  ) {
    super(`issuer ${method}: ${grpc.status[code] ?? code}: ${details}`);
  }

  /** Worth retrying as is (the issuer or the network), as opposed to a refusal of this caller. */
  get transient(): boolean {
    return [
      grpc.status.UNAVAILABLE,
      grpc.status.DEADLINE_EXCEEDED,
      grpc.status.RESOURCE_EXHAUSTED,
      grpc.status.INTERNAL,
      grpc.status.UNKNOWN,
    ].includes(this.code);
  }
}

export interface IssuerClientOptions {
  /** host:port */
  address: string;
  serverName: string;
  timeoutMs?: number;
}

export class IssuerClient {
  constructor(private readonly opts: IssuerClientOptions) {}

  /** Bootstrap over server-authenticated TLS with the identity token. */
  bootstrap(rootPem: string, csrPem: string, identityToken: string, clusterName: string): Promise<Issued> {
    const creds = grpc.credentials.createSsl(Buffer.from(rootPem));
    return this.call("bootstrap", creds, (c, md, o, cb) =>
      c.bootstrap({ csrPem, identityToken, clusterName }, md, o, cb),
    );
  }

  /** Renew over mutual TLS, presenting the current client certificate (chain, leaf first) and its key. */
  renew(rootPem: string, certChainPem: string, keyPem: string, csrPem: string): Promise<Issued> {
    const creds = grpc.credentials.createSsl(Buffer.from(rootPem), Buffer.from(keyPem), Buffer.from(certChainPem));
    return this.call("renew", creds, (c, md, o, cb) => c.renew({ csrPem }, md, o, cb));
  }

  private call(
    method: "bootstrap" | "renew",
    creds: grpc.ChannelCredentials,
    invoke: (
      client: RelayCertificateIssuerClient,
      md: grpc.Metadata,
      opts: Partial<grpc.CallOptions>,
      cb: (err: grpc.ServiceError | null, res: Issued) => void,
    ) => void,
  ): Promise<Issued> {
    const client = new RelayCertificateIssuerClient(this.opts.address, creds, {
      "grpc.ssl_target_name_override": this.opts.serverName,
      "grpc.default_authority": this.opts.serverName,
    });
    return new Promise<Issued>((resolve, reject) => {
      invoke(client, new grpc.Metadata(), { deadline: Date.now() + (this.opts.timeoutMs ?? 15_000) }, (err, res) => {
        client.close();
        if (err) reject(new IssuerCallError(method, err.code, err.details || err.message));
        else resolve(res);
      });
    });
  }
}
