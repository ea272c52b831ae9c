#!/usr/bin/env bash
# Turnstile vs Redis with `turnstile bench`: the lock, queue and kv workloads, both servers durable
# (Turnstile's default --fsync always; Redis with appendfsync always), one table per workload.
# FSYNC=interval compares Turnstile's --fsync interval (1 s) with Redis's appendfsync everysec.
# WORKLOADS picks others: WORKLOADS="locks evalsha multi" measures Turnstile's own lock cycle, the
# same cycle released by a Lua script (EVALSHA), and MULTI/EXEC of 3 commands, side by side.
#
# Starts its own `turnstile server` and `redis-server` on free loopback ports with temp data dirs,
# and stops only those two when it exits. Needs target/release/turnstile and redis-server.
#   usage: docs/bench-client.sh [turnstile bench options...]
#   e.g.   docs/bench-client.sh --duration 3s --clients 20
#          FSYNC=interval docs/bench-client.sh
#          FSYNC=interval WORKLOADS="locks evalsha multi" docs/bench-client.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/turnstile
if [[ ! -x $bin ]]; then
  echo "$bin is missing: build it with cargo build --release -p turnstile-cli" >&2
  exit 1
fi
if ! command -v redis-server >/dev/null; then
  echo "redis-server is not installed, and this script compares against it." >&2
  echo "Install it (Debian/Ubuntu: sudo apt-get install redis-server), or run one server alone:" >&2
  echo "  $bin bench locks --target turnstile://HOST:PORT" >&2
  exit 1
fi

tmp=$(mktemp -d)
ts_pid=
redis_pid=
cleanup() {
  for pid in $ts_pid $redis_pid; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $ts_pid $redis_pid; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

# shellcheck source=docs/bench-common.sh
. docs/bench-common.sh
pick_fsync

start_turnstile --fsync "$ts_fsync"
ts_addr=$ts_resp
start_redis "$tmp/redis"

echo "turnstile $("$bin" --version | cut -d' ' -f2) at $ts_addr (fsync $ts_fsync);" \
  "redis $(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/') at 127.0.0.1:$redis_port (appendfsync $redis_fsync)" >&2
first=1
for workload in ${WORKLOADS:-locks queues kv}; do
  ((first)) || echo
  first=0
  "$bin" bench "$workload" --target "turnstile://$ts_addr" --target "redis://127.0.0.1:$redis_port" "$@"
done
