//! Adding a node moves about the optimal number of keys, and only keys whose replica set
//! changed; removing it moves them back.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use kv_cluster::Cluster;
use kv_ring::{Ring, token};

const KEYS: u64 = 100_000;

/// Puts keys `0..n` (value `v`) in batches of 1,000; returns them.
fn load(cluster: &Cluster, n: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..n).map(|i| (common::key(i), b"v".to_vec())).collect();
    for chunk in pairs.chunks(1000) {
        cluster.put_many(chunk).unwrap();
    }
    pairs
}

/// Grows `nodes` nodes by one and shrinks back, with replication factor 3.
fn grow_and_shrink(nodes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (1..=nodes).map(|i| format!("node{i}")).collect();
    let opts = common::memory_opts().initial_nodes(ids.clone());
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let pairs = load(&cluster, KEYS);
    let old = cluster.ring();
    let rf = cluster.replication_factor();

    let joiner = format!("node{}", nodes + 1);
    let summary = cluster.add_node(&joiner).unwrap();
    let new = cluster.ring();

    // Exactly the keys whose preference list changed were copied, each once.
    let changed = |a: &Ring, b: &Ring| {
        pairs
            .iter()
            .filter(|(k, _)| {
                let t = token(k);
                let mut a = a.preference_list(t, rf).unwrap().to_vec();
                let mut b = b.preference_list(t, rf).unwrap().to_vec();
                a.sort();
                b.sort();
                a != b
            })
            .count() as u64
    };
    assert_eq!(summary.keys_moved, changed(&old, &new), "{summary:?}");
    assert!(summary.pairs.iter().all(|p| p.to.as_str() == joiner));

    // About rf / (n + 1) of the keys gain the new node.
    let optimal = KEYS as f64 * rf as f64 / (nodes + 1) as f64;
    let ratio = summary.keys_moved as f64 / optimal;
    assert!(
        (0.8..=1.2).contains(&ratio),
        "moved {} vs optimal {optimal}",
        summary.keys_moved
    );
    // Every key the joiner gained was dropped by exactly one old replica.
    assert_eq!(summary.keys_dropped, summary.keys_moved);

    let stats = cluster.stats().unwrap();
    assert_eq!(stats.total_keys, KEYS);
    let by_node: BTreeMap<_, _> = stats
        .nodes
        .iter()
        .map(|n| (n.id.to_string(), n.replica_keys))
        .collect();
    assert_eq!(by_node[&joiner], summary.keys_moved);
    assert_eq!(by_node.values().sum::<u64>(), KEYS * rf as u64);

    // Removing it streams the joiner's keys back out, again only those whose replica set
    // changed, and about as many as it received.
    let back = cluster.remove_node(&joiner).unwrap();
    let last = cluster.ring();
    assert_eq!(back.keys_moved, changed(&new, &last), "{back:?}");
    let ratio = back.keys_moved as f64 / optimal;
    assert!(
        (0.8..=1.2).contains(&ratio),
        "moved back {} vs optimal {optimal}",
        back.keys_moved
    );
    assert!(
        back.pairs.iter().all(|p| p.from.as_str() == joiner),
        "{back:?}"
    );
    if nodes == rf {
        // With as many nodes as replicas every node holds everything: all the way back.
        assert_eq!(changed(&old, &last), 0);
    }
    for (k, _) in pairs.iter().step_by(97) {
        let p = cluster.placement_of(k).unwrap();
        let mut expected = p.expected.clone();
        expected.sort();
        let held: Vec<_> = p.held.iter().map(|(id, _, _)| id.clone()).collect();
        assert_eq!(held, expected);
    }
    let stats = cluster.stats().unwrap();
    assert_eq!(stats.total_keys, KEYS);
    assert_eq!(
        stats.nodes.iter().map(|n| n.replica_keys).sum::<u64>(),
        KEYS * rf as u64
    );
}

#[test]
fn adding_a_fourth_node_moves_three_quarters_and_removing_it_moves_them_back() {
    grow_and_shrink(3);
}

#[test]
fn adding_a_sixth_node_moves_half_and_removing_it_streams_it_back_out() {
    grow_and_shrink(5);
}

