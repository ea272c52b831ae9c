#!/usr/bin/env bash
# Bulk ingest: one connection pipelining N pushes of SIZE bytes (`redis-cli --pipe`), Turnstile's
# `Q.PUSH` against Redis's `LPUSH`, two builds and Redis in alternating rounds, each on a fresh
# server (temp data dir, free loopback port) so every round starts from an empty log.
#   usage: docs/bench-bulk.sh OLD_BIN NEW_BIN [N [ROUNDS]]   (N 200000, ROUNDS 3)
#   env:   FSYNC (always|interval|never: Redis appendfsync always|everysec|no persistence),
#          SIZE (payload bytes, 1024)
# Needs redis-server and redis-cli (apt-get install redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 2 ]]; then
  sed -n '2,8p' "$0" >&2
  exit 2
fi
old=$1 new=$2 count=${3:-200000} rounds=${4:-3} size=${SIZE:-1024}
root=$(mktemp -d)
ts_pid= redis_pid=
cleanup() {
  for pid in $ts_pid $redis_pid; do kill "$pid" 2>/dev/null || true; done
  for pid in $ts_pid $redis_pid; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$root"
}
trap cleanup EXIT
# shellcheck source=docs/bench-common.sh
. docs/bench-common.sh
pick_fsync

# The two pipelines, made once: the same payload in every push.
python3 - "$root" "$count" "$size" <<'PY'
import sys
root, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
payload = b"x" * size
def request(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out
for name, cmd in (("turnstile", b"Q.PUSH"), ("redis", b"LPUSH")):
    with open(f"{root}/{name}.resp", "wb") as f:
        f.write(request(cmd, b"bulk", payload) * count)
PY

# Pipes $2 into 127.0.0.1:$1 and prints pushes per second.
pipe() {
  local started ended
  started=$(date +%s.%N)
  redis-cli -p "$1" --pipe <"$2" >"$root/pipe.out"
  ended=$(date +%s.%N)
  grep -q "errors: 0, replies: $count" "$root/pipe.out" || { cat "$root/pipe.out" >&2; exit 1; }
  python3 -c "import sys; print(round($count / ($ended - $started)))"
}

echo "A = $old; B = $new; R = redis (appendfsync $redis_fsync); $count pushes of $size bytes" \
  "in one pipeline, fsync $ts_fsync"
printf '%-5s %-2s %12s\n' round on pushes/s
for round in $(seq "$rounds"); do
  for side in A B R; do
    tmp=$root/$round-$side
    mkdir "$tmp"
    if [[ $side == R ]]; then
      start_redis "$tmp/redis"
      rate=$(pipe "$redis_port" "$root/redis.resp")
      kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true; redis_pid=
    else
      if [[ $side == A ]]; then bin=$old; else bin=$new; fi
      start_turnstile --fsync "$ts_fsync"
      rate=$(pipe "${ts_resp##*:}" "$root/turnstile.resp")
      kill "$ts_pid"; wait "$ts_pid" 2>/dev/null || true; ts_pid=
    fi
    rm -rf "$tmp"
    printf '%-5s %-2s %12s\n' "$round" "$side" "$rate"
  done
done
