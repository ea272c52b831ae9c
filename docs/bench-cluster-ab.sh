#!/usr/bin/env bash
# Two builds as 3-node clusters, side by side in alternating rounds: the lock cycle through each
# cluster's leader, with the CPU all three nodes spent per op. For telling whether a change to the
# replicated path helped, on a machine where two runs minutes apart differ by more than most
# changes do.
#
# Starts a 3-node cluster of each build (--fsync always, temp data dirs, free loopback ports),
# then per round runs `turnstile bench locks --keys KEYS --wait 5s` (50 clients; the client is
# NEW's) against each leader in turn, and stops only the six nodes when it exits.
#   usage: docs/bench-cluster-ab.sh OLD_BIN NEW_BIN [KEYS [ROUNDS]]   (KEYS 10000, ROUNDS 3)
#   env:   DURATION (5s per target and round), A_FLAGS / B_FLAGS (more server flags for every node
#          of OLD / NEW, e.g. B_FLAGS="--max-in-flight 8" with the same build as both)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 2 ]]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
old=$1 new=$2 keys=${3:-10000} rounds=${4:-3}
root=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$root"
}
trap cleanup EXIT
# shellcheck source=docs/bench-common.sh
. docs/bench-common.sh

declare -A leader_url node_pids
for side in A B; do
  if [[ $side == A ]]; then bin=$old flags=${A_FLAGS:-}; else bin=$new flags=${B_FLAGS:-}; fi
  raft=()
  for _ in 1 2 3; do raft+=("$(free_port)"); done
  peers=1=127.0.0.1:${raft[0]},2=127.0.0.1:${raft[1]},3=127.0.0.1:${raft[2]}
  side_pids=()
  for id in 1 2 3; do
    # shellcheck disable=SC2086 # flags are words
    "$bin" server --node-id "$id" --raft-addr "127.0.0.1:${raft[id - 1]}" --peers "$peers" \
      --data-dir "$root/$side-$id" --resp-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --amqp-addr 127.0.0.1:0 \
      --fsync always --log warn $flags >"$root/$side-$id.out" 2>"$root/$side-$id.log" &
    pids+=($!) side_pids+=($!)
  done
  declare -A resp=()
  for id in 1 2 3; do
    for _ in $(seq 300); do
      resp[$id]=$(sed -n 's/^turnstile .* ready: resp=\([^ ]*\).*$/\1/p' "$root/$side-$id.out")
      [[ -n ${resp[$id]} ]] && break
      sleep 0.1
    done
    [[ -n ${resp[$id]} ]] || { echo "$side node $id was not ready within 30s" >&2; exit 1; }
  done
  leader=
  for _ in $(seq 100); do
    leader=$("$bin" cluster status --server "${resp[1]}" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["leader"] or "")')
    [[ -n $leader ]] && break
    sleep 0.1
  done
  [[ -n $leader ]] || { echo "cluster $side has no leader" >&2; exit 1; }
  leader_url[$side]=turnstile://${resp[$leader]}
  node_pids[$side]="${side_pids[*]}"
done

echo "A = $old ${A_FLAGS:-}; B = $new ${B_FLAGS:-}; 3 nodes each, fsync always; locks, $keys keys, ${DURATION:-5s} per target"
printf '%-5s %-2s %9s %8s %8s %14s\n' round on ops/s "p50 ms" "p99 ms" "3 nodes µs/op"
for round in $(seq "$rounds"); do
  for side in A B; do
    # shellcheck disable=SC2086 # a list of pids
    before=$(ticks ${node_pids[$side]})
    line=$("$new" bench locks --keys "$keys" --wait 5s --target "${leader_url[$side]}" \
      --duration "${DURATION:-5s}" --warmup 1s --json)
    # shellcheck disable=SC2086
    after=$(ticks ${node_pids[$side]})
    print_row "$line" "$round" "$side" "$((after - before))"
  done
done
