// istiod's own TLS serving certificate in the mesh-CA mode (--istiod-tls-dir): the agent is the mesh's CA, istiod
// runs with ENABLE_CA_SERVER=false, so istiod has no CA to make its DNS certificate from and must be given one.
//
// What upstream istiod does with it (istio.io/istio pilot/pkg/bootstrap, read at commit eed52ebb66ad):
// - server.go initIstiodCerts/hasCustomTLSCerts: istiod uses files when --tlsCertFile/--tlsKeyFile/--caCertFile are
//   all set, else when ./var/run/secrets/istiod/tls/tls.crt and tls.key exist together with either
//   ./var/run/secrets/istiod/ca/root-cert.pem or ./var/run/secrets/istiod/tls/ca.crt (paths relative to its working
//   directory, `/` in Istio's image). This is checked once, at start: without the files and with ENABLE_CA_SERVER=false
//   and PILOT_CERT_PROVIDER=istiod, istiod logs "PILOT_CERT_PROVIDER=istiod is not implemented" and serves no TLS, so
//   the files must exist before istiod starts (the native sidecar's startupProbe waits for them).
// - certcontroller.go initFileCertificateWatches: the three files are watched (pkg/filewatcher watches the parent
//   directory and re-reads on change, which suits the `..data` swap) and reloaded after a 100 ms debounce; new TLS
//   handshakes (xDS on 15012, the webhooks on 15017) then present the new certificate, no restart.
// - the CA file is the root istiod verifies proxies' client certificates with (createPeerCertVerifier) and the
//   caBundle it patches into its webhooks, so ca.crt is the served root bundle (the Vault root, every root when
//   multi-root).
// - server.go shouldStartNsController: with the CA server off (no s.CA) and no Kubernetes signer, istiod does not run
//   its namespace controller, so nobody but this agent (--root-configmaps) writes istio-ca-root-cert.
//
// So the agent writes tls.crt (leaf + intermediate chain, without the root), tls.key (a fresh P-256 key of istiod's,
// never the intermediate's) and ca.crt (the roots) into one in-memory volume mounted at /var/run/secrets/istiod/tls,
// atomically (src/sinks/projected-dir.ts), at start, at the grace ratio of the leaf's life, and on every new
// intermediate.
import type { Logger } from "pino";
import type { SigningBundle } from "../authority/bundle.js";
import { ProjectedDir, type DataFile } from "../sinks/projected-dir.js";
import { systemClock, type Clock, type Timer } from "../util/clock.js";
import { issueServingCertificate, type ServingCertificate } from "./serving-cert.js";

/** Where Istio's image reads the DNS certificate (constants.PilotWellKnownDNSCertPath, from `/`). */
export const ISTIOD_TLS_MOUNT = "/var/run/secrets/istiod/tls";

export interface IstiodCertOptions {
  dir: string;
  dnsNames: readonly string[];
  ttlMs: number;
  /** Renew when this fraction of the leaf's life remains (the agent's --grace-ratio). */
  graceRatio: number;
  /** istiod's group: the files are 0640 with this group. */
  group: number;
  /** Delay before retrying a failed write. */
  retryMs?: number;
}

/** What the publisher needs of the authority (IntermediateAuthority is one). */
export interface BundleSource {
  current(): SigningBundle | undefined;
  subscribe(fn: (b: SigningBundle) => void): () => void;
}

/** The default DNS names: istiod's Service for the default revision, istiod-<rev> for another (Istio's chart names). */
export function defaultIstiodDnsNames(namespace: string, revision: string | undefined): string[] {
  const service = revision && revision !== "default" ? `istiod-${revision}` : "istiod";
  return [`${service}.${namespace}.svc`];
}

/** The three files istiod reads, from a bundle and a serving certificate issued from it. */
export function istiodTlsFiles(bundle: SigningBundle, serving: ServingCertificate): DataFile[] {
  const chainWithoutRoot = bundle.chainPem.slice(0, -1);
  return [
    { name: "tls.crt", content: [serving.certPem, ...chainWithoutRoot].map(withNewline).join("") },
    { name: "tls.key", content: serving.keyPem },
    { name: "ca.crt", content: bundle.rootsPem.map(withNewline).join("") },
  ];
}

