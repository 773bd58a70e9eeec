//! Background anti-entropy: a round asked for (or due by its interval) repairs what a replica
//! missed and reports it; the thread runs alongside membership changes and clients, and is
//! stopped and joined when the cluster goes. Waits are bounded conditions, never timings.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::faulty::FaultyBackend;
use kv_cluster::{Cluster, ClusterOptions, Error};

/// A bound on every wait for a round: generous for a loaded 2-core machine, never reached
/// when things work.
const BOUND: Duration = Duration::from_secs(120);
/// An interval that never elapses during a test: rounds run only when triggered.
const NEVER: Duration = Duration::from_secs(24 * 3600);

#[test]
fn a_triggered_round_repairs_missed_writes_and_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let opts = ClusterOptions::new()
        .backend(backend.clone())
        .background_repair(Some(NEVER));
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let model = common::Model::default();
    // node3 misses 100 writes (failed replica writes, not a known-down node: no hints).
    backend.faults.down.lock().push("node3".into());
    for i in 0..100 {
        let k = common::key(i);
        let v = cluster.put(&k, b"v").unwrap();
        model.acked(&k, Some(b"v"), v);
    }
    backend.faults.down.lock().clear();
    let status = cluster.background_repair().unwrap();
    assert_eq!((status.rounds, status.interval), (0, NEVER));

    let round = cluster.trigger_background_repair().unwrap();
    assert_eq!(round, 1);
    let status = cluster.wait_background_repair(round, BOUND).unwrap();
    assert_eq!(status.rounds, 1);
    assert_eq!(status.last_error, None);
    let last = status.last.unwrap();
    assert_eq!((last.ranges_compared, last.keys_repaired), (1, 100));
    assert!(status.last_finished.is_some());
    // The same report in the cluster's stats.
    let stats = cluster.stats().unwrap();
    assert_eq!(stats.background_repair.unwrap().last.unwrap(), last);
    common::check(&cluster, &model);

    // Nothing left to fix: the next round compares only roots.
    let round = cluster.trigger_background_repair().unwrap();
    assert_eq!(round, 2);
    let status = cluster.wait_background_repair(round, BOUND).unwrap();
    assert_eq!(status.last.unwrap().keys_repaired, 0);
}

#[test]
fn rounds_come_by_themselves_at_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::memory_opts().background_repair(Some(Duration::from_millis(1)));
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    cluster.put(b"k", b"v").unwrap();
    // No trigger: three rounds finish within the bound.
    let status = cluster.wait_background_repair(3, BOUND).unwrap();
    assert!(status.rounds >= 3);
    assert_eq!(status.last_error, None);
}

/// An interval or a wait too long to add to the clock (`Instant + ...` would overflow) means
/// "never", not a panic.
#[test]
fn an_endless_interval_means_triggered_rounds_only() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::memory_opts().background_repair(Some(Duration::MAX));
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let round = cluster.trigger_background_repair().unwrap();
    let status = cluster
        .wait_background_repair(round, Duration::MAX)
        .unwrap();
    assert_eq!(status.rounds, 1);
    drop(cluster); // wakes the endless wait to stop
}

#[test]
fn no_background_repair_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), common::memory_opts()).unwrap();
    assert_eq!(cluster.background_repair(), None);
    assert_eq!(cluster.stats().unwrap().background_repair, None);
    assert!(matches!(
        cluster.trigger_background_repair(),
        Err(Error::InvalidOptions { .. })
    ));
    assert_eq!(cluster.wait_background_repair(1, Duration::ZERO), None);
}

#[test]
fn dropping_or_closing_the_cluster_stops_and_joins_the_thread() {
    // Storage nodes on disk hold their directory's lock while open: had the thread (which
    // holds the routing table, so every node) outlived its cluster, reopening would fail.
    let dir = tempfile::tempdir().unwrap();
    let opts = common::disk_opts().background_repair(Some(Duration::from_millis(1)));
    let cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
    cluster.put(b"k", b"v").unwrap();
    cluster.wait_background_repair(1, BOUND).unwrap();
    drop(cluster);
    let cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
    cluster.wait_background_repair(1, BOUND).unwrap();
    cluster.close().unwrap();
    // An idle thread (its interval far away) wakes up to stop.
    let cluster = Cluster::open(dir.path(), opts.background_repair(Some(NEVER))).unwrap();
    assert_eq!(cluster.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    drop(cluster);
    let cluster = Cluster::open(dir.path(), common::disk_opts()).unwrap();
    assert_eq!(cluster.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn background_rounds_alongside_membership_changes_and_clients() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::memory_opts()
        .vnodes(16)
        .transfer_batch(50)
        .background_repair(Some(Duration::from_millis(1)));
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let model = common::Model::default();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..3000 {
                let k = common::key(i % 500);
                let v = cluster.put(&k, &i.to_be_bytes()).unwrap();
                model.acked(&k, Some(&i.to_be_bytes()), v);
            }
        });
        cluster.add_node("node4").unwrap();
        cluster.remove_node("node1").unwrap();
        writer.join().unwrap();
    });
    let before = cluster.background_repair().unwrap().rounds;
    let status = cluster.wait_background_repair(before + 1, BOUND).unwrap();
    assert_eq!(status.last_error, None);
    common::check(&cluster, &model);
}

/// A panic inside a background round (a replica's bug) is reported as the round's error,
/// and the thread goes on with the next round.
#[test]
fn a_panicking_background_round_is_reported_and_the_next_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let opts = ClusterOptions::new()
        .backend(backend.clone())
        .background_repair(Some(NEVER));
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    cluster.put(b"k", b"v").unwrap();
    backend.faults.panic_digests.store(true, Ordering::Relaxed);
    let r = cluster.trigger_background_repair().unwrap();
    let status = cluster
        .wait_background_repair(r, BOUND)
        .expect("the panicking round is recorded");
    assert!(status.last_error.is_some(), "{status:?}");
    backend.faults.panic_digests.store(false, Ordering::Relaxed);
    let r = cluster.trigger_background_repair().unwrap();
    let status = cluster
        .wait_background_repair(r, BOUND)
        .expect("the thread survived");
    assert_eq!(status.last_error, None);
}
