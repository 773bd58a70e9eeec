//! A node error in the middle of a membership change leaves the change pending and the
//! cluster serving; resuming (or reopening) completes it. Covers both phases: a failure while
//! streaming (before the commit) and while cleaning up (after it).
#![allow(clippy::unwrap_used)]

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::faulty::FaultyBackend;
use kv_cluster::{ChangeKind, Cluster, Error};

fn setup() -> (
    tempfile::TempDir,
    Arc<FaultyBackend>,
    Cluster,
    common::Model,
) {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let opts = common::memory_opts().backend(backend.clone());
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let model = common::Model::default();
    for i in 0..2_000 {
        let k = common::key(i);
        model.acked(&k, Some(b"v"), cluster.put(&k, b"v").unwrap());
    }
    (dir, backend, cluster, model)
}

fn write_some(cluster: &Cluster, model: &common::Model, value: &[u8]) {
    for i in (0..2_000).step_by(13) {
        let k = common::key(i);
        model.acked(&k, Some(value), cluster.put(&k, value).unwrap());
    }
}

#[test]
fn a_failed_export_leaves_the_change_pending_and_resume_completes_it() {
    let (_dir, backend, cluster, model) = setup();
    backend.faults.export.store(true, Ordering::Relaxed);
    assert!(matches!(
        cluster.add_node("node4"),
        Err(Error::StaleEpoch { .. })
    ));
    assert_eq!(cluster.pending_change().unwrap().0, ChangeKind::Add);
    // Still serving, with writes going to node4 too.
    write_some(&cluster, &model, b"while pending");
    assert!(matches!(
        cluster.remove_node("node1"),
        Err(Error::ChangeInProgress { .. })
    ));

    backend.faults.export.store(false, Ordering::Relaxed);
    cluster
        .resume_change(|_| ControlFlow::Continue(()))
        .unwrap()
        .unwrap();
    common::check(&cluster, &model);
}

#[test]
fn a_failed_sync_of_the_destination_leaves_the_change_pending_and_uncommitted() {
    let (_dir, backend, cluster, model) = setup();
    // Every record reaches node4, but it cannot make them durable: no pair may be recorded
    // as streamed, and the ring must not switch.
    backend.faults.sync_down.lock().push("node4".into());
    assert!(matches!(
        cluster.add_node("node4"),
        Err(Error::StaleEpoch { .. })
    ));
    assert_eq!(cluster.pending_change().unwrap().0, ChangeKind::Add);
    assert_eq!(cluster.ring().len(), 3);
    write_some(&cluster, &model, b"while pending");

    backend.faults.sync_down.lock().clear();
    let summary = cluster
        .resume_change(|_| ControlFlow::Continue(()))
        .unwrap()
        .unwrap();
    assert_eq!(cluster.ring().len(), 4);
    // Nothing was recorded as streamed before: the resume streamed every key node4 holds.
    let on_node4 = (0..2_000)
        .filter(|&i| {
            let placement = cluster.placement_of(&common::key(i)).unwrap();
            placement.expected.iter().any(|n| n.as_str() == "node4")
        })
        .count() as u64;
    assert_eq!(summary.keys_moved, on_node4);
    common::check(&cluster, &model);
}

#[test]
fn a_failed_cleanup_is_redone_on_reopen() {
    let (dir, backend, cluster, model) = setup();
    backend.faults.drop.store(true, Ordering::Relaxed);
    assert!(matches!(
        cluster.add_node("node4"),
        Err(Error::StaleEpoch { .. })
    ));
    // Committed: node4 serves reads already; the old replicas still hold their copies.
    assert_eq!(cluster.ring().len(), 4);
    assert_eq!(cluster.pending_change().unwrap().0, ChangeKind::Add);
    write_some(&cluster, &model, b"after commit");
    drop(cluster);

    backend.faults.drop.store(false, Ordering::Relaxed);
    let cluster = Cluster::open(dir.path(), common::memory_opts().backend(backend)).unwrap();
    assert_eq!(cluster.nodes().len(), 4);
    common::check(&cluster, &model);
}

#[test]
fn a_source_that_cannot_export_is_replaced_by_another_old_replica() {
    let (_dir, backend, cluster, model) = setup();
    // node1 would be a source for node4 (3 nodes, rf 3: every old node holds everything).
    backend.faults.export_down.lock().push("node1".into());
    let summary = cluster.add_node("node4").unwrap();
    assert!(summary.keys_moved > 0);
    common::check(&cluster, &model);

    // With every old replica unable to export, the change fails and stays pending.
    backend
        .faults
        .export_down
        .lock()
        .extend(["node2".into(), "node3".into(), "node4".into()]);
    assert!(matches!(
        cluster.add_node("node5"),
        Err(Error::StaleEpoch { .. })
    ));
    assert!(cluster.pending_change().is_some());
    backend.faults.export_down.lock().clear();
    cluster
        .resume_change(|_| ControlFlow::Continue(()))
        .unwrap();
    common::check(&cluster, &model);
}

#[test]
fn a_change_that_cannot_complete_on_reopen_leaves_the_cluster_serving() {
    let (dir, backend, cluster, model) = setup();
    backend.faults.export.store(true, Ordering::Relaxed);
    assert!(cluster.add_node("node4").is_err());
    drop(cluster);

    // Exports still fail: the reopened cluster serves, with the change pending.
    let opts = common::memory_opts().backend(backend.clone());
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    assert_eq!(cluster.pending_change().unwrap().0, ChangeKind::Add);
    write_some(&cluster, &model, b"after reopen");

    backend.faults.export.store(false, Ordering::Relaxed);
    cluster
        .resume_change(|_| ControlFlow::Continue(()))
        .unwrap();
    common::check(&cluster, &model);
}
