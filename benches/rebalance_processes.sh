#!/usr/bin/env bash
# Rebalancing between processes (issue 23): a node joins three `kvstore serve` processes
# (RF 3, `--threads 1` each) holding KEYS keys of 100 bytes, on loopback; how fast the keys
# move, and what a fixed-rate foreground load sees meanwhile, with and without the stream
# rate limit.
#
# Each run starts a fresh cluster (n1..n3), loads key:0..key:KEYS-1 with pipelined SETs
# (benches/src/bin/rebalance_load.rs: exactly KEYS distinct keys), starts n4 with --join,
# and then:
#   idle    the foreground load alone for IDLE seconds: FG_RATE ops/s (half GET, half SET of
#           loaded keys; 4 connections over n1..n3; latency from each request's scheduled
#           time, so a stall counts) -> p50, p99;
#   change  the same load while `KVSTORE ADDNODE n4` runs to its end; `KVSTORE CHANGE` is
#           polled every 10 ms: keys copied / seconds of streaming (from the first poll at
#           `step:streaming` to the last poll that saw `keys_copied` grow) -> keys/s, p50, p99.
# A `limited` run commits `KVSTORE CHANGE RATE $RATE` (keys/s per source process) first.
# Runs alternate unlimited/limited, ROUNDS rounds. At most four servers at once; all are
# killed on exit (trap).
#
# Usage: benches/rebalance_processes.sh [ROUNDS]      (default 2)
#        KEYS=1000000 RATE=3000 FG_RATE=2000 IDLE=10 SETTLE=5 KVSTORE=target/release/kvstore \
#        LOADER=target/release/rebalance_load benches/rebalance_processes.sh 3
# MODES="unlimited": only those runs each round (default: both, alternated).
# PERF_DIR=dir: `perf record -g` of the four servers during each unlimited change, into dir.
# Needs redis-cli and python3 (and perf for PERF_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-2}
keys=${KEYS:-1000000}
# 3,000 keys/s per source (9,000 in all, 1/20 of an unlimited change here): the highest rate
# tried whose foreground p99 came near 2x idle's (2.5x on 2026-12-07 02:47; 10,000 gave 20x).
rate=${RATE:-3000}
fg_rate=${FG_RATE:-2000}
idle=${IDLE:-10}
settle=${SETTLE:-5}
for tool in redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "rebalance_processes: $tool not found" >&2; exit 1; }
done
target=${CARGO_TARGET_DIR:-target}
if [[ -z "${KVSTORE:-}" ]]; then
    cargo build -q --release -p kv-cli
    KVSTORE=$target/release/kvstore
fi
if [[ -z "${LOADER:-}" ]]; then
    cargo build -q --release -p benches --bin rebalance_load
    LOADER=$target/release/rebalance_load
fi

source benches/lib.sh
bench_init rebalance_processes

wait_for() { # what command...
    local what=$1
    shift
    for _ in $(seq 1200); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "rebalance_processes: not within 120 s: $what" >&2
    exit 1
}

fg() { # stop-file
    "$LOADER" fg --ports "$fg_ports" --keys "$keys" --rate "$fg_rate" --stop-file "$1"
}

# Each server's CPU time so far (user + system), in clock ticks, n1..n4.
ticks() {
    local p
    for p in "${pids[@]}"; do
        awk '{ printf "%d ", $14 + $15 }' "/proc/$p/stat"
    done
}

