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
# shellcheck source=docs/bench-common.sh
. docs/bench-common.sh
if ! find_rabbitmq; then
  echo "This script compares against it; run one server alone instead:" >&2
  echo "  $bin bench amqp --target amqp://guest:guest@HOST:PORT/%2f" >&2
  exit 1
fi

tmp=$(mktemp -d)
ts_pid=
cleanup() {
  [[ -n $ts_pid ]] && kill "$ts_pid" 2>/dev/null || true
  stop_rabbitmq
  [[ -n $ts_pid ]] && wait "$ts_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

start_turnstile
start_rabbitmq "$tmp/rabbit"

echo "turnstile $("$bin" --version | cut -d' ' -f2) at amqp://$ts_amqp (fsync always);" \
  "rabbitmq ${rabbit_version:-?} at amqp://127.0.0.1:$rabbit_port (quorum and classic durable queues)" >&2
rabbit=amqp://guest:guest@127.0.0.1:$rabbit_port/%2f
"$bin" bench amqp --target "amqp://guest:guest@$ts_amqp/%2f" \
  --target "$rabbit?queue-type=quorum" --target "$rabbit?queue-type=classic" "$@"
