#!/usr/bin/env bash
# A cluster of three `kvstore serve` processes (RF 3, quorum, periodic sync, each node on its
# own data directory) side by side with Redis and two replicas, under redis-benchmark, in the
# same run.
#
#   kvstore  three `kvstore serve --node-id nI --peers ...` on loopback; the benchmark talks to
#            n1, which coordinates every request (writes wait for 2 of 3 replicas, reads ask 2);
#   redis    `redis-server --save "" --appendonly no` plus two `redis-server --replicaof` it
#            (Redis's replication is asynchronous: a write is acknowledged by the master alone).
#
# The two clusters never run at the same time (at most three servers at once): each round
# starts one, runs
#     redis-benchmark -t set|get -n 300000 -c 50 -d 100 -r 100000 -P {1,16} --csv
# against it, stops it, then does the same with the other; the order alternates round after
# round. Prints one row per run (requests per second, p50 and p99 latency, the CPU time of all
# three server processes per request) and the medians against Redis's.
#
# Usage: benches/cluster_vs_redis.sh [ROUNDS]     (default 3)
#        KVSTORE=path/to/kvstore REQUESTS=100000 PIPELINES="1" THREADS=2 benches/cluster_vs_redis.sh 2
# (THREADS: `--threads` of each kvstore node, default 1.)
# Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
requests=${REQUESTS:-300000}
pipelines=${PIPELINES:-1 16}
# Threads per kvstore node: three nodes share this machine's cores, as Redis's three
# single-threaded processes do.
threads=${THREADS:-1}
for tool in redis-server redis-benchmark redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "cluster_vs_redis: $tool not found" >&2; exit 1; }
done
if [[ -z "${KVSTORE:-}" ]]; then
    cargo build -q --release -p kv-cli
    KVSTORE=target/release/kvstore
fi

source benches/lib.sh
bench_init cluster_vs_redis

start_kvstore() { # round
    local dir="$work/kv$1" ports=() peers i
    for i in 1 2 3; do ports+=("$(free_pair)"); done
    peers="n1@127.0.0.1:${ports[0]},n2@127.0.0.1:${ports[1]},n3@127.0.0.1:${ports[2]}"
    for i in 1 2 3; do
        "$KVSTORE" serve --node-id "n$i" --port "${ports[$((i - 1))]}" --peers "$peers" \
            --threads "$threads" --data-dir "$dir/n$i" >"$dir.n$i.out" 2>"$dir.n$i.err" &
        pids+=($!)
    done
    for i in 0 1 2; do wait_ping "${ports[$i]}"; done
    # Ready once a write through n1 reaches its quorum (the nodes have connected).
    for _ in $(seq 600); do
        [[ $(redis-cli -p "${ports[0]}" set ready 1 2>/dev/null) == OK ]] && break
        sleep 0.1
    done
    port=${ports[0]}
}

start_redis() { # round
    local dir="$work/redis$1" master r1 r2
    mkdir -p "$dir"
    master=$(free_pair)
    redis-server --port "$master" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
        --daemonize no --logfile "$dir/master.log" &
    pids+=($!)
    wait_ping "$master"
    for r in 1 2; do
        local p
        p=$(free_pair)
        redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
            --daemonize no --logfile "$dir/replica$r.log" --replicaof 127.0.0.1 "$master" &
        pids+=($!)
        wait_ping "$p"
    done
    # Ready once both replicas are in sync.
    for _ in $(seq 600); do
        [[ $(redis-cli -p "$master" info replication | grep -c 'state=online') == 2 ]] && break
        sleep 0.1
    done
    port=$master
}

results="$work/results"
: >"$results"
run() { # server round pipeline
    local out="$work/bench.csv" t before after
    for t in set get; do
        before=$(cpu_ticks "${pids[@]}")
        if ! timeout 900 redis-benchmark -p "$port" -t "$t" -n "$requests" -c 50 -d 100 \
            -r 100000 -P "$3" --csv >"$out" 2>"$work/bench.err"; then
            cat "$work/bench.err" "$out" >&2
            echo "cluster_vs_redis: redis-benchmark against $1 failed" >&2
            exit 1
        fi
        after=$(cpu_ticks "${pids[@]}")
        tr -d '"' <"$out" | awk -F, -v s="$1" -v p="$3" -v r="$2" -v n="$requests" \
            -v cpu="$((after - before))" -v hz="$(getconf CLK_TCK)" \
            '$1 == "SET" || $1 == "GET" { printf "%s %s %s %s %s %s %s %.2f\n", s, p, $1, r, $2, $5, $7, cpu * 1e6 / hz / n }' >>"$results"
    done
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(redis-server --version | cut -d' ' -f1-3)"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# redis-benchmark -t set,get -n $requests -c 50 -d 100 -r 100000 -P {${pipelines// /,}}; $rounds rounds"
for r in $(seq "$rounds"); do
    if ((r % 2)); then order="kvstore redis"; else order="redis kvstore"; fi
    for s in $order; do
        "start_$s" "$r"
        for p in $pipelines; do run "$s" "$r" "$p"; done
        stop_all
    done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| server | -P | test | round | requests/s | p50 ms | p99 ms | servers' CPU µs/request |"
echo "|---|---:|---|---:|---:|---:|---:|---:|"
sort -k2,2n -k3,3r -k1,1 -k4,4n "$results" | awk '{ printf "| %s | %s | %s | %s | %.0f | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
echo
echo "| -P | test | server | median/s | / Redis | median p50 ms | median p99 ms |"
echo "|---:|---|---|---:|---:|---:|---:|"
for p in $pipelines; do
    for t in SET GET; do
        med() { awk -v s="$1" -v p="$p" -v t="$t" -v c="${2:-5}" '$1 == s && $2 == p && $3 == t { print $c }' "$results" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
        rd=$(med redis)
        for s in kvstore redis; do
            awk -v p="$p" -v t="$t" -v s="$s" -v m="$(med "$s")" -v rd="$rd" -v p50="$(med "$s" 6)" -v p99="$(med "$s" 7)" \
                'BEGIN { printf "| %s | %s | %s | %.0f | %.2fx | %s | %s |\n", p, t, s, m, m / rd, p50, p99 }'
        done
    done
done
