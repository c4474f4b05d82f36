// Runs in a workload pod on the real node (test/e2e/real-node.test.ts), inside the agent image, doing what Istio's
// workload agent does: a fresh key, a CSR for the pod's SPIFFE ID, the kubelet-projected istio-ca token, and
// CreateCertificate on istiod's TLS port verified against the istio-ca-root-cert ConfigMap istiod publishes.
// Prints {"certChain": [...]} on success; exits 1 with the gRPC status otherwise.
// The image has no node_modules (the agent is bundled), so real-node.test.ts bundles this file with esbuild, with the
// project's X.509 module, its generated gRPC client and @grpc/grpc-js, into one script it mounts into the pod.
import { webcrypto as crypto } from "node:crypto";
import { readFileSync } from "node:fs";
import process from "node:process";
import * as grpc from "@grpc/grpc-js";
import { x509 } from "../../src/crypto/x509.ts";
import { IstioCertificateServiceClient } from "../../src/gen/istio/v1/auth/ca.ts";

const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
const csr = await x509.Pkcs10CertificateRequestGenerator.create({
  keys,
  signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
  extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: process.env.SPIFFE_ID }])],
});
const root = readFileSync("/var/run/secrets/istio/root-cert.pem");
const token = readFileSync("/var/run/secrets/tokens/istio-token", "utf8").trim();
const client = new IstioCertificateServiceClient(process.env.CA_ADDR, grpc.credentials.createSsl(root), {
  "grpc.ssl_target_name_override": process.env.CA_NAME,
});
const md = new grpc.Metadata();
md.set("authorization", `Bearer ${token}`);
client.createCertificate(
  { csr: csr.toString("pem"), validityDuration: 600 },
  md,
  { deadline: Date.now() + 30_000 },
  (err, res) => {
    if (err) {
      process.stderr.write(`CreateCertificate failed: code ${err.code}: ${err.details}\n`);
      process.exit(1);
    }
    process.stdout.write(`${JSON.stringify({ certChain: res.certChain })}\n`);
    process.exit(0);
  },
);
