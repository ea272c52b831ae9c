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
# with appendfsync always, `interval` its --fsync interval (1 s) with appendfsync everysec, `never`
# its --fsync never with Redis without persistence (redis_fsync=none: no append-only file).
pick_fsync() {
  case ${FSYNC:-always} in
    always) ts_fsync=always redis_fsync=always ;;
    interval) ts_fsync=interval redis_fsync=everysec ;;
    never) ts_fsync=never redis_fsync=none ;;
    *) echo "FSYNC must be always, interval or never, not ${FSYNC}" >&2; exit 2 ;;
  esac
  # REDIS_FSYNC=everysec measures Turnstile at `always` against Redis as most of its users run it.
  redis_fsync=${REDIS_FSYNC:-$redis_fsync}
}

# Starts redis-server with an append-only file (appendfsync $redis_fsync) on a free loopback port,
# data in "$1" (created), and waits (10 s at most) for it to listen. Sets redis_pid and redis_port.
start_redis() {
  # Redis cannot pick its own port.
  redis_port=$(free_port)
  mkdir "$1"
  local persistence=(--appendonly yes --appendfsync "$redis_fsync")
  [[ $redis_fsync == none ]] && persistence=(--appendonly no)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' "${persistence[@]}" \
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

# The rabbitmq-server script to run, or nothing (with a message) when RabbitMQ or Erlang's epmd is
# missing. Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user with su; the script
# behind it runs as whoever calls it, so the temp dirs below are its own.
find_rabbitmq() {
  rabbit_server=${RABBITMQ_SERVER:-/usr/lib/rabbitmq/bin/rabbitmq-server}
  if [[ ! -x $rabbit_server ]]; then
    rabbit_server=$(command -v rabbitmq-server || true)
  fi
  if [[ -z $rabbit_server ]] || ! command -v epmd >/dev/null; then
    echo "rabbitmq-server (and Erlang's epmd) is not installed (Debian/Ubuntu: apt-get install rabbitmq-server)." >&2
    return 1
  fi
}

# Starts one RabbitMQ node with its own epmd (on a port of its own, so no other Erlang node is
# touched), node name, ports, config, data and logs under "$1" (created), all on loopback, and
# waits (60 s at most) for it to listen. Needs find_rabbitmq first. Sets rabbit_pid, epmd_pid,
# rabbit_port and rabbit_version; stop it with stop_rabbitmq.
start_rabbitmq() {
  local dir=$1
  mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
  rabbit_os_pid_file=$dir/rabbit.pid # the Erlang VM's OS pid: a child of the rabbitmq-server script
  local epmd_port dist_port
  epmd_port=$(free_port)
  epmd -address 127.0.0.1 -port "$epmd_port" >"$dir/epmd.log" 2>&1 &
  epmd_pid=$!
  rabbit_port=$(free_port)
  dist_port=$(free_port)
  echo "listeners.tcp.default = 127.0.0.1:$rabbit_port" >"$dir/rabbitmq.conf"
  echo '[].' >"$dir/enabled_plugins"
  (
    export HOME=$dir/home # the Erlang cookie is made here
    export ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$epmd_port
    export RABBITMQ_NODENAME=bench-$$@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=$rabbit_port RABBITMQ_DIST_PORT=$dist_port
    export RABBITMQ_CONFIG_FILE=$dir/rabbitmq RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
    export RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log
    export RABBITMQ_PID_FILE=$rabbit_os_pid_file
    exec "$rabbit_server" >"$dir/rabbit.out" 2>&1
  ) &
  rabbit_pid=$!
  for _ in $(seq 600); do
    listening "$rabbit_port" && break
    check_alive "$rabbit_pid" "rabbitmq-server" "$dir/rabbit.out"
    sleep 0.1
  done
  if ! listening "$rabbit_port"; then
    echo "rabbitmq-server did not listen on $rabbit_port within 60s:" >&2
    cat "$dir/rabbit.out" >&2
    exit 1
  fi
  rabbit_version=$(sed -n 's/.*RabbitMQ \([0-9][0-9.]*\).*/\1/p' "$dir/rabbit.out" | head -1)
}

# Stops what start_rabbitmq started, if anything: rabbitmq-server stops its node (rabbitmqctl
# stop) on SIGTERM; it gets 30 s, then its Erlang VM is killed; then epmd.
stop_rabbitmq() {
  [[ -n ${rabbit_pid:-} ]] || return 0
  kill "$rabbit_pid" 2>/dev/null || true
  for _ in $(seq 300); do
    kill -0 "$rabbit_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -s $rabbit_os_pid_file ]]; then
    kill -KILL "$(cat "$rabbit_os_pid_file")" 2>/dev/null || true
  fi
  kill -KILL "$rabbit_pid" 2>/dev/null || true
  [[ -n ${epmd_pid:-} ]] && kill "$epmd_pid" 2>/dev/null || true
  wait "$rabbit_pid" "${epmd_pid:-}" 2>/dev/null || true
  rabbit_pid= epmd_pid=
}

# Clock ticks (1/100 s) of user + system CPU over all threads of the given processes.
ticks() {
  local total=0 pid task
  for pid in "$@"; do
    for task in /proc/"$pid"/task/*/stat; do
      total=$((total + $(awk '{print $14 + $15}' "$task")))
    done
  done
  echo "$total"
}

# Prints one row of an A/B table from `turnstile bench --json` output: round, side, ops/s, p50,
# p99 and server CPU µs per op from the ticks spent. CPU is counted over warmup (1 s) and run; ops
# over the run, plus the warmup's at the run's rate.
print_row() { # json round side ticks
  python3 -c '
import json, sys
row = json.loads(sys.argv[1])[0]
ops = row["ops"] + row["ops_per_sec"] * 1.0
print("%-5s %-2s %9.0f %8.3f %8.3f %14.1f" % (sys.argv[2], sys.argv[3], row["ops_per_sec"],
      row["p50_ms"], row["p99_ms"], int(sys.argv[4]) * 10000 / max(ops, 1)))
' "$@"
}
