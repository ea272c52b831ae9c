#!/usr/bin/env bash
# Turnstile vs Redis over RESP, side by side in one run on this machine.
# Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools). Binds 127.0.0.1 only;
# stops only the two servers it started.
#   usage: docs/bench-resp.sh [requests] [seconds-per-cycle-run]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
SECS=${2:-10}
TS_PORT=7399
REDIS_PORT=6399
cargo build --release -q -p turnstile-cli --bin turnstile
data=$(mktemp -d)
# --fsync never: the log goes to the page cache only, the closest to Redis without persistence.
./target/release/turnstile server --data-dir "$data/ts" --resp-addr 127.0.0.1:$TS_PORT --http-addr 127.0.0.1:0 --amqp-addr 127.0.0.1:0 --fsync never --log warn \
  >"$data/ts.out" &
ts_pid=$!
redis-server --bind 127.0.0.1 --port $REDIS_PORT --save "" --appendonly no --dir "$data" >"$data/redis.out" &
redis_pid=$!
trap 'kill $ts_pid $redis_pid 2>/dev/null; wait $ts_pid $redis_pid 2>/dev/null; rm -rf "$data"' EXIT
sleep 1

echo "redis-benchmark $(redis-benchmark -v | cut -d' ' -f2), $N requests, 50 connections; rps and latency (ms)"
printf '%-10s %-8s %-4s %10s %7s %7s %7s\n' server test P rps p50 p99 max
for P in 1 16; do
  for target in redis:$REDIS_PORT turnstile:$TS_PORT; do
    name=${target%%:*}; port=${target##*:}
    redis-benchmark -p "$port" -t ping,set,get -c 50 -n "$N" -P "$P" --csv 2>/dev/null | tail -n +2 | tr -d '"' |
      while IFS=, read -r test rps avg min p50 p95 p99 max; do
        printf '%-10s %-8s %-4s %10s %7s %7s %7s\n' "$name" "$test" "$P" "$rps" "$p50" "$p99" "$max"
      done
  done
done
echo
echo "lock and queue cycles, 50 clients, ${SECS}s each (turnstile bench)"
for w in locks queues; do
  ./target/release/turnstile bench $w --clients 50 --duration "${SECS}s" --size 16 \
    --target redis://127.0.0.1:$REDIS_PORT --target turnstile://127.0.0.1:$TS_PORT
done
