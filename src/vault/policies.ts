// Least-privilege Vault policies, rendered from the paths in use. vault-policies/*.hcl hold the default renderings
// for operators who apply policies by hand; a unit test keeps them identical to what this module produces.

/** One path and the capabilities granted on it: what setup-vault reports, so its text matches the policy exactly. */
export interface PolicyGrant {
  path: string;
  capabilities: string[];
}

/** The grants of the istiod agent's policy: `update` on the sign path; with --csr-path also `update` on the generate
 * path and `delete` on the mount's keys (the agent deletes the Vault-stored copy of each key it imported). */
export function istiodAgentGrants(signPath = "pki/root/sign-intermediate", csrPath?: string): PolicyGrant[] {
  const grants = [{ path: stripSlashes(signPath), capabilities: ["update"] }];
  if (csrPath) {
    grants.push({ path: stripSlashes(csrPath), capabilities: ["update"] });
    grants.push({ path: `${csrMount(csrPath)}/key/*`, capabilities: ["delete"] });
  }
  return grants;
}

/** "pki_int" for "pki_int/intermediate/generate/exported": the PKI mount that stores keys generated there. */
export function csrMount(csrPath: string): string {
  const p = stripSlashes(csrPath);
  const i = p.indexOf("/intermediate/");
  return i > 0 ? p.slice(0, i) : p.split("/")[0]!;
}

/** The grants as one line for humans, e.g. `update on pki/root/sign-intermediate`. */
export function describeGrants(grants: readonly PolicyGrant[]): string {
  return grants.map((g) => `${g.capabilities.join("+")} on ${g.path}`).join(", ");
}

/** The istiod agent: `update` on its sign-intermediate path and nothing else (login and token self-renewal are
 * granted by Vault's built-in `default` policy). */
export function istiodAgentPolicy(signPath = "pki/root/sign-intermediate", csrPath?: string): string {
  const lines = [
    "# istiod-vault-agent: have the PKI engine sign the agent's intermediate CA (the key stays in the agent).",
    "# Nothing broader: no issue/*, no sys/*, no reads of other mounts. Token lookup/renew come from `default`.",
    `path "${stripSlashes(signPath)}" {`,
    '  capabilities = ["update"]',
    "}",
  ];
  if (csrPath) {
    lines.push(
      "# Opt-in Gloo flow: Vault generates the intermediate key and returns it once. OpenBao/Vault also STORE that key",
      "# in the mount (the answer's key_id); the agent deletes it right after import, which needs the delete grant below.",
      "# Without it the key stays in Vault and one accumulates per rotation (the agent logs a warning).",
      `path "${stripSlashes(csrPath)}" {`,
      '  capabilities = ["update"]',
      "}",
      `path "${csrMount(csrPath)}/key/*" {`,
      '  capabilities = ["delete"]',
      "}",
    );
  }
  return lines.join("\n") + "\n";
}

function stripSlashes(p: string): string {
  return p.replace(/^\/+|\/+$/g, "").replace(/^v1\//, "");
}