results="$work/results"
: >"$results"
run() { # mode round
    local mode=$1 dir="$work/$1$2" ports=() peers i port4 idle_out stop
    mkdir -p "$dir"
    for i in 1 2 3; do ports+=("$(free_pair)"); done
    peers="n1@127.0.0.1:${ports[0]},n2@127.0.0.1:${ports[1]},n3@127.0.0.1:${ports[2]}"
    for i in 1 2 3; do
        "$KVSTORE" serve --node-id "n$i" --port "${ports[$((i - 1))]}" --peers "$peers" \
            --threads 1 --data-dir "$dir/n$i" >"$dir/n$i.out" 2>"$dir/n$i.err" &
        pids+=($!)
    done
    for i in 0 1 2; do
        wait_for "n$((i + 1)) serves" bash -c "[[ \$(redis-cli -p ${ports[$i]} set ready 1) == OK ]]"
    done
    fg_ports="${ports[0]},${ports[1]},${ports[2]}"
    "$LOADER" load --ports "$fg_ports" --keys "$keys" >"$dir/load.out"
    port4=$(free_pair)
    "$KVSTORE" serve --node-id n4 --port "$port4" --join "n1@127.0.0.1:${ports[0]}" \
        --threads 1 --data-dir "$dir/n4" >"$dir/n4.out" 2>"$dir/n4.err" &
    pids+=($!)
    wait_for "n4 registered" bash -c \
        "redis-cli -p ${ports[0]} kvstore meta | grep -q 'n4=registered'"
    if [[ $mode == limited ]]; then
        redis-cli -p "${ports[1]}" kvstore change rate "$rate" >/dev/null
        wait_for "rate committed" bash -c \
            "redis-cli -p ${ports[0]} kvstore change | grep -q 'stream_rate_from:committed'"
    fi
    # Let the load's writes settle (WAL flushes, memtables) so the idle figure is idle.
    sleep "$settle"
    stop="$dir/stop-idle"
    (sleep "$idle"; touch "$stop") &
    idle_out=$(fg "$stop")
    stop="$dir/stop-change"
    fg "$stop" >"$dir/fg-change.out" &
    local fgpid=$!
    local added perf_pid=
    if [[ -n ${PERF_DIR:-} && $mode == unlimited ]]; then
        mkdir -p "$PERF_DIR"
        perf record -q -F 499 -g -p "$(IFS=,; echo "${pids[*]}")" -o "$PERF_DIR/$mode$2.data" \
            2>/dev/null &
        perf_pid=$!
    fi
    local t0 t1
    t0=$(ticks)
    added=$("$LOADER" add --port "${ports[2]}" --node n4)
    t1=$(ticks)
    [[ -n $perf_pid ]] && { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
    touch "$stop"
    wait "$fgpid"
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    # One row: mode round keys stream_s step_s total_s idle(p50 p99 errors)
    # change(p50 p99 errors) load-average loaded-keys/s servers'-CPU-s-during-the-change
    local a i c
    read -ra a <<<"$added"
    read -ra i <<<"$idle_out"
    read -ra c <"$dir/fg-change.out"
    echo "$mode $2 ${a[0]} ${a[1]} ${a[2]} ${a[3]} ${i[2]} ${i[3]} ${i[1]} ${c[2]} ${c[3]} ${c[1]}" \
        "$load $(awk '{ print $7 }' "$dir/load.out" | tr -d '(')" \
        "$(echo "$t0 $t1" | awk -v hz="$(getconf CLK_TCK)" '{ n = NF / 2; for (i = 1; i <= n; i++) { d = ($(i + n) - $i) / hz; s += d; o = o sprintf("%s%.1f", i > 1 ? "/" : "", d) } print s, o }')" >>"$results"
    tail -1 "$results" >&2
    stop_all
    rm -rf "$dir"
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $keys keys of 100 B on n1..n3 (RF 3, --threads 1), n4 joins; foreground $fg_rate ops/s (GET/SET, 4 connections); limited: KVSTORE CHANGE RATE $rate (keys/s per source); $rounds rounds"
for r in $(seq "$rounds"); do
    if ((r % 2)); then order="unlimited limited"; else order="limited unlimited"; fi
    # MODES=unlimited: the unlimited change only (a limited one takes minutes).
    [[ -n ${MODES:-} ]] && order=$MODES
    for m in $order; do
        run "$m" "$r"
    done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| run | keys copied | streaming s | keys/s | servers' CPU µs/key | CPU s n1/n2/n3/n4 | idle p50/p99 ms | during p50/p99 ms | p99 / idle | errors | load |"
echo "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
awk '{ printf "| %s %s | %d | %.2f | %.0f | %.1f | %s | %.2f / %.2f | %.2f / %.2f | %.1fx | %d | %s |\n",
        $1, $2, $3, $4, $3 / $4, $15 * 1e6 / $3, $16, $7 / 1000, $8 / 1000, $10 / 1000, $11 / 1000, $11 / $8, $9 + $12, $13 }' "$results"
