//! `kv-cluster` benchmarks: a 3-node cluster with replication factor 3, storage nodes on disk
//! (`kv_node::Node`, default options: `Periodic(1 s)` sync), all in this process.
//!
//! - `cluster/put` and `cluster/get`: 100 B values over 100,000 preloaded keys, at consistency
//!   `one` and `quorum`, from 1 and 2 client threads (aggregate operations/s). A put writes all
//!   three replicas either way (in-process fan-out is sequential); the level decides how many
//!   must succeed. A get reads `R` replicas.
//! - `cluster/put_many32` and `cluster/get_many32` (quorum only): the batch forms, 32 keys per
//!   call; throughput counts keys. `get_many` asks each replica once for all of its keys.
//! - `cluster/redistribution/add_node` and `.../remove_node`: adding a 4th node to 3 nodes
//!   holding `KV_CLUSTER_BENCH_KEYS` keys (default 1,000,000), and removing it again, each
//!   timed on its own (the other change runs untimed in between); throughput is records moved
//!   per second (about 3/4 of the keys move each way). The first change after the load, which
//!   competes with the nodes' background work on the freshly written logs (hint files), is
//!   printed apart.
//! - `cluster/floor_put` and `cluster/floor_get`: the node-level floor of a quorum put and get,
//!   measured in the same run: three standalone `kv_node::Node`s with the same options and
//!   preload, and per operation what the coordinator asks of them (`apply` on all three for a
//!   put, `get_versioned` on two for a get), with no coordinator in between. A cluster
//!   operation can be no faster than its floor; the gap is the coordinator's own cost.
//! - Printed, not timed by criterion: foreground `get` latency (quorum, one client thread,
//!   p50/p99/p99.9) with no redistribution, during an unthrottled one, and during one limited
//!   to 200,000 keys/s.
//!
//! Data lives in a temporary directory under `KV_CLUSTER_BENCH_DIR` (default: the system temp
//! dir). `KV_CLUSTER_BENCH_ONLY=ops` (or `redistribution`) runs only that half, setup
//! included (criterion's filter skips the timing, not the setup).
//! Run: `cargo bench -p benches --bench cluster`.

use std::path::PathBuf;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use hdrhistogram::Histogram;
use kv_cluster::{ChangeSummary, Cluster, ClusterOptions, Consistency, RateLimit};
use kv_node::{Hlc, Node, NodeOptions};

const PRELOAD: u64 = 100_000;
const VALUE: [u8; 100] = [0x5a; 100];
/// Keys per call in the batch rows.
const BATCH: u64 = 32;

fn in_test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

