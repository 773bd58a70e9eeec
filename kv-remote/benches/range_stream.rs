//! Keys per second moved between two nodes' transports by a range stream, on loopback, with
//! the in-process change's figure measured in the same run (`docs/membership.md` §3.4; issue
//! 23's goal: 500,000 keys/s between processes).
//!
//! `cargo bench -p kv-remote --bench range_stream` (or `-- 200000` for fewer keys;
//! `RANGE_STREAM_ROUNDS=5` for more alternated rounds, `RANGE_STREAM_IN_PROCESS=0` to skip
//! the in-process join). Node A
//! (a kv-node on a temp dir) holds N keys with 100-byte values; its `RangeStreamer` sends
//! them to node B's `ReplicaServer` + `RangeReceiver` (another kv-node), over a kv-net bulk
//! stream on 127.0.0.1. Measured: the whole ring; the ranges node A would lose to a fourth
//! node joining a,b,c (transfer_plan's, coalesced: tens of ranges); 500 small ranges covering a
//! quarter of the ring (the shape of a real join's task: one range per vnode); the whole
//! ring under a 200,000 keys/s limit. Then the in-process `Cluster::add_node` of a 3-node
//! cluster holding N keys (threads streaming through `Replica::export/import`).
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_cluster::{
    Cluster, ClusterOptions, LocalReplica, RateLimiter, Replica, StreamRate, Version, Write,
};
use kv_net::{Identity, Peers, PeersOptions, ServerOptions};
use kv_node::{Node, NodeOptions};
use kv_remote::*;
use kv_ring::{Ring, RingOptions, TokenRange, transfer_plan};

const CLUSTER: u128 = 0xbe7c;

