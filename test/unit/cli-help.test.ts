// Every command's help, run through main(): -h, --help and --version answer 0, an unknown flag answers 2 naming it,
// and every default the help prints is the default the parser uses: passing the printed value explicitly gives the
// same configuration as leaving the flag out. Also: a command's --help loads only that command's modules.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { COMMAND_NAMES, main } from "../../src/main.js";
import type { FlagTable } from "../../src/cli/flags.js";
import { AGENT_FLAGS, loadConfig, parseFlags } from "../../src/config/load.js";
import { INJECT_FLAGS, parseInjectArgs } from "../../src/commands/inject.js";
import { SETUP_FLAGS, setupOptions } from "../../src/commands/setup-vault.js";
import { DOCTOR_FLAGS, doctorSettings } from "../../src/commands/doctor.js";
import { RELAY_FLAGS, parseRelayArgs } from "../../src/relay/config.js";
import { runOnce, runService } from "../../src/cli/service.js";
import { createLogger } from "../../src/observability/logger.js";
import { Registry } from "prom-client";
import { repoRoot } from "../env/harness.js";

const VAULT_ENV = { VAULT_ADDR: "https://vault.example:8200" };

/** Runs main(argv) and captures what it prints. */
async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const [log, error] = [console.log, console.error];
  console.log = (...a: unknown[]) => void out.push(a.join(" "));
  console.error = (...a: unknown[]) => void err.push(a.join(" "));
  try {
    const code = await main(argv);
    return { code, out: out.join("\n"), err: err.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

/** Flag → printed default, read from a help text ("  --name ARG" then "      help [env X; default: Y]"). */
function printedDefaults(help: string): Map<string, string> {
  const lines = help.split("\n");
  const found = new Map<string, string>();
  lines.forEach((line, i) => {
    const flag = /^ {2}--([a-z0-9-]+)/.exec(line)?.[1];
    const def = /\[(?:[^\]]*; )?default: ([^\]]*)\]$/.exec(lines[i + 1] ?? "")?.[1];
    if (flag && def !== undefined) found.set(flag, def);
  });
  return found;
}

/** Numbers rounded as help prints them (0.333 for 1/3), so a printed ratio compares equal to the exact default. */
function rounded(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v, (_k, x: unknown) => (typeof x === "number" ? Math.round(x * 1000) / 1000 : x)));
}

/**
 * For each flag whose help prints a default: `parse(base)` and `parse([...base, --flag=default])` must agree, for
 * the first base argv the flag is accepted with. Flags whose default is descriptive (defaultText) are skipped.
 */
function checkDefaults(
  help: string,
  table: FlagTable<never>,
  parse: (argv: string[]) => unknown,
  bases: string[][] = [[]],
): number {
  let checked = 0;
  for (const [flag, printed] of printedDefaults(help)) {
    const spec = table[flag];
    if (!spec || spec.defaultText !== undefined) continue;
    const base = bases.find((b) => {
      try {
        parse([...b, `--${flag}=${printed}`]);
        return true;
      } catch {
        return false;
      }
    });
    assert.ok(base, `--${flag}=${printed} (the printed default) is refused by the parser`);
    assert.deepEqual(
      rounded(parse([...base, `--${flag}=${printed}`])),
      rounded(parse(base)),
      `--${flag}: help prints default ${printed}, but the parser's default differs`,
    );
    checked++;
  }
  return checked;
}

async function helpOf(command: string): Promise<string> {
  const res = await run([command, "--help"]);
  assert.equal(res.code, 0);
  return res.out;
}

