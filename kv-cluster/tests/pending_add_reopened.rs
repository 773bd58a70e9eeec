//! An add interrupted after one of its pairs was recorded as streamed, then the cluster
//! dropped and reopened: whatever happens to the joiner meanwhile (it cannot be opened, or it
//! was down and other nodes kept hints for it), once the change completes every replica of
//! every key holds its last acknowledged write. Each replica is read directly: a quorum read
//! would repair what it reads and hide a stale copy.
#![allow(clippy::unwrap_used)]

mod common;

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use common::faulty::FaultyBackend;
use kv_cluster::{ChangeKind, Cluster, ClusterOptions, Error, RateLimit};

const KEYS: u64 = 3_000;

fn opts(backend: &Arc<FaultyBackend>) -> ClusterOptions {
    common::memory_opts()
        .backend(backend.clone())
        .transfer_batch(100)
        .transfer_streams(1)
        // Slow enough that the change stops with pairs left to stream.
        .rate_limit(Some(RateLimit::KeysPerSec(5_000)))
}

/// A cluster of three with `KEYS` keys at "v1", and an add of node4 stopped right after its
/// first pair was recorded as streamed.
fn interrupted_add(dir: &Path, backend: &Arc<FaultyBackend>, model: &common::Model) -> Cluster {
    let cluster = Cluster::open(dir, opts(backend)).unwrap();
    for i in 0..KEYS {
        let k = common::key(i);
        model.acked(&k, Some(b"v1"), cluster.put(&k, b"v1").unwrap());
    }
    let err = cluster
        .add_node_with_progress("node4", |p| {
            if p.pairs_done >= 1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap_err();
    assert!(matches!(err, Error::ChangeInterrupted { .. }), "{err}");
    cluster
}

fn put_all(cluster: &Cluster, model: &common::Model, value: &[u8]) {
    for i in 0..KEYS {
        let k = common::key(i);
        model.acked(&k, Some(value), cluster.put(&k, value).unwrap());
    }
}

/// The hint stores on disk whose target is `target`.
fn hint_stores_for(dir: &Path, target: &str) -> Vec<String> {
    let mut found = Vec::new();
    for holder in std::fs::read_dir(dir).unwrap().flatten() {
        if holder.path().join("hints").join(target).is_dir() {
            found.push(holder.file_name().to_string_lossy().into_owned());
        }
    }
    found.sort();
    found
}

/// The joiner cannot be opened when the cluster reopens: the cluster still opens (serving
/// clients, the change pending), but writes keep going to the joiner's ranges as hints, and
/// completing the change once it opens again leaves no stale copy on it.
#[test]
fn a_joiner_that_cannot_be_opened_on_reopen_misses_no_write() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let model = common::Model::default();
    drop(interrupted_add(dir.path(), &backend, &model));

    backend.faults.open_down.lock().push("node4".into());
    let cluster = Cluster::open(dir.path(), opts(&backend)).unwrap();
    assert_eq!(cluster.pending_change().unwrap().0, ChangeKind::Add);
    // The operator is told: the joiner is down, and why the change is stuck.
    assert!(!cluster.health("node4").unwrap().is_up());
    let why = cluster
        .change_error()
        .expect("the open failure is reported");
    assert!(why.contains("node4"), "{why}");
    assert_eq!(cluster.stats().unwrap().change_error, Some(why));
    put_all(&cluster, &model, b"v2");
    // Still unopenable: the resume says so, and the change stays pending.
    assert!(matches!(
        cluster.resume_change(|_| ControlFlow::Continue(())),
        Err(Error::Node { .. })
    ));
    assert!(cluster.pending_change().is_some());

    backend.faults.open_down.lock().clear();
    cluster
        .resume_change(|_| ControlFlow::Continue(()))
        .unwrap()
        .unwrap();
    assert_eq!(cluster.ring().len(), 4);
    assert_eq!(cluster.change_error(), None);
    assert!(cluster.health("node4").unwrap().is_up());
    common::assert_every_replica_fresh(&cluster, &model);
    common::check(&cluster, &model);
}

/// The joiner was down while the change was pending and the old nodes kept hints for it;
/// then the cluster closed. Reopening hands those hints to the joiner (it is a member of the
/// pending ring) instead of deleting them as a departed node's, so the resumed change leaves
/// no stale copy.
#[test]
fn hints_for_a_joiner_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let model = common::Model::default();
    let cluster = interrupted_add(dir.path(), &backend, &model);
    cluster.fail_node("node4").unwrap();
    put_all(&cluster, &model, b"v2");
    assert!(!hint_stores_for(dir.path(), "node4").is_empty());
    cluster.close().unwrap();

    let cluster = Cluster::open(dir.path(), opts(&backend)).unwrap();
    assert_eq!(cluster.pending_change(), None);
    common::assert_every_replica_fresh(&cluster, &model);
    common::check(&cluster, &model);
    assert!(hint_stores_for(dir.path(), "node4").is_empty());
}

/// Hints kept for a joiner that cannot be opened stay on disk through the reopen's handoff and
/// through `repair`, until the joiner is back and they are handed off.
#[test]
fn hints_for_a_joiner_that_cannot_be_opened_survive_open_and_repair() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let model = common::Model::default();
    let cluster = interrupted_add(dir.path(), &backend, &model);
    cluster.fail_node("node4").unwrap();
    put_all(&cluster, &model, b"v2");
    cluster.close().unwrap();
    let held = hint_stores_for(dir.path(), "node4");
    assert!(!held.is_empty());

    backend.faults.open_down.lock().push("node4".into());
    let cluster = Cluster::open(dir.path(), opts(&backend)).unwrap();
    assert_eq!(hint_stores_for(dir.path(), "node4"), held, "after open");
    cluster.repair().unwrap();
    assert_eq!(hint_stores_for(dir.path(), "node4"), held, "after repair");

    backend.faults.open_down.lock().clear();
    cluster
        .resume_change(|_| ControlFlow::Continue(()))
        .unwrap()
        .unwrap();
    common::assert_every_replica_fresh(&cluster, &model);
    common::check(&cluster, &model);
    assert!(hint_stores_for(dir.path(), "node4").is_empty());
}

/// The same in process: an `add_node` whose joiner cannot be opened fails with the open
/// error and leaves the change pending with the joiner down (writes for it are hinted), and
/// resuming once it opens completes the change with nothing stale.
#[test]
fn an_add_whose_joiner_cannot_be_opened_stays_pending_and_completes_later() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let model = common::Model::default();
    let cluster = Cluster::open(dir.path(), opts(&backend)).unwrap();
    put_all(&cluster, &model, b"v1");
    backend.faults.open_down.lock().push("node4".into());
    assert!(matches!(cluster.add_node("node4"), Err(Error::Node { .. })));
    assert_eq!(cluster.pending_change().unwrap().0, ChangeKind::Add);
    assert!(!cluster.health("node4").unwrap().is_up());
    assert!(cluster.change_error().is_some());
    put_all(&cluster, &model, b"v2");
    assert!(!hint_stores_for(dir.path(), "node4").is_empty());

    backend.faults.open_down.lock().clear();
    cluster
        .resume_change(|_| ControlFlow::Continue(()))
        .unwrap()
        .unwrap();
    common::assert_every_replica_fresh(&cluster, &model);
    common::check(&cluster, &model);
}
