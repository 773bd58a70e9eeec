//! A membership change stopped midway (interrupted, then the cluster dropped without a clean
//! shutdown) completes on reopen or on resume, and no key loses a replica or a write.
#![allow(clippy::unwrap_used)]

mod common;

use std::ops::ControlFlow;

use kv_cluster::{ChangeKind, Cluster, ClusterOptions, Error};

const KEYS: u64 = 5_000;

fn loaded(dir: &std::path::Path, opts: ClusterOptions, model: &common::Model) -> Cluster {
    let cluster = Cluster::open(dir, opts.transfer_batch(100)).unwrap();
    for i in 0..KEYS {
        let (k, v) = (common::key(i), format!("v{i}").into_bytes());
        model.acked(&k, Some(&v), cluster.put(&k, &v).unwrap());
    }
    cluster
}

/// Starts `kind node`, stops it after `batches` batches, and writes during the pending state.
fn interrupt(
    cluster: &Cluster,
    kind: ChangeKind,
    node: &str,
    batches: usize,
    model: &common::Model,
) {
    let mut seen = 0;
    let stop = |_: &kv_cluster::Progress| {
        seen += 1;
        if seen == batches {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let err = match kind {
        ChangeKind::Add => cluster.add_node_with_progress(node, stop),
        ChangeKind::Remove => cluster.remove_node_with_progress(node, stop),
    }
    .unwrap_err();
    assert!(matches!(err, Error::ChangeInterrupted { .. }), "{err}");
    assert_eq!(cluster.pending_change().unwrap().0, kind);
    // A second change is refused while this one is pending.
    assert!(matches!(
        cluster.add_node("node9"),
        Err(Error::ChangeInProgress { .. })
    ));
    // Clients go on: these writes go to old and new replicas alike.
    for i in (0..KEYS).step_by(7) {
        let k = common::key(i);
        if i % 2 == 0 {
            let v = b"during".to_vec();
            model.acked(&k, Some(&v), cluster.put(&k, &v).unwrap());
        } else {
            model.acked(&k, None, cluster.delete(&k).unwrap());
        }
    }
    let fresh = common::key(KEYS + 1);
    model.acked(&fresh, Some(b"new"), cluster.put(&fresh, b"new").unwrap());
}

#[test]
fn an_add_dropped_mid_stream_completes_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::memory_opts();
    let model = common::Model::default();
    let cluster = loaded(dir.path(), opts.clone(), &model);
    interrupt(&cluster, ChangeKind::Add, "node4", 5, &model);
    drop(cluster); // no close: a crash as far as the cluster knows

    let cluster = Cluster::open(dir.path(), opts).unwrap();
    assert_eq!(cluster.nodes().len(), 4);
    common::check(&cluster, &model);
}

#[test]
fn a_remove_dropped_mid_stream_completes_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::memory_opts().initial_nodes(["node1", "node2", "node3", "node4"]);
    let model = common::Model::default();
    let cluster = loaded(dir.path(), opts.clone(), &model);
    interrupt(&cluster, ChangeKind::Remove, "node2", 3, &model);
    drop(cluster);

    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let nodes: Vec<String> = cluster.nodes().iter().map(|n| n.id.to_string()).collect();
    assert_eq!(nodes, ["node1", "node3", "node4"]);
    common::check(&cluster, &model);
}

#[test]
fn an_interrupted_change_resumes_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::Model::default();
    let cluster = loaded(dir.path(), common::memory_opts(), &model);
    interrupt(&cluster, ChangeKind::Add, "node4", 2, &model);
    let summary = cluster
        .resume_change(|_| ControlFlow::Continue(()))
        .unwrap()
        .unwrap();
    assert_eq!(summary.kind, ChangeKind::Add);
    assert!(
        cluster
            .resume_change(|_| ControlFlow::Continue(()))
            .unwrap()
            .is_none()
    );
    common::check(&cluster, &model);
    // And the next change is accepted.
    cluster.add_node("node5").unwrap();
    common::check(&cluster, &model);
}

#[test]
fn an_add_dropped_mid_stream_completes_on_reopen_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::Model::default();
    let cluster = loaded(dir.path(), common::disk_opts(), &model);
    interrupt(&cluster, ChangeKind::Add, "node4", 5, &model);
    drop(cluster);

    let cluster = Cluster::open(dir.path(), common::disk_opts()).unwrap();
    assert_eq!(cluster.nodes().len(), 4);
    common::check(&cluster, &model);
}
