#!/usr/bin/env bash
# Turnstile vs RabbitMQ with `turnstile bench amqp`: publishers with confirms, consumers with manual
# acks, persistent messages, one new durable queue per target. Three targets in one table:
# Turnstile (default --fsync always), RabbitMQ with a quorum queue, RabbitMQ with a classic
# durable queue. Both servers confirm a persistent message once it is on disk.
#
# Starts its own `turnstile server`, `rabbitmq-server` and epmd (Erlang's port mapper, on a port
# of its own so no other Erlang node is touched) on free loopback ports with temp dirs, and stops
# only those when it exits. Declares nothing by hand: the bench declares its queues. Needs
# target/release/turnstile and rabbitmq-server (Debian/Ubuntu: apt-get install rabbitmq-server).
#   usage: docs/bench-amqp.sh [turnstile bench amqp options...]
#   e.g.   docs/bench-amqp.sh --duration 5s --publishers 2 --consumers 2
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/turnstile
if [[ ! -x $bin ]]; then
  echo "$bin is missing: build it with cargo build --release -p turnstile-cli" >&2
  exit 1
fi
# Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user with su; the script behind it
# runs as whoever calls it, so the temp dirs below are its own.
rabbit_server=${RABBITMQ_SERVER:-/usr/lib/rabbitmq/bin/rabbitmq-server}
if [[ ! -x $rabbit_server ]]; then
  rabbit_server=$(command -v rabbitmq-server || true)
fi
if [[ -z $rabbit_server ]] || ! command -v epmd >/dev/null; then
  echo "rabbitmq-server (and Erlang's epmd) is not installed, and this script compares against it." >&2
  echo "Install it (Debian/Ubuntu: sudo apt-get install rabbitmq-server), or run one server alone:" >&2
  echo "  $bin bench amqp --target amqp://guest:guest@HOST:PORT/%2f" >&2
  exit 1
fi

tmp=$(mktemp -d)
ts_pid=
rabbit_pid=
epmd_pid=
# RabbitMQ's Erlang VM writes its OS pid here; it is a child of the rabbitmq-server script.
rabbit_os_pid_file=$tmp/rabbit/rabbit.pid
cleanup() {
  # rabbitmq-server stops its node (rabbitmqctl stop) on SIGTERM; give it 30 s, then kill the VM.
  [[ -n $rabbit_pid ]] && kill "$rabbit_pid" 2>/dev/null || true
  [[ -n $ts_pid ]] && kill "$ts_pid" 2>/dev/null || true
  for _ in $(seq 300); do
    kill -0 "$rabbit_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -s $rabbit_os_pid_file ]]; then
    kill -KILL "$(cat "$rabbit_os_pid_file")" 2>/dev/null || true
  fi
  [[ -n $rabbit_pid ]] && kill -KILL "$rabbit_pid" 2>/dev/null || true
  [[ -n $epmd_pid ]] && kill "$epmd_pid" 2>/dev/null || true
  for pid in $ts_pid $rabbit_pid $epmd_pid; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

# shellcheck source=docs/bench-common.sh
. docs/bench-common.sh

start_turnstile

# RabbitMQ: its own epmd, node name, ports, config, data and logs, all on loopback.
mkdir -p "$tmp/rabbit/home" "$tmp/rabbit/mnesia" "$tmp/rabbit/log"
epmd_port=$(free_port)
epmd -address 127.0.0.1 -port "$epmd_port" >"$tmp/epmd.log" 2>&1 &
epmd_pid=$!
rabbit_port=$(free_port)
dist_port=$(free_port)
cat >"$tmp/rabbit/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$rabbit_port
EOF
echo '[].' >"$tmp/rabbit/enabled_plugins"
export HOME=$tmp/rabbit/home # the Erlang cookie is made here
export ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$epmd_port
export RABBITMQ_NODENAME=bench-amqp-$$@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$rabbit_port RABBITMQ_DIST_PORT=$dist_port
export RABBITMQ_CONFIG_FILE=$tmp/rabbit/rabbitmq RABBITMQ_ENABLED_PLUGINS_FILE=$tmp/rabbit/enabled_plugins
export RABBITMQ_MNESIA_BASE=$tmp/rabbit/mnesia RABBITMQ_LOG_BASE=$tmp/rabbit/log
export RABBITMQ_PID_FILE=$rabbit_os_pid_file
"$rabbit_server" >"$tmp/rabbit.out" 2>&1 &
rabbit_pid=$!
for _ in $(seq 600); do
  listening "$rabbit_port" && break
  check_alive "$rabbit_pid" "rabbitmq-server" "$tmp/rabbit.out"
  sleep 0.1
done
if ! listening "$rabbit_port"; then
  echo "rabbitmq-server did not listen on $rabbit_port within 60s:" >&2
  cat "$tmp/rabbit.out" >&2
  exit 1
fi

rabbit_version=$(sed -n 's/.*RabbitMQ \([0-9][0-9.]*\).*/\1/p' "$tmp/rabbit.out" | head -1)
echo "turnstile $("$bin" --version | cut -d' ' -f2) at amqp://$ts_amqp (fsync always);" \
  "rabbitmq ${rabbit_version:-?} at amqp://127.0.0.1:$rabbit_port (quorum and classic durable queues)" >&2
rabbit=amqp://guest:guest@127.0.0.1:$rabbit_port/%2f
"$bin" bench amqp --target "amqp://guest:guest@$ts_amqp/%2f" \
  --target "$rabbit?queue-type=quorum" --target "$rabbit?queue-type=classic" "$@"
