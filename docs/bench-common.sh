# Shared by the docs/bench-*.sh scripts (sourced, not run): finding ports, watching a server start,
# starting Turnstile on free ports.

# Whether something accepts connections on 127.0.0.1:$1.
listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A port nothing listens on, from a random start in 20000-39999.
free_port() {
  local port=$((20000 + RANDOM % 20000))
  while listening "$port"; do
    port=$((port + 1))
  done
  echo "$port"
}

# Fails the script, with the server's log, when the server exited instead of listening.
check_alive() { # pid name log
  if ! kill -0 "$1" 2>/dev/null; then
    echo "$2 exited before it was ready:" >&2
    cat "$3" >&2
    exit 1
  fi
}

# Starts `$bin server` on "$tmp/turnstile" with every listener on a port of its choosing, plus any
# further flags (its log level from TS_LOG, default warn), and waits (10 s at most) for its ready line. Sets ts_pid, and ts_resp / ts_amqp to
# the addresses it printed.
start_turnstile() {
  "$bin" server --data-dir "$tmp/turnstile" --resp-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --amqp-addr 127.0.0.1:0 --log "${TS_LOG:-warn}" "$@" >"$tmp/turnstile.out" 2>"$tmp/turnstile.log" &
  ts_pid=$!
  ts_resp=
  ts_amqp=
  for _ in $(seq 100); do
    ts_resp=$(sed -n 's/^turnstile .* ready: resp=\([^ ]*\).*$/\1/p' "$tmp/turnstile.out")
    ts_amqp=$(sed -n 's/^turnstile .* ready: .*amqp=\([^ ]*\).*$/\1/p' "$tmp/turnstile.out")
    [[ -n $ts_resp && -n $ts_amqp ]] && return 0
    check_alive "$ts_pid" "turnstile server" "$tmp/turnstile.log"
    sleep 0.1
  done
  echo "turnstile server did not get ready within 10s" >&2
  exit 1
}

# Sets ts_fsync and redis_fsync from FSYNC: `always` (the default) pairs Turnstile's --fsync always
# with appendfsync always, `interval` its --fsync interval (1 s) with appendfsync everysec.
pick_fsync() {
  case ${FSYNC:-always} in
    always) ts_fsync=always redis_fsync=always ;;
    interval) ts_fsync=interval redis_fsync=everysec ;;
    *) echo "FSYNC must be always or interval, not ${FSYNC}" >&2; exit 2 ;;
  esac
}

# Starts redis-server with an append-only file (appendfsync $redis_fsync) on a free loopback port,
# data in "$1" (created), and waits (10 s at most) for it to listen. Sets redis_pid and redis_port.
start_redis() {
  # Redis cannot pick its own port.
  redis_port=$(free_port)
  mkdir "$1"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync "$redis_fsync" \
    --dir "$1" >"$1.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 100); do
    listening "$redis_port" && return 0
    check_alive "$redis_pid" "redis-server" "$1.log"
    sleep 0.1
  done
  echo "redis-server did not listen on $redis_port within 10s" >&2
  exit 1
}
