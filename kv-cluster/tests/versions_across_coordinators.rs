//! Versions stay unique across coordinators (each mints in its own slot), and a coordinator
//! observes the versions its replicas return, but not past `MAX_SKEW` ahead of its clock.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use kv_cluster::{
    Backend, Clock, Cluster, ClusterOptions, Error, MAX_SKEW, MemoryBackend, Version, Write,
};
use kv_ring::NodeId;

/// A wall clock that never moves.
struct Frozen(u64);

impl Clock for Frozen {
    fn now_millis(&self) -> u64 {
        self.0
    }
}

const NOW: u64 = 1_800_000_000_000;

fn opts(mem: &Arc<MemoryBackend>, slot: u8) -> ClusterOptions {
    ClusterOptions::new()
        .backend(Arc::clone(mem) as Arc<dyn Backend>)
        .clock(Arc::new(Frozen(NOW)))
        .coordinator_slot(slot)
}

/// Writes `version` of `key` straight into every node of the cluster in `dir`, as another
/// coordinator's write would land.
fn land(mem: &MemoryBackend, dir: &Path, key: &[u8], version: Version) {
    for id in ["node1", "node2", "node3"] {
        let node = mem.open(&NodeId::new(id).unwrap(), &dir.join(id)).unwrap();
        let w = Write {
            key,
            value: Some(b"elsewhere"),
            version,
            expires: None,
        };
        node.apply(0, w).unwrap();
    }
}

#[test]
fn two_coordinators_on_one_frozen_clock_never_mint_the_same_version() {
    let mem = Arc::new(MemoryBackend::default());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Cluster::open(da.path(), opts(&mem, 1)).unwrap();
    let b = Cluster::open(db.path(), opts(&mem, 2)).unwrap();
    let mut all = Vec::new();
    for round in 0..1500u32 {
        let key = round.to_be_bytes();
        let va = a.put(&key, b"a").unwrap();
        let vb = b.put(&key, b"b").unwrap();
        assert_eq!((va.slot(), vb.slot()), (1, 2));
        // Now and then each sees the other's latest version through its replicas.
        if round % 3 == 0 {
            land(&mem, db.path(), b"probe", va);
            b.get(b"probe").unwrap();
            land(&mem, da.path(), b"probe", vb);
            a.get(b"probe").unwrap();
        }
        all.extend([va, vb]);
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "a version was minted twice");
}

#[test]
fn a_version_from_far_ahead_is_observed_only_up_to_the_bound() {
    let mem = Arc::new(MemoryBackend::default());
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), opts(&mem, 0)).unwrap();
    let skew = MAX_SKEW.as_millis() as u64;

    // Ahead, but within the bound: observed, the next write is newer.
    let near = Version::from_parts(NOW + skew / 2, 0);
    land(&mem, dir.path(), b"near", near);
    cluster.get(b"near").unwrap();
    assert!(cluster.put(b"x", b"1").unwrap() > near);
    assert_eq!(cluster.clock_skew_events(), 0);

    // A minute ahead: counted, and the clock goes only as far as the bound.
    let far = Version::from_parts(NOW + 60_000, 0);
    land(&mem, dir.path(), b"far", far);
    assert_eq!(
        cluster.get(b"far").unwrap().as_deref(),
        Some(&b"elsewhere"[..])
    );
    assert_eq!(cluster.clock_skew_events(), 1);
    let next = cluster.put(b"x", b"2").unwrap();
    assert!(next < far, "{next} must not follow {far}");
    assert!(next.millis() >= NOW + skew, "{next} is not at the bound");
    assert!(next.millis() <= NOW + skew + 1, "{next} is past the bound");
}

#[test]
fn a_slot_out_of_range_is_refused() {
    let mem = Arc::new(MemoryBackend::default());
    let dir = tempfile::tempdir().unwrap();
    let e = Cluster::open(dir.path(), opts(&mem, kv_node::MAX_SLOTS)).unwrap_err();
    assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
}
