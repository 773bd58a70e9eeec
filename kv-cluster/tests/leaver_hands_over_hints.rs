//! A node that leaves while holding hints for others hands them over before its directory is
//! deleted: to the target when it is up (here), else to another live node that keeps them
//! until the target recovers (a unit test in `src/hints.rs`: a removal that needs no down
//! destination cannot be arranged on a balanced ring). No repair is needed after either.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::faulty::FaultyBackend;
use kv_cluster::{Cluster, ClusterOptions};

const KEYS: u64 = 400;

fn nodes(count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("n{i}")).collect()
}

/// The nodes holding hints for `target`, from their directories.
fn holders(dir: &Path, names: &[String], target: &str) -> Vec<String> {
    names
        .iter()
        .filter(|h| dir.join(h).join("hints").join(target).exists())
        .cloned()
        .collect()
}

/// Writes every key while `target` is down: the ones it replicates leave hints for it.
fn write_all(cluster: &Cluster, model: &common::Model) {
    for i in 0..KEYS {
        let k = common::key(i);
        let v = cluster.put(&k, b"while down").unwrap();
        model.acked(&k, Some(b"while down"), v);
    }
}

#[test]
fn a_leaver_hands_its_hints_to_a_target_that_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let names = nodes(5);
    let backend = Arc::new(FaultyBackend::default());
    let opts = ClusterOptions::new()
        .backend(backend.clone())
        .vnodes(16)
        .initial_nodes(names.clone());
    let cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
    let model = common::Model::default();
    cluster.fail_node("n1").unwrap();
    write_all(&cluster, &model);
    let held = holders(dir.path(), &names, "n1");
    assert!(!held.is_empty());
    // n1 comes back but the handoff fails (its hint stores cannot be read): n1 is up, the
    // hints are still held.
    backend.faults.export_down.lock().push("n1".into());
    assert!(cluster.recover_node("n1").is_err());
    backend.faults.export_down.lock().clear();
    assert!(cluster.health("n1").unwrap().is_up());
    assert_eq!(holders(dir.path(), &names, "n1"), held);

    let leaver = &held[0];
    let summary = cluster.remove_node(leaver).unwrap();
    assert!(summary.hints_handed_over > 0, "{summary:?}");
    assert!(!dir.path().join(leaver).exists());
    // The other holders' hints are still held: reopening the cluster hands them off (and
    // repairs nothing); then a repair finds nothing to fix: no hint was lost.
    for h in &held[1..] {
        assert!(dir.path().join(h).join("hints").join("n1").exists());
    }
    drop(cluster);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    assert!(holders(dir.path(), &names, "n1").is_empty());
    let repair = cluster.repair().unwrap();
    assert_eq!(repair.keys_repaired, 0, "{repair:?}");
    common::check(&cluster, &model);
}
