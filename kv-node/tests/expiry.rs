//! Expiring keys (`docs/design.md`, *Expiring keys*), judged against an injected clock that
//! the tests move by hand (nothing sleeps): reads, the versioned reads that must treat an
//! expired value as a tombstone at its version, compaction and recovery (nothing resurrects),
//! and active expiry (a store of short-lived keys nobody reads shrinks back).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::small_opts;
use kv_node::{Clock, Node, NodeOptions, Swapped, TokenRange, Version};
use kv_wal::{SyncPolicy, WalOptions};

/// A clock the test moves.
#[derive(Debug)]
struct FakeClock(AtomicU64);

impl FakeClock {
    /// 2026-01-01T00:00:00Z.
    fn new() -> Arc<FakeClock> {
        Arc::new(FakeClock(AtomicU64::new(1_767_225_600_000)))
    }

    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Clock for FakeClock {
    fn now_millis(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn opts(clock: &Arc<FakeClock>) -> NodeOptions {
    small_opts()
        .clock(clock.clone())
        .tombstone_grace(Duration::from_secs(3600))
}

/// Writes fresh keys until the log rolls over to a new segment.
fn seal(node: &Node) {
    let before = node.stats().segments;
    for i in 0u32.. {
        if node.stats().segments > before {
            return;
        }
        node.put(format!("filler{i}").as_bytes(), &[7; 100])
            .unwrap();
    }
}

/// Every read agrees: before its expiry the value is there; from its expiry on, `get` and
/// `get_many` find nothing, and every versioned read (what the cluster compares) answers
/// exactly what a tombstone at the same version answers, whether the value was cached or not.
#[test]
fn an_expired_key_reads_as_not_found_and_as_a_tombstone_at_its_version() {
    let clock = FakeClock::new();
    let now = clock.now_millis();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = Node::open(a.path(), opts(&clock)).unwrap();
    // The same history with a delete in place of the expiry: what every versioned read of
    // the expired key must equal.
    let deleted = Node::open(b.path(), opts(&clock)).unwrap();
    let v = Version::from_parts(now, 1);
    for n in [&node, &deleted] {
        n.apply(b"k", Some(b"old"), Version::from_parts(now - 10, 0))
            .unwrap();
        n.apply(b"plain", Some(b"p"), v).unwrap();
    }
    node.apply_expiring(b"k", Some(b"v"), v, Some(now + 1000))
        .unwrap();
    node.apply_expiring(b"uncached", Some(b"u"), v, Some(now + 1000))
        .unwrap();
    deleted.apply(b"k", None, v).unwrap();
    deleted.apply(b"uncached", None, v).unwrap();
    // `k` in the cache (admitted on its second miss), `uncached` not.
    for _ in 0..2 {
        assert_eq!(node.get(b"k").unwrap(), Some((Bytes::from_static(b"v"), v)));
    }
    assert_eq!(node.stats().expiring_keys, 2);
    assert_eq!(node.stats().cache_entries, 1);
    assert!(node.get(b"uncached").unwrap().is_some());

    clock.advance(Duration::from_millis(999));
    assert!(node.get(b"k").unwrap().is_some(), "a millisecond early");
    clock.advance(Duration::from_millis(1));
    let keys: [&[u8]; 3] = [b"k", b"uncached", b"plain"];
    for key in &keys[..2] {
        assert_eq!(node.get(key).unwrap(), None);
        assert_eq!(node.get_versioned(key).unwrap(), Some((None, v)));
        assert_eq!(
            node.get_versioned(key).unwrap(),
            deleted.get_versioned(key).unwrap()
        );
        assert_eq!(node.version_of(key), Some(v));
    }
    let many = node.get_many(&keys).unwrap();
    assert_eq!(many[..2], [None, None]);
    assert_eq!(many[2], Some((Bytes::from_static(b"p"), v)));
    assert_eq!(
        node.get_many_versioned(&keys).unwrap(),
        deleted.get_many_versioned(&keys).unwrap()
    );
    assert_eq!(node.versions_of(&keys), deleted.versions_of(&keys));
    // Anti-entropy sees nothing to repair between the two.
    assert_eq!(
        node.digests(TokenRange::FULL, 8),
        deleted.digests(TokenRange::FULL, 8)
    );
    // Exported as the tombstone it stands for (redistribution and repair carry a delete).
    let exported: Vec<_> = node
        .export(&[TokenRange::FULL], 100)
        .flat_map(Result::unwrap)
        .filter(|r| &r.key[..] == b"k")
        .collect();
    assert_eq!(exported.len(), 1);
    assert_eq!((exported[0].value.clone(), exported[0].version), (None, v));
    assert_eq!(exported[0].expires, None);
    // A write replacing it reports a tombstone, not a live value (Redis's DEL counts 0).
    let swapped = node
        .apply_swap(b"k", None, Version::from_parts(now + 2000, 0), true)
        .unwrap();
    let Swapped::Applied { previous: Some(p) } = swapped else {
        panic!("{swapped:?}")
    };
    assert_eq!((p.version, p.live, p.value), (v, false, None));
    // Nor does an older write win over it.
    assert!(
        !node
            .apply(b"uncached", Some(b"older"), Version::from_parts(now - 5, 0))
            .unwrap()
    );
    assert_eq!(node.get(b"uncached").unwrap(), None);
}

/// A later write replaces an expiring one like any write; a put without an expiry makes the
/// key permanent again; an expiry in the past deletes at once; a tombstone ignores an expiry.
#[test]
fn writes_replace_expiries_by_last_writer_wins() {
    let clock = FakeClock::new();
    let now = clock.now_millis();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), opts(&clock)).unwrap();
    node.put_expiring(b"k", b"1", Some(now + 10)).unwrap();
    let v2 = node.put(b"k", b"2").unwrap();
    node.put_expiring(b"past", b"x", Some(now - 1)).unwrap();
    node.apply_expiring(b"t", None, Version::from_parts(now, 9), Some(now + 5))
        .unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        node.get(b"k").unwrap(),
        Some((Bytes::from_static(b"2"), v2))
    );
    assert_eq!(node.get(b"past").unwrap(), None);
    assert_eq!(
        node.get_versioned(b"t").unwrap(),
        Some((None, Version::from_parts(now, 9)))
    );
    let s = node.stats();
    assert_eq!(
        (s.expiring_keys, s.tombstones),
        (1, 1),
        "only `past` has an expiry"
    );
}

