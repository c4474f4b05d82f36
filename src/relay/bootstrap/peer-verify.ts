// Who is calling Renew: the client certificate presented in the TLS handshake, verified here against the relay's trust
// (Vault's root; the issuer's signing intermediates as extra path elements) and at the current time, then required
// to be a relay client leaf for exactly one cluster. The TLS layer asks for a certificate but does not require one
// (Bootstrap callers have none), so every way a certificate can fail is decided, and reported precisely, here; OpenSSL's
// own verdict must agree as well.
import { X509Certificate } from "node:crypto";
import type { DetailedPeerCertificate, TLSSocket } from "node:tls";
import { x509 } from "../../crypto/x509.js";
import { CLOCK_SKEW_MS } from "../../crypto/validity.js";
import { readBootstrapTime } from "./bootstrap-time.js";
import { CLUSTER_NAME as DNS_NAME } from "./csr-policy.js";
import { denied, printable, unauthenticated } from "./refusal.js";

/** What the TLS handshake established about a connection's client certificate. */
export interface PeerCertificateInfo {
  /** OpenSSL verified the presented chain against the listener's trust store. */
  authorized: boolean;
  authorizationError: string | undefined;
  /** The presented certificates, DER, leaf first (empty: none presented). */
  chainDer: Buffer[];
}

export interface RelayTrust {
  roots: readonly X509Certificate[];
  /** Issuers that may sit between a leaf and a root even if the client does not send them. */
  intermediates: readonly X509Certificate[];
}

export interface VerifiedClient {
  cluster: string;
  /** When this certificate chain was bootstrapped (undefined: the certificate carries no such record). */
  bootstrappedAt: Date | undefined;
  serialHex: string;
  notAfter: Date;
}

const MAX_PATH = 5;

/** The client certificate chain of a TLS socket, as presented. */
export function peerCertificateInfo(socket: TLSSocket): PeerCertificateInfo {
  const chainDer: Buffer[] = [];
  const seen = new Set<string>();
  let c: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  while (c && c.raw && chainDer.length < 10) {
    const key = c.raw.toString("base64");
    if (seen.has(key)) break;
    seen.add(key);
    chainDer.push(c.raw);
    c = c.issuerCertificate;
  }
  const err = socket.authorizationError as Error | string | null | undefined;
  return {
    authorized: socket.authorized,
    authorizationError: err == null ? undefined : typeof err === "string" ? err : err.message,
    chainDer,
  };
}

export function verifyClientCertificate(peer: PeerCertificateInfo, trust: RelayTrust, now: Date): VerifiedClient {
  const [leafDer, ...presented] = peer.chainDer;
  if (!leafDer)
    throw unauthenticated(
      "no_client_certificate",
      "Renew needs the caller's current relay client certificate over mutual TLS and none was presented; a cluster " +
        "without a valid certificate bootstraps with the identity token",
    );
  let leaf: X509Certificate;
  let candidates: X509Certificate[];
  try {
    leaf = new X509Certificate(leafDer);
    candidates = [...presented.map((d) => new X509Certificate(d)), ...trust.intermediates];
  } catch {
    throw unauthenticated("client_cert_malformed", "the presented client certificate could not be parsed");
  }

  // Path: leaf → issuers (presented or known intermediates) → a trusted root, by name and signature.
  const path: X509Certificate[] = [leaf];
  let anchored = false;
  for (let cur = leaf; path.length <= MAX_PATH;) {
    const root = trust.roots.find((r) => issuedBy(cur, r));
    if (root) {
      path.push(root);
      anchored = true;
      break;
    }
    const next = candidates.find((i) => i.ca && !path.includes(i) && issuedBy(cur, i));
    if (!next) break;
    path.push(next);
    cur = next;
  }
  if (!anchored)
    throw unauthenticated(
      "client_cert_untrusted",
      `the client certificate (issuer "${printable(leaf.issuer.replace(/\n/g, ", "))}") does not chain to the relay ` +
        "root CA; only certificates issued by this relay's CA can renew",
    );

  const t = now.getTime();
  for (const [i, c] of path.entries()) {
    const what = i === 0 ? "the client certificate" : `its issuer "${printable(c.subject.replace(/\n/g, ", "))}"`;
    if (Date.parse(c.validTo) <= t)
      throw unauthenticated(
        "client_cert_expired",
        `${what} expired at ${new Date(c.validTo).toISOString()}; an expired certificate cannot renew, bootstrap ` +
          "again with the identity token",
      );
    if (Date.parse(c.validFrom) > t + CLOCK_SKEW_MS)
      throw unauthenticated(
        "client_cert_not_yet_valid",
        `${what} is not valid before ${new Date(c.validFrom).toISOString()}`,
      );
  }

  const { cluster, bootstrappedAt } = relayClientCluster(leafDer);
  if (!peer.authorized)
    throw unauthenticated(
      "client_cert_untrusted",
      `TLS verification of the client certificate failed (${printable(peer.authorizationError ?? "unknown")})`,
    );
  return {
    cluster,
    bootstrappedAt,
    serialHex: leaf.serialNumber.toLowerCase(),
    notAfter: new Date(leaf.validTo),
  };
}

function issuedBy(child: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return child.checkIssued(issuer) && child.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/** The cluster a relay client certificate is for: a leaf with clientAuth and exactly one DNS SAN (nothing else). */
function relayClientCluster(der: Buffer): { cluster: string; bootstrappedAt: Date | undefined } {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(der);
  } catch {
    throw unauthenticated("client_cert_malformed", "the presented client certificate could not be parsed");
  }
  const notClient = (why: string) =>
    denied("client_cert_not_relay_client", `the presented certificate is not a relay client certificate: ${why}`);
  if (cert.getExtension(x509.BasicConstraintsExtension)?.ca === true) throw notClient("it is a CA");
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  if (!eku?.usages.includes(x509.ExtendedKeyUsage.clientAuth))
    throw notClient("it lacks extended key usage clientAuth");
  const names = cert.getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [];
  const dns = names.filter((n) => n.type === "dns").map((n) => n.value.toLowerCase());
  if (names.length !== 1 || dns.length !== 1 || !DNS_NAME.test(dns[0]!))
    throw notClient("expected exactly one SAN, a DNS name (the cluster name)");
  return { cluster: dns[0]!, bootstrappedAt: readBootstrapTime(cert) };
}
