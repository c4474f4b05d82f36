#!/usr/bin/env node
// CLI entry: istiod-vault-agent <command> [flags]; each command lives in src/commands/ or its own module.
import { ConfigError } from "./config/config.js";
import { AGENT_FLAGS, flagHelp, loadConfig, parseFlags } from "./config/load.js";
import { runInit } from "./commands/init.js";
import { runSidecar } from "./commands/sidecar.js";
import { runStatus } from "./commands/status.js";
import { injectMain } from "./inject/inject.js";
import { runRelay } from "./relay/command.js";
import { SETUP_FLAGS, parseSetupFlags, runDoctorCommand, runSetupVault } from "./vault/setup-command.js";

const COMMANDS: Record<string, string> = {
  sidecar: "run beside istiod: obtain the intermediate, serve it on the socket and in cacerts, renew it (long-running)",
  init: "obtain an intermediate, write the cacerts files istiod needs at start, and exit 0 (init container)",
  status: "connect to a running agent's socket and print its chain, expiry and generation",
  "setup-vault":
    "configure Vault for the agent, idempotently (PKI mounts, root, Kubernetes auth, role, policy); VAULT_TOKEN = admin token",
  doctor:
    "check from the pod's point of view: Vault reachable and trusted, login, least-privilege policy, dry-run chain",
  relay: "relay companion mode: keep the Gloo relay mTLS Secrets issued from Vault and rotated (--role server|agent)",
  inject: "patch an istiod Deployment (by name or istio.io/rev revision) so its pod runs the agent; --remove undoes it",
};

function usage(): string {
  return [
    "usage: istiod-vault-agent <command> [flags]",
    "",
    "commands:",
    ...Object.entries(COMMANDS).map(([n, d]) => `  ${n.padEnd(12)} ${d}`),
    "",
    "Run 'istiod-vault-agent <command> --help' for the flags of a command.",
  ].join("\n");
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === "--help" || command === "-h" || command === "help") {
    console.log(usage());
    return command ? 0 : 2;
  }
  if (!(command in COMMANDS)) {
    console.error(`unknown command "${command}"\n\n${usage()}`);
    return 2;
  }
  if (command === "setup-vault" || command === "doctor") return runVaultCommand(command, rest);
  if (command === "inject") return injectMain(rest);
  if (command === "relay") return runRelay(rest);
  let flags;
  try {
    flags = parseFlags(rest);
  } catch (err) {
    console.error((err as Error).message);
    return 2;
  }
  if (flags.help) {
    console.log(`usage: istiod-vault-agent ${command} [flags]\n\n${COMMANDS[command]}\n\nflags:\n${flagHelp()}`);
    return 0;
  }
  try {
    switch (command) {
      case "sidecar":
        return await runSidecar(flags);
      case "init":
        return await runInit(flags);
      case "status":
        return await runStatus(flags);
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      return 2;
    }
    console.error(`istiod-vault-agent ${command}: ${(err as Error).message}`);
    return 1;
  }
  return 2;
}

async function runVaultCommand(command: "setup-vault" | "doctor", argv: string[]): Promise<number> {
  try {
    const agentOptions = Object.fromEntries(Object.entries(AGENT_FLAGS).map(([n, [, type]]) => [n, { type }]));
    const flags = command === "setup-vault" ? parseSetupFlags(argv, agentOptions) : parseFlags(argv);
    if (flags.help) {
      const extra =
        command === "setup-vault"
          ? `\n${Object.entries(SETUP_FLAGS)
              .map(([n, [d]]) => `  --${n} VALUE\n      ${d}`)
              .join("\n")}`
          : "";
      console.log(
        `usage: istiod-vault-agent ${command} [flags]\n\n${COMMANDS[command]}\n\nflags:\n${flagHelp()}${extra}`,
      );
      return 0;
    }
    const config = loadConfig(flags);
    return command === "setup-vault"
      ? await runSetupVault(config, flags, console.log)
      : await runDoctorCommand(config, console.log);
  } catch (err) {
    console.error(
      err instanceof ConfigError ? err.message : `istiod-vault-agent ${command}: ${(err as Error).message}`,
    );
    return err instanceof ConfigError ? 2 : 1;
  }
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
