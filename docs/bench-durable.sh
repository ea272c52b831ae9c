#!/usr/bin/env bash
# Durable Turnstile vs Redis with an append-only file, side by side in one run on this machine:
#   turnstile --fsync always    vs  redis-server --appendonly yes --appendfsync always
#   turnstile --fsync interval  vs  redis-server --appendonly yes --appendfsync everysec
# then the restart time of a server holding 1,000,000 queued 1 KiB messages, and the disk bytes
# per message. Binds 127.0.0.1 only; stops only the servers it started.
#   usage: docs/bench-durable.sh [requests] [seconds-per-cycle-run] [messages-for-restart]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
SECS=${2:-10}
MESSAGES=${3:-1000000}
TS_PORT=7398
REDIS_PORT=6398
cargo build --release -q -p turnstile-cli --bin turnstile
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

start_turnstile() { # data-dir fsync
  ./target/release/turnstile server --data-dir "$1" --resp-addr 127.0.0.1:$TS_PORT --http-addr 127.0.0.1:0 --amqp-addr 127.0.0.1:0 --fsync "$2" --log warn \
    >"$work/ts.out" 2>&1 &
  ts_pid=$!; pids+=("$ts_pid")
  for _ in $(seq 100); do grep -q ready "$work/ts.out" 2>/dev/null && return; sleep 0.1; done
  echo "turnstile did not start"; cat "$work/ts.out"; exit 1
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

for pair in always:always interval:everysec; do
  ts_mode=${pair%%:*}; redis_mode=${pair##*:}
  rm -rf "$work/ts" "$work/redis"; mkdir -p "$work/redis"
  start_turnstile "$work/ts" "$ts_mode"
  redis-server --bind 127.0.0.1 --port $REDIS_PORT --save "" --appendonly yes --appendfsync "$redis_mode" \
    --dir "$work/redis" >"$work/redis.out" 2>&1 &
  redis_pid=$!; pids+=("$redis_pid")
  sleep 1
  echo "== turnstile --fsync $ts_mode  vs  redis --appendfsync $redis_mode"
  printf '%-10s %-6s %10s %7s %7s %7s\n' server test rps p50 p99 max
  for target in redis:$REDIS_PORT turnstile:$TS_PORT; do
    name=${target%%:*}; port=${target##*:}
    redis-benchmark -p "$port" -t set -c 50 -n "$N" --csv 2>/dev/null | tail -n +2 | tr -d '"' |
      while IFS=, read -r test rps avg min p50 p95 p99 max; do
        printf '%-10s %-6s %10s %7s %7s %7s\n' "$name" "$test" "$rps" "$p50" "$p99" "$max"
      done
  done
  for w in locks queues; do
    ./target/release/turnstile bench $w --clients 50 --duration "${SECS}s" --size 16 \
      --target redis://127.0.0.1:$REDIS_PORT --target turnstile://127.0.0.1:$TS_PORT
  done
  stop "$ts_pid"; stop "$redis_pid"
  echo
done

echo "== restart with $MESSAGES queued 1 KiB messages (fsync always)"
rm -rf "$work/ts"
start_turnstile "$work/ts" always
payload=$(head -c 1024 /dev/zero | tr '\0' x)
redis-benchmark -p $TS_PORT -c 50 -P 16 -n "$MESSAGES" -q Q.PUSH big "$payload" 2>/dev/null | tr '\r' '\n' | tail -1
redis-cli -p $TS_PORT Q.STATS big | sed -n '1,2p' | paste -sd' '
kill -9 "$ts_pid"; wait "$ts_pid" 2>/dev/null || true
bytes=$(du -sb "$work/ts" | cut -f1)
echo "data dir: $bytes bytes = $((bytes / MESSAGES)) bytes per message ($(ls "$work/ts/log" | wc -l) segments, $(ls "$work/ts/snapshots" | wc -l) snapshots)"
begin=$(date +%s%N)
start_turnstile "$work/ts" always
end=$(date +%s%N)
echo "restart after kill -9: $(( (end - begin) / 1000000 )) ms to ready (includes up to 100 ms of polling)"
redis-cli -p $TS_PORT Q.STATS big | sed -n '1,2p' | paste -sd' '