/// An older value of the key (version 1) lies in an earlier segment; the expiring value
/// (version 2) expires. Compaction turns it into a tombstone at version 2, never copies the
/// old value back, and recovery (by scan and from hint files) finds the same; past the grace
/// period the tombstone goes and nothing of the key is left.
#[test]
fn an_expired_value_shadows_an_older_version_through_compaction_and_recovery() {
    let clock = FakeClock::new();
    let now = clock.now_millis();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), opts(&clock)).unwrap();
    let (v1, v2) = (Version::from_parts(now, 1), Version::from_parts(now, 2));
    node.apply(b"k", Some(b"old"), v1).unwrap();
    seal(&node);
    node.apply_expiring(b"k", Some(b"new"), v2, Some(now + 1000))
        .unwrap();
    seal(&node);
    clock.advance(Duration::from_secs(2));
    let report = node.compact().unwrap();
    assert_eq!(report.expired, 1, "{report:?}");
    let s = node.stats();
    assert_eq!((s.expiring_keys, s.tombstones), (0, 1));
    assert_eq!(node.get_versioned(b"k").unwrap(), Some((None, v2)));
    // A late copy of the old value (a replica that missed the expiring write) loses.
    let late = kv_node::Record {
        key: Bytes::from_static(b"k"),
        value: Some(Bytes::from_static(b"old")),
        version: v1,
        expires: None,
    };
    assert_eq!(node.import(&[late]).unwrap(), 0);
    drop(node);
    for hints in [false, true] {
        let node = Node::open(dir.path(), opts(&clock)).unwrap();
        assert_eq!(
            node.get_versioned(b"k").unwrap(),
            Some((None, v2)),
            "hints: {hints}"
        );
        node.write_hints().unwrap();
    }
    // Past the grace period: compacted away, and the key is gone for good.
    clock.advance(Duration::from_secs(7200));
    let node = Node::open(dir.path(), opts(&clock)).unwrap();
    seal(&node);
    assert!(node.compact().unwrap().tombstones_purged >= 1);
    assert_eq!(node.get_versioned(b"k").unwrap(), None);
    drop(node);
    let node = Node::open(dir.path(), opts(&clock)).unwrap();
    assert_eq!(
        node.get_versioned(b"k").unwrap(),
        None,
        "resurrected on reopen"
    );
}

