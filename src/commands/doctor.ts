// `doctor`: checks, from the pod's point of view, everything the agent needs from Vault, and says how to fix what
// fails: reachability and TLS, Kubernetes login, a policy that allows the sign path and nothing broader, and a
// dry-run intermediate whose chain validates.
import { readFile } from "node:fs/promises";
import type { Command } from "../cli/command.js";
import type { Config } from "../config/config.js";
import { AGENT_FLAGS, agentHelp, loadConfig } from "../config/load.js";
import { generateKeyPair } from "../crypto/keys.js";
import { createIntermediateCsr } from "../authority/csr.js";
import { validateSignAnswer, type PkiSignAnswer } from "../authority/chain.js";
import { HttpStatusError, HttpTransportError } from "../net/http-json.js";
import { VaultClient, trimSlashes } from "../vault/client.js";

export const command: Command = {
  name: "doctor",
  flags: AGENT_FLAGS,
  help: () =>
    agentHelp(
      ["istiod-vault-agent doctor --vault-addr=URL [flags]   (the same flags as the sidecar)"],
      "Checks from the pod's point of view: Vault reachable and trusted, Kubernetes login, a least-privilege policy,\n" +
        "and a dry-run intermediate whose chain validates. Exit 1 when a check fails.",
    ),
  async run(flags) {
    const checks = await runDoctor(loadConfig(flags));
    console.log(formatChecks(checks));
    const failed = checks.filter((x) => !x.ok).length;
    console.log(failed ? `\n${failed} check(s) failed` : "\nall checks passed");
    return failed ? 1 : 0;
  },
};

export interface DoctorCheck {
  name: string;
  ok: boolean;
  detail: string;
  fix?: string | undefined;
}

/** Paths an agent token must not be able to touch; any capability there means the policy is over-broad. */
export function probePaths(c: Config): string[] {
  const mount = c.intermediate.caPath.split("/")[0] ?? "pki";
  return [
    `${mount}/issue/doctor-probe`,
    `${mount}/sign/doctor-probe`,
    `${mount}/root/generate/internal`,
    `${mount}/config/ca`,
    `${mount}/issuers`,
    "sys/mounts/doctor-probe",
    "sys/policy/doctor-probe",
    "sys/auth/doctor-probe",
    "auth/token/create",
    "secret/data/doctor-probe",
    "doctor-probe/anything",
  ];
}

