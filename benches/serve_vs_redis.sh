#!/usr/bin/env bash
# `kvstore serve` side by side with Redis and the machine's floor, under redis-benchmark, in
# the same run.
#
# Starts on loopback with free ports:
#   kvstore  `kvstore serve` (release build, the default 3-node RF 3 quorum cluster with
#            periodic sync, on a fresh data directory);
#   redis    `redis-server --save "" --appendonly no`;
#   floor    benches/examples/floor_server.rs: a minimal tokio RESP server on a sharded
#            in-memory map (no durability, no replication, one write per pipelined batch);
#   naive    (only with NAIVE=1) the floor server calling the same 3-node cluster inline
#            for each SET and GET (no batching, no storage threads);
# then runs
#     redis-benchmark -t set,get -n 300000 -c 50 -d 100 -r 100000 -P {1,16} --csv
# against each, rotating the servers' order round after round, and prints one row per run
# (requests per second, p50 and p99 latency) and each server's median against Redis's. The
# load average is printed before and after: the machine is shared.
#
# Usage: benches/serve_vs_redis.sh [ROUNDS]     (default 3 rounds)
#        KVSTORE=path/to/kvstore FLOOR=path/to/floor_server benches/serve_vs_redis.sh
#        NAIVE=1 PIPELINES="1" benches/serve_vs_redis.sh 5
# Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
requests=${REQUESTS:-300000}
for tool in redis-server redis-benchmark redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "serve_vs_redis: $tool not found" >&2; exit 1; }
done
if [[ -z "${KVSTORE:-}" ]]; then
    cargo build -q --release -p kv-cli
    KVSTORE=target/release/kvstore
fi
if [[ -z "${FLOOR:-}" ]]; then
    cargo build -q --release -p benches --example floor_server
    FLOOR=target/release/examples/floor_server
fi
pipelines=${PIPELINES:-1 16}

source benches/lib.sh
bench_init serve_vs_redis
naive_pid=

"$KVSTORE" serve --port 0 --data-dir "$work/kvstore" >"$work/kv.out" 2>"$work/kv.err" &
kv_pid=$!
pids+=($!)
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" --daemonize no --logfile "$work/redis.log" &
redis_pid=$!
pids+=($!)
"$FLOOR" >"$work/floor.out" 2>"$work/floor.err" &
floor_pid=$!
pids+=($!)
if [[ -n "${NAIVE:-}" ]]; then
    "$FLOOR" --cluster "$work/naive" >"$work/naive.out" 2>"$work/naive.err" &
    naive_pid=$!
    pids+=($!)
fi

ready_port() { # file pattern
    for _ in $(seq 600); do
        if line=$(grep -m1 "$2" "$1"); then
            echo "${line##*:}"
            return
        fi
        sleep 0.1
    done
}
floor_port=$(ready_port "$work/floor.out" '^floor ready on ')
[[ -n "$floor_port" ]] || { cat "$work/floor.err" >&2; echo "serve_vs_redis: floor server not ready" >&2; exit 1; }
servers="kvstore redis floor"
if [[ -n "${NAIVE:-}" ]]; then
    naive_port=$(ready_port "$work/naive.out" '^floor ready on ')
    [[ -n "$naive_port" ]] || { cat "$work/naive.err" >&2; echo "serve_vs_redis: naive server not ready" >&2; exit 1; }
    servers="$servers naive"
fi

kv_port=
for _ in $(seq 600); do
    if line=$(grep -m1 '^kvstore ready to accept connections on ' "$work/kv.out"); then
        kv_port=${line##*:}
        break
    fi
    sleep 0.1
done
[[ -n "$kv_port" ]] || { cat "$work/kv.err" >&2; echo "serve_vs_redis: kvstore not ready" >&2; exit 1; }
wait_ping "$redis_port"

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(redis-server --version | cut -d' ' -f1-3)"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# redis-benchmark -t set,get -n $requests -c 50 -d 100 -r 100000 -P {${pipelines// /,}}; $rounds rounds; servers: $servers"
results="$work/results"
: >"$results"
pid_of() {
    case $1 in
        kvstore) echo "$kv_pid" ;;
        redis) echo "$redis_pid" ;;
        floor) echo "$floor_pid" ;;
        naive) echo "$naive_pid" ;;
    esac
}
run() { # server port pipeline round
    local out="$work/bench.csv" pid t before after
    pid=$(pid_of "$1")
    # SET then GET (the GETs find the keys the SETs wrote), each on its own so that the
    # server's CPU time per request can be told apart: a figure the machine's load moves
    # much less than the throughput.
    for t in set get; do
        before=$(cpu_ticks "$pid")
        if ! timeout 900 redis-benchmark -p "$2" -t "$t" -n "$requests" -c 50 -d 100 -r 100000 \
            -P "$3" --csv >"$out" 2>"$work/bench.err"; then
            cat "$work/bench.err" "$out" >&2
            echo "serve_vs_redis: redis-benchmark against $1 failed" >&2
            exit 1
        fi
        after=$(cpu_ticks "$pid")
        # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
        tr -d '"' <"$out" | awk -F, -v s="$1" -v p="$3" -v r="$4" -v n="$requests" \
            -v cpu="$((after - before))" -v hz="$(getconf CLK_TCK)" \
            '$1 == "SET" || $1 == "GET" { printf "%s %s %s %s %s %s %s %.2f\n", s, p, $1, r, $2, $5, $7, cpu * 1e6 / hz / n }' >>"$results"
    done
}
port_of() {
    case $1 in
        kvstore) echo "$kv_port" ;;
        redis) echo "$redis_port" ;;
        floor) echo "$floor_port" ;;
        naive) echo "$naive_port" ;;
    esac
}
read -ra order <<<"$servers"
for p in $pipelines; do
    for r in $(seq "$rounds"); do
        # Round r starts with the (r-1)th server of the list: each goes first in turn.
        n=${#order[@]}
        for i in $(seq 0 $((n - 1))); do
            s=${order[$(((i + r - 1) % n))]}
            run "$s" "$(port_of "$s")" "$p" "$r"
        done
    done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| server | -P | test | round | requests/s | p50 ms | p99 ms | server CPU µs/request |"
echo "|---|---:|---|---:|---:|---:|---:|---:|"
sort -k2,2n -k3,3r -k1,1 -k4,4n "$results" | awk '{ printf "| %s | %s | %s | %s | %.0f | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
echo
echo "| -P | test | server | median/s | / Redis | / floor | median server CPU µs/request |"
echo "|---:|---|---|---:|---:|---:|---:|"
for p in $pipelines; do
    for t in SET GET; do
        med() { awk -v s="$1" -v p="$p" -v t="$t" -v c="${2:-5}" '$1 == s && $2 == p && $3 == t { print $c }' "$results" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
        rd=$(med redis)
        fl=$(med floor)
        for s in $servers; do
            m=$(med "$s")
            c=$(med "$s" 8)
            awk -v p="$p" -v t="$t" -v s="$s" -v m="$m" -v rd="$rd" -v fl="$fl" -v c="$c" 'BEGIN { printf "| %s | %s | %s | %.0f | %.2fx | %.2fx | %.2f |\n", p, t, s, m, m / rd, m / fl, c }'
        done
    done
done
