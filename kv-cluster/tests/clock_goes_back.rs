//! A wall clock that goes back across a restart does not make new writes lose to old ones: the
//! cluster persists a version lease above every version it issued and starts above it.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kv_cluster::{Clock, Cluster};

/// A clock the test sets.
#[derive(Default)]
struct Manual(AtomicU64);

impl Clock for Manual {
    fn now_millis(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn lease(dir: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("cluster.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    // A decimal string: JSON readers that use doubles would round it as a number.
    json["version_lease"].as_str().unwrap().parse().unwrap()
}

#[test]
fn a_write_after_the_clock_went_back_still_wins() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Manual::default());
    let opts = common::memory_opts().clock(clock.clone());

    clock.0.store(1_800_000_000_000, Ordering::Relaxed);
    let cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
    let first = cluster.put(b"k", b"before").unwrap();
    // The clock runs past the lease: the next write pushes it further.
    let lease_before = lease(dir.path());
    clock
        .0
        .store(1_800_000_000_000 + 120_000, Ordering::Relaxed);
    let second = cluster.put(b"k", b"later").unwrap();
    assert!(second > first);
    assert!(lease(dir.path()) > lease_before);
    assert!(second.as_u64() < lease(dir.path()));
    drop(cluster);

    // Restart with the clock an hour behind.
    clock
        .0
        .store(1_800_000_000_000 - 3_600_000, Ordering::Relaxed);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let third = cluster.put(b"k", b"after restart").unwrap();
    assert!(third > second, "{third} <= {second}");
    assert_eq!(
        cluster.get(b"k").unwrap().as_deref(),
        Some(&b"after restart"[..])
    );
}
