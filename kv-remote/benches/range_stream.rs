//! Keys per second moved between two nodes' transports by a range stream, on loopback, with
//! the in-process change's figure measured in the same run (`docs/membership.md` §3.4; issue
//! 23's goal: 500,000 keys/s between processes).
//!
//! `cargo bench -p kv-remote --bench range_stream` (or `-- 200000` for fewer keys). Node A
//! (a kv-node on a temp dir) holds N keys with 100-byte values; its `RangeStreamer` sends
//! them to node B's `ReplicaServer` + `RangeReceiver` (another kv-node), over a kv-net bulk
//! stream on 127.0.0.1. Measured: the whole ring; the ranges node A would lose to a fourth
//! node joining a,b,c (hundreds of vnode ranges: one checkpoint per range end); the whole
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

    let runs: [(&str, Vec<TokenRange>, StreamRate); 3] = [
        ("whole_ring", vec![TokenRange::FULL], StreamRate::UNLIMITED),
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
    for (i, (label, ranges, rate)) in runs.into_iter().enumerate() {
        // A fresh destination each run: the import writes every key.
        let b = node(&dir.path().join(format!("b{i}")), "b");
        let server =
            ReplicaServer::start(Identity::new(CLUSTER, "b"), ServerOptions::new(), b.clone())
                .unwrap();
        server.set_range_receiver(Some(Arc::new(RangeReceiver::new(
            b.clone(),
            |_: &StreamReport<'_>| {},
        ))));
        let peers: ReplicaPeers =
            Peers::start(Identity::new(CLUSTER, "a"), PeersOptions::new()).unwrap();
        peers.add_peer("b", server.local_addr()).unwrap();
        assert!(peers.wait_connected("b", Duration::from_secs(10)));
        let streamer =
            RangeStreamer::new(a.clone(), Arc::new(peers), Arc::new(RateLimiter::new(rate)));
        let task = StreamTask {
            header: StreamHeader {
                change: 1,
                task: i as u64,
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
        let s = streamer.stream(&task).unwrap();
        let held = b.count_in_ranges(&[TokenRange::FULL]).unwrap().live;
        assert_eq!(held, s.keys, "B holds what was sent");
        println!(
            "range_stream/{label}: {} keys ({} ranges, {} chunks, {} checkpoints) A -> B in \
             {:.2} s: {:.0} keys/s, {:.1} MB/s",
            s.keys,
            ranges.len(),
            s.chunks,
            s.checkpoints,
            s.elapsed.as_secs_f64(),
            s.keys as f64 / s.elapsed.as_secs_f64(),
            s.bytes as f64 / s.elapsed.as_secs_f64() / 1e6,
        );
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
