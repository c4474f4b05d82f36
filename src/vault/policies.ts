// Least-privilege Vault policies, rendered from the paths in use. vault-policies/*.hcl hold the default renderings
// for operators who apply policies by hand; a unit test keeps them identical to what this module produces.

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
      "# Opt-in Gloo flow: Vault generates the intermediate key and returns it once (held only in the agent's memory).",
      `path "${stripSlashes(csrPath)}" {`,
      '  capabilities = ["update"]',
      "}",
    );
  }
  return lines.join("\n") + "\n";
}

function stripSlashes(p: string): string {
  return p.replace(/^\/+|\/+$/g, "").replace(/^v1\//, "");
}
