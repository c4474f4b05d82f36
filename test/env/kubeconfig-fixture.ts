// A laptop-style kubeconfig for the test apiserver: an exec credential plugin (a small shell script that prints an
// ExecCredential holding a real service-account token minted by TokenRequest, and appends a line to a call log each
// time it runs), split over two files to be merged with KUBECONFIG=a:b, with several contexts. DOCTOR and MULTI reuse
// it for doctor and setup-vault.
//
// a.yaml: cluster "test" (CA by a relative path), contexts "nobody" (current; a user whose token the apiserver
//         refuses), "plugin", "plugin-expiring", "legacy" and "no-creds", and users "nobody", "legacy-user" (an
//         auth-provider client-node cannot serve) and "no-creds" (no credentials at all).
// b/b.yaml: users "plugin-user" and "plugin-expiring-user" (exec ./plugin.sh, relative to b/b.yaml), plus a cluster also
//         named "test" pointing nowhere and current-context "plugin": as kubectl, the first file wins both.
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TestEnv } from "./harness.js";
import { APISERVER_AUDIENCE } from "./fixtures.js";

export interface ExecKubeconfig {
  /** a.yaml:b.yaml, for KUBECONFIG or --kubeconfig. */
  kubeconfig: string;
  /** How many times the plugin has run so far. */
  pluginCalls(): number;
  /** The service account the plugin's token belongs to. */
  namespace: string;
  serviceAccount: string;
}

/**
 * Writes the files into `dir`. The plugin's service account `namespace/serviceAccount` is created and given `rules`
 * (a ClusterRole bound to it) — only what the commands under test need.
 */
export async function writeExecKubeconfig(
  env: TestEnv,
  dir: string,
  opts: { namespace?: string; serviceAccount?: string; rules: unknown[] },
): Promise<ExecKubeconfig> {
  const namespace = opts.namespace ?? "operators";
  const serviceAccount = opts.serviceAccount ?? "laptop-operator";
  await env.createServiceAccount(namespace, serviceAccount);
  const role = `${namespace}-${serviceAccount}`;
  await env.kube.admin.request(
    "POST",
    "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", metadata: { name: role }, rules: opts.rules },
    { acceptStatuses: [409] },
  );
  await env.bindClusterRole(role, namespace, serviceAccount);
  // The token the apiserver's own audience accepts, as a cloud plugin would print.
  const token = await env.requestToken(namespace, serviceAccount, APISERVER_AUDIENCE, 3600);
  writeFileSync(join(dir, "sa.token"), token, { mode: 0o600 });
  writeFileSync(join(dir, "ca.crt"), env.kube.caPem);
  const calls = join(dir, "plugin-calls");
  writeFileSync(calls, "");
  // EXPIRED=1 (set through exec.env) marks the credential as already expired, so the client must run it again.
  // b.yaml and the plugin live in a subdirectory: ./plugin.sh must resolve against b.yaml, not a.yaml or the cwd.
  const bDir = join(dir, "b");
  mkdirSync(bDir, { recursive: true });
  writeFileSync(
    join(bDir, "plugin.sh"),
    [
      "#!/bin/sh",
      `echo "\${PLUGIN_NAME:-plugin}" >> '${calls}'`,
      `expiry=''`,
      `[ "$EXPIRED" = 1 ] && expiry=',"expirationTimestamp":"2000-01-01T00:00:00Z"'`,
      `printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s"%s}}\\n' "$(cat '${join(dir, "sa.token")}')" "$expiry"`,
      "",
    ].join("\n"),
  );
  chmodSync(join(bDir, "plugin.sh"), 0o755);
  const context = (name: string, user: string) => ({ name, context: { cluster: "test", user } });
  const a = {
    apiVersion: "v1",
    kind: "Config",
    "current-context": "nobody",
    clusters: [{ name: "test", cluster: { server: env.kube.url, "certificate-authority": "ca.crt" } }],
    contexts: [
      context("nobody", "nobody"),
      context("plugin", "plugin-user"),
      context("plugin-expiring", "plugin-expiring-user"),
      context("legacy", "legacy-user"),
      context("no-creds", "no-creds"),
    ],
    users: [
      { name: "nobody", user: { token: "not-a-token-the-apiserver-knows" } },
      { name: "legacy-user", user: { "auth-provider": { name: "openstack", config: {} } } },
      { name: "no-creds", user: {} },
    ],
  };
  const exec = (name: string, env: { name: string; value: string }[]) => ({
    name,
    user: {
      exec: {
        apiVersion: "client.authentication.k8s.io/v1",
        command: "./plugin.sh",
        env,
        interactiveMode: "Never",
      },
    },
  });
  const b = {
    apiVersion: "v1",
    kind: "Config",
    "current-context": "plugin",
    clusters: [{ name: "test", cluster: { server: "https://127.0.0.1:1" } }],
    users: [
      exec("plugin-user", [{ name: "PLUGIN_NAME", value: "plugin" }]),
      exec("plugin-expiring-user", [
        { name: "PLUGIN_NAME", value: "expiring" },
        { name: "EXPIRED", value: "1" },
      ]),
    ],
  };
  writeFileSync(join(dir, "a.yaml"), JSON.stringify(a, null, 2));
  writeFileSync(join(bDir, "b.yaml"), JSON.stringify(b, null, 2));
  return {
    kubeconfig: `${join(dir, "a.yaml")}:${join(bDir, "b.yaml")}`,
    pluginCalls: () => readFileSync(calls, "utf8").split("\n").filter(Boolean).length,
    namespace,
    serviceAccount,
  };
}

/**
 * A kubeconfig for the test apiserver whose user is a bearer token (e.g. a service account's, from TokenRequest):
 * how tests run the agent or a command with exactly that account's RBAC. Written 0600 to `file`, which is returned.
 */
export function writeTokenKubeconfig(env: TestEnv, file: string, token: string): string {
  const caData = Buffer.from(env.kube.caPem).toString("base64");
  const kubeconfig = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "c", cluster: { server: env.kube.url, "certificate-authority-data": caData } }],
    users: [{ name: "u", user: { token } }],
    contexts: [{ name: "c", context: { cluster: "c", user: "u" } }],
    "current-context": "c",
  };
  writeFileSync(file, JSON.stringify(kubeconfig), { mode: 0o600 });
  return file;
}