/// The expiry survives a reopen, by a scan of the log and from hint files, and a record that
/// has not expired is copied by compaction with its expiry.
#[test]
fn recovery_and_compaction_carry_the_expiry() {
    let clock = FakeClock::new();
    let now = clock.now_millis();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), opts(&clock)).unwrap();
    let v = node
        .put_expiring(b"session", b"active", Some(now + 60_000))
        .unwrap();
    seal(&node);
    node.compact().unwrap(); // copied, not expired
    assert_eq!(node.stats().expiring_keys, 1);
    seal(&node);
    node.write_hints().unwrap();
    drop(node);
    for round in 0..2 {
        let node = Node::open(dir.path(), opts(&clock)).unwrap();
        if round == 1 {
            assert!(node.recovery_report().segments_from_hints > 0);
        }
        assert_eq!(node.stats().expiring_keys, 1);
        assert_eq!(node.get(b"session").unwrap().unwrap().1, v);
        node.write_hints().unwrap();
    }
    clock.advance(Duration::from_secs(60));
    let node = Node::open(dir.path(), opts(&clock)).unwrap();
    assert_eq!(node.get(b"session").unwrap(), None);
    assert_eq!(node.get_versioned(b"session").unwrap(), Some((None, v)));
}

/// Writes `n` keys with a 1 s TTL and never reads them; moves the clock past the TTL and the
/// tombstone grace; then runs the background thread's pass (`Node::maintain`) until nothing
/// changes. Within two passes the store holds no live key and no more than the active
/// segment and one more on disk.
fn short_lived_keys_are_reclaimed_unread(n: u32) {
    let clock = FakeClock::new();
    let segment = 256 << 10;
    let opts = NodeOptions::new()
        .wal(
            WalOptions::new()
                .segment_size(segment)
                .sync(SyncPolicy::Never),
        )
        .background(false)
        .clock(clock.clone())
        .tombstone_grace(Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), opts).unwrap();
    for i in 0..n {
        let expires = clock.now_millis() + 1000;
        node.put_expiring(
            format!("session:{i:07}").as_bytes(),
            b"0123456789abcdef",
            Some(expires),
        )
        .unwrap();
    }
    let disk = |node: &Node| -> u64 {
        std::fs::read_dir(node.dir().join("wal"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    let before = (node.stats(), disk(&node));
    assert_eq!(before.0.live_keys, u64::from(n));
    assert!(before.1 > 20 * u64::from(n), "{before:?}");
    // Nothing is reclaimed before the keys expire.
    assert_eq!(node.maintain().unwrap().segments_compacted, 0);
    clock.advance(Duration::from_secs(120));
    let mut passes = 0;
    loop {
        passes += 1;
        let report = node.maintain().unwrap();
        if report.segments_compacted == 0 {
            break;
        }
        assert!(passes <= 2, "more passes than expected: {report:?}");
    }
    let (after, on_disk) = (node.stats(), disk(&node));
    // Only what sits in the active segment (which compaction never takes) is left.
    let per_segment = u64::from(segment) / 64;
    assert!(after.live_keys <= per_segment, "{after:?}");
    assert!(after.tombstones == 0, "{after:?}");
    assert!(
        on_disk <= 2 * u64::from(segment) + 4096,
        "{on_disk} bytes left of {}",
        before.1
    );
    assert!(after.segments <= 2, "{after:?}");
    eprintln!(
        "{n} keys: {} -> {} live keys, {} -> {} bytes on disk, {passes} passes",
        before.0.live_keys, after.live_keys, before.1, on_disk
    );
}

#[test]
fn active_expiry_reclaims_100_000_short_lived_keys_nobody_reads() {
    short_lived_keys_are_reclaimed_unread(100_000);
}

/// The same with a million keys (about 70 MB of log; a few seconds).
#[test]
#[ignore = "large: run with --ignored"]
fn active_expiry_reclaims_a_million_short_lived_keys_nobody_reads() {
    short_lived_keys_are_reclaimed_unread(1_000_000);
}
