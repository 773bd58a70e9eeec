#!/usr/bin/env bash
# What an expiry costs a write through `kvstore serve`: `SET key value EX 3600` against a plain
# `SET key value` (the same 100-byte value, the same random keys), alternated in the same run,
# with Redis doing both as the peer.
#
#     redis-benchmark -n N -c 50 -r 100000 -P {1,16} SET key:__rand_int__ <100 bytes> [EX 3600]
#
# against `kvstore serve` (release build, the default 3-node RF 3 quorum cluster, periodic
# sync, a fresh data directory) and `redis-server --save "" --appendonly no`. Prints one row per
# run and, per server and pipeline depth, the median of SET EX against the median of SET.
# Goal (issue "Expiring keys"): SET with EX costs at most 10% more than SET.
#
# Usage: benches/set_ex_vs_set.sh [ROUNDS]    (default 3; REQUESTS=300000 PIPELINES="1 16")
# Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
requests=${REQUESTS:-300000}
pipelines=${PIPELINES:-1 16}
for tool in redis-server redis-benchmark python3; do
    command -v "$tool" >/dev/null || { echo "set_ex_vs_set: $tool not found" >&2; exit 1; }
done
if [[ -z "${KVSTORE:-}" ]]; then
    cargo build -q --release -p kv-cli
    KVSTORE=target/release/kvstore
fi

source benches/lib.sh
bench_init set_ex_vs_set
"$KVSTORE" serve --port 0 --data-dir "$work/kvstore" >"$work/kv.out" 2>"$work/kv.err" &
pids+=($!)
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" --daemonize no --logfile "$work/redis.log" &
pids+=($!)
kv_port=
for _ in $(seq 600); do
    if line=$(grep -m1 "ready to accept connections on" "$work/kv.out" "$work/kv.err" 2>/dev/null); then
        kv_port=${line##*:}
        break
    fi
    sleep 0.1
done
[[ -n "$kv_port" ]] || { echo "set_ex_vs_set: kvstore did not start" >&2; cat "$work/kv.err" >&2; exit 1; }
for _ in $(seq 600); do
    redis-benchmark -p "$redis_port" -n 1 -t ping -q >/dev/null 2>&1 && break
    sleep 0.1
done

value=$(printf 'v%.0s' $(seq 100))
results="$work/results"
: >"$results"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| server | -P | command | round | requests/s | p50 ms |"
echo "|---|---:|---|---:|---:|---:|"
for round in $(seq "$rounds"); do
    for p in $pipelines; do
        order="plain ex"
        (( round % 2 == 0 )) && order="ex plain"
        for server in kvstore redis; do
            port=$kv_port
            [[ $server == redis ]] && port=$redis_port
            for kind in $order; do
                extra=()
                [[ $kind == ex ]] && extra=(EX 3600)
                line=$(timeout 900 redis-benchmark -p "$port" -n "$requests" -c 50 -r 100000 \
                    -P "$p" --csv SET 'key:__rand_int__' "$value" "${extra[@]}" | tail -1 | tr -d '"')
                rps=$(echo "$line" | cut -d, -f2)
                p50=$(echo "$line" | cut -d, -f6)
                echo "| $server | $p | SET${extra[*]:+ EX} | $round | $rps | $p50 |"
                echo "$server $p $kind $rps" >>"$results"
            done
        done
    done
done
echo
echo "| server | -P | SET median/s | SET EX median/s | SET EX / SET |"
echo "|---|---:|---:|---:|---:|"
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for server in ("kvstore", "redis"):
    for p in sorted({r[1] for r in rows}, key=int):
        med = lambda k: statistics.median(float(r[3]) for r in rows if r[0] == server and r[1] == p and r[2] == k)
        plain, ex = med("plain"), med("ex")
        print(f"| {server} | {p} | {plain:,.0f} | {ex:,.0f} | {ex / plain:.2f}x |")
PY