fn node(dir: &std::path::Path, id: &str) -> Arc<LocalReplica> {
    let n = Node::open(dir, NodeOptions::new()).unwrap();
    Arc::new(LocalReplica::new(id.parse().unwrap(), Arc::new(n)))
}

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(b"key:0000");
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let value = [b'v'; 100];
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a"), "a");
    let started = Instant::now();
    let keys: Vec<[u8; 16]> = (0..n).map(key).collect();
    for chunk in keys.chunks(1000) {
        let writes: Vec<Write<'_>> = chunk
            .iter()
            .map(|k| Write {
                key: k,
                value: Some(&value),
                version: Version::new(1),
                expires: None,
            })
            .collect();
        a.apply_batch(0, &writes).unwrap();
    }
    a.sync().unwrap();
    println!(
        "range_stream: loaded {n} keys on A in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let ring = Ring::with_nodes(RingOptions::default(), ["a", "b", "c"]).unwrap();
    let grown = ring.add_node("d").unwrap();
    let plan = transfer_plan(&ring, &grown, 3).unwrap();
    let lost: Vec<TokenRange> = plan
        .transfers
        .iter()
        .filter(|t| t.from.as_str() == "a")
        .map(|t| t.range)
        .collect();

    // The shape of a real join's task (kv-meta's plan, one range per vnode the source loses
    // to the joiner): 500 small ranges, together a quarter of the ring, one every 1/500 of it.
    let stride = u64::MAX / 500;
    let plan_shape: Vec<TokenRange> = (0..500u64)
        .map(|i| {
            TokenRange::new(
                i * stride + stride / 3,
                i * stride + stride / 3 + stride / 4,
            )
        })
        .collect();

    let runs: [(&str, Vec<TokenRange>, StreamRate); 4] = [
        ("whole_ring", vec![TokenRange::FULL], StreamRate::UNLIMITED),
        ("plan_shape_500_ranges", plan_shape, StreamRate::UNLIMITED),
        ("join_ranges_of_a", lost.clone(), StreamRate::UNLIMITED),
        (
            "whole_ring_limited_200k",
            vec![TokenRange::FULL],
            StreamRate {
                keys_per_sec: Some(200_000),
                bytes_per_sec: None,
            },
        ),
    ];
    // Alternated rounds (the unlimited cases only; the limited one once), medians printed.
    let rounds: usize = std::env::var("RANGE_STREAM_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); runs.len()];
    let mut task_id = 0u64;
    for round in 0..rounds {
        for (i, (label, ranges, rate)) in runs.iter().enumerate() {
            if rate.keys_per_sec.is_some() && round > 0 {
                continue;
            }
            task_id += 1;
            let (rate_keys, cpu_us) = stream_once(&a, dir.path(), task_id, label, ranges, *rate);
            results[i].push((rate_keys, cpu_us));
        }
    }
    for (i, (label, _, _)) in runs.iter().enumerate() {
        let mut k: Vec<f64> = results[i].iter().map(|r| r.0).collect();
        let mut c: Vec<f64> = results[i].iter().map(|r| r.1).collect();
        println!(
            "range_stream/{label}/median of {}: {:.0} keys/s, {:.2} us CPU per key (both ends)",
            k.len(),
            median(&mut k),
            median(&mut c),
        );
    }

    if std::env::var("RANGE_STREAM_IN_PROCESS").is_ok_and(|v| v == "0") {
        return;
    }
    // The peer: the in-process change, same keys over a 3-node cluster, one node joins.
    let cdir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(cdir.path(), ClusterOptions::new()).unwrap();
    let batch: Vec<([u8; 16], [u8; 100])> = Vec::with_capacity(1000);
    let mut batch = batch;
    for k in &keys {
        batch.push((*k, value));
        if batch.len() == 1000 {
            cluster.put_many(&batch).unwrap();
            batch.clear();
        }
    }
    if !batch.is_empty() {
        cluster.put_many(&batch).unwrap();
    }
    let s = cluster.add_node("node4").unwrap();
    println!(
        "range_stream/in_process_join: {} records moved in {:.2} s, streaming {:.2} s: {:.0} \
         keys/s streaming",
        s.keys_moved,
        s.elapsed.as_secs_f64(),
        s.streaming.as_secs_f64(),
        s.keys_moved as f64 / s.streaming.as_secs_f64(),
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// This process's user + system CPU time so far, from `/proc/self/stat` (clock ticks of
/// 10 ms; the runs take seconds).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// One stream of `ranges` from A to a fresh node B; its keys/s and the process's CPU per key.
fn stream_once(
    a: &Arc<LocalReplica>,
    dir: &std::path::Path,
    task_id: u64,
    label: &str,
    ranges: &[TokenRange],
    rate: StreamRate,
) -> (f64, f64) {
    // A fresh destination each run: the import writes every key.
    let bdir = dir.join(format!("b{task_id}"));
    let b = node(&bdir, "b");
    let server =
        ReplicaServer::start(Identity::new(CLUSTER, "b"), ServerOptions::new(), b.clone()).unwrap();
    server.set_range_receiver(Some(Arc::new(RangeReceiver::new(
        b.clone(),
        |_: &StreamReport<'_>| {},
    ))));
    let peers: ReplicaPeers =
        Peers::start(Identity::new(CLUSTER, "a"), PeersOptions::new()).unwrap();
    peers.add_peer("b", server.local_addr()).unwrap();
    assert!(peers.wait_connected("b", Duration::from_secs(10)));
    let streamer = RangeStreamer::new(a.clone(), Arc::new(peers), Arc::new(RateLimiter::new(rate)));
    let task = StreamTask {
        header: StreamHeader {
            change: 1,
            task: task_id,
            term: 1,
            epoch: 0,
        },
        destination: "b".into(),
        ranges: ranges
            .iter()
            .map(|&range| StreamRange {
                range,
                done_through: None,
            })
            .collect(),
    };
    let cpu = cpu_time();
    let s = streamer.stream(&task).unwrap();
    let cpu = cpu_time() - cpu;
    let held = b.count_in_ranges(&[TokenRange::FULL]).unwrap().live;
    assert_eq!(held, s.keys, "B holds what was sent");
    let keys_per_sec = s.keys as f64 / s.elapsed.as_secs_f64();
    let cpu_us = cpu.as_secs_f64() * 1e6 / s.keys as f64;
    println!(
        "range_stream/{label}: {} keys ({} ranges, {} chunks, {} checkpoints) A -> B in \
         {:.2} s: {:.0} keys/s, {:.1} MB/s, {:.2} us CPU per key",
        s.keys,
        ranges.len(),
        s.chunks,
        s.checkpoints,
        s.elapsed.as_secs_f64(),
        keys_per_sec,
        s.bytes as f64 / s.elapsed.as_secs_f64() / 1e6,
        cpu_us,
    );
    drop((streamer, server, b));
    let _ = std::fs::remove_dir_all(&bdir);
    (keys_per_sec, cpu_us)
}
