//! A node that leaves drops everything it held: nothing of the cluster stays in its directory.
#![allow(clippy::unwrap_used)]

mod common;

use kv_cluster::{Cluster, ClusterOptions, LocalReplica, NodeOptions, Replica};
use kv_ring::TokenRange;

/// `KV_CLUSTER_TEST_KEYS` keys (default 50,000).
fn keys() -> u64 {
    std::env::var("KV_CLUSTER_TEST_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000)
}

fn leave(opts: ClusterOptions, disk: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..keys())
        .map(|i| (common::key(i), vec![7u8; 100]))
        .collect();
    for chunk in pairs.chunks(1000) {
        cluster.put_many(chunk).unwrap();
    }
    let added = cluster.add_node("node4").unwrap();
    assert_eq!(added.keys_dropped, added.keys_moved);
    let removed = cluster.remove_node("node4").unwrap();
    assert_eq!(removed.keys_moved, added.keys_moved);
    assert_eq!(removed.keys_dropped, removed.keys_moved, "{removed:?}");
    drop(cluster);
    if disk {
        let node4 =
            LocalReplica::open("node4", dir.path().join("node4"), NodeOptions::new()).unwrap();
        let left = node4.count_in_ranges(&[TokenRange::FULL]).unwrap();
        assert_eq!((left.live, left.tombstones), (0, 0));
    }
}

#[test]
fn in_memory() {
    leave(common::memory_opts(), false);
}

#[test]
fn on_disk() {
    leave(common::disk_opts(), true);
}

#[test]
fn on_disk_default_node_options() {
    leave(ClusterOptions::new(), true);
}