void describe("cli: help, version and exit codes", () => {
  const version = (JSON.parse(readFileSync(join(repoRoot(), "package.json"), "utf8")) as { version: string }).version;
  // A checkout has no build-info.json (only the image does: test/e2e/real-node.test.ts checks its commit).
  const expectedVersion = `istiod-vault-agent ${version} (commit unknown, node ${process.version}, ${process.platform}/${process.arch})`;

  void it("every command answers -h, --help and --version with 0", async () => {
    assert.deepEqual(COMMAND_NAMES.sort(), ["doctor", "init", "inject", "relay", "setup-vault", "sidecar", "status"]);
    for (const command of COMMAND_NAMES) {
      for (const flag of ["-h", "--help"]) {
        const res = await run([command, flag]);
        assert.equal(res.code, 0, `${command} ${flag}: ${res.err}`);
        assert.match(res.out, new RegExp(`^usage: istiod-vault-agent ${command} `), `${command} ${flag}`);
        assert.match(res.out, /^ {2}--help\n/m);
      }
      const v = await run([command, "--version"]);
      assert.equal(v.code, 0, `${command} --version`);
      assert.equal(v.out, expectedVersion);
    }
    assert.equal((await run(["--version"])).out, expectedVersion);
    assert.equal((await run(["--help"])).code, 0);
  });

  void it("an unknown flag or command answers 2 and names it", async () => {
    for (const command of COMMAND_NAMES) {
      const res = await run([command, "--no-such-flag=1"]);
      assert.equal(res.code, 2, `${command}`);
      assert.match(res.err, /--no-such-flag/, `${command}: ${res.err}`);
    }
    const res = await run(["no-such-command"]);
    assert.equal(res.code, 2);
    assert.match(res.err, /unknown command "no-such-command"/);
    assert.equal((await run([])).code, 2);
  });

  void it("a bad value answers 2, naming the flag and what is expected", async () => {
    const res = await run(["status", "--ttl=soon"]);
    assert.equal(res.code, 2);
    assert.match(res.err, /--ttl: "soon" is invalid; expected a duration such as 720h/);
    const relay = await run(["relay", "--role=server", "--key-algorithm=DSA"]);
    assert.equal(relay.code, 2);
    assert.match(relay.err, /--key-algorithm: "DSA" is invalid; expected one of ECDSA_P256/);
    const setup = await run(["setup-vault", "--policy-name=istiod-agent"]);
    assert.equal(
      setup.code,
      2,
      "--policy-name names a RootTrustPolicy; setup-vault's Vault policy is --vault-policy-name",
    );
    assert.match(setup.err, /--policy-name: .*expected --vault-policy-name/);
  });

  void it("agent commands: every printed default is the default used", async () => {
    const parse = (argv: string[]) => loadConfig(parseFlags(argv), VAULT_ENV);
    for (const command of ["sidecar", "init", "status", "doctor"]) {
      const checked = checkDefaults(await helpOf(command), AGENT_FLAGS, parse);
      assert.ok(checked >= 25, `${command}: only ${checked} defaults checked`);
    }
  });

  void it("setup-vault: its own printed defaults are the options it writes to Vault", async () => {
    const help = await helpOf("setup-vault");
    assert.doesNotMatch(help, /^ {2}--policy-(name|namespace) /m, "the refused RootTrustPolicy flags are not listed");
    assert.match(help, /^ {2}--vault-policy-name /m);
    const config = loadConfig({}, VAULT_ENV);
    const files = ["--kubernetes-host=https://k8s:6443", `--kubernetes-ca-file=${join(repoRoot(), "package.json")}`];
    const parse = (argv: string[]) => {
      const { plan, problems } = setupOptions(config, parseFlagsOf(SETUP_FLAGS, [...files, ...argv]));
      if (problems.length) throw new Error(problems.join("; "));
      return plan;
    };
    assert.ok(checkDefaults(help, SETUP_FLAGS, parse) >= 5);
    assert.ok(checkDefaults(help, AGENT_FLAGS, (argv) => loadConfig(parseFlags(argv), VAULT_ENV)) >= 25);
  });

  void it("doctor: its own printed defaults are the settings it uses, and -o is --output", async () => {
    const help = await helpOf("doctor");
    assert.match(help, /^ {2}--output FORMAT \(or -o FORMAT\)$/m);
    const parse = (argv: string[]) => doctorSettings(parseFlagsOf(DOCTOR_FLAGS, argv));
    assert.ok(checkDefaults(help, DOCTOR_FLAGS, parse) >= 4);
    const bad = await run(["doctor", "-o", "yaml"]);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--output: "yaml" is invalid; expected one of text, json/);
  });

  void it("inject: every printed default is the default used", async () => {
    const parse = (argv: string[]) => parseInjectArgs(["--vault-addr=https://vault:8200", ...argv]);
    assert.ok(checkDefaults(await helpOf("inject"), INJECT_FLAGS, parse) >= 6);
  });

  void it("relay: every printed default is the default used, in each role", async () => {
    const parse = (argv: string[]) => {
      const parsed = parseRelayArgs(argv, VAULT_ENV);
      assert.equal(parsed.kind, "run");
      return parsed;
    };
    const bases = [
      ["--role=server"],
      ["--role=server", "--issuer"],
      ["--role=server", "--shared-identity-token"],
      ["--role=agent", "--cluster=c1", "--bootstrap=mgmt:9910"],
    ];
    assert.ok(checkDefaults(await helpOf("relay"), RELAY_FLAGS, parse, bases) >= 30);
  });

  void it("a command's --help loads neither the other commands nor their gRPC and X.509 stacks", () => {
    const loaded = modulesLoadedBy("dist/src/main.js", ["inject", "--help"]);
    assert.ok(
      loaded.some((u) => u.endsWith("/commands/inject.js")),
      "inject's module is loaded",
    );
    for (const other of ["/commands/sidecar.js", "/commands/relay.js", "/commands/status.js", "/src/agent.js"])
      assert.ok(!loaded.some((u) => u.endsWith(other)), `inject --help loaded ${other}`);
    for (const heavy of ["@grpc/grpc-js", "@peculiar/x509"])
      assert.ok(!loaded.some((u) => u.includes(heavy)), `inject --help loaded ${heavy}`);
  });
});

