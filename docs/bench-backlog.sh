#!/usr/bin/env bash
# The queue workload against a server that holds a standing backlog: what snapshots of a large state
# cost the writes going on meanwhile (every `snapshot-every` = 20,000 entries, each snapshot copies,
# serializes and writes the whole state).
#
# Starts its own `turnstile server` (fsync always) on free loopback ports with a temp data dir,
# pushes N_MESSAGES × 1 KiB into the queue `backlog` with redis-benchmark (pipelined), runs
# `turnstile bench queues` (50 clients on their own queues) for DURATION, prints the table and the
# snapshots built meanwhile, and stops only that server when it exits.
# Needs target/release/turnstile (or BIN) and redis-benchmark.
#   usage: docs/bench-backlog.sh [N_MESSAGES [DURATION]]   (defaults 300000, 20s)
#   e.g.   BIN=/tmp/old docs/bench-backlog.sh 300000 20s
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${BIN:-target/release/turnstile}
messages=${1:-300000}
duration=${2:-20s}
if [[ ! -x $bin ]]; then
  echo "$bin is missing: build it with cargo build --release -p turnstile-cli" >&2
  exit 1
fi
if ! command -v redis-benchmark >/dev/null; then
  echo "redis-benchmark is not installed (Debian/Ubuntu: sudo apt-get install redis-tools)" >&2
  exit 1
fi

tmp=$(mktemp -d)
ts_pid=
cleanup() {
  if [[ -n $ts_pid ]]; then
    kill "$ts_pid" 2>/dev/null || true
    wait "$ts_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# shellcheck source=docs/bench-common.sh
. docs/bench-common.sh
TS_LOG=info start_turnstile --fsync always

payload=$(head -c 1024 /dev/zero | tr '\0' 'x')
echo "pushing $messages × 1 KiB into the queue backlog ..." >&2
redis-benchmark -h 127.0.0.1 -p "${ts_resp##*:}" -c 20 -P 16 -n "$messages" -q Q.PUSH backlog "$payload" \
  >/dev/null 2>&1
"$bin" bench queues --target "turnstile://$ts_resp" --duration "$duration"
echo
echo "snapshots built (bench and preload):"
sed 's/\x1b\[[0-9;]*m//g' "$tmp/turnstile.log" | grep "built a snapshot" | sed 's/.*built a snapshot *//'