/// The number of streams changes how the work is shared, not what moves: the same records
/// per pair, in plan order, every batch reported, every key on the ring's replicas after.
#[test]
fn one_or_many_streams_move_the_same_records() {
    let mut outcomes = Vec::new();
    for streams in [1, 2, 3, 8] {
        let dir = tempfile::tempdir().unwrap();
        let opts = common::memory_opts()
            .transfer_batch(100)
            .transfer_streams(streams);
        let cluster = Cluster::open(dir.path(), opts).unwrap();
        let pairs = load(&cluster, 20_000);
        for change in ["add", "remove"] {
            let (mut reported, mut last) = (0, None);
            let progress = |p: &kv_cluster::Progress| {
                reported += 1;
                last = Some(p.clone());
                std::ops::ControlFlow::Continue(())
            };
            let summary = match change {
                "add" => cluster.add_node_with_progress("node4", progress),
                _ => cluster.remove_node_with_progress("node4", progress),
            }
            .unwrap();
            let last = last.unwrap();
            assert_eq!(last.keys, summary.keys_moved, "{streams} streams");
            assert!(reported as u64 >= summary.keys_moved / 100);
            assert_eq!(
                summary.pairs.iter().map(|p| p.keys).sum::<u64>(),
                summary.keys_moved
            );
            outcomes.push((streams, change, summary.pairs));
        }
        for (k, _) in pairs.iter().step_by(61) {
            let p = cluster.placement_of(k).unwrap();
            let mut expected = p.expected.clone();
            expected.sort();
            let held: Vec<_> = p.held.iter().map(|(id, _, _)| id.clone()).collect();
            assert_eq!(held, expected);
        }
    }
    let (_, _, first) = &outcomes[0];
    for (streams, change, pairs) in &outcomes {
        let (_, _, same_change) = outcomes
            .iter()
            .find(|(s, c, _)| *s == 1 && c == change)
            .unwrap();
        assert_eq!(pairs, same_change, "{streams} streams, {change}");
        assert!(!first.is_empty());
    }
}

/// Before streaming, each destination is told once how many records are coming and for which
/// ranges (so a storage node can size its index once); the estimate is close to what arrives.
#[test]
fn each_destination_hears_what_is_coming_before_its_first_import() {
    let dir = tempfile::tempdir().unwrap();
    let backend = std::sync::Arc::new(common::faulty::FaultyBackend::default());
    let opts = common::memory_opts()
        .transfer_batch(500)
        .backend(backend.clone());
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let pairs = load(&cluster, 30_000);
    for change in ["add", "remove"] {
        backend.faults.reserved.lock().clear();
        backend.faults.imports.lock().clear();
        let summary = match change {
            "add" => cluster.add_node("node4"),
            _ => cluster.remove_node("node4"),
        }
        .unwrap();
        let reserved = backend.faults.reserved.lock().clone();
        // Per destination: one hint, before any import, close to what it received.
        let mut received: BTreeMap<String, u64> = BTreeMap::new();
        for p in &summary.pairs {
            *received.entry(p.to.to_string()).or_default() += p.keys;
        }
        let hinted: Vec<&String> = reserved.iter().map(|(id, ..)| id).collect();
        assert_eq!(hinted, received.keys().collect::<Vec<_>>(), "{change}");
        for (id, ranges, keys, imports_before) in &reserved {
            assert_eq!(
                *imports_before, 0,
                "{change}: {id} imported before the hint"
            );
            let got = received[id];
            let ratio = *keys as f64 / got as f64;
            assert!(
                (0.8..=1.2).contains(&ratio),
                "{change}: {id} told {keys}, received {got}"
            );
            // The ranges cover every key the destination now holds a copy of because of the
            // change (sampled).
            for (k, _) in pairs.iter().step_by(97) {
                let p = cluster.placement_of(k).unwrap();
                let gained = p.expected.iter().any(|n| n.as_str() == id);
                if gained && change == "add" {
                    let t = token(k);
                    assert!(ranges.iter().any(|r| r.contains(t)), "{change}: {id}");
                }
            }
        }
    }
}
