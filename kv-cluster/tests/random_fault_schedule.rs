//! Random schedules (fixed seeds, bounded steps) of node failures (partitions and crashes),
//! recoveries, joins and leaves interleaved with client writes (strict and sloppy), deletes and
//! reads. At the end
//! every node recovers and one repair runs; then every key reads its last acknowledged write
//! (no acknowledged write or delete lost, no delete resurrected) on exactly its replicas.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use kv_cluster::{Cluster, Consistency, Error, Health};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: u64 = 400;
const STEPS: usize = 60;

fn members(cluster: &Cluster) -> Vec<String> {
    cluster.ring().nodes().map(|n| n.to_string()).collect()
}

fn down(cluster: &Cluster) -> Vec<String> {
    cluster
        .nodes()
        .into_iter()
        .filter(|n| !n.health.is_up())
        .map(|n| n.id.to_string())
        .collect()
}

/// Brings every node back and completes a change left pending by a failure.
fn heal(cluster: &Cluster) {
    for id in down(cluster) {
        cluster.recover_node(&id).unwrap();
    }
    cluster
        .resume_change(|_| std::ops::ControlFlow::Continue(()))
        .unwrap();
}

/// Client operations; reads are checked against the model when at quorum.
fn clients(cluster: &Cluster, model: &common::Model, rng: &mut StdRng) {
    for _ in 0..rng.random_range(10..60) {
        let k = common::key(rng.random_range(0..KEYS));
        let c = if rng.random_bool(0.3) {
            Consistency::One
        } else {
            Consistency::Quorum
        };
        let outcome = match rng.random_range(0..11) {
            10 => {
                // A sloppy quorum: hints on stand-ins count while replicas are down.
                let v = rng.random::<u32>().to_be_bytes();
                cluster
                    .put_sloppy(&k, &v, Consistency::Quorum)
                    .map(|ver| model.acked(&k, Some(&v), ver))
            }
            0..5 => {
                let v = rng.random::<u32>().to_be_bytes();
                cluster
                    .put_with(&k, &v, c)
                    .map(|ver| model.acked(&k, Some(&v), ver))
            }
            5..7 => cluster
                .delete_with(&k, c)
                .map(|ver| model.acked(&k, None, ver)),
            _ => cluster.get_with(&k, c).map(|_| ()),
        };
        match outcome {
            Ok(()) | Err(Error::Unavailable { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let opts = common::memory_opts()
        .vnodes(16)
        .transfer_batch(50)
        .initial_nodes(["node1", "node2", "node3", "node4"]);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let model = common::Model::default();
    let mut next_id = 4;
    let mut log: Vec<String> = Vec::new();
    for _ in 0..STEPS {
        clients(&cluster, &model, &mut rng);
        let nodes = members(&cluster);
        let downs = down(&cluster);
        let step = match rng.random_range(0..10) {
            0..3 if downs.len() < 2 => {
                let id = &nodes[rng.random_range(0..nodes.len())];
                if downs.contains(id) {
                    continue;
                }
                if rng.random_bool(0.5) {
                    cluster.crash_node(id).map(|()| format!("crash {id}"))
                } else {
                    cluster.fail_node(id).map(|()| format!("fail {id}"))
                }
            }
            3..6 if !downs.is_empty() => {
                let id = &downs[rng.random_range(0..downs.len())];
                cluster.recover_node(id).map(|_| format!("recover {id}"))
            }
            6 if nodes.len() < 6 => {
                next_id += 1;
                let id = format!("node{next_id}");
                cluster.add_node(&id).map(|_| format!("add {id}"))
            }
            7 if nodes.len() > 3 => {
                let id = &nodes[rng.random_range(0..nodes.len())];
                cluster.remove_node(id).map(|_| format!("remove {id}"))
            }
            _ => continue,
        };
        match step {
            Ok(s) => log.push(s),
            // A change whose destination is down stops, pending: heal and complete it.
            Err(e) => {
                log.push(format!("failed: {e}"));
                heal(&cluster);
            }
        }
    }
    heal(&cluster);
    cluster.repair().unwrap();
    assert!(cluster.nodes().iter().all(|n| n.health == Health::Up));
    let _: HashMap<_, _> = model.snapshot();
    eprintln!("seed {seed}: {log:?}");
    common::check(&cluster, &model);
}

#[test]
fn random_fault_schedules() {
    for seed in 0..8 {
        run(seed);
    }
}

/// Many more seeds, for a soak run: `cargo test --test random_fault_schedule -- --ignored`.
#[test]
#[ignore]
fn random_fault_schedules_soak() {
    let seeds: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    for seed in 0..seeds {
        run(seed);
    }
}