/** The URL of every module a fresh Node resolves while `main` (a path under the repository) runs `argv`. */
function modulesLoadedBy(main: string, argv: string[]): string[] {
  const mainUrl = pathToFileURL(join(repoRoot(), main)).href;
  const script = `
    import { registerHooks } from "node:module";
    const loaded = [];
    registerHooks({ resolve(s, c, next) { const r = next(s, c); loaded.push(r.url); return r; } });
    const { main } = await import(${JSON.stringify(mainUrl)});
    console.log = () => {};
    await main(${JSON.stringify(argv)});
    process.stderr.write(JSON.stringify(loaded));`;
  const res = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
  assert.equal(res.status, 0, res.stderr);
  return JSON.parse(res.stderr.trim().split("\n").at(-1) ?? "[]") as string[];
}

/** The outputs of `npm run bundle` (esbuild's metafile): output file → the input files it holds and what it imports. */
function bundleMeta(): Record<string, { inputs: Record<string, unknown>; imports: { path: string; kind: string }[] }> {
  const file = join(repoRoot(), "dist/bundle/meta.json");
  assert.ok(existsSync(file), "dist/bundle is missing: npm run bundle (scripts/test.sh runs it)");
  return (JSON.parse(readFileSync(file, "utf8")) as { outputs: ReturnType<typeof bundleMeta> }).outputs;
}

/** Runs the bundle as the image does (its ENTRYPOINT flags aside) and returns what it printed. */
function runBundle(argv: string[]): { code: number | null; out: string; err: string } {
  const res = spawnSync(process.execPath, ["--enable-source-maps", join(repoRoot(), "dist/bundle/main.js"), ...argv], {
    encoding: "utf8",
    env: { ...process.env, ...VAULT_ENV },
  });
  return { code: res.status, out: res.stdout.replace(/\n$/, ""), err: res.stderr };
}

void describe("cli: the bundle (dist/bundle/main.js, what the image and npm start run)", () => {
  void it("answers every command's --help and --version as tsc's output does, and refuses the same", async () => {
    for (const command of COMMAND_NAMES) {
      const expected = await run([command, "--help"]);
      const res = runBundle([command, "--help"]);
      assert.equal(res.code, 0, `bundle ${command} --help: ${res.err}`);
      assert.equal(res.out, expected.out, `bundle ${command} --help: the same help as tsc's output`);
      const v = runBundle([command, "--version"]);
      assert.equal(v.code, 0);
      assert.equal(v.out, (await run([command, "--version"])).out, `bundle ${command} --version (package.json found)`);
      const bad = runBundle([command, "--no-such-flag=1"]);
      assert.equal(bad.code, 2, `bundle ${command} --no-such-flag`);
      assert.match(bad.err, /--no-such-flag/);
    }
    assert.equal(runBundle(["--help"]).out, (await run(["--help"])).out);
  });

  void it("stack traces name the TypeScript sources (source maps beside every output file)", () => {
    const outputs = bundleMeta();
    for (const file of Object.keys(outputs).filter((f) => f.endsWith(".js"))) {
      assert.ok(outputs[`${file}.map`], `${file} has no source map`);
      assert.match(readFileSync(join(repoRoot(), file), "utf8"), /\n\/\/# sourceMappingURL=[\w.-]+\.js\.map\n?$/);
    }
    // main(undefined) throws a TypeError inside main(): the trace must point into src/main.ts, not the bundle.
    const mainUrl = pathToFileURL(join(repoRoot(), "dist/bundle/main.js")).href;
    const script = `const { main } = await import(${JSON.stringify(mainUrl)});
      await main(undefined).catch((e) => console.log(e.stack));`;
    const res = spawnSync(process.execPath, ["--enable-source-maps", "--input-type=module", "-e", script], {
      encoding: "utf8",
    });
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stdout, /^TypeError/);
    assert.match(res.stdout, /\bat main \(.*\/src\/main\.ts:\d+:\d+\)/, res.stdout);
  });

  void it("a command loads only its own chunks: inject --help no gRPC or X.509, sidecar --help no kubeconfig stack", () => {
    const outputs = bundleMeta();
    const holds = (file: string, input: string) =>
      Object.keys(outputs[`dist/bundle/${file}`]?.inputs ?? {}).some((i) => i.includes(input));
    const loadedBy = (argv: string[]): string[] =>
      modulesLoadedBy("dist/bundle/main.js", argv)
        .filter((u) => u.includes("/dist/bundle/"))
        .map((u) => u.slice(u.lastIndexOf("/") + 1));
    const inject = loadedBy(["inject", "--help"]);
    assert.ok(
      inject.some((f) => holds(f, "src/commands/inject.ts")),
      `inject's chunk is loaded (the trace works): ${inject.join(" ")}`,
    );
    for (const heavy of ["src/commands/sidecar.ts", "src/agent.ts", "@grpc/grpc-js", "@peculiar/x509"])
      assert.ok(!inject.some((f) => holds(f, heavy)), `inject --help loaded ${heavy}`);
    const sidecar = loadedBy(["sidecar", "--help"]);
    assert.ok(sidecar.some((f) => holds(f, "src/agent.ts")));
    for (const heavy of ["@kubernetes/client-node", "src/kube/kubeconfig.ts", "src/relay/"])
      assert.ok(!sidecar.some((f) => holds(f, heavy)), `sidecar --help loaded ${heavy}`);
  });
});

