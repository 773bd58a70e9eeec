//! Zero downtime: clients keep reading and writing while nodes join and leave, no operation
//! fails, every read sees the reader's last acknowledged write, and afterwards every key has
//! its last acknowledged value on exactly the replicas the ring names.
#![allow(clippy::unwrap_used)]

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kv_cluster::{Cluster, ClusterOptions, Version};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CLIENTS: u64 = 4;
const KEYS: u64 = 4_000;

/// Runs `CLIENTS` threads of random puts, deletes and gets against `cluster` while `changes`
/// run one after the other, then checks the result.
fn run(cluster: Arc<Cluster>, changes: &[(&str, &str)]) {
    let model = Arc::new(common::Model::default());
    // Preload, so that each change streams many batches.
    let pairs: Vec<_> = (0..KEYS)
        .map(|i| (common::key(i), b"initial".to_vec()))
        .collect();
    for chunk in pairs.chunks(500) {
        let versions = cluster.put_many(chunk).unwrap();
        for ((k, v), version) in chunk.iter().zip(versions) {
            model.acked(k, Some(v), version);
        }
    }

    let ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (cluster, model, ops, stop) =
                (cluster.clone(), model.clone(), ops.clone(), stop.clone());
            std::thread::spawn(move || {
                // Each client owns the keys `i % CLIENTS == t`, so its own last write is the
                // key's last write and every read can be checked exactly.
                let mut rng = StdRng::seed_from_u64(t);
                let mut mine: std::collections::HashMap<u64, (Version, Option<Vec<u8>>)> =
                    Default::default();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n < 2_000 {
                    let i = rng.random_range(0..KEYS / CLIENTS) * CLIENTS + t;
                    let key = common::key(i);
                    match rng.random_range(0..100) {
                        0..50 => {
                            let value = format!("t{t}-{n}").into_bytes();
                            let version = cluster.put(&key, &value).unwrap();
                            model.acked(&key, Some(&value), version);
                            mine.insert(i, (version, Some(value)));
                        }
                        50..65 => {
                            let version = cluster.delete(&key).unwrap();
                            model.acked(&key, None, version);
                            mine.insert(i, (version, None));
                        }
                        _ => {
                            let got = cluster.get_versioned(&key).unwrap();
                            if let Some((version, value)) = mine.get(&i) {
                                match value {
                                    Some(v) => {
                                        let (got, got_version) = got.unwrap();
                                        assert_eq!((&got[..], got_version), (&v[..], *version));
                                    }
                                    None => assert_eq!(got, None),
                                }
                            }
                        }
                    }
                    n += 1;
                    ops.fetch_add(1, Ordering::Relaxed);
                }
                n
            })
        })
        .collect();

    for (kind, node) in changes {
        // Hold the first batch until clients have done some operations, so that every change
        // overlaps client traffic whatever the machine's speed.
        let mut first = true;
        let progress = |_: &kv_cluster::Progress| {
            if first {
                first = false;
                let from = ops.load(Ordering::Relaxed);
                while ops.load(Ordering::Relaxed) < from + 300 {
                    std::thread::yield_now();
                }
            }
            ControlFlow::Continue(())
        };
        let summary = match *kind {
            "add" => cluster.add_node_with_progress(node, progress),
            _ => cluster.remove_node_with_progress(node, progress),
        }
        .unwrap();
        assert!(summary.keys_moved > 0, "{summary:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let done: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(done >= CLIENTS * 2_000);
    common::check(&cluster, &model);
}

fn changes() -> Vec<(&'static str, &'static str)> {
    vec![
        ("add", "node4"),
        ("add", "node5"),
        ("remove", "node1"),
        ("add", "node6"),
        ("remove", "node2"),
        ("remove", "node4"),
    ]
}

fn opts(base: ClusterOptions) -> ClusterOptions {
    base.transfer_batch(50)
}

#[test]
fn clients_see_every_acknowledged_write_while_nodes_join_and_leave() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Arc::new(Cluster::open(dir.path(), opts(common::memory_opts())).unwrap());
    run(cluster.clone(), &changes());
    let nodes: Vec<String> = cluster.nodes().iter().map(|n| n.id.to_string()).collect();
    assert_eq!(nodes, ["node3", "node5", "node6"]);
}

#[test]
fn the_same_on_storage_nodes_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Arc::new(Cluster::open(dir.path(), opts(common::disk_opts())).unwrap());
    run(cluster.clone(), &changes());
    let nodes: Vec<String> = cluster.nodes().iter().map(|n| n.id.to_string()).collect();
    assert_eq!(nodes, ["node3", "node5", "node6"]);
    drop(cluster);
    // And everything is still where it should be after a reopen.
    let cluster = Cluster::open(dir.path(), common::disk_opts()).unwrap();
    assert_eq!(cluster.stats().unwrap().nodes.len(), 3);
}
