#!/usr/bin/env bash
# The long verification runs of docs/verification.md: `turnstile torture` over many seeds on a
# 3-node cluster under every fault, then crash cycles of one node (`--cycles`), one after the
# other. Each run starts its own nodes on free loopback ports with temp dirs and stops them; a run
# that finds a violation (or breaks) keeps its history, seed, report and node logs in a directory
# it names, and this script goes on with the next seed. The last lines are a summary: runs,
# minutes, operations and faults in all, and the seeds that failed.
#   usage: docs/torture-long.sh [SEEDS] [FIRST_SEED]     (20, 1000)
#   env:   BIN (target/release/turnstile), DURATION (180s per seed), NODES (3),
#          CYCLES (100: crash cycles of one node after the seeds; 0 for none), LOG (a new temp file)
set -euo pipefail
cd "$(dirname "$0")/.."

seeds=${1:-20}
first=${2:-1000}
bin=${BIN:-target/release/turnstile}
duration=${DURATION:-180s}
nodes=${NODES:-3}
cycles=${CYCLES:-100}
log=${LOG:-$(mktemp -t turnstile-torture.XXXXXX)}
if [[ ! -x $bin ]]; then
  echo "$bin is missing: build it with cargo build --release -p turnstile-cli" >&2
  exit 1
fi
echo "every report goes to $log"

failed=()
started=$(date +%s)
run() {
  local name=$1
  shift
  echo "== $name: $bin torture $*" | tee -a "$log"
  if "$bin" torture "$@" 2>&1 | tee -a "$log"; then
    :
  else
    failed+=("$name")
  fi
}

for ((i = 0; i < seeds; i++)); do
  run "seed $((first + i))" --nodes "$nodes" --duration "$duration" --seed "$((first + i))"
done
if ((cycles > 0)); then
  run "crash cycles" --nodes 1 --cycles "$cycles" --seed "$first"
fi

minutes=$((($(date +%s) - started) / 60))
echo "== summary: $seeds seeds of $duration on $nodes nodes, $cycles crash cycles, $minutes min in all"
# Each report has an `operations: N (...)` line and a `faults: N (...); kill -9: K (M mid-snapshot);
# failovers: F` line: sum them.
awk '/^operations:/ { ops += $2 }
     /^faults:/ { faults += $2; for (i = 1; i <= NF; i++) { if ($i == "-9:") kills += $(i + 1);
                  if ($i == "failovers:") failovers += $(i + 1) } }
     END { printf "in all: %d operations, %d faults, %d kill -9, %d failovers\n", ops, faults, kills, failovers }' "$log"
grep -cE '^(locks|queues|kv): valid' "$log" | awk '{print "valid verdicts: " $1}'
if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "no violations"
