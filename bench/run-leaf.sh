#!/usr/bin/env bash
# In-process leaf signing, Node (src/signing) beside Go (crypto/x509), on one core each, over the same CA and CSRs.
# Runs ROUNDS alternating rounds (Node, Go, Node, Go, ...) and prints every rate, the medians and their ratio.
#   bash bench/run-leaf.sh [SECONDS_PER_RUN] [ROUNDS]     (after `npx tsc -p tsconfig.json`)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
rounds=${2:-3}
cpu=${BENCH_CPU:-0}
node=node_modules/.bin/node
work=$(mktemp -d /tmp/iva-leaf-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

[ -f dist/bench/leaf-sign.js ] || { echo "dist/bench/leaf-sign.js missing: run npx tsc -p tsconfig.json" >&2; exit 1; }
echo "node $($node --version), $(GOTOOLCHAIN=local go version | cut -d' ' -f3-4), pinned to CPU $cpu, ${seconds}s x $rounds rounds"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"

$node dist/bench/leaf-sign.js prepare "$work" 1000
(cd bench/go-leaf && GOTOOLCHAIN=local go build -trimpath -o "$work/go-leaf" .)

node_rates=()
go_rates=()
for ((i = 1; i <= rounds; i++)); do
  n=$(taskset -c "$cpu" $node --no-deprecation dist/bench/leaf-sign.js run "$work" "$seconds" | awk '/^leaves\/s/ {print $2}')
  g=$(GOMAXPROCS=1 taskset -c "$cpu" "$work/go-leaf" -dir "$work" -seconds "$seconds" | awk '/^leaves\/s/ {print $2}')
  echo "round $i: node $n leaves/s, go $g leaves/s"
  node_rates+=("$n")
  go_rates+=("$g")
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
nm=$(median "${node_rates[@]}")
gm=$(median "${go_rates[@]}")
echo "median: node $nm leaves/s, go $gm leaves/s, node/go $(awk -v n="$nm" -v g="$gm" 'BEGIN {printf "%.2f", n / g}')"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