void describe("cli: the service lifecycle every long-running mode uses", () => {
  const log = createLogger({ level: "silent" });

  void it("serves health and metrics, renews on SIGHUP, stops on SIGTERM and closes once", async () => {
    const events: string[] = [];
    let ready = false;
    const registry = new Registry();
    const address = `127.0.0.1:${await freePort()}`;
    const done = runService({
      log,
      name: "test",
      http: { address, ready: () => ready, registry },
      start: () => {
        events.push("start");
        return Promise.resolve();
      },
      onHangup: () => events.push("hangup"),
      close: () => {
        events.push("close");
        return Promise.resolve();
      },
    });
    // The server listens before start() runs.
    while (!events.includes("start")) await new Promise((r) => setTimeout(r, 5));
    assert.equal((await fetch(`http://${address}/healthz`)).status, 200);
    assert.equal((await fetch(`http://${address}/readyz`)).status, 503, "not ready yet");
    ready = true;
    assert.equal((await fetch(`http://${address}/readyz`)).status, 200);
    process.emit("SIGHUP");
    process.emit("SIGTERM");
    process.emit("SIGTERM");
    assert.equal(await done, 0);
    assert.deepEqual(events, ["start", "hangup", "close"]);
    assert.equal(process.listenerCount("SIGTERM"), 0, "signal handlers are removed");
    await assert.rejects(fetch(`http://${address}/healthz`), "the HTTP server is stopped");
  });

  void it("a failed start answers 1 and still closes; --once answers 0 or 1 and closes", async () => {
    const closed: string[] = [];
    const close = (what: string) => () => {
      closed.push(what);
      return Promise.resolve();
    };
    const failed = await runService({
      log,
      name: "test",
      start: () => Promise.reject(new Error("no Vault")),
      close: close("service"),
    });
    assert.equal(failed, 1);
    assert.equal(await runOnce({ log, name: "test", close: close("ok") }, () => Promise.resolve(true)), 0);
    assert.equal(await runOnce({ log, name: "test", close: close("false") }, () => Promise.resolve(false)), 1);
    assert.equal(await runOnce({ log, name: "test", close: close("throws") }, () => Promise.reject(new Error("x"))), 1);
    assert.deepEqual(closed, ["service", "ok", "false", "throws"]);
  });
});

/** A port nothing listens on right now. */
async function freePort(): Promise<number> {
  const { createServer } = await import("node:net");
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function parseFlagsOf(table: FlagTable<never>, argv: string[]): Record<string, string> {
  const values: Record<string, string> = {};
  for (const a of argv) {
    const m = /^--([a-z0-9-]+)=(.*)$/s.exec(a);
    assert.ok(m && table[m[1]!], `test argv: ${a}`);
    values[m[1]!] = m[2]!;
  }
  return values;
}
