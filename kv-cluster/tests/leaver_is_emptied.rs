//! A node that leaves drops everything it held: its directory is gone, and the count of keys
//! dropped is what it held.
#![allow(clippy::unwrap_used)]

mod common;

use kv_cluster::{Cluster, ClusterOptions};

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
        assert!(!dir.path().join("node4").exists());
        assert!(!dir.path().join("node4~removed").exists());
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["LOCK", "cluster.json", "node1", "node2", "node3"]);
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