fn tempdir() -> tempfile::TempDir {
    let root = std::env::var_os("KV_CLUSTER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::tempdir_in(root).expect("temporary directory for the cluster benchmark")
}

/// `key:` and `i` in 12 decimal digits (written by hand: `format!` allocates, 2-3% of a cluster
/// put's samples).
fn key(i: u64) -> [u8; 16] {
    let mut k = *b"key:000000000000";
    let mut n = i % 1_000_000_000_000;
    for d in k[4..].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

/// A cheap, well-spread sequence of key indices (an odd-multiplier permutation).
fn pick(i: u64, n: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) % n
}

fn open(dir: &std::path::Path, c: Consistency) -> Cluster {
    Cluster::open(dir, ClusterOptions::new().consistency(c)).expect("open cluster")
}

fn load(cluster: &Cluster, n: u64) {
    let mut batch: Vec<([u8; 16], [u8; 100])> = Vec::with_capacity(1000);
    for i in 0..n {
        batch.push((key(i), VALUE));
        if batch.len() == 1000 {
            cluster.put_many(&batch).expect("load");
            batch.clear();
        }
    }
    if !batch.is_empty() {
        cluster.put_many(&batch).expect("load");
    }
}

/// Runs `iters` operations split over `threads` threads; returns the wall time.
fn run(threads: u64, iters: u64, op: impl Fn(u64) + Sync) -> Duration {
    let barrier = Barrier::new(threads as usize + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (barrier, op) = (&barrier, &op);
            s.spawn(move || {
                barrier.wait();
                let mut i = t;
                while i < iters {
                    op(i);
                    i += threads;
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        // The scope joins every thread before returning.
        start
    })
    .elapsed()
}

fn ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("cluster");
    g.throughput(Throughput::Elements(1));
    for consistency in [Consistency::One, Consistency::Quorum] {
        let dir = tempdir();
        let cluster = open(dir.path(), consistency);
        load(&cluster, PRELOAD);
        for threads in [1u64, 2] {
            let name = format!("{consistency}/{threads}t");
            g.bench_function(BenchmarkId::new("put", &name), |b| {
                b.iter_custom(|iters| {
                    run(threads, iters, |i| {
                        cluster.put(&key(pick(i, PRELOAD)), &VALUE).expect("put");
                    })
                })
            });
            g.bench_function(BenchmarkId::new("get", &name), |b| {
                b.iter_custom(|iters| {
                    run(threads, iters, |i| {
                        let v = cluster.get(&key(pick(i, PRELOAD))).expect("get");
                        std::hint::black_box(v);
                    })
                })
            });
            if consistency != Consistency::Quorum {
                continue;
            }
            // Batches: throughput counts keys, as above.
            g.throughput(Throughput::Elements(BATCH));
            g.bench_function(BenchmarkId::new("put_many32", &name), |b| {
                b.iter_custom(|iters| {
                    run(threads, iters, |i| {
                        let batch: Vec<([u8; 16], [u8; 100])> = (0..BATCH)
                            .map(|j| (key(pick(i * BATCH + j, PRELOAD)), VALUE))
                            .collect();
                        cluster.put_many(&batch).expect("put_many");
                    })
                })
            });
            g.bench_function(BenchmarkId::new("get_many32", &name), |b| {
                b.iter_custom(|iters| {
                    run(threads, iters, |i| {
                        let keys: Vec<[u8; 16]> = (0..BATCH)
                            .map(|j| key(pick(i * BATCH + j, PRELOAD)))
                            .collect();
                        std::hint::black_box(cluster.get_many(&keys).expect("get_many"));
                    })
                })
            });
            g.throughput(Throughput::Elements(1));
        }
    }
    g.finish();
}

/// The node-level floor: what a quorum put and get ask of the storage nodes, without a
/// coordinator (see the module docs).
fn floor(c: &mut Criterion) {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempdir()).collect();
    let nodes: Vec<Node> = dirs
        .iter()
        .map(|d| Node::open(d.path(), NodeOptions::new()).expect("open node"))
        .collect();
    let hlc = Hlc::new();
    for i in 0..PRELOAD {
        let version = hlc.now();
        for n in &nodes {
            n.apply(&key(i), Some(&VALUE), version).expect("load");
        }
    }
    let mut g = c.benchmark_group("cluster");
    g.throughput(Throughput::Elements(1));
    for threads in [1u64, 2] {
        let name = format!("{threads}t");
        g.bench_function(BenchmarkId::new("floor_put", &name), |b| {
            b.iter_custom(|iters| {
                run(threads, iters, |i| {
                    let (k, version) = (key(pick(i, PRELOAD)), hlc.now());
                    for n in &nodes {
                        n.apply(&k, Some(&VALUE), version).expect("apply");
                    }
                })
            })
        });
        g.bench_function(BenchmarkId::new("floor_get", &name), |b| {
            b.iter_custom(|iters| {
                run(threads, iters, |i| {
                    let k = key(pick(i, PRELOAD));
                    for n in &nodes[..2] {
                        std::hint::black_box(n.get_versioned(&k).expect("get"));
                    }
                })
            })
        });
    }
    g.finish();
}

fn redistribution_keys() -> u64 {
    if in_test_mode() {
        return 10_000;
    }
    std::env::var("KV_CLUSTER_BENCH_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

/// Adds node4 if it is absent, removes it otherwise.
fn flip_summary(cluster: &Cluster) -> ChangeSummary {
    if cluster.ring().contains("node4") {
        cluster.remove_node("node4")
    } else {
        cluster.add_node("node4")
    }
    .expect("membership change")
}

/// [`flip_summary`]: records moved and time taken.
fn flip(cluster: &Cluster) -> (u64, Duration) {
    let summary = flip_summary(cluster);
    (summary.keys_moved, summary.elapsed)
}

/// Quorum gets from one thread until `stop`, with their latencies.
fn get_latencies(cluster: &Cluster, n: u64, stop: &AtomicBool, at_least: u64) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram");
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) || i < at_least {
        let start = Instant::now();
        let v = cluster.get(&key(pick(i, n))).expect("get");
        std::hint::black_box(v);
        h.saturating_record(start.elapsed().as_nanos() as u64);
        i += 1;
    }
    h
}

fn describe(label: &str, h: &Histogram<u64>) {
    println!(
        "cluster/foreground_get/{label}: {} gets, p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3,
    );
}

fn foreground_latency(dir: &std::path::Path, cluster: Cluster, n: u64) -> Cluster {
    let idle = AtomicBool::new(true);
    describe(
        "no_redistribution",
        &get_latencies(&cluster, n, &idle, 200_000),
    );
    drop(cluster);
    for limit in [None, Some(RateLimit::KeysPerSec(200_000))] {
        let opts = ClusterOptions::new().rate_limit(limit);
        let cluster = Cluster::open(dir, opts).expect("reopen");
        let stop = AtomicBool::new(false);
        let (h, moved) = std::thread::scope(|s| {
            let client = s.spawn(|| get_latencies(&cluster, n, &stop, 0));
            let (moved, took) = flip(&cluster);
            stop.store(true, Ordering::Relaxed);
            (client.join().expect("client"), (moved, took))
        });
        let label = match limit {
            None => "during_redistribution".to_string(),
            Some(_) => "during_redistribution_200k_keys_per_s".to_string(),
        };
        describe(&label, &h);
        println!(
            "cluster/foreground_get/{label}: the change moved {} records in {:.2} s ({:.0} keys/s)",
            moved.0,
            moved.1.as_secs_f64(),
            moved.0 as f64 / moved.1.as_secs_f64()
        );
        drop(cluster);
    }
    Cluster::open(dir, ClusterOptions::new()).expect("reopen")
}

fn redistribution(c: &mut Criterion) {
    let n = redistribution_keys();
    let dir = tempdir();
    let cluster = open(dir.path(), Consistency::Quorum);
    let start = Instant::now();
    load(&cluster, n);
    println!(
        "cluster/redistribution: loaded {n} keys in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // Changes to learn how much moves (and to warm the page cache for both directions).
    let mut moved = 0;
    for _ in 0..2 {
        let s = flip_summary(&cluster);
        moved = s.keys_moved;
        println!(
            "cluster/redistribution: {} {} moved {} records in {:.2} s ({:.0} keys/s): \
             streaming {:.2} s ({:.0} keys/s), cleanup {:.2} s ({} dropped)",
            s.kind,
            s.node,
            s.keys_moved,
            s.elapsed.as_secs_f64(),
            s.keys_moved as f64 / s.elapsed.as_secs_f64(),
            s.streaming.as_secs_f64(),
            s.keys_moved as f64 / s.streaming.as_secs_f64(),
            s.cleanup.as_secs_f64(),
            s.keys_dropped,
        );
    }
    let cluster = if in_test_mode() {
        cluster
    } else {
        foreground_latency(dir.path(), cluster, n)
    };

    let mut g = c.benchmark_group("cluster");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(moved));
    // Each kind timed on its own: a join imports into an empty node (its index and log grow
    // from nothing), a leave into nodes that hold the rest; the other change runs untimed
    // in between.
    for (kind, joining) in [("add_node", true), ("remove_node", false)] {
        g.bench_function(
            BenchmarkId::new(format!("redistribution/{kind}"), format!("{n}_keys")),
            |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            if cluster.ring().contains("node4") == joining {
                                flip(&cluster);
                            }
                            flip(&cluster).1
                        })
                        .sum()
                })
            },
        );
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let only = std::env::var("KV_CLUSTER_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "ops" {
        ops(&mut c);
        floor(&mut c);
    }
    if only.is_empty() || only == "redistribution" {
        redistribution(&mut c);
    }
    c.final_summary();
}
