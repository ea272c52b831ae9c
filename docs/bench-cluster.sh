#!/usr/bin/env bash
# A 3-node Turnstile cluster against its peers, in alternating rounds: a 3-member etcd cluster for
# the lock cycle, a RabbitMQ quorum queue for AMQP publish + consume + ack; then `turnstile bench
# failover` (a cluster of its own whose leader it kills with SIGKILL, KILLS times).
#
# Starts three `turnstile server` nodes (--fsync always, one --peers list), three etcd members
# (--initial-cluster; etcd fsyncs its log on every commit) and one RabbitMQ node with its own epmd,
# everything on free loopback ports with temp dirs, and stops only those (by PID) when it exits.
# Each round, for --keys 10000 (every client its own lock) and --keys 1 (one hot lock), runs
# `turnstile bench locks` (50 clients; `--wait 5s`: a Turnstile acquire waits in line for a held
# lock, as etcd's lock does) through the Turnstile leader only, a follower only, all three
# nodes, and etcd's three members (clients spread over them); then `turnstile bench amqp` through the leader, a
# follower, and the quorum queue. The order of the targets is reversed every other round (the
# target measured first in a round tends to do better on this machine). Every table is printed,
# and every row is kept as JSON in $OUT (for the summary below each part).
#   usage: docs/bench-cluster.sh [ROUNDS]      (3)
#   env:   BIN (target/release/turnstile), DURATION (5s per target and round), KILLS (20),
#          OUT (a new temp file), SKIP (any of: locks amqp failover)
# Needs etcd (Debian: etcd-server) and rabbitmq-server.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
bin=${BIN:-target/release/turnstile}
duration=${DURATION:-5s}
kills=${KILLS:-20}
skip=${SKIP:-}
if [[ ! -x $bin ]]; then
  echo "$bin is missing: build it with cargo build --release -p turnstile-cli" >&2
  exit 1
fi
command -v etcd >/dev/null || { echo "etcd is not installed (Debian/Ubuntu: apt-get install etcd-server)" >&2; exit 1; }
# shellcheck source=docs/bench-common.sh
. docs/bench-common.sh
find_rabbitmq || exit 1

