#!/usr/bin/env bash
# The physical bound of one hot lock at `fsync always`: a hand-off needs one fdatasync and one
# loopback round trip (the next holder's release reaches the server, its grant goes out), so no
# server can do more than 1 / (fdatasync p50 + round-trip p50) hand-offs per second here. Prints
# both medians and the bound, measured now (run it in the same sitting as the benchmark):
# 4 KiB pwrite + fdatasync, 500 times, in a temp dir on the filesystem of $TMPDIR (where the bench
# scripts put their data dirs), and redis-benchmark's PING p50 with one client against a
# redis-server on a free loopback port.
#   usage: docs/bench-bound.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(mktemp -d)
redis_pid=
cleanup() {
  [[ -n $redis_pid ]] && { kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; }
  rm -rf "$root"
}
trap cleanup EXIT
# shellcheck source=docs/bench-common.sh
. docs/bench-common.sh
redis_fsync=none
start_redis "$root/redis"
rtt=$(redis-benchmark -p "$redis_port" -t ping -c 1 -n 20000 --csv | sed -n 's/^"PING_MBULK","[^"]*","[^"]*","[^"]*","\([^"]*\)".*/\1/p')
python3 - "$root" "$rtt" <<'PY'
import os, statistics, sys, time
root, rtt_ms = sys.argv[1], float(sys.argv[2])
fd = os.open(os.path.join(root, "probe"), os.O_CREAT | os.O_WRONLY, 0o600)
block, took = b"\0" * 4096, []
for i in range(500):
    started = time.perf_counter()
    os.pwrite(fd, block, (i % 256) * 4096)
    os.fdatasync(fd)
    took.append((time.perf_counter() - started) * 1000)
os.close(fd)
fsync_ms = statistics.median(took)
print(f"fdatasync p50 {fsync_ms:.3f} ms, loopback round trip p50 {rtt_ms:.3f} ms: "
      f"bound {1000 / (fsync_ms + rtt_ms):.0f} hand-offs/s")
PY
