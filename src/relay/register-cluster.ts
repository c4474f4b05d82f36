// `istiod-vault-agent relay register-cluster NAME [flags]`: registers one workload cluster without restarting the
// server relay: its own identity token in Vault KV (<--cluster-tokens-path>/NAME, created with check-and-set, or kept
// if it exists) and the Secret relay-identity-token-secret-NAME in the management namespace, for the operator to copy
// to that cluster. The token is never printed. Takes the server role's Vault, Kubernetes and path flags.
import { ConfigError } from "../config/config.js";
import { openKube } from "../cli/kube.js";
import { createLogger } from "../observability/logger.js";
import { AgentMetrics } from "../observability/metrics.js";
import { VaultClient } from "../vault/client.js";
import { createAuthSession } from "../vault/auth-methods.js";
import { parseRelayArgs } from "./config.js";
import { scrub } from "../observability/logger.js";
import { clusterTokenSecretName } from "./relay.js";
import { SecretStore } from "../kube/secret-store.js";
import { ANNOTATION_PREFIX } from "./keep-or-renew.js";
import { RelayVault } from "./vault.js";

export async function runRegisterCluster(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name.startsWith("-"))
    throw new ConfigError([
      "register-cluster: expected a cluster name first, e.g. relay register-cluster cluster1 [flags]",
    ]);
  // The server role's flags and checks; --clusters=NAME validates the name (DNS name, not a server name).
  const parsed = parseRelayArgs(["--role=server", `--clusters=${name}`, "--once", "--http-addr=", ...rest]);
  if (parsed.kind !== "run") throw new ConfigError(["--help / --print-policy: not used with register-cluster"]);
  const cfg = parsed.config;
  if (cfg.sharedToken)
    throw new ConfigError(["--shared-identity-token: register-cluster registers per-cluster tokens"]);
  const cluster = cfg.clusters[0]!;
  const log = createLogger({ level: cfg.logLevel }).child({ component: "relay", command: "register-cluster" });
  const kube = await openKube({ kubeconfig: cfg.kubeconfig, context: cfg.context });
  const vault = new VaultClient({
    address: cfg.vault.address,
    tls: cfg.vault,
    namespace: cfg.vault.namespace,
  });
  const metrics = new AgentMetrics({ processMetrics: false, groups: ["vault"] });
  const auth = createAuthSession(vault, cfg.auth, log, metrics);
  try {
    const kvPath = `${cfg.clusterTokensPath}/${cluster}`;
    const relayVault = new RelayVault(vault, auth, metrics, log, { pkiMount: cfg.pkiMount });
    const { token, created, replacedDeleted } = await relayVault.identityToken(kvPath);
    const secrets = new SecretStore(kube, cfg.namespace, cfg.adopt);
    const secretName = clusterTokenSecretName(cfg.secrets.token, cluster);
    const current = await secrets.get(secretName);
    secrets.assertWritable(secretName, current);
    const same = current && SecretStore.isManaged(current) && SecretStore.decode(current).token === token;
    const write = same
      ? "unchanged"
      : await secrets.write(
          secretName,
          {
            type: "Opaque",
            data: { token },
            annotations: { [`${ANNOTATION_PREFIX}source`]: kvPath, [`${ANNOTATION_PREFIX}cluster`]: cluster },
          },
          current,
        );
    log.info(
      { cluster, kvPath, created, replacedDeleted, secret: `${cfg.namespace}/${secretName}`, write },
      `registered cluster ${cluster}: copy Secret ${cfg.namespace}/${secretName} to that cluster as ${cfg.secrets.token}`,
    );
    return 0;
  } catch (err) {
    log.error({ err: scrub((err as Error).message) }, `could not register cluster ${cluster}`);
    return 1;
  } finally {
    await auth.revokeAndStop();
    await vault.close().catch(() => undefined);
    await kube.close().catch(() => undefined);
  }
}
