#!/usr/bin/env node
// CLI entry: istiod-vault-agent <sidecar | init | status> [flags]
import * as grpc from "@grpc/grpc-js";
import { Agent } from "./agent.js";
import { ConfigError } from "./config/config.js";
import { AGENT_FLAGS, flagHelp, loadConfig, parseFlags } from "./config/load.js";
import { SETUP_FLAGS, parseSetupFlags, runDoctorCommand, runSetupVault } from "./vault/setup-command.js";
import { x509 } from "./crypto/x509.js";
import { CertificateAuthorityAgentClient, type SigningBundle } from "./gen/istiodvaultagent/v1/agent.js";
import { createLogger } from "./observability/logger.js";
import { injectMain } from "./inject/inject.js";
import { runRelay } from "./relay/command.js";
import { KubeClient } from "./kube/client.js";
import { kubeClientFromKubeconfig } from "./kube/kubeconfig.js";
import { RootTrustPolicyController, type ApplyResult, type PolicyObject } from "./kube/policy-controller.js";

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

async function runSidecar(flags: ReturnType<typeof parseFlags>): Promise<number> {
  const log = createLogger({ level: typeof flags["log-level"] === "string" ? flags["log-level"] : "info" });
  const policy = await openPolicy(flags);
  const config = loadConfig(flags, process.env, { needVault: true, policyDoc: policy?.initial });
  const agent = new Agent(config, log);
  const abort = new AbortController();
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig }, "stopping");
    abort.abort(new Error(`stopped by ${sig}`));
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGHUP", () => {
    log.info("SIGHUP: rotating the intermediate now");
    agent.authority.rotate("signal").catch(() => undefined);
  });
  log.info(
    {
      vault: config.vault.address,
      caPath: config.intermediate.caPath,
      socket: config.serve.socketPath,
      cacerts: config.cacerts.dir ?? null,
      policy: policy ? `${policy.ref.namespace}/${policy.ref.name}` : null,
    },
    "starting sidecar",
  );
  try {
    await agent.run(abort.signal);
    if (policy) {
      const controller = new RootTrustPolicyController(
        policy.kube,
        policy.ref,
        (doc) => applyPolicy(agent, flags, doc),
        () => {
          const b = agent.authority.current();
          return {
            ready: b !== undefined,
            intermediateSerial: b?.serialHex,
            intermediateNotAfter: b?.notAfter.toISOString(),
            generation: b?.generation,
            lastError: agent.authority.lastError,
          };
        },
        log,
      );
      controller.markApplied(policy.initial);
      agent.authority.subscribe(() => void controller.writeStatus());
      void controller.run(abort.signal);
    }
    await new Promise<void>((resolve) => abort.signal.addEventListener("abort", () => resolve(), { once: true }));
    return 0;
  } catch (err) {
    if (abort.signal.aborted) return 0;
    throw err;
  } finally {
    await agent.stop();
    await policy?.kube.close();
  }
}

/** With --policy-name: the apiserver client and the policy as it is now (the agent starts from it). */
async function openPolicy(flags: ReturnType<typeof parseFlags>) {
  const name = typeof flags["policy-name"] === "string" ? flags["policy-name"] : undefined;
  if (!name) return undefined;
  const namespace =
    (typeof flags["policy-namespace"] === "string" ? flags["policy-namespace"] : undefined) ??
    process.env.POD_NAMESPACE ??
    "istio-system";
  const kube =
    typeof flags.kubeconfig === "string" ? kubeClientFromKubeconfig(flags.kubeconfig) : await KubeClient.inCluster();
  const ref = { namespace, name };
  const reader = new RootTrustPolicyController(
    kube,
    ref,
    () => Promise.resolve({ ok: true, message: "" }),
    () => ({ ready: false }),
    createLogger({ level: "silent" }),
  );
  return { kube, ref, initial: await reader.fetch() };
}

async function applyPolicy(
  agent: Agent,
  flags: ReturnType<typeof parseFlags>,
  doc: PolicyObject,
): Promise<ApplyResult> {
  let next;
  try {
    next = loadConfig(flags, process.env, { needVault: true, policyDoc: doc });
  } catch (err) {
    return { ok: false, problems: err instanceof ConfigError ? err.problems : [(err as Error).message] };
  }
  try {
    const changed = await agent.reconfigure(next);
    return {
      ok: true,
      message: changed.length ? `applied; changed: ${changed.join(", ")}` : "applied; nothing to change",
    };
  } catch (err) {
    return { ok: true, message: `applied, but the new intermediate failed for now: ${(err as Error).message}` };
  }
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

async function runInit(flags: ReturnType<typeof parseFlags>): Promise<number> {
  const config = loadConfig(flags);
  if (!config.cacerts.dir) {
    console.error("init: --cacerts-dir is required (istiod's /etc/cacerts volume)");
    return 2;
  }
  const log = createLogger({ level: config.logLevel });
  const agent = new Agent(config, log);
  const abort = new AbortController();
  process.once("SIGTERM", () => abort.abort(new Error("stopped by SIGTERM")));
  try {
    await agent.sink?.preflight();
    const bundle = await agent.authority.start(abort.signal);
    await agent.writeCacerts(bundle);
    log.info(
      { dir: config.cacerts.dir, serial: bundle.serialHex, notAfter: bundle.notAfter.toISOString() },
      "init: cacerts ready for istiod",
    );
    return 0;
  } finally {
    await agent.stop();
  }
}

async function runStatus(flags: ReturnType<typeof parseFlags>): Promise<number> {
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

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith("/main.js")) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
