//! Random schedules (fixed seeds) of client writes, joins, leaves, changes interrupted midway,
//! resumed in process or by a reopen, and plain reopens; after every step each key reads its
//! last acknowledged write on exactly the replicas the ring names.
#![allow(clippy::unwrap_used)]

mod common;

use std::ops::ControlFlow;

use kv_cluster::{ChangeKind, Cluster, ClusterOptions, Error};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: u64 = 1_500;
const STEPS: usize = 20;

fn members(cluster: &Cluster) -> Vec<String> {
    cluster.ring().nodes().map(|n| n.to_string()).collect()
}

fn write_some(cluster: &Cluster, model: &common::Model, rng: &mut StdRng) {
    for _ in 0..200 {
        let k = common::key(rng.random_range(0..KEYS));
        if rng.random_bool(0.8) {
            let v = rng.random::<u32>().to_be_bytes();
            model.acked(&k, Some(&v), cluster.put(&k, &v).unwrap());
        } else {
            model.acked(&k, None, cluster.delete(&k).unwrap());
        }
    }
}

fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let rf = if seed.is_multiple_of(2) { 3 } else { 2 };
    let dir = tempfile::tempdir().unwrap();
    let opts: ClusterOptions = common::memory_opts()
        .replication_factor(rf)
        .vnodes(16)
        .transfer_batch(50);
    let mut cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
    let model = common::Model::default();
    let mut next_id = 4;
    write_some(&cluster, &model, &mut rng);

    for step in 0..STEPS {
        let nodes = members(&cluster);
        let can_remove = nodes.len() > rf;
        let kind = if nodes.len() < 6 && (!can_remove || rng.random_bool(0.5)) {
            ChangeKind::Add
        } else {
            ChangeKind::Remove
        };
        let node = match kind {
            ChangeKind::Add => {
                next_id += 1;
                format!("node{next_id}")
            }
            ChangeKind::Remove => nodes[rng.random_range(0..nodes.len())].clone(),
        };
        let interrupt_after = rng.random_bool(0.5).then(|| rng.random_range(1..6usize));
        let mut batches = 0;
        let progress = |_: &kv_cluster::Progress| {
            batches += 1;
            match interrupt_after {
                Some(n) if batches >= n => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        };
        let outcome = match kind {
            ChangeKind::Add => cluster.add_node_with_progress(&node, progress),
            ChangeKind::Remove => cluster.remove_node_with_progress(&node, progress),
        };
        match outcome {
            Ok(_) => {}
            Err(Error::ChangeInterrupted { .. }) => {
                // Clients go on during the pending change, then it completes one way or other.
                write_some(&cluster, &model, &mut rng);
                if rng.random_bool(0.5) {
                    cluster
                        .resume_change(|_| ControlFlow::Continue(()))
                        .unwrap();
                } else {
                    drop(cluster);
                    cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
                }
            }
            Err(e) => panic!("seed {seed} step {step}: {kind} {node}: {e}"),
        }
        write_some(&cluster, &model, &mut rng);
        if rng.random_bool(0.2) {
            drop(cluster);
            cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
        }
        let now = members(&cluster);
        assert_eq!(
            now.contains(&node),
            kind == ChangeKind::Add,
            "seed {seed} step {step}"
        );
        common::check(&cluster, &model);
    }
}

#[test]
fn seed_1() {
    run(1);
}

#[test]
fn seed_2() {
    run(2);
}

#[test]
fn seed_3() {
    run(3);
}

#[test]
fn seed_4() {
    run(4);
}

#[test]
fn seed_5() {
    run(5);
}

#[test]
fn seed_6() {
    run(6);
}
