//! Range operations for redistribution: export/import round trip, drop (durable, and only of
//! what precedes it), counts.

#![allow(clippy::unwrap_used)]

mod common;

use common::{State, assert_same, dump, small_opts};
use kv_node::{Node, TokenRange, Version};
use kv_ring::token;

fn fill(node: &Node, n: u32) -> State {
    let mut want = State::new();
    for k in 0..n {
        let key = format!("key{k}").into_bytes();
        let ver = Version::new(100 + u64::from(k));
        let v = (k % 10 != 0).then(|| format!("v{k}").into_bytes());
        node.apply(&key, v.as_deref(), ver).unwrap();
        want.insert(key, (v, ver));
    }
    want
}

fn in_ranges(s: &State, ranges: &[TokenRange]) -> State {
    s.iter()
        .filter(|(k, _)| ranges.iter().any(|r| r.contains(token(k))))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A few ranges, one of them wrapping past zero.
fn ranges() -> Vec<TokenRange> {
    vec![
        TokenRange::new(u64::MAX - (1 << 61), 1 << 60),
        TokenRange::new(1 << 62, (1 << 62) + (1 << 60)),
    ]
}

#[test]
fn export_import_round_trip_moves_exactly_the_ranges() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let from = Node::open(a.path(), small_opts()).unwrap();
    let to = Node::open(b.path(), small_opts()).unwrap();
    let all = fill(&from, 2000);
    let ranges = ranges();
    let want = in_ranges(&all, &ranges);
    assert!(want.len() > 200 && want.len() < 1000, "{}", want.len());
    let mut batches = 0;
    for batch in from.export(&ranges, 64) {
        let batch = batch.unwrap();
        assert!(!batch.is_empty() && batch.len() <= 64);
        to.import(&batch).unwrap();
        batches += 1;
    }
    assert_eq!(batches, want.len().div_ceil(64));
    assert_same(&dump(&to), &want, "imported");
    // Tombstones travel too, and a second import changes nothing.
    let c = to.count_in_ranges(&[TokenRange::FULL]);
    assert_eq!(c.live + c.tombstones, want.len() as u64);
    assert!(c.tombstones > 0);
    for batch in from.export(&ranges, 1000) {
        assert_eq!(to.import(&batch.unwrap()).unwrap(), 0);
    }
    drop(to);
    let to = Node::open(b.path(), small_opts()).unwrap();
    assert_same(&dump(&to), &want, "imported, after reopen");
}

#[test]
fn import_never_overwrites_newer_data() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let from = Node::open(a.path(), small_opts()).unwrap();
    let to = Node::open(b.path(), small_opts()).unwrap();
    from.apply(b"k", Some(b"old"), Version::new(1)).unwrap();
    to.apply(b"k", Some(b"new"), Version::new(2)).unwrap();
    for batch in from.export(&[TokenRange::FULL], 10) {
        assert_eq!(to.import(&batch.unwrap()).unwrap(), 0);
    }
    assert_eq!(to.get(b"k").unwrap().unwrap().0, &b"new"[..]);
}

