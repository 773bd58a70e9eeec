# Shared by the benchmark scripts under benches/ (sourced, not run): a scratch directory, the
# servers a script starts (every one stopped when the script exits, also on failure), free
# loopback ports, a readiness wait and the servers' CPU time.
#
#     source benches/lib.sh
#     bench_init serve_vs_redis          # $work, $pids, the EXIT trap
#     port=$(free_port); some-server --port "$port" & pids+=($!)
#     wait_ping "$port"
#
# Needs python3 (free ports) and redis-cli (wait_ping).

# Names the script in error messages, makes the scratch directory `$work` and arms the trap
# that stops every pid in `pids` and removes `$work` on exit.
bench_init() { # name
    bench_name=$1
    work=$(mktemp -d)
    pids=()
    trap 'stop_all; rm -rf "$work"' EXIT
}

# SIGTERM to every server started so far, then wait for each to exit.
stop_all() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    pids=()
}

# A free loopback port.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A free loopback client port whose cluster port (client port + 10000) is free too.
free_pair() {
    python3 - <<'EOF'
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    if p > 55000:
        continue
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p + 10000))
    except OSError:
        continue
    print(p)
    break
EOF
}

# Waits up to 60 s for PONG on a loopback port; exits the script if none comes.
wait_ping() { # port
    for _ in $(seq 600); do
        [[ $(redis-cli -p "$1" ping 2>/dev/null) == PONG ]] && return 0
        sleep 0.1
    done
    echo "$bench_name: nothing answers PING on $1" >&2
    exit 1
}

# The CPU time (user + system) the given processes used so far, in clock ticks, summed.
cpu_ticks() { # pid...
    local sum=0 p
    for p in "$@"; do
        sum=$((sum + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
    done
    echo "$sum"
}
