// A local client that abuses the agent's socket: CONNECTIONS connections, each opening STREAMS WatchSigningBundle
// streams. Run as its own process so the test can SIGSTOP it: a stopped process reads nothing from its sockets, which
// is what "a client that never reads" means to the agent (a grpc-js client in the test process would keep reading
// into its own memory). Prints one JSON line once every stream got its first bundle or a refusal, then idles.
//
//   node dist/test/env/socket-abuser.js SOCKET CONNECTIONS STREAMS
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { CertificateAuthorityAgentClient } from "../../src/gen/istiodvaultagent/v1/agent.js";

export interface AbuserReport {
  accepted: number;
  /** Refusal messages (digits replaced by N) and how often each came. */
  refused: Record<string, number>;
}

function abuse(socketPath: string, connections: number, streams: number): void {
  const report: AbuserReport = { accepted: 0, refused: {} };
  let settled = 0;
  const settle = () => {
    if (++settled === connections * streams) process.stdout.write(`${JSON.stringify(report)}\n`);
  };
  for (let c = 0; c < connections; c++) {
    const client = new CertificateAuthorityAgentClient(`unix://${socketPath}`, grpc.credentials.createInsecure(), {
      "grpc.use_local_subchannel_pool": 1,
    });
    for (let i = 0; i < streams; i++) {
      const call = client.watchSigningBundle({});
      let first = true;
      call.on("data", () => {
        if (!first) return;
        first = false;
        report.accepted++;
        settle();
      });
      call.on("error", (err: grpc.ServiceError) => {
        if (!first) return;
        first = false;
        const key = `${grpc.status[err.code]}: ${err.details.replace(/\d+/g, "N")}`;
        report.refused[key] = (report.refused[key] ?? 0) + 1;
        settle();
      });
    }
  }
  setInterval(() => undefined, 60_000);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  abuse(process.argv[2] ?? "", Number(process.argv[3] ?? "1"), Number(process.argv[4] ?? "1"));
}
