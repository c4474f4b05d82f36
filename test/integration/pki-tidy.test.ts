// setup-vault --auto-tidy against a real OpenBao: the signing mount's pki/config/auto-tidy is written and read back,
// a second run changes nothing, and a tidy run with those settings removes intermediates expired past the safety
// buffer while keeping the valid ones (and the expired ones still inside the buffer).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { setTimeout } from "node:timers/promises";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestEnv, repoRoot } from "../env/harness.js";
import { waitUntil } from "../env/process.js";
import { nodeBinary } from "../env/agent-process.js";
import { generateKeyPair } from "../../src/crypto/keys.js";
import { createIntermediateCsr } from "../../src/authority/csr.js";
import { HttpStatusError } from "../../src/net/http-json.js";

describe("setup-vault --auto-tidy against OpenBao", () => {
  let env: TestEnv;
  let dir: string;

  before(async () => {
    env = await TestEnv.start();
    dir = mkdtempSync(join(tmpdir(), "iva-tidy-"));
    writeFileSync(join(dir, "kube-ca.crt"), env.kube.caPem);
  });
  after(async () => {
    await env?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const setupVault = (extra: string[]) => {
    const res = spawnSync(
      nodeBinary(),
      [
        join(repoRoot(), "dist/src/main.js"),
        "setup-vault",
        `--vault-addr=${env.vault.url}`,
        `--vault-cacert=${env.vault.caFile}`,
        `--kubernetes-host=${env.kube.url}`,
        `--kubernetes-ca-file=${join(dir, "kube-ca.crt")}`,
        ...extra,
      ],
      { encoding: "utf8", env: { ...process.env, VAULT_TOKEN: env.vault.rootToken } },
    );
    const output = `${res.stdout}${res.stderr}`;
    assert.ok(!output.includes(env.vault.rootToken), "the admin token is never printed");
    return { code: res.status, output };
  };
  const root = () => env.vault.rootToken;
  const autoTidy = async (mount: string) =>
    (await env.vault.client.read<Record<string, unknown>>(`${mount}/config/auto-tidy`, root())).data;
  const storedSerials = async (mount: string) =>
    (await env.vault.client.read<{ keys: string[] }>(`${mount}/certs?list=true`, root())).data.keys;

  it("writes pki/config/auto-tidy on the signing mount, reads back the same, and a second run changes nothing", async () => {
    const args = ["--auto-tidy", "--ttl=24h", "--tidy-interval=1h"];
    const first = setupVault(args);
    assert.equal(first.code, 0, first.output);
    assert.match(first.output, /enabled auto-tidy on pki\/ \(every 1h, removes certificates 72h past expiry/);
    assert.match(first.output, /auto-tidy on pki\/: every 1h, expired certificates removed 72h past expiry/);
    const have = await autoTidy("pki");
    assert.equal(have.enabled, true);
    assert.equal(have.interval_duration, 3600);
    assert.equal(have.tidy_cert_store, true);
    assert.equal(have.tidy_revoked_certs, true);
    assert.equal(have.safety_buffer, 72 * 3600, "the default buffer for a 24h intermediate is Vault's 72h");

    const second = setupVault(args);
    assert.equal(second.code, 0, second.output);
    assert.match(second.output, /nothing changed/);
    assert.match(second.output, /auto-tidy on pki\/: every 1h/, "the settings are reported even when unchanged");

    const changed = setupVault([...args, "--tidy-safety-buffer=100h"]);
    assert.match(changed.output, /setup-vault changed 1 thing\(s\):\n {2}- enabled auto-tidy on pki\//);
    assert.equal((await autoTidy("pki")).safety_buffer, 100 * 3600);
  });

  it("--ca-path on an intermediate mount tidies that mount, where the agent's intermediates are stored", async () => {
    const res = setupVault(["--auto-tidy", "--ca-path=pki_int/root/sign-intermediate"]);
    assert.equal(res.code, 0, res.output);
    assert.match(res.output, /enabled auto-tidy on pki_int\//);
    assert.equal((await autoTidy("pki_int")).safety_buffer, 720 * 3600);
  });

  it("a tidy with those settings removes intermediates expired past the buffer and keeps the valid ones", async () => {
    const mount = "pki";
    const sign = async (ttl: string) => {
      const keys = await generateKeyPair("ECDSA_P256", false);
      const csr = await createIntermediateCsr(keys, "ECDSA_P256", { commonName: `tidy test ${ttl}` });
      const res = await env.vault.client.write<{ serial_number: string }>(`${mount}/root/sign-intermediate`, root(), {
        csr,
        ttl,
        format: "pem",
      });
      return res.data.serial_number;
    };
    const expiring = [await sign("2s"), await sign("2s"), await sign("2s")];
    const valid = [await sign("1h"), await sign("1h")];
    let serials = await storedSerials(mount);
    for (const s of [...expiring, ...valid]) assert.ok(serials.includes(s), `sign-intermediate stored ${s}`);
    await setTimeout(4_000); // the short ones expire (OpenBao backdates notBefore, not notAfter)

    // The mount's own auto-tidy settings, as setup-vault wrote them, run now instead of at the next interval.
    const tidy = async (safetyBufferSeconds: number) => {
      const cfg = await autoTidy(mount);
      await env.vault.client.write(`${mount}/tidy`, root(), {
        tidy_cert_store: cfg.tidy_cert_store,
        tidy_revoked_certs: cfg.tidy_revoked_certs,
        safety_buffer: safetyBufferSeconds,
      });
      await waitUntil(
        "tidy finished",
        async () => {
          const status = (await env.vault.client.read<{ state: string }>(`${mount}/tidy-status`, root())).data;
          return status.state === "Finished";
        },
        { timeoutMs: 30_000 },
      );
    };
    // Inside the configured buffer (100h from the first test): expired but kept.
    await tidy(Number((await autoTidy(mount)).safety_buffer));
    serials = await storedSerials(mount);
    for (const s of expiring) assert.ok(serials.includes(s), `${s} expired less than the buffer ago: kept`);

    // Past a 1s buffer: gone; the valid ones stay.
    assert.ok(setupVault(["--auto-tidy", "--tidy-safety-buffer=1s"]).code === 0);
    await tidy(Number((await autoTidy(mount)).safety_buffer));
    serials = await storedSerials(mount);
    for (const s of expiring) assert.ok(!serials.includes(s), `${s} expired past the buffer: removed`);
    for (const s of valid) assert.ok(serials.includes(s), `${s} is valid: kept`);
    await assert.rejects(
      env.vault.client.read(`${mount}/cert/${expiring[0]}`, root()),
      (err: unknown) => err instanceof HttpStatusError && (err.status === 404 || err.status === 400),
    );
  });
});
