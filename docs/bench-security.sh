#!/usr/bin/env bash
# What security costs, with `turnstile bench`, every row in the same run:
#   turnstile               Turnstile, authentication off (the plain path as it always was)
#   turnstile (AUTH + ACL)  a second Turnstile with requirepass and a user limited by rules and name
#                           patterns: every command checked and run as that user
#   turnstiles              the first Turnstile over TLS
#   redis / rediss          redis-server on a plain port and a TLS port
# Both servers durable alike (FSYNC=always: Turnstile's --fsync always and appendfsync always;
# FSYNC=interval: --fsync interval and appendfsync everysec). WORKLOADS picks the workloads
# (default: locks queues).
#
# Makes a CA and a server certificate for 127.0.0.1 with openssl, starts its own servers on free
# loopback ports with temp data dirs, and stops only those when it exits.
#   usage: docs/bench-security.sh [turnstile bench options...]
#   e.g.   docs/bench-security.sh --duration 5s --clients 50
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/turnstile
[[ -x $bin ]] || { echo "$bin is missing: build it with cargo build --release -p turnstile-cli" >&2; exit 1; }
for tool in redis-server openssl; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (Debian: apt-get install redis-server openssl)" >&2; exit 1; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# shellcheck source=docs/bench-common.sh
. docs/bench-common.sh
pick_fsync

# A CA, and a certificate it signs for 127.0.0.1.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$tmp/server.key" -out "$tmp/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$tmp/san.ext"
openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial -days 2 \
  -extfile "$tmp/san.ext" -out "$tmp/server.pem" 2>/dev/null

# Starts a Turnstile named $1 with the flags after it; sets ready_line to its ready line.
start_named() {
  local name=$1
  shift
  "$bin" server --data-dir "$tmp/$name" --resp-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --amqp-addr 127.0.0.1:0 --fsync "$ts_fsync" --log "${TS_LOG:-warn}" "$@" \
    >"$tmp/$name.out" 2>"$tmp/$name.log" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do
    ready_line=$(grep -m1 ' ready: ' "$tmp/$name.out" || true)
    [[ -n $ready_line ]] && return 0
    check_alive "$pid" "turnstile server ($name)" "$tmp/$name.log"
    sleep 0.1
  done
  echo "turnstile server ($name) did not get ready within 10s" >&2
  exit 1
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$ready_line"; }

start_named plain --tls-resp-addr 127.0.0.1:0 --tls-cert "$tmp/server.pem" --tls-key "$tmp/server.key"
plain=$(field resp)
plain_tls=$(field tls-resp)

cat >"$tmp/auth.toml" <<'EOF'
requirepass = "bench-admin-password"
[users.bench]
password = "bench-password"
categories = ["+@all", "-@admin", "-@dangerous"]
locks = ["bench:*"]
queues = ["bench:*"]
keys = ["bench:*"]
channels = ["bench.*"]
EOF
start_named auth --config "$tmp/auth.toml"
auth=$(field resp)

redis_port=$(free_port)
redis_tls_port=$(free_port)
mkdir "$tmp/redis"
redis-server --port "$redis_port" --tls-port "$redis_tls_port" --bind 127.0.0.1 --save '' --appendonly yes \
  --appendfsync "$redis_fsync" --dir "$tmp/redis" --tls-cert-file "$tmp/server.pem" \
  --tls-key-file "$tmp/server.key" --tls-ca-cert-file "$tmp/ca.pem" --tls-auth-clients no \
  >"$tmp/redis.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do
  listening "$redis_port" && listening "$redis_tls_port" && break
  sleep 0.1
done

echo "turnstile $("$bin" --version | cut -d' ' -f2) (fsync $ts_fsync): plain $plain, TLS $plain_tls, AUTH + ACL $auth;" \
  "redis $(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/') (appendfsync $redis_fsync): plain $redis_port, TLS $redis_tls_port" >&2
first=1
for workload in ${WORKLOADS:-locks queues}; do
  ((first)) || echo
  first=0
  "$bin" bench "$workload" --tls-ca "$tmp/ca.pem" \
    --target "turnstile://$plain" \
    --target "turnstile://bench:bench-password@$auth" \
    --target "turnstiles://$plain_tls" \
    --target "redis://127.0.0.1:$redis_port" \
    --target "rediss://127.0.0.1:$redis_tls_port" "$@"
done
