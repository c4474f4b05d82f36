#!/usr/bin/env bash
# Runs test suites in order (unit, integration, e2e; any of them), after building and bundling once: `npm test` runs
# all three, `npm run test:unit` etc. one each. Each suite's runner settings live here only.
#   unit         in parallel, no servers
#   integration  one file at a time (each starts its own OpenBao, etcd and kube-apiserver on loopback)
#   e2e          one file at a time (the real node owns the pod bridge); --test-force-exit: a kubelet-started
#                container's stray handle must not keep the run alive
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -gt 0 ] || set -- unit integration e2e
for suite in "$@"; do
  case $suite in
    unit | integration | e2e) ;;
    *) echo "scripts/test.sh: unknown suite '$suite'; expected unit, integration or e2e" >&2; exit 2 ;;
  esac
done
npm run build
npm run bundle
for suite in "$@"; do
  case $suite in
    unit) node --test --test-reporter=tap dist/test/unit/*.test.js ;;
    integration) node --test --test-concurrency=1 --test-timeout=600000 --test-reporter=tap dist/test/integration/*.test.js ;;
    e2e) node --test --test-concurrency=1 --test-force-exit --test-timeout=900000 --test-reporter=tap dist/test/e2e/*.test.js ;;
  esac
done
