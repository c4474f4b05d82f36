// In-process leaf signing rate: CSR parse + signature check + policy + sign + PEM, one leaf after another on one
// thread, over pre-generated CSRs. Run by hand (bench/run-leaf.sh runs it beside the Go equivalent):
//   node dist/bench/leaf-sign.js prepare DIR [CSR_COUNT]   writes the CA and CSRs (shared with bench/go-leaf)
//   node dist/bench/leaf-sign.js run DIR [SECONDS]         prints "leaves/s N"
import { signLeaf } from "../src/signing/leaf-signer.js";
import { benchPolicy, loadFixtures, prepareFixtures } from "./fixtures.js";

const TTL_SECONDS = 24 * 3600;

async function run(dir: string, seconds: number): Promise<void> {
  const { bundle, csrs } = await loadFixtures(dir);
  // Warm-up: JIT, the per-bundle issuer cache, OpenSSL's lazily built tables.
  const warmUntil = performance.now() + 2000;
  for (let i = 0; performance.now() < warmUntil; i++) {
    await signLeaf(bundle, csrs[i % csrs.length]!, TTL_SECONDS, benchPolicy, new Date());
  }
  let leaves = 0;
  let bytes = 0;
  const start = performance.now();
  const until = start + seconds * 1000;
  while (performance.now() < until) {
    // A batch between clock reads keeps the timer out of the measurement.
    for (let j = 0; j < 100; j++) {
      const leaf = await signLeaf(bundle, csrs[leaves % csrs.length]!, TTL_SECONDS, benchPolicy, new Date());
      bytes += leaf.certPem.length;
      leaves++;
    }
  }
  const elapsed = (performance.now() - start) / 1000;
  console.log(`leaves ${leaves} seconds ${elapsed.toFixed(2)} avg_pem_bytes ${Math.round(bytes / leaves)}`);
  console.log(`leaves/s ${Math.round(leaves / elapsed)}`);
}

async function main(): Promise<void> {
  const [mode, dir, arg] = process.argv.slice(2);
  if (mode === "prepare" && dir) return prepareFixtures(dir, Number(arg ?? 1000));
  if (mode === "run" && dir) return run(dir, Number(arg ?? 10));
  console.error("usage: leaf-sign.js prepare DIR [CSR_COUNT] | run DIR [SECONDS]");
  process.exit(2);
}

await main();
