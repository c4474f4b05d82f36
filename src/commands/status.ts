// `status`: asks a running agent's socket for its bundle and prints the chain, expiry and generation.
import * as grpc from "@grpc/grpc-js";
import { AGENT_FLAGS, agentHelp, loadConfig, type FlagValues } from "../config/load.js";
import type { Command } from "../cli/command.js";
import { x509 } from "../crypto/x509.js";
import { CertificateAuthorityAgentClient, type SigningBundle } from "../gen/istiodvaultagent/v1/agent.js";

export const command: Command = {
  name: "status",
  flags: AGENT_FLAGS,
  help: () =>
    agentHelp(
      ["istiod-vault-agent status [--socket=PATH]"],
      "Connects to a running agent's socket and prints its chain, expiry and generation.",
    ),
  run: runStatus,
};

export async function runStatus(flags: FlagValues): Promise<number> {
  const config = loadConfig(flags, process.env, { needVault: false });
  const client = new CertificateAuthorityAgentClient(
    `unix://${config.serve.socketPath}`,
    grpc.credentials.createInsecure(),
  );
  try {
    const bundle = await new Promise<SigningBundle>((resolve, reject) =>
      client.getSigningBundle({}, new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err, res) =>
        err ? reject(err) : resolve(res),
      ),
    );
    console.log(describeBundle(bundle, config.serve.socketPath));
    return 0;
  } catch (err) {
    console.error(`status: cannot read the bundle from ${config.serve.socketPath}: ${(err as Error).message}`);
    return 1;
  } finally {
    client.close();
  }
}

export function describeBundle(b: SigningBundle, socketPath: string): string {
  const lines = [`socket:     ${socketPath}`, `generation: ${b.generation}`, `serial:     ${b.serialHex}`];
  lines.push(`not before: ${new Date(b.notBeforeUnix * 1000).toISOString()}`);
  const left = b.notAfterUnix - Date.now() / 1000;
  lines.push(`not after:  ${new Date(b.notAfterUnix * 1000).toISOString()} (${formatSeconds(left)} left)`);
  lines.push("chain:");
  b.certChainPem.forEach((pem, i) => {
    const c = new x509.X509Certificate(pem);
    lines.push(`  [${i}] ${c.subject}  (issuer: ${c.issuer}; expires ${c.notAfter.toISOString()})`);
  });
  return lines.join("\n");
}

function formatSeconds(s: number): string {
  if (s <= 0) return "expired";
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return d ? `${d}d${h}h` : h ? `${h}h${m}m` : `${m}m${Math.floor(s % 60)}s`;
}
