#!/usr/bin/env -S node --enable-source-maps
// CLI entry: istiod-vault-agent <command> [flags]. Each command lives in src/commands/ and is imported only when it
// runs, so one command's --help does not load the others' gRPC, HTTP or X.509 stacks.
import { EXIT_USAGE, runCommand, versionLine, type Command } from "./cli/command.js";

// Each command is src/commands/<name>.ts, exporting `command`.
const COMMANDS: Record<string, string> = {
  sidecar: "run beside istiod: obtain the intermediate, serve it on the socket and in cacerts, renew it (long-running)",
  init: "obtain an intermediate, write the cacerts files istiod needs at start, and exit 0 (init container)",
  status: "connect to a running agent's socket and print its chain, expiry and generation",
  "setup-vault":
    "configure Vault for the agent, idempotently (PKI mounts, root, Kubernetes auth, role, policy); VAULT_TOKEN = admin token",
  doctor:
    "check as istiod's agent would (in its pod, or from a laptop with a kubeconfig): Vault reachable and trusted, login, least-privilege policy, dry-run chain",
  relay: "relay companion mode: keep the Gloo relay mTLS Secrets issued from Vault and rotated (--role server|agent)",
  inject: "patch an istiod Deployment (by name or istio.io/rev revision) so its pod runs the agent; --remove undoes it",
};

// One import() per command, spelled out so that the bundler (scripts/bundle.mjs) sees each module and keeps it lazy:
// in dist/bundle/main.js a command's code is evaluated only when that command runs.
const LOADERS: Record<string, () => Promise<{ command: Command }>> = {
  sidecar: () => import("./commands/sidecar.js"),
  init: () => import("./commands/init.js"),
  status: () => import("./commands/status.js"),
  "setup-vault": () => import("./commands/setup-vault.js"),
  doctor: () => import("./commands/doctor.js"),
  relay: () => import("./commands/relay.js"),
  inject: () => import("./commands/inject.js"),
};

export const COMMAND_NAMES = Object.keys(COMMANDS);

function usage(): string {
  return [
    "usage: istiod-vault-agent <command> [flags]",
    "       istiod-vault-agent --version",
    "",
    "commands:",
    ...Object.entries(COMMANDS).map(([n, summary]) => `  ${n.padEnd(12)} ${summary}`),
    "",
    "Run 'istiod-vault-agent <command> --help' for the flags of a command.",
    "Exit codes: 0 done, 1 runtime failure, 2 usage or configuration error.",
  ].join("\n");
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return 0;
  }
  if (name === "--version") {
    console.log(versionLine());
    return 0;
  }
  if (!name) {
    console.error(usage());
    return EXIT_USAGE;
  }
  if (!Object.hasOwn(COMMANDS, name)) {
    console.error(`unknown command "${name}"\n\n${usage()}`);
    return EXIT_USAGE;
  }
  const { command } = await LOADERS[name]!();
  return runCommand(command, rest);
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith("/main.js")) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
