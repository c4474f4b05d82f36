// A tiny HTTPS proxy in front of the real OpenBao that can corrupt its answers on demand, to test what the agent
// does with a bad Vault answer. It forwards everything unchanged in "pass" mode.
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { request } from "undici";
import { Agent } from "undici";
import { makeTestCa } from "./pki.js";

export type ProxyMode = "pass" | "malformed-json" | "wrong-key-certificate" | "http-500";

export interface CorruptingProxy {
  url: string;
  caPem: string;
  mode: ProxyMode;
  /** Requests answered with a corruption (sign calls only). */
  corrupted: number;
  close(): Promise<void>;
}

/** Corrupts only the PKI sign calls; logins and everything else pass through, as a partial failure would. */
export async function startCorruptingProxy(upstream: string, upstreamCaPem: string): Promise<CorruptingProxy> {
  const ca = await makeTestCa("iva-test-proxy-ca");
  const serving = await ca.issue({ commonName: "proxy", ips: ["127.0.0.1"], dnsNames: ["localhost"] });
  const dispatcher = new Agent({ connect: { ca: upstreamCaPem } });
  const state: CorruptingProxy = {
    url: "",
    caPem: ca.certPem,
    mode: "pass",
    corrupted: 0,
    close: async () => {
      await new Promise<void>((r) => server.close(() => r()));
      await dispatcher.close();
    },
  };
  const server: Server = createServer({ cert: serving.certPem, key: serving.keyPem }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      void (async () => {
        const headers = Object.fromEntries(
          Object.entries(req.headers).filter(
            ([k, v]) => typeof v === "string" && !["host", "connection", "content-length"].includes(k),
          ),
        ) as Record<string, string>;
        const up = await request(new URL(req.url ?? "/", upstream), {
          method: req.method as "GET",
          headers,
          body: chunks.length ? Buffer.concat(chunks) : undefined,
          dispatcher,
        });
        let body = await up.body.text();
        const isSign = req.method === "POST" && /\/sign-intermediate$/.test(req.url ?? "");
        if (isSign && state.mode !== "pass") {
          state.corrupted++;
          if (state.mode === "http-500") {
            res
              .writeHead(500, { "content-type": "application/json" })
              .end(JSON.stringify({ errors: ["injected failure"] }));
            return;
          }
          if (state.mode === "malformed-json") body = body.slice(0, Math.floor(body.length / 2));
          if (state.mode === "wrong-key-certificate") {
            // A real certificate, but not for the agent's key: the issuer's own certificate in place of the new one.
            const parsed = JSON.parse(body) as { data: { certificate: string; issuing_ca: string } };
            parsed.data.certificate = parsed.data.issuing_ca;
            body = JSON.stringify(parsed);
          }
        }
        res.writeHead(up.statusCode, { "content-type": "application/json" }).end(body);
      })().catch((err: unknown) => res.writeHead(502).end(String((err as Error).message)));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  state.url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}