/** When to renew a certificate issued at `issuedMs` that expires at `notAfterMs` (never sooner than 1 s). */
export function renewalDelayMs(issuedMs: number, notAfterMs: number, graceRatio: number): number {
  return Math.max(1000, Math.floor((notAfterMs - issuedMs) * (1 - graceRatio)));
}

export class IstiodCertPublisher {
  private readonly out: ProjectedDir;
  private unsubscribe: (() => void) | undefined;
  private timer: Timer | undefined;
  private stopped = false;
  /** Issues run one after another; the latest bundle wins. */
  private chain: Promise<void> = Promise.resolve();
  /** The certificate last published (for status and tests). */
  published: { serialNotAfter: Date; generation: number } | undefined;

  constructor(
    private readonly opts: IstiodCertOptions,
    private readonly source: BundleSource,
    private readonly log: Logger,
    private readonly clock: Clock = systemClock,
  ) {
    this.out = new ProjectedDir({
      dir: opts.dir,
      group: opts.group,
      fileMode: 0o640,
      label: "istiod TLS",
      dirError: (message) => new IstiodTlsDirError(message),
    });
  }

  /** Fails unless the directory is usable (before any Vault call). */
  preflight(): Promise<void> {
    return this.out.preflight();
  }

  /** Publishes for the current bundle (awaited: istiod must find the files at its start), then follows rotations. */
  async start(): Promise<void> {
    const first = this.source.current();
    if (!first) throw new Error("istiod's serving certificate needs an intermediate first");
    await this.publish(first);
    this.unsubscribe = this.source.subscribe((b) => {
      if (b !== first) this.schedule(b, "a new intermediate");
    });
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
    this.timer?.cancel();
  }

  /** Waits for the publishes queued so far (tests). */
  settled(): Promise<void> {
    return this.chain;
  }

  private schedule(bundle: SigningBundle, why: string): void {
    this.chain = this.chain.then(() => {
      if (this.stopped) return;
      this.log.info({ why, generation: bundle.generation }, "re-issuing istiod's serving certificate");
      return this.publish(bundle).catch(() => undefined);
    });
  }

  private async publish(bundle: SigningBundle): Promise<void> {
    this.timer?.cancel();
    const now = this.clock.now();
    try {
      const serving = await issueServingCertificate(bundle, this.opts.dnsNames, now, this.opts.ttlMs);
      const warnings = await this.out.write(istiodTlsFiles(bundle, serving));
      for (const w of warnings) this.log.warn({ dir: this.out.dir }, w);
      this.published = { serialNotAfter: serving.notAfter, generation: bundle.generation };
      const delay = renewalDelayMs(now, serving.notAfter.getTime(), this.opts.graceRatio);
      this.timer = this.clock.after(delay, () => {
        const cur = this.source.current();
        if (cur) this.schedule(cur, "renewal before expiry");
      });
      this.log.info(
        {
          dir: this.out.dir,
          names: this.opts.dnsNames,
          notAfter: serving.notAfter.toISOString(),
          renewInMs: delay,
          generation: bundle.generation,
        },
        "wrote istiod's serving certificate",
      );
    } catch (err) {
      const retryMs = this.opts.retryMs ?? 5_000;
      this.log.error(
        { dir: this.out.dir, err: (err as Error).message, retryInMs: retryMs },
        "could not write istiod's serving certificate; istiod keeps the previous files",
      );
      this.timer = this.clock.after(retryMs, () => {
        const cur = this.source.current();
        if (cur) this.schedule(cur, "retry after a failed write");
      });
      throw err;
    }
  }
}

/** The istiod TLS directory is missing, not a directory, not writable, or written by someone else. */
export class IstiodTlsDirError extends Error {
  override readonly name = "IstiodTlsDirError";
}

function withNewline(pem: string): string {
  return pem.endsWith("\n") ? pem : `${pem}\n`;
}
