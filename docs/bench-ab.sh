#!/usr/bin/env bash
# Two Turnstile builds and Redis, side by side in alternating rounds (A, B, Redis, A, B, Redis, ...),
# with the server CPU each spent per op: for telling whether a change helped on a shared, noisy
# machine, where two runs minutes apart differ by more than most changes do.
#
# Starts both builds (each `--fsync always` unless FSYNC=interval) and `redis-server` (appendfsync
# always / everysec) on free loopback ports with temp data dirs, runs `turnstile bench WORKLOAD`
# (50 clients; the client is NEW's) against each in turn, and stops only those three when it exits.
#   usage: docs/bench-ab.sh OLD_BIN NEW_BIN [WORKLOAD [ROUNDS]]   (WORKLOAD locks|queues|kv, ROUNDS 3)
#   env:   DURATION (3s per target and round), FSYNC (always|interval|never), REDIS_FSYNC (Redis's
#          appendfsync apart from Turnstile's, e.g. everysec), BENCH_ARGS (more `bench` flags, e.g.
#          "--keys 1 --wait 5s" for one hot lock),
#          A_FLAGS / B_FLAGS (more server flags for OLD / NEW, e.g. B_FLAGS="--worker-threads 1")
#   e.g.   cp target/release/turnstile /tmp/old; (change, build); docs/bench-ab.sh /tmp/old target/release/turnstile
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 2 ]]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
old=$1 new=$2 workload=${3:-locks} rounds=${4:-3}
for b in "$old" "$new"; do
  [[ -x $b ]] || { echo "$b is not an executable" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }

root=$(mktemp -d)
pids=()
redis_pid=
cleanup() {
  for pid in "${pids[@]}" ${ts_pid:-} $redis_pid; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}" ${ts_pid:-} $redis_pid; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$root"
}
trap cleanup EXIT

# shellcheck source=docs/bench-common.sh
. docs/bench-common.sh
pick_fsync

declare -A url pid
# start_turnstile uses $bin and $tmp: point them at each build in turn.
for side in A B; do
  if [[ $side == A ]]; then bin=$old flags=${A_FLAGS:-}; else bin=$new flags=${B_FLAGS:-}; fi
  tmp=$root/$side
  mkdir "$tmp"
  # shellcheck disable=SC2086 # flags are words
  start_turnstile --fsync "$ts_fsync" $flags
  pids+=("$ts_pid")
  url[$side]=turnstile://$ts_resp pid[$side]=$ts_pid
done

start_redis "$root/redis"
url[R]=redis://127.0.0.1:$redis_port pid[R]=$redis_pid

echo "A = $old ${A_FLAGS:-}; B = $new ${B_FLAGS:-}; R = redis (appendfsync $redis_fsync);" \
  "$workload ${BENCH_ARGS:-}, ${DURATION:-3s} per target, fsync $ts_fsync"
printf '%-5s %-2s %9s %8s %8s %14s\n' round on ops/s "p50 ms" "p99 ms" "server µs/op"
for round in $(seq "$rounds"); do
  for side in A B R; do
    before=$(ticks "${pid[$side]}")
    # shellcheck disable=SC2086 # flags are words
    line=$("$new" bench "$workload" --target "${url[$side]}" --duration "${DURATION:-3s}" --warmup 1s --json ${BENCH_ARGS:-})
    after=$(ticks "${pid[$side]}")
    print_row "$line" "$round" "$side" "$((after - before))"
  done
done
