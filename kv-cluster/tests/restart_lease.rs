//! Regression (found by kv-sim): a restarted coordinator started its clock at the persisted
//! version lease, up to a minute ahead of its wall clock, and each restart pushed it another
//! minute. With other coordinators, its writes then beat later writes made through them.
//! Now a coordinator that shares versions with others waits out the lease instead: its next
//! version is above every earlier one and not ahead of its wall clock, quick restarts do not
//! accumulate, and a wall clock stepped back by more than the bound still mints above the old
//! versions.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kv_cluster::{Clock, Cluster, ClusterOptions, Error, LEASE_WINDOW, MAX_SKEW, Version};

/// A clock the test sets.
#[derive(Default)]
struct Manual(AtomicU64);

impl Manual {
    fn set(&self, millis: u64) {
        self.0.store(millis, Ordering::Relaxed);
    }
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Clock for Manual {
    fn now_millis(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

const T: u64 = 1_800_000_000_000;

/// A node process's coordinator: others mint versions too.
fn shared(clock: &Arc<Manual>) -> ClusterOptions {
    common::memory_opts()
        .clock(Arc::clone(clock) as Arc<dyn Clock>)
        .coordinator_slot(1)
        .other_coordinators(true)
}

/// Writes `n` keys; the highest version.
fn write_some(cluster: &Cluster, n: u32) -> Version {
    (0..n)
        .map(|i| cluster.put(&i.to_be_bytes(), b"v").unwrap())
        .max()
        .unwrap()
}

/// Waits out a reopened coordinator's lease on the manual clock: the wait it reports is
/// within the bound, writes are refused until it has passed, and the first write then is
/// above `before` and not ahead of the wall clock.
fn wait_out(cluster: &Cluster, clock: &Manual, before: Version) -> Version {
    let wait = cluster.lease_wait();
    assert!(wait > Duration::ZERO, "nothing to wait for");
    assert!(wait <= LEASE_WINDOW + MAX_SKEW, "{wait:?}");
    match cluster.put(b"early", b"x") {
        Err(Error::LeaseWait { remaining }) => assert!(remaining <= wait, "{remaining:?}"),
        other => panic!("a write before the lease passed: {other:?}"),
    }
    // Reads are served meanwhile.
    assert_eq!(
        cluster.get(&0u32.to_be_bytes()).unwrap().as_deref(),
        Some(&b"v"[..])
    );
    clock.advance(wait);
    assert_eq!(cluster.lease_wait(), Duration::ZERO);
    let next = cluster.put(b"k", b"after restart").unwrap();
    assert!(next > before, "{next} <= {before}");
    assert!(
        next.millis() <= clock.now_millis(),
        "{} ms ahead of the wall clock",
        next.millis() - clock.now_millis()
    );
    next
}

#[test]
fn a_restarted_coordinator_mints_above_its_old_versions_without_running_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Manual::default());
    clock.set(T);
    let opts = shared(&clock);
    let cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(cluster.lease_wait(), Duration::ZERO);
    let before = write_some(&cluster, 100);
    drop(cluster);

    // Restarted right away, the wall clock where it was.
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let next = wait_out(&cluster, &clock, before);
    assert_eq!(cluster.lease_jumps(), 0);
    // It waited no longer than the lease window: the versions it minted were at the wall
    // clock, so the lease was one window past them.
    assert!(next.millis() - T <= LEASE_WINDOW.as_millis() as u64);
}

#[test]
fn quick_restarts_do_not_push_versions_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Manual::default());
    clock.set(T);
    let opts = shared(&clock);
    let cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
    let mut last = write_some(&cluster, 10);
    drop(cluster);
    for _ in 0..20 {
        let cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
        last = wait_out(&cluster, &clock, last);
        last = last.max(write_some(&cluster, 10));
        assert!(last.millis() <= clock.now_millis());
        drop(cluster);
    }
    // Each restart waited at most one window: 20 restarts, at most 20 windows of real time.
    assert!(clock.now_millis() - T <= 20 * LEASE_WINDOW.as_millis() as u64);
}

#[test]
fn a_clock_stepped_back_past_the_bound_still_mints_above_the_old_versions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Manual::default());
    clock.set(T);
    let opts = shared(&clock);
    let cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
    let before = write_some(&cluster, 10);
    drop(cluster);

    clock.set(T - 3_600_000);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    // No waiting an hour: the clock starts at the lease, and the jump is counted.
    assert_eq!(cluster.lease_wait(), Duration::ZERO);
    assert_eq!(cluster.lease_jumps(), 1);
    let next = cluster.put(b"k", b"after").unwrap();
    assert!(next > before, "{next} <= {before}");
    assert_eq!(cluster.get(b"k").unwrap().as_deref(), Some(&b"after"[..]));
}

#[test]
fn a_sole_coordinator_reopens_and_writes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Manual::default());
    clock.set(T);
    let opts = common::memory_opts().clock(Arc::clone(&clock) as Arc<dyn Clock>);
    assert!(!opts.other_coordinators_value());
    let cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
    let before = write_some(&cluster, 10);
    drop(cluster);

    let cluster = Cluster::open(dir.path(), opts).unwrap();
    assert_eq!(cluster.lease_wait(), Duration::ZERO);
    let next = cluster.put(b"k", b"v").unwrap();
    assert!(next > before);
    // Started at the lease: ahead of the wall clock by at most one window, not a minute.
    assert!(
        next.millis() - T <= LEASE_WINDOW.as_millis() as u64,
        "{next}"
    );
    assert_eq!(cluster.lease_jumps(), 0);
}

#[test]
fn the_lease_is_extended_once_per_window_of_writes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Manual::default());
    clock.set(T);
    let cluster = Cluster::open(dir.path(), shared(&clock)).unwrap();
    let lease = || {
        let text = std::fs::read_to_string(dir.path().join("cluster.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["version_lease"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let first = lease();
    assert_eq!(
        Version::new(first).millis(),
        T + LEASE_WINDOW.as_millis() as u64
    );
    // Writes within the window leave the lease alone (no `cluster.json` write).
    clock.advance(LEASE_WINDOW / 2);
    let v = write_some(&cluster, 50);
    assert_eq!(lease(), first);
    assert!(v.as_u64() < first);
    // The first write past it persists the next one, a window past that write.
    clock.advance(LEASE_WINDOW);
    let v = cluster.put(b"k", b"v").unwrap();
    assert_eq!(
        Version::new(lease()).millis(),
        v.millis() + LEASE_WINDOW.as_millis() as u64
    );
}