export async function runDoctor(c: Config): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  const vault = new VaultClient({
    address: c.vault.address,
    namespace: c.vault.namespace,
    tls: { caPem: c.vault.caPem, insecureSkipVerify: c.vault.insecureSkipVerify },
  });
  try {
    // 1. Reachability and TLS.
    try {
      const h = await vault.health();
      const ok = h.status === 200 || h.status === 429;
      checks.push({
        name: "vault reachable",
        ok,
        detail: `${c.vault.address} answered sys/health ${h.status} (version ${h.version}, sealed ${h.sealed})`,
        fix: ok ? undefined : h.sealed ? "unseal Vault" : "Vault is not initialised or not active",
      });
      if (!ok) return checks;
    } catch (err) {
      const tls =
        err instanceof HttpTransportError &&
        /certificate|self.signed|CERT|UNABLE_TO/i.test(`${err.causeCode} ${err.message}`);
      checks.push({
        name: "vault reachable",
        ok: false,
        detail: (err as Error).message,
        fix: tls
          ? "Vault's TLS certificate is not trusted: pass its CA with --vault-cacert (or spec.config.agentCa.vault.caBundle)"
          : "check --vault-addr, DNS and network policies from the istiod pod",
      });
      return checks;
    }
    if (c.vault.insecureSkipVerify) {
      checks.push({
        name: "tls verification",
        ok: false,
        detail: "TLS verification is OFF",
        fix: "remove --vault-skip-verify and pass --vault-cacert",
      });
    }

    // 2. Login.
    let token: string;
    try {
      const jwt = (await readFile(c.auth.tokenPath, "utf8")).trim();
      const auth = await vault.kubernetesLogin(c.auth.mountPath, c.auth.role, jwt);
      token = auth.client_token;
      checks.push({
        name: "kubernetes login",
        ok: true,
        detail: `role ${c.auth.role} at auth/${trimSlashes(c.auth.mountPath)}: policies ${auth.policies.join(", ")}`,
      });
    } catch (err) {
      const forbidden = err instanceof HttpStatusError && (err.status === 403 || err.status === 400);
      checks.push({
        name: "kubernetes login",
        ok: false,
        detail: (err as Error).message,
        fix: forbidden
          ? `check that role ${c.auth.role} binds this pod's service account and namespace, that its audience matches the token's, and that Vault's auth/${trimSlashes(c.auth.mountPath)}/config can reach the apiserver (TokenReview)`
          : `the token file ${c.auth.tokenPath} must hold a projected service-account token`,
      });
      return checks;
    }

    // 3. Policy: the sign path (and csrPath when used) must be allowed; nothing broader.
    const needed = [c.intermediate.caPath, ...(c.intermediate.csrPath ? [c.intermediate.csrPath] : [])];
    const probes = probePaths(c);
    const caps = (
      await vault.write<Record<string, string[]>>("sys/capabilities-self", token, { paths: [...needed, ...probes] })
    ).data;
    for (const p of needed) {
      const have = caps[p] ?? [];
      const ok = have.includes("update") || have.includes("root");
      checks.push({
        name: `policy allows ${p}`,
        ok,
        detail: `capabilities: ${have.join(", ") || "none"}`,
        fix: ok
          ? undefined
          : `add path "${p}" { capabilities = ["update"] } to the role's policy (see vault-policies/istiod-agent.hcl)`,
      });
    }
    const broad = probes.filter((p) => (caps[p] ?? ["deny"]).some((x) => x !== "deny"));
    checks.push({
      name: "policy is least-privilege",
      ok: broad.length === 0,
      detail: broad.length
        ? `the token can also use: ${broad.map((p) => `${p} (${(caps[p] ?? []).join(",")})`).join("; ")}`
        : "no capability beyond the sign path",
      fix: broad.length
        ? "narrow the role's policies to vault-policies/istiod-agent.hcl: update on the sign path only (with --csr-path also update on it and delete on <mount>/key/*)"
        : undefined,
    });

    // 4. Dry run: sign a short-lived intermediate (not served) and validate its chain.
    try {
      const keys = await generateKeyPair(c.intermediate.keyAlgorithm, false);
      const csr = await createIntermediateCsr(keys, c.intermediate.keyAlgorithm, {
        commonName: `${c.intermediate.commonName} (doctor dry run)`,
      });
      const answer = await vault.write<PkiSignAnswer>(c.intermediate.caPath, token, {
        csr,
        common_name: `${c.intermediate.commonName} (doctor dry run)`,
        ttl: "10m",
        format: "pem",
        max_path_length: c.intermediate.maxPathLength,
      });
      const chain = await validateSignAnswer(answer.data, keys.publicKey, new Date(), { expectCa: true });
      checks.push({
        name: "dry-run intermediate",
        ok: true,
        detail: `chain of ${chain.chainPem.length} validates to ${chain.cert.issuer === chain.cert.subject ? "itself" : "the root"}`,
      });
    } catch (err) {
      checks.push({
        name: "dry-run intermediate",
        ok: false,
        detail: (err as Error).message,
        fix: `check that ${c.intermediate.caPath} is a PKI sign-intermediate path with an issuer`,
      });
    }
    await vault.write("auth/token/revoke-self", token, {}).catch(() => undefined);
    return checks;
  } finally {
    await vault.close();
  }
}

export function formatChecks(checks: DoctorCheck[]): string {
  return checks
    .map((c) => `${c.ok ? "ok  " : "FAIL"} ${c.name}: ${c.detail}${c.fix ? `\n       fix: ${c.fix}` : ""}`)
    .join("\n");
}
