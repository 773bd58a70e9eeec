#!/usr/bin/env bash
# redis-cli and redis-benchmark against `kvstore serve`: a smoke test, run by .ci/run.
#
# Starts `kvstore serve --port 0` on a fresh data directory (127.0.0.1, the port read from its
# ready line), checks redis-cli's answers to SET, GET, DEL and PING, runs
# `redis-benchmark -t set,get -n 20000 -c 10 -q` (bounded in time), then stops the server with
# SIGTERM and checks it exits 0. Fails on any wrong answer, error or timeout. The server is
# always stopped, even when a check fails.
#
# Usage: benches/redis_smoke.sh            (builds the debug kvstore binary)
#        KVSTORE=path/to/kvstore benches/redis_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in redis-cli redis-benchmark; do
    if ! command -v "$tool" >/dev/null; then
        echo "redis_smoke: $tool not found (Debian: apt-get install redis-tools)" >&2
        exit 1
    fi
done

if [[ -z "${KVSTORE:-}" ]]; then
    cargo build -q -p kv-cli
    KVSTORE=target/debug/kvstore
fi

work=$(mktemp -d)
pid=
stop_server() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap stop_server EXIT

fail() {
    echo "redis_smoke: FAILED: $*" >&2
    echo "--- server stderr:" >&2
    cat "$work/stderr" >&2 || true
    exit 1
}

"$KVSTORE" serve --port 0 --data-dir "$work/data" >"$work/stdout" 2>"$work/stderr" &
pid=$!

# The ready line: `kvstore ready to accept connections on 127.0.0.1:PORT`.
port=
for _ in $(seq 600); do
    if line=$(grep -m1 '^kvstore ready to accept connections on ' "$work/stdout"); then
        port=${line##*:}
        break
    fi
    kill -0 "$pid" 2>/dev/null || fail "the server exited before it was ready"
    sleep 0.1
done
[[ -n "$port" ]] || fail "no ready line within 60 s"
echo "redis_smoke: kvstore serve on 127.0.0.1:$port"

# Answers as redis-cli prints them when its output is not a terminal.
expect() {
    local want=$1
    shift
    local got
    got=$(timeout 10 redis-cli -p "$port" "$@" 2>&1) || fail "redis-cli $*: exit $? ($got)"
    [[ "$got" == "$want" ]] || fail "redis-cli $*: got '$got', want '$want'"
    echo "redis_smoke: redis-cli $* -> $got"
}
expect PONG ping
expect OK set a b
expect b get a
expect "hello world" echo "hello world"
expect 1 del a
expect "" get a
expect 0 exists a
expect "ERR unknown command 'nosuchcommand', with args beginning with: 'x' " nosuchcommand x

# redis-benchmark exits non-zero on the first error reply.
bench_out="$work/benchmark"
if ! timeout 300 redis-benchmark -p "$port" -t set,get -n 20000 -c 10 -q >"$bench_out" 2>&1; then
    tr '\r' '\n' <"$bench_out" | tail -5 >&2
    fail "redis-benchmark failed or timed out"
fi
summary=$(tr '\r' '\n' <"$bench_out" | grep -E '^(SET|GET): [0-9.]+ requests per second' || true)
[[ $(grep -c . <<<"$summary") == 2 ]] || {
    tr '\r' '\n' <"$bench_out" | tail -5 >&2
    fail "redis-benchmark did not report both SET and GET"
}
echo "$summary" | sed 's/^/redis_smoke: redis-benchmark /'
# Warnings (e.g. a CONFIG GET the server does not answer) are shown, not failed on.
grep -h '^WARNING' "$bench_out" | grep -v -- '-e option' | sed 's/^/redis_smoke: redis-benchmark said: /' || true

# A graceful stop: exit 0.
kill -TERM "$pid"
status=0
for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$pid" 2>/dev/null && fail "still running 30 s after SIGTERM"
wait "$pid" || status=$?
pid=
[[ $status == 0 ]] || fail "exit status $status after SIGTERM"
echo "redis_smoke: SIGTERM: exit 0"
echo "redis_smoke: passed"
