//! Removing a dead node (Cassandra's `nodetool removenode`): its ranges are streamed from
//! the surviving replicas instead of from it, and every key ends with `rf` replicas holding
//! its last acknowledged version.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::faulty::FaultyBackend;
use kv_cluster::{Cluster, ClusterOptions, Health, NodeState};
use kv_ring::token;

const KEYS: u64 = 600;

fn four_nodes(opts: ClusterOptions) -> ClusterOptions {
    opts.vnodes(16)
        .transfer_batch(64)
        .initial_nodes(["node1", "node2", "node3", "node4"])
}

/// Writes every key, then overwrites a third and deletes a third, all acknowledged.
fn load(cluster: &Cluster, model: &common::Model) {
    for i in 0..KEYS {
        let k = common::key(i);
        let v = cluster.put(&k, b"first").unwrap();
        model.acked(&k, Some(b"first"), v);
    }
    for i in (0..KEYS).filter(|i| i % 3 == 1) {
        let k = common::key(i);
        let v = cluster.put(&k, b"second").unwrap();
        model.acked(&k, Some(b"second"), v);
    }
    for i in (0..KEYS).filter(|i| i % 3 == 2) {
        let k = common::key(i);
        let v = cluster.delete(&k).unwrap();
        model.acked(&k, None, v);
    }
}

fn gone(cluster: &Cluster, dir: &std::path::Path, id: &str) {
    assert_eq!(cluster.health(id), None);
    assert!(!dir.join(id).exists(), "{id}'s directory is left");
    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 3);
    assert!(
        nodes
            .iter()
            .all(|n| n.state == NodeState::Member && n.health == Health::Up)
    );
}

#[test]
fn a_crashed_node_is_removed_from_the_surviving_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), four_nodes(common::disk_opts())).unwrap();
    let model = common::Model::default();
    load(&cluster, &model);
    cluster.crash_node("node2").unwrap();
    // Writes while it is down leave hints for it on the others.
    for i in 0..KEYS / 2 {
        let k = common::key(i);
        let v = cluster.put(&k, b"while down").unwrap();
        model.acked(&k, Some(b"while down"), v);
    }
    assert!(hints_for(dir.path(), "node2") > 0);
    let summary = cluster.remove_node("node2").unwrap();
    assert!(summary.keys_moved > 0);
    gone(&cluster, dir.path(), "node2");
    // Hints for a removed dead node go with it at once, not at the next open: a node added
    // later under the same id must not receive them.
    assert_eq!(hints_for(dir.path(), "node2"), 0);
    common::check(&cluster, &model);
}

/// Hint stores held anywhere for `target`.
fn hints_for(dir: &std::path::Path, target: &str) -> usize {
    ["node1", "node2", "node3", "node4"]
        .iter()
        .filter(|h| dir.join(h).join("hints").join(target).exists())
        .count()
}

#[test]
fn a_failed_node_is_removed_while_clients_write() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), four_nodes(common::disk_opts())).unwrap();
    let model = common::Model::default();
    load(&cluster, &model);
    // Cut off, not crashed: its handle is parked, open, until it is removed.
    cluster.fail_node("node3").unwrap();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..2 * KEYS {
                let k = common::key(i % KEYS);
                let v = cluster.put(&k, b"during").unwrap();
                model.acked(&k, Some(b"during"), v);
            }
        });
        cluster.remove_node("node3").unwrap();
        writer.join().unwrap();
    });
    gone(&cluster, dir.path(), "node3");
    common::check(&cluster, &model);
}

/// A down leaver's ranges are copied from every surviving replica (newest wins), not from the
/// first one only: if that one missed the last write of a key (a failed replica write, before
/// any repair), the new replica would get the stale version too, and a quorum read of those
/// two would return it: an acknowledged write lost.
#[test]
fn a_stale_survivor_does_not_make_the_new_replica_stale() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let cluster = Cluster::open(
        dir.path(),
        four_nodes(ClusterOptions::new().backend(backend.clone())),
    )
    .unwrap();
    let model = common::Model::default();
    load(&cluster, &model);
    // node3 misses the last write of every key (no hint: not a known-down node).
    backend.faults.down.lock().push("node3".into());
    for i in 0..KEYS {
        let k = common::key(i);
        let v = cluster.put(&k, b"last").unwrap();
        model.acked(&k, Some(b"last"), v);
    }
    backend.faults.down.lock().clear();
    cluster.crash_node("node1").unwrap();
    cluster.remove_node("node1").unwrap();
    // Without a repair: every key has a quorum of replicas at its last acknowledged version,
    // so every quorum read sees it whichever replicas answer (copying from the first survivor
    // only leaves about 100 keys with one: node3 and the new replica both stale).
    let quorum = 2;
    for (key, (version, value)) in model.snapshot() {
        let p = cluster.placement_of(&key).unwrap();
        let latest = p.held.iter().filter(|(_, _, v)| *v == version).count();
        assert!(latest >= quorum, "{key:?}: {:?}", p.held);
        assert_eq!(
            cluster.get(&key).unwrap().map(|b| b.to_vec()),
            value,
            "{key:?}"
        );
    }
    // And after one, every replica agrees.
    cluster.repair().unwrap();
    common::check(&cluster, &model);
}

/// Two replicas of some keys down, one of them being removed: the keys' last writes may be
/// on the two down nodes only (their third replica missed them), so the copy of the removed
/// node's ranges waits for the other down one rather than completing from the one live
/// survivor. A reopen (every node routed up again, none repaired) then completes the
/// removal, and removing the second node once it is down again loses nothing either.
#[test]
fn removing_a_dead_node_waits_while_another_replica_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let opts = common::memory_opts()
        .backend(backend.clone())
        .vnodes(16)
        .initial_nodes(["n1", "n2", "n3", "n4", "n5"]);
    let cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
    let model = common::Model::default();
    let ring = cluster.ring();
    for i in 0..2_000 {
        let k = common::key(i);
        let replicas = ring.preference_list(token(&k), 3).unwrap().to_vec();
        let names: Vec<&str> = replicas.iter().map(|n| n.as_str()).collect();
        if !(names.contains(&"n1") && names.contains(&"n2")) {
            continue;
        }
        // Only n1 and n2 take the write.
        let third = names.iter().find(|n| **n != "n1" && **n != "n2").unwrap();
        *backend.faults.down.lock() = vec![third.to_string()];
        model.acked(&k, Some(b"v"), cluster.put(&k, b"v").unwrap());
    }
    backend.faults.down.lock().clear();

    cluster.fail_node("n1").unwrap();
    cluster.fail_node("n2").unwrap();
    assert!(cluster.remove_node("n1").is_err());
    drop(cluster);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    assert_eq!(cluster.pending_change(), None);
    cluster.fail_node("n2").unwrap();
    cluster.remove_node("n2").unwrap();
    // The third replicas missed the writes: a repair gives them theirs, from whichever
    // replica kept them.
    cluster.repair().unwrap();
    common::check(&cluster, &model);
}
