// A forward proxy on loopback that counts what it forwarded, for tests that a kubeconfig's proxy-url is used:
// CONNECT tunnels (how https:// goes through a proxy) and absolute-form requests (how undici proxies plain http://).
import { createServer, request as httpRequest } from "node:http";
import { connect, type AddressInfo } from "node:net";

export interface CountingProxy {
  /** http://127.0.0.1:PORT, for a proxy-url. */
  readonly url: string;
  /** Requests and tunnels forwarded so far. */
  forwarded(): number;
  close(): Promise<void>;
}

export async function startCountingProxy(): Promise<CountingProxy> {
  let forwarded = 0;
  const proxy = createServer((req, res) => {
    forwarded++;
    const up = httpRequest(req.url ?? "", { method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  proxy.on("connect", (req, socket) => {
    forwarded++;
    const [host, port] = (req.url ?? "").split(":");
    const upstream = connect(Number(port), host, () => {
      socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      upstream.pipe(socket).pipe(upstream);
    });
    upstream.on("error", () => socket.destroy());
  });
  await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
    forwarded: () => forwarded,
    async close() {
      proxy.closeAllConnections();
      await new Promise((r) => proxy.close(r));
    },
  };
}
