// Child processes for the test servers: logs go to a file in the env's temp dir (never to test output: server logs
// can carry tokens), every process is stopped by PID on stop() and, as a last resort, when the test process exits.
import { spawn, type ChildProcess } from "node:child_process";
import { openSync, closeSync, readFileSync } from "node:fs";

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export class ManagedProcess {
  private readonly child: ChildProcess;
  private exited: Promise<number | null>;
  exitCode: number | null | undefined = undefined;

  constructor(
    readonly name: string,
    binary: string,
    args: string[],
    readonly logPath: string,
    env: NodeJS.ProcessEnv = process.env,
    /** Working directory (Istio's binaries read their well-known paths relative to it: ./var/run/secrets/...). */
    cwd?: string,
  ) {
    const fd = openSync(logPath, "a");
    this.child = spawn(binary, args, { stdio: ["ignore", fd, fd], env, ...(cwd ? { cwd } : {}) });
    closeSync(fd);
    running.add(this.child);
    this.exited = new Promise((resolve) => {
      this.child.on("exit", (code, signal) => {
        running.delete(this.child);
        this.exitCode = code ?? (signal ? -1 : null);
        resolve(this.exitCode);
      });
      this.child.on("error", () => {
        running.delete(this.child);
        this.exitCode = -1;
        resolve(-1);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get alive(): boolean {
    return this.exitCode === undefined;
  }

  signal(sig: NodeJS.Signals): void {
    if (this.alive) this.child.kill(sig);
  }

  /** SIGTERM, then SIGKILL after graceMs. Resolves when the process is gone. */
  async stop(graceMs = 5_000): Promise<void> {
    if (!this.alive) return;
    this.child.kill("SIGCONT"); // a test may have stopped it with SIGSTOP
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  async waitExit(): Promise<number | null> {
    return this.exited;
  }

  /** The last lines of the log with anything token-like masked, for failure messages. */
  logTail(lines = 25): string {
    let text: string;
    try {
      text = readFileSync(this.logPath, "utf8");
    } catch {
      return "(no log)";
    }
    return redactSecrets(text.split("\n").slice(-lines).join("\n"));
  }
}

/** Masks JWTs, Vault tokens and PEM private keys in text that may reach test output. */
export function redactSecrets(text: string): string {
  return text
    .replace(/eyJ[\w-]+\.[\w-]+\.[\w-]+/g, "<jwt>")
    .replace(/\b(hvs|hvb|hvr|s|b)\.[A-Za-z0-9]{20,}/g, "<token>")
    .replace(/(Root Token|token)(["':= ]+)[^\s"']+/gi, "$1$2<redacted>")
    .replace(/-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----/g, "<private key>");
}

/** Polls `check` until it returns true; fails with the process's log tail if the process dies or time runs out. */
export async function waitUntil(
  what: string,
  check: () => Promise<boolean>,
  opts: { timeoutMs: number; process?: ManagedProcess; intervalMs?: number },
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  let lastError = "";
  while (Date.now() < deadline) {
    if (opts.process && !opts.process.alive) {
      throw new Error(
        `${what}: ${opts.process.name} exited (${opts.process.exitCode}) before it was ready.\n${opts.process.logTail()}`,
      );
    }
    try {
      if (await check()) return;
    } catch (err) {
      lastError = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 200));
  }
  throw new Error(
    `${what}: not ready after ${opts.timeoutMs} ms (last error: ${lastError || "none"})` +
      (opts.process ? `\n${opts.process.logTail()}` : ""),
  );
}

/**
 * Runs `step` over and over, `intervalMs` apart, until stop() (which waits for the step in progress): a background
 * load or sampler beside what a test does. A step that throws is the step's business: catch inside it.
 */
export function repeatInBackground(step: () => Promise<void> | void, intervalMs: number): { stop(): Promise<void> } {
  let running = true;
  const loop = (async () => {
    while (running) {
      await step();
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
    },
  };
}