#[test]
fn drop_ranges_is_durable_and_spares_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), small_opts()).unwrap();
    let all = fill(&node, 2000);
    let ranges = ranges();
    let dropped = in_ranges(&all, &ranges);
    assert_eq!(node.drop_ranges(&ranges).unwrap(), dropped.len());
    assert_eq!(node.count_in_ranges(&ranges), Default::default());
    let mut want: State = all
        .iter()
        .filter(|(k, _)| !dropped.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Written after the drop, with an older version than what was dropped: kept (the node
    // no longer knew the key).
    let (k, _) = dropped.iter().next().unwrap();
    node.apply(k, Some(b"back"), Version::new(1)).unwrap();
    want.insert(k.clone(), (Some(b"back".to_vec()), Version::new(1)));
    assert_same(&dump(&node), &want, "after drop");
    for (k, _) in dropped.iter().skip(1).take(20) {
        assert_eq!(node.get(k).unwrap(), None);
    }
    // Across a restart (scan), and from hint files.
    drop(node);
    let node = Node::open(dir.path(), small_opts()).unwrap();
    assert_same(&dump(&node), &want, "after reopen");
    node.write_hints().unwrap();
    drop(node);
    let node = Node::open(dir.path(), small_opts()).unwrap();
    assert!(node.recovery_report().segments_from_hints > 0);
    assert_same(&dump(&node), &want, "after reopen from hints");
    // And after compaction has removed the drop record with the segments it covered.
    node.compact().unwrap();
    drop(node);
    let node = Node::open(dir.path(), small_opts()).unwrap();
    // Tombstones in sealed segments were purged (grace zero); those in the active one stay.
    let values = |s: &State| -> State {
        s.iter()
            .filter(|(_, (v, _))| v.is_some())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_same(&values(&dump(&node)), &values(&want), "after compaction");
    common::assert_gets(&node, &want);
}

#[test]
fn cached_values_are_dropped_too() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), small_opts().cache_entries(10_000)).unwrap();
    node.put(b"k", b"v").unwrap();
    // Read twice: a key enters the cache on its second miss.
    assert!(node.get(b"k").unwrap().is_some());
    assert!(node.get(b"k").unwrap().is_some());
    assert_eq!(node.stats().cache_entries, 1);
    node.drop_ranges(&[TokenRange::FULL]).unwrap();
    assert_eq!(node.get(b"k").unwrap(), None);
    assert_eq!(node.drop_ranges(&[]).unwrap(), 0);
}

#[test]
fn export_during_compaction_still_yields_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), small_opts()).unwrap();
    let mut want = fill(&node, 1500);
    // Overwrite half so compaction has work, then export while compacting.
    for k in (0..1500u32).step_by(2) {
        let key = format!("key{k}").into_bytes();
        node.apply(&key, Some(b"new"), Version::new(10_000))
            .unwrap();
        want.insert(key, (Some(b"new".to_vec()), Version::new(10_000)));
    }
    let mut got = State::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..5 {
                node.compact().unwrap();
            }
        });
        for batch in node.export(&[TokenRange::FULL], 50) {
            for r in batch.unwrap() {
                got.insert(r.key.to_vec(), (r.value.map(|v| v.to_vec()), r.version));
            }
        }
    });
    // Tombstones may be purged by compaction (grace zero); every value is there.
    let values = |s: &State| -> State {
        s.iter()
            .filter(|(_, (v, _))| v.is_some())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_same(&values(&got), &values(&want), "export during compaction");
}

#[test]
fn digests_match_for_the_same_writes_and_find_a_single_difference() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let x = Node::open(a.path(), small_opts()).unwrap();
    let y = Node::open(b.path(), small_opts()).unwrap();
    let all = fill(&x, 3000);
    // The same writes in another order, plus a replayed older version: same state.
    let mut writes: Vec<_> = all.iter().collect();
    writes.reverse();
    for (k, (v, ver)) in writes {
        y.apply(k, v.as_deref(), *ver).unwrap();
        y.apply(k, Some(b"stale"), Version::new(1)).unwrap();
    }
    let range = TokenRange::new(u64::MAX / 3, u64::MAX / 3 * 2);
    assert_eq!(x.digests(range, 64), y.digests(range, 64));
    let total: u64 = x.digests(range, 64).iter().map(|d| d.keys).sum();
    assert_eq!(total, in_ranges(&all, &[range]).len() as u64);
    // One key newer on y: exactly one leaf differs, and it holds that key.
    let (k, (_, ver)) = in_ranges(&all, &[range]).into_iter().next().unwrap();
    y.apply(&k, Some(b"newer"), Version::new(ver.as_u64() + 1))
        .unwrap();
    let (dx, dy) = (x.digests(range, 64), y.digests(range, 64));
    let differing: Vec<usize> = (0..64).filter(|&i| dx[i] != dy[i]).collect();
    assert_eq!(differing.len(), 1);
    let leaf = Node::leaf_range(range, 64, differing[0] as u32);
    assert!(leaf.contains(token(&k)));
    let exported: Vec<_> = y.export(&[leaf], 1000).flat_map(|b| b.unwrap()).collect();
    assert!(
        exported
            .iter()
            .any(|r| r.key[..] == k[..] && r.value.as_deref() == Some(&b"newer"[..]))
    );
    assert!(exported.len() < 3000 / 64 * 4);
}
