//! Failures under load: clients keep going while one node fails (RF 3, quorum), then a
//! second (the clients drop to consistency one); both recover (hints, then repair); no
//! acknowledged write or delete is lost, no delete comes back, and every replica of every
//! key holds the last acknowledged version.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use kv_cluster::{Cluster, Consistency, Error, Version};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CLIENTS: u64 = 3;
const KEYS: u64 = 1_500;
/// Phases the clients see: quorum reads and writes, or consistency one.
const QUORUM: u8 = 0;
const ONE: u8 = 1;

/// Waits (bounded) until the clients have done `n` more operations.
fn wait_ops(ops: &AtomicU64, n: u64) {
    let target = ops.load(Ordering::Relaxed) + n;
    for _ in 0..2_000_000 {
        if ops.load(Ordering::Relaxed) >= target {
            return;
        }
        std::thread::yield_now();
    }
    panic!("clients stalled");
}

fn run(cluster: Arc<Cluster>) {
    let model = Arc::new(common::Model::default());
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
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU8::new(QUORUM));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (cluster, model, ops, refused, stop, phase) = (
                cluster.clone(),
                model.clone(),
                ops.clone(),
                refused.clone(),
                stop.clone(),
                phase.clone(),
            );
            std::thread::spawn(move || {
                // Each client owns the keys `i % CLIENTS == t`: its last acknowledged write
                // is the key's, so its quorum reads can be checked exactly.
                let mut rng = StdRng::seed_from_u64(t);
                let mut mine: std::collections::HashMap<u64, (Version, Option<Vec<u8>>)> =
                    Default::default();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let c = match phase.load(Ordering::Relaxed) {
                        ONE => Consistency::One,
                        _ => Consistency::Quorum,
                    };
                    let i = rng.random_range(0..KEYS / CLIENTS) * CLIENTS + t;
                    let key = common::key(i);
                    let outcome = match rng.random_range(0..100) {
                        0..50 => {
                            let value = format!("t{t}-{n}").into_bytes();
                            cluster.put_with(&key, &value, c).map(|version| {
                                model.acked(&key, Some(&value), version);
                                mine.insert(i, (version, Some(value)));
                            })
                        }
                        50..65 => cluster.delete_with(&key, c).map(|version| {
                            model.acked(&key, None, version);
                            mine.insert(i, (version, None));
                        }),
                        _ => cluster.get_with(&key, c).map(|got| {
                            if c == Consistency::Quorum
                                && let Some((_, want)) = mine.get(&i)
                            {
                                assert_eq!(got.as_deref(), want.as_deref(), "{i}");
                            }
                        }),
                    };
                    match outcome {
                        Ok(()) => {}
                        // Only a phase switch racing the operation refuses it, and a refused
                        // operation wrote nothing.
                        Err(Error::Unavailable { .. }) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("{e}"),
                    }
                    n += 1;
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    wait_ops(&ops, 1_000);
    cluster.crash_node("node2").unwrap();
    wait_ops(&ops, 2_000);
    phase.store(ONE, Ordering::Relaxed);
    cluster.fail_node("node3").unwrap();
    wait_ops(&ops, 2_000);
    let r3 = cluster.recover_node("node3").unwrap();
    phase.store(QUORUM, Ordering::Relaxed);
    wait_ops(&ops, 1_000);
    let r2 = cluster.recover_node("node2").unwrap();
    assert!(r2.reopened && !r3.reopened);
    assert!(
        r3.hints_applied > 0 && r2.hints_applied > 0,
        "{r3:?} {r2:?}"
    );
    wait_ops(&ops, 1_000);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    // Writes that raced the recoveries were hinted or are caught by a last repair.
    cluster.repair().unwrap();
    assert!(cluster.nodes().iter().all(|n| n.health.is_up()));
    assert_eq!(cluster.stats().unwrap().hints, 0);
    common::check(&cluster, &model);
    eprintln!(
        "{} ops, {} refused; node3: {r3:?}; node2: {r2:?}",
        ops.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
}

#[test]
fn on_disk_nodes_survive_a_crash_and_a_partition_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Arc::new(Cluster::open(dir.path(), common::disk_opts()).unwrap());
    run(cluster.clone());
    // Hint stores are deleted once handed off.
    for n in ["node1", "node2", "node3"] {
        let hints = dir.path().join(n).join("hints");
        let left: Vec<_> = std::fs::read_dir(&hints)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
    }
}

#[test]
fn memory_nodes_survive_a_crash_and_a_partition_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Arc::new(Cluster::open(dir.path(), common::memory_opts()).unwrap());
    run(cluster);
}
