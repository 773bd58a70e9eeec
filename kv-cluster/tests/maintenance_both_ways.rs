//! Catch-up, hint handoff and repair through both ways to wait: blocking
//! (`catch_up`, `hand_off_hints`, `repair`) and as futures on a current-thread tokio runtime
//! (`catch_up_async`, `hand_off_hints_async`, `repair_async`), against replicas whose
//! maintenance answers come later from other threads (the deferred path, as across the
//! network). Both forms run the same algorithm, so each scenario must give the same summary
//! either way.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::remote::{Behaviour, Network, RemoteBackend};
use kv_cluster::{Cluster, ClusterOptions, Consistency, Version, Write};
use kv_ring::TokenRange;

const TIMEOUT: Duration = Duration::from_millis(200);
/// Past every fence: writes behind the coordinator's back.
const ANY_EPOCH: u64 = u64::MAX;

#[derive(Debug, Clone, Copy)]
enum Form {
    Blocking,
    Async,
}

fn open(dir: &std::path::Path) -> (Arc<Cluster>, Arc<Network>) {
    let backend = RemoteBackend::new();
    let net = Arc::clone(&backend.net);
    let opts = ClusterOptions::new()
        .backend(Arc::new(backend))
        .replica_timeout(TIMEOUT);
    let cluster = Arc::new(Cluster::open(dir, opts).unwrap());
    // Every node answers from another thread, a little later.
    for n in ["node1", "node2", "node3"] {
        net.set(n, Behaviour::After(Duration::from_millis(2)));
    }
    (cluster, net)
}

/// Runs `f` on `cluster` in `form`: on this thread, or as a task on a current-thread runtime.
fn run<T: Send + 'static>(
    form: Form,
    cluster: &Arc<Cluster>,
    blocking: impl FnOnce(&Cluster) -> T,
    future: impl FnOnce(Arc<Cluster>) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>,
) -> T {
    match form {
        Form::Blocking => blocking(cluster),
        Form::Async => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let f = future(Arc::clone(cluster));
            rt.block_on(async move { tokio::spawn(f).await.unwrap() })
        }
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

fn repair_fixes_what_one_replica_missed(form: Form) {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, net) = open(dir.path());
    let mut last = Version::new(0);
    for i in 0..200 {
        last = cluster.put(&key(i), b"v").unwrap();
    }
    let repair = |c: &Arc<Cluster>| {
        run(
            form,
            c,
            |c| c.repair().unwrap(),
            |c| Box::pin(async move { c.repair_async().await.unwrap() }),
        )
    };
    let s = repair(&cluster);
    assert_eq!((s.keys_repaired, s.leaves_differing), (0, 0), "{s:?}");
    assert_eq!(s.hash_bytes, s.ranges_compared * 2 * 2 * 16);
    // node2 alone gets a newer write and a new key: the other two are stale.
    let newer = Version::new(last.as_u64() + (1 << 16));
    for k in [key(7), b"only-on-node2".to_vec()] {
        let w = Write {
            key: &k,
            value: Some(b"newer"),
            version: newer,
            expires: None,
        };
        net.storage("node2").apply(ANY_EPOCH, w).unwrap();
    }
    let s = repair(&cluster);
    assert_eq!(s.keys_repaired, 4, "{form:?}: {s:?}");
    assert!(s.records_streamed > 0 && s.leaves_differing >= 1, "{s:?}");
    for n in ["node1", "node2", "node3"] {
        let cell = net.storage(n).read(ANY_EPOCH, &key(7)).unwrap().unwrap();
        assert_eq!(cell.version, newer, "{n}");
    }
    let s = repair(&cluster);
    assert_eq!(s.keys_repaired, 0, "a second round finds nothing: {s:?}");
}

#[test]
fn repair_blocking() {
    repair_fixes_what_one_replica_missed(Form::Blocking);
}

#[test]
fn repair_async() {
    repair_fixes_what_one_replica_missed(Form::Async);
}

