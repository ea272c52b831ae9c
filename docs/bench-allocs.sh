#!/usr/bin/env bash
# Heap allocations per op of a Turnstile build, by server thread: a count that does not move with a
# noisy machine the way ops/s does, for telling whether a change to the command path allocates less.
#
# Starts `BIN server` (--fsync always) on free loopback ports with a temp data dir, puts uprobes on
# libc's malloc and realloc (perf probe; needs root and perf), runs `turnstile bench WORKLOAD`
# (50 clients) against it while `perf stat --per-thread` counts the calls in the server, prints
# calls per op for the connection threads (tokio-rt-worker) and the log thread (turnstile-log),
# and stops only that server. The probes slow every allocation, so ops/s here mean nothing.
#   usage: docs/bench-allocs.sh [WORKLOAD [BIN]]   (WORKLOAD locks|queues|kv, default locks;
#                                                   BIN default target/release/turnstile)
#   env:   DURATION (3s)
set -euo pipefail
cd "$(dirname "$0")/.."

workload=${1:-locks} bin=${2:-target/release/turnstile}
[[ -x $bin ]] || { echo "$bin is not an executable (cargo build --release)" >&2; exit 1; }
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
libc=$(ldd "$bin" | awk '/libc\.so/ {print $3}')
[[ -n $libc ]] || { echo "cannot find the libc $bin links" >&2; exit 1; }

tmp=$(mktemp -d)
ts_pid=
cleanup() {
  [[ -n $ts_pid ]] && kill "$ts_pid" 2>/dev/null && wait "$ts_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

for fn in malloc realloc; do
  # Adding a probe that exists already fails; either way it is there afterwards.
  perf probe -q -x "$libc" "$fn" 2>/dev/null || true
done
perf probe -l 2>/dev/null | grep -q 'probe_libc:malloc' || { echo "could not add a uprobe on $libc malloc" >&2; exit 1; }

# shellcheck source=docs/bench-common.sh
. docs/bench-common.sh
start_turnstile --fsync always

perf stat --per-thread -x, -e probe_libc:malloc,probe_libc:realloc -p "$ts_pid" -o "$tmp/perf.csv" &
perf_pid=$!
line=$("$bin" bench "$workload" --target "turnstile://$ts_resp" --duration "${DURATION:-3s}" --warmup 0s --json)
kill -INT "$perf_pid"
wait "$perf_pid" || true
ops=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])[0]["ops"])' "$line")

echo "$workload: $ops ops in ${DURATION:-3s} (the probes slow the server; count per op, not ops/s)"
# perf's CSV per thread: "comm-tid,count,,event,...".
python3 - "$tmp/perf.csv" "$ops" <<'EOF'
import collections, sys
counts = collections.Counter()
for row in open(sys.argv[1]):
    fields = row.strip().split(",")
    if len(fields) < 4 or not fields[1].isdigit():
        continue
    thread = fields[0].rsplit("-", 1)[0]
    counts[(thread, fields[3].split(":")[-1])] += int(fields[1])
ops = max(int(sys.argv[2]), 1)
for (thread, event), n in sorted(counts.items()):
    if n:
        print(f"{thread:<18} {event:<8} {n:>10}  {n / ops:6.1f} per op")
EOF