tmp=$(mktemp -d)
out=${OUT:-$(mktemp /tmp/bench-cluster.XXXXXX.jsonl)}
ts_pids=()
etcd_pids=()
cleanup() {
  for pid in "${ts_pids[@]}" "${etcd_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  stop_rabbitmq
  for pid in "${ts_pids[@]}" "${etcd_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# n distinct free ports.
free_ports() {
  local ports=() port
  while [[ ${#ports[@]} -lt $1 ]]; do
    port=$(free_port)
    [[ " ${ports[*]} " == *" $port "* ]] || ports+=("$port")
  done
  echo "${ports[@]}"
}

# --- the Turnstile cluster: three nodes, one --peers list, each printing its ready line once a
# leader is known.
read -ra raft <<<"$(free_ports 3)"
peers=1=127.0.0.1:${raft[0]},2=127.0.0.1:${raft[1]},3=127.0.0.1:${raft[2]}
for id in 1 2 3; do
  "$bin" server --node-id "$id" --raft-addr "127.0.0.1:${raft[id - 1]}" --peers "$peers" \
    --data-dir "$tmp/node-$id" --resp-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --amqp-addr 127.0.0.1:0 \
    --fsync always --log warn >"$tmp/node-$id.out" 2>"$tmp/node-$id.log" &
  ts_pids+=($!)
done
declare -A resp amqp
for id in 1 2 3; do
  for _ in $(seq 300); do
    resp[$id]=$(sed -n 's/^turnstile .* ready: resp=\([^ ]*\).*$/\1/p' "$tmp/node-$id.out")
    amqp[$id]=$(sed -n 's/^turnstile .* ready: .*amqp=\([^ ]*\).*$/\1/p' "$tmp/node-$id.out")
    [[ -n ${resp[$id]} ]] && break
    check_alive "${ts_pids[id - 1]}" "turnstile node $id" "$tmp/node-$id.log"
    sleep 0.1
  done
  [[ -n ${resp[$id]} ]] || { echo "turnstile node $id was not ready within 30s" >&2; exit 1; }
done
leader=$("$bin" cluster status --server "${resp[1]}" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["leader"] or "")')
[[ -n $leader ]] || { echo "the cluster has no leader" >&2; exit 1; }
follower=$((leader % 3 + 1))
all=${resp[1]},${resp[2]},${resp[3]}

# --- etcd: three members on loopback, data in $tmp.
read -ra etcd_ports <<<"$(free_ports 6)"
etcd_client=("${etcd_ports[@]:0:3}") etcd_peer=("${etcd_ports[@]:3:3}")
initial=e1=http://127.0.0.1:${etcd_peer[0]},e2=http://127.0.0.1:${etcd_peer[1]},e3=http://127.0.0.1:${etcd_peer[2]}
for i in 0 1 2; do
  etcd --name "e$((i + 1))" --data-dir "$tmp/etcd-$((i + 1))" \
    --listen-client-urls "http://127.0.0.1:${etcd_client[i]}" --advertise-client-urls "http://127.0.0.1:${etcd_client[i]}" \
    --listen-peer-urls "http://127.0.0.1:${etcd_peer[i]}" --initial-advertise-peer-urls "http://127.0.0.1:${etcd_peer[i]}" \
    --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token "bench-$$" \
    >"$tmp/etcd-$((i + 1)).log" 2>&1 &
  etcd_pids+=($!)
done
etcd_all=127.0.0.1:${etcd_client[0]},127.0.0.1:${etcd_client[1]},127.0.0.1:${etcd_client[2]}
for _ in $(seq 300); do
  curl -sf -X POST "http://127.0.0.1:${etcd_client[0]}/v3/kv/range" -d '{"key":"AA=="}' >/dev/null && break
  sleep 0.1
done

start_rabbitmq "$tmp/rabbit"

echo "turnstile $("$bin" --version | cut -d' ' -f2): leader node $leader at ${resp[$leader]}, follower node $follower;" \
  "$(etcd --version | head -1); rabbitmq ${rabbit_version:-?}; rows in $out" >&2

# Runs one bench with --json, prints its rows in short, and appends them to $out tagged with
# the round and the bench's name.
bench() { # round name args...
  local round=$1 name=$2
  shift 2
  "$bin" bench "$@" --json >"$tmp/rows.json"
  python3 - "$tmp/rows.json" "$round" "$name" "$out" <<'EOF'
import json, sys
path, round_, name, out = sys.argv[1:]
with open(out, "a") as sink:
    for row in json.load(open(path)):
        row["round"], row["bench"] = int(round_), name
        target = row["target"] + (f" ({row['queue_type']})" if row.get("queue_type") else "")
        rate = row.get("ops_per_sec", row.get("published_per_sec"))
        p99 = row.get("p99_ms", row.get("e2e_p99_ms"))
        print(f"  {target:75} {rate:>9,.0f}/s  p99 {p99:7.2f} ms  errors {row['errors']}", file=sys.stderr)
        sink.write(json.dumps(row) + "\n")
EOF
}

ts_lock_targets=("turnstile://${resp[$leader]}" "turnstile://${resp[$follower]}" "turnstile://$all")
for round in $(seq "$rounds"); do
  if [[ " $skip " != *" locks "* ]]; then
    targets=("${ts_lock_targets[@]}" "etcd://$etcd_all")
    ((round % 2 == 0)) && targets=("etcd://$etcd_all" "${ts_lock_targets[@]}")
    for keys in 10000 1; do
      echo "round $round: locks, --keys $keys" >&2
      bench "$round" "locks-$keys" locks --clients 50 --keys "$keys" --wait 5s --duration "$duration" \
        --warmup 1s "${targets[@]/#/--target=}"
    done
  fi
  if [[ " $skip " != *" amqp "* ]]; then
    rabbit="amqp://guest:guest@127.0.0.1:$rabbit_port/%2f?queue-type=quorum"
    targets=("amqp://guest:guest@${amqp[$leader]}/%2f" "amqp://guest:guest@${amqp[$follower]}/%2f" "$rabbit")
    ((round % 2 == 0)) && targets=("$rabbit" "amqp://guest:guest@${amqp[$leader]}/%2f" "amqp://guest:guest@${amqp[$follower]}/%2f")
    echo "round $round: amqp" >&2
    bench "$round" amqp amqp --duration "$duration" --warmup 1s "${targets[@]/#/--target=}"
  fi
done

# Each bench's rows: the median over the rounds per target, and every round's figure.
python3 - "$out" <<'EOF'
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    row = json.loads(line)
    target = row["target"] + (f" ({row['queue_type']})" if row.get("queue_type") else "")
    runs[(row["bench"], target)].append((row["round"], row.get("ops_per_sec", row.get("published_per_sec")), row["errors"]))
for (name, target), figures in runs.items():
    figures.sort()
    median = statistics.median(f for _, f, _ in figures)
    each = ", ".join(f"{f:,.0f}" for _, f, _ in figures)
    errors = sum(e for *_, e in figures)
    print(f"{name:12} {target:75} median {median:>9,.0f}/s  rounds: {each}  errors: {errors}")
EOF

# The peers and the cluster are stopped before the failover runs: it starts a cluster of its own.
if [[ " $skip " != *" failover "* ]]; then
  cleanup
  trap - EXIT
  echo "failover: $kills kills" >&2
  "$bin" bench failover --kills "$kills" --json >"$out.failover"
  python3 - "$out.failover" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
times = [k["failover_ms"] for k in report["kills"]]
print(f"failover over {len(times)} kills: p50 {report['p50_ms']:.0f} ms, p90 {report['p90_ms']:.0f} ms, max {report['max_ms']:.0f} ms")
print("each (ms): " + ", ".join(f"{t:.0f}" for t in times))
EOF
fi