/// Writes at `All` while node3 is silent: each keeps a hint for it.
fn hint_for_node3(cluster: &Cluster, net: &Network, keys: u32) {
    net.set("node3", Behaviour::BlackHole);
    for i in 0..keys {
        assert!(
            cluster
                .put_with(&key(i), b"hinted", Consistency::All)
                .is_err()
        );
    }
    assert_eq!(cluster.hints_pending_for("node3"), u64::from(keys));
    net.set("node3", Behaviour::After(Duration::from_millis(2)));
}

fn hints_are_handed_off(form: Form) {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, net) = open(dir.path());
    hint_for_node3(&cluster, &net, 30);
    let applied = run(
        form,
        &cluster,
        |c| c.hand_off_hints().unwrap(),
        |c| Box::pin(async move { c.hand_off_hints_async().await.unwrap() }),
    );
    assert_eq!(applied, 30, "{form:?}");
    assert_eq!(cluster.hints_pending_for("node3"), 0);
    let held = net
        .storage("node3")
        .count_in_ranges(&[TokenRange::FULL])
        .unwrap();
    assert_eq!(held.live, 30);
}

#[test]
fn hand_off_blocking() {
    hints_are_handed_off(Form::Blocking);
}

#[test]
fn hand_off_async() {
    hints_are_handed_off(Form::Async);
}

fn catch_up_hands_off_then_repairs(form: Form) {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, net) = open(dir.path());
    hint_for_node3(&cluster, &net, 10);
    // And one write node3 missed with no hint (behind the coordinator's back).
    let w = Write {
        key: b"missed",
        value: Some(b"x"),
        version: Version::new(u64::from(u32::MAX) << 20),
        expires: None,
    };
    net.storage("node1").apply(ANY_EPOCH, w).unwrap();
    let summary = run(
        form,
        &cluster,
        |c| c.catch_up("node3").unwrap(),
        |c| Box::pin(async move { c.catch_up_async("node3").await.unwrap() }),
    );
    assert_eq!(summary.hints_applied, 10, "{form:?}: {summary:?}");
    // `missed` reaches node2 and node3.
    assert_eq!(summary.repair.keys_repaired, 2, "{summary:?}");
    let status = cluster.catch_up_status("node3");
    assert_eq!(status.running, None);
    let last = status.last.unwrap();
    assert_eq!((last.hints_applied, last.keys_repaired), (10, 2));
    assert_eq!(last.error, None);
    // A catch-up of a node whose handle reports it down is refused either way.
    net.set("node2", Behaviour::Down);
    let refused = run(
        form,
        &cluster,
        |c| c.catch_up("node2").is_err(),
        |c| Box::pin(async move { c.catch_up_async("node2").await.is_err() }),
    );
    assert!(refused);
}

#[test]
fn catch_up_blocking() {
    catch_up_hands_off_then_repairs(Form::Blocking);
}

#[test]
fn catch_up_async() {
    catch_up_hands_off_then_repairs(Form::Async);
}

/// A replica that fails mid-repair fails the repair the same way in both forms, and the
/// admin gate is free afterwards (the next repair runs).
fn a_failing_replica_fails_the_repair(form: Form) {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, net) = open(dir.path());
    for i in 0..50 {
        cluster.put(&key(i), b"v").unwrap();
    }
    net.set("node2", Behaviour::Fail);
    let failed = run(
        form,
        &cluster,
        |c| c.repair().is_err(),
        |c| Box::pin(async move { c.repair_async().await.is_err() }),
    );
    assert!(failed, "{form:?}");
    net.set("node2", Behaviour::After(Duration::from_millis(2)));
    assert_eq!(cluster.repair().unwrap().keys_repaired, 0);
}

#[test]
fn failing_repair_blocking() {
    a_failing_replica_fails_the_repair(Form::Blocking);
}

#[test]
fn failing_repair_async() {
    a_failing_replica_fails_the_repair(Form::Async);
}
