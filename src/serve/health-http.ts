// /healthz (process alive), /readyz (a valid intermediate is held, not about to expire) and /metrics (Prometheus) on one small HTTP port.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import { splitHostPort } from "../cli/validate.js";

export interface HealthHttpOptions {
  address: string;
  ready: () => boolean;
  registry: Registry;
  /** Called before /metrics renders (e.g. to refresh seconds-to-expiry). */
  beforeMetrics?: () => void;
}

export class HealthHttpServer {
  private server: Server | undefined;

  constructor(private readonly opts: HealthHttpOptions) {}

  async start(): Promise<AddressInfo> {
    const { host, port } = splitHostPort(this.opts.address);
    const server = createServer((req, res) => {
      const url = (req.url ?? "/").split("?")[0];
      if (req.method !== "GET") {
        res.writeHead(405).end();
      } else if (url === "/healthz") {
        res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      } else if (url === "/readyz") {
        const ok = this.opts.ready();
        res
          .writeHead(ok ? 200 : 503, { "content-type": "text/plain" })
          .end(ok ? "ready\n" : "no valid intermediate, or it expires within the readiness margin\n");
      } else if (url === "/metrics") {
        this.opts.beforeMetrics?.();
        this.opts.registry
          .metrics()
          .then((body) => res.writeHead(200, { "content-type": this.opts.registry.contentType }).end(body))
          .catch(() => res.writeHead(500).end());
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    this.server = server;
    return server.address() as AddressInfo;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
