//! Compaction, tombstone purge, hint files and recovery: a crash at any step loses nothing and
//! resurrects nothing, and recovery with and without hint files gives the same state.

#![allow(clippy::unwrap_used)]

mod common;

use common::{State, assert_same, dump, hint_files, small_opts, value};
use kv_node::{Node, Version};

/// Writes `rounds` versions of `keys` keys, deleting every third key in the last round, then
/// enough fresh keys that all of that lies in sealed segments. Returns the expected state.
fn churn(node: &Node, keys: u32, rounds: u64) -> State {
    let mut want = State::new();
    for round in 1..=rounds {
        for k in 0..keys {
            let key = format!("k{k:05}").into_bytes();
            let ver = Version::new(round * 1_000 + u64::from(k));
            let v = (round < rounds || k % 3 != 0).then(|| value(k, round));
            node.apply(&key, v.as_deref(), ver).unwrap();
            want.insert(key, (v, ver));
        }
    }
    for k in 0..400u32 {
        let key = format!("filler{k:03}").into_bytes();
        let ver = Version::new(1_000_000 + u64::from(k));
        node.apply(&key, Some(b"filler"), ver).unwrap();
        want.insert(key, (Some(b"filler".to_vec()), ver));
    }
    want
}

fn without_tombstones(s: &State) -> State {
    s.iter()
        .filter(|(_, (v, _))| v.is_some())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn compaction_reclaims_space_and_keeps_every_live_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), small_opts()).unwrap();
    let want = churn(&node, 300, 6);
    let before = node.stats();
    assert!(before.segments > 10, "{before:?}");
    let report = node.compact().unwrap();
    assert!(
        report.segments_deleted > 0 && report.records_copied > 0,
        "{report:?}"
    );
    assert_eq!(
        report.tombstones_purged, 100,
        "grace is zero: every tombstone goes"
    );
    let after = node.stats();
    assert!(
        after.segments < before.segments / 2,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.dead_bytes < before.dead_bytes / 4,
        "{before:?} -> {after:?}"
    );
    assert_eq!((after.live_keys, after.tombstones), (600, 0));
    // Purged tombstones are gone, not resurrected: the deleted keys stay absent.
    assert_same(&dump(&node), &without_tombstones(&want), "state");
    common::assert_gets(&node, &want);
    drop(node);
    let node = Node::open(dir.path(), small_opts()).unwrap();
    assert_same(&dump(&node), &without_tombstones(&want), "after reopen");
    common::assert_gets(&node, &want);
}

#[test]
fn tombstones_within_their_grace_period_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts().tombstone_grace(std::time::Duration::from_secs(3600));
    let node = Node::open(dir.path(), opts.clone()).unwrap();
    // Versions from the real clock, so the grace period counts from now.
    for k in 0..300u32 {
        node.put(format!("k{k}").as_bytes(), &value(k, 1)).unwrap();
    }
    for k in 0..300u32 {
        node.delete(format!("k{k}").as_bytes()).unwrap();
    }
    for k in 0..300u32 {
        node.put(format!("filler{k}").as_bytes(), &value(k, 2))
            .unwrap();
    }
    let report = node.compact().unwrap();
    assert_eq!(report.tombstones_purged, 0);
    assert_eq!(node.stats().tombstones, 300);
    drop(node);
    let node = Node::open(dir.path(), opts).unwrap();
    assert_eq!(node.stats().tombstones, 300);
    assert_eq!(node.get(b"k7").unwrap(), None);
}

#[test]
fn a_crash_at_any_step_of_compaction_loses_and_resurrects_nothing() {
    // Compaction finding live records by reading the log, then by the index.
    for (step, scan) in (1..=4u8).flat_map(|s| [(s, false), (s, true)]) {
        let small_opts = || small_opts().compaction_scan(Some(scan));
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(dir.path(), small_opts()).unwrap();
        let want = churn(&node, 300, 5);
        node.write_hints().unwrap();
        drop(node);
        // Crash (drop without cleanup) at `step`.
        let node = Node::open(dir.path(), small_opts().fail_compaction_at(step)).unwrap();
        let err = node.compact().unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        drop(node);
        let node = Node::open(dir.path(), small_opts()).unwrap();
        let got = dump(&node);
        // Tombstones may or may not have been purged, values all survive, no delete undone.
        assert_same(
            &without_tombstones(&got),
            &without_tombstones(&want),
            &format!("step {step}, scan index {scan}"),
        );
        common::assert_gets(&node, &want);
        // A full compaction after the crash finishes the job.
        node.compact().unwrap();
        drop(node);
        let node = Node::open(dir.path(), small_opts()).unwrap();
        assert_same(
            &dump(&node),
            &without_tombstones(&want),
            &format!("step {step}, scan index {scan}, compacted again"),
        );
        let s = node.stats();
        assert_eq!((s.live_keys, s.tombstones), (600, 0), "step {step}");
    }
}

#[test]
fn recovery_with_and_without_hints_gives_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), small_opts()).unwrap();
    let want = churn(&node, 400, 4);
    node.drop_ranges(&[kv_node::TokenRange::new(0, u64::MAX / 4)])
        .unwrap();
    for k in 0..50u32 {
        node.put(format!("late{k}").as_bytes(), b"after the drop")
            .unwrap();
    }
    let expected = dump(&node);
    assert!(expected.len() < want.len() + 50);
    assert!(node.write_hints().unwrap() > 5);
    drop(node);

    let node = Node::open(dir.path(), small_opts()).unwrap();
    let r = node.recovery_report().clone();
    assert!(
        r.segments_from_hints > 5 && r.segments_scanned == 1,
        "{r:?}"
    );
    assert!(r.rejected_hints.is_empty());
    assert_same(&dump(&node), &expected, "state");
    let stats_hinted = node.stats();
    drop(node);

    for h in hint_files(dir.path()) {
        std::fs::remove_file(h).unwrap();
    }
    let node = Node::open(dir.path(), small_opts()).unwrap();
    let r = node.recovery_report().clone();
    assert_eq!(r.segments_from_hints, 0);
    assert_same(&dump(&node), &expected, "state");
    let stats_scanned = node.stats();
    assert_eq!(
        (
            stats_hinted.live_keys,
            stats_hinted.tombstones,
            stats_hinted.live_bytes,
            stats_hinted.dead_bytes
        ),
        (
            stats_scanned.live_keys,
            stats_scanned.tombstones,
            stats_scanned.live_bytes,
            stats_scanned.dead_bytes
        )
    );
}

#[test]
fn damaged_or_stale_hint_files_fall_back_to_scanning() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), small_opts()).unwrap();
    churn(&node, 300, 3);
    node.write_hints().unwrap();
    let expected = dump(&node);
    drop(node);
    let hints = hint_files(dir.path());
    assert!(hints.len() >= 4);
    // 1: a bit flip. 2: truncated. 3: the hint of another segment (stale). 4: an entry
    // pointing past the end of its segment, with the checksum fixed up.
    let mut b = std::fs::read(&hints[0]).unwrap();
    b[40] ^= 1;
    std::fs::write(&hints[0], b).unwrap();
    let b = std::fs::read(&hints[1]).unwrap();
    std::fs::write(&hints[1], &b[..b.len() / 2]).unwrap();
    std::fs::copy(&hints[3], &hints[2]).unwrap();
    let mut b = std::fs::read(&hints[3]).unwrap();
    b[32 + 24..32 + 28].copy_from_slice(&(1u32 << 24).to_le_bytes());
    let body = b.len() - 4;
    let crc = crc32c::crc32c(&b[..body]);
    b[body..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&hints[3], b).unwrap();

    let node = Node::open(dir.path(), small_opts()).unwrap();
    let r = node.recovery_report().clone();
    assert_eq!(r.rejected_hints.len(), 4, "{r:?}");
    assert_same(&dump(&node), &expected, "state");
    // They are written again, and the next recovery uses them all.
    assert_eq!(node.write_hints().unwrap(), 4);
    drop(node);
    let node = Node::open(dir.path(), small_opts()).unwrap();
    assert!(node.recovery_report().rejected_hints.is_empty());
    assert_same(&dump(&node), &expected, "state");
}

#[test]
fn background_thread_writes_hints_and_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts()
        .background(true)
        .maintenance_interval(std::time::Duration::from_millis(10))
        .compaction_threshold(0.5);
    let node = Node::open(dir.path(), opts.clone()).unwrap();
    let want = churn(&node, 200, 8);
    // Bounded waits for the background thread (it runs every 10 ms).
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        for _ in 0..1000 {
            if done() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the background thread did not {what}: {:?}", node.stats());
    };
    wait_for("compact", &|| node.stats().compactions > 0);
    // New keys only: sealed segments with nothing dead get hint files, not compaction.
    for k in 0..400u32 {
        node.put(format!("fresh{k}").as_bytes(), &value(k, 0))
            .unwrap();
    }
    wait_for("write hint files", &|| hint_files(dir.path()).len() >= 3);
    // The log's dead fraction falls to about the threshold (the active segment aside).
    wait_for("compact to the threshold", &|| {
        let s = node.stats();
        s.dead_bytes < s.live_bytes + 8192
    });
    assert!(node.stats().hints_written >= 3);
    assert_eq!(node.stats().last_maintenance_error, None);
    common::assert_gets(&node, &want);
    node.close().unwrap();
    let node = Node::open(dir.path(), opts).unwrap();
    let r = node.recovery_report();
    assert!(
        // The thread may have compacted again (and sealed segments not hinted yet) since.
        r.segments_from_hints >= 1,
        "{r:?} {:?}",
        hint_files(dir.path())
    );
    common::assert_gets(&node, &want);
}

#[test]
fn a_failed_compaction_keeps_memory_and_log_in_agreement() {
    // An expired tombstone leaves the index only once its segment is deleted: if compaction
    // fails before that, a late older write must still lose to it, now and after a restart.
    for step in 1..=3u8 {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(dir.path(), small_opts()).unwrap();
        node.apply(b"victim", Some(b"old"), Version::new(5))
            .unwrap();
        node.apply(b"victim", None, Version::new(10)).unwrap();
        churn(&node, 200, 2);
        drop(node);
        let node = Node::open(dir.path(), small_opts().fail_compaction_at(step)).unwrap();
        assert!(node.compact().is_err());
        assert!(
            !node
                .apply(b"victim", Some(b"late"), Version::new(7))
                .unwrap(),
            "step {step}: a write older than the delete was accepted"
        );
        assert_eq!(node.get(b"victim").unwrap(), None);
        drop(node);
        let node = Node::open(dir.path(), small_opts()).unwrap();
        assert_eq!(node.get(b"victim").unwrap(), None, "step {step}");
    }
}

#[test]
fn a_hint_that_cannot_be_written_does_not_stop_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts()
        .background(true)
        .maintenance_interval(std::time::Duration::from_millis(5));
    let node = Node::open(dir.path(), opts).unwrap();
    // Segment 1's hint cannot be written: a directory sits where its temporary file goes.
    std::fs::create_dir(dir.path().join("wal").join("0000000001.hint.tmp")).unwrap();
    let want = churn(&node, 200, 10);
    let mut compacted = false;
    for _ in 0..1000 {
        if node.stats().compactions > 0 {
            compacted = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let s = node.stats();
    assert!(compacted, "{s:?}");
    // Other segments got their hints despite the failing one.
    assert!(s.hints_written > 0, "{s:?}");
    common::assert_gets(&node, &want);
}

/// Writes `big` (one value per key, in this order) among overwrites of small keys, then seals
/// everything; compacts (reading the index, then the segments) and checks that the space is
/// reclaimed and every key reads back, before and after a reopen.
fn compact_with_large_values(opts: kv_node::NodeOptions, big: &[usize]) {
    for scan in [true, false] {
        let opts = opts.clone().compaction_scan(Some(scan));
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(dir.path(), opts.clone()).unwrap();
        let mut want = State::new();
        let mut version = 0u64;
        let mut put = |node: &Node, key: Vec<u8>, v: Vec<u8>| {
            version += 1;
            let ver = Version::new(version);
            node.apply(&key, Some(&v), ver).unwrap();
            want.insert(key, (Some(v), ver));
        };
        for (i, &len) in big.iter().enumerate() {
            // Live small records before each large one, so a copy batch holds them when the
            // large one comes.
            for k in 0..150u32 {
                put(
                    &node,
                    format!("live{i}-{k:03}").into_bytes(),
                    vec![b'l'; 1000],
                );
            }
            put(
                &node,
                format!("big{i}").into_bytes(),
                vec![b'B' + i as u8; len],
            );
        }
        // Overwrites: dead space in sealed segments after the large values.
        let small = node.stats().segments;
        for round in 0.. {
            if round >= 3 && node.stats().segments >= small + 3 {
                break;
            }
            for k in 0..50u32 {
                put(&node, format!("hot{k:02}").into_bytes(), vec![b'h'; 1000]);
            }
        }
        let before = node.stats();
        let report = node
            .compact()
            .unwrap_or_else(|e| panic!("scan {scan}: {e}"));
        let after = node.stats();
        assert!(report.segments_deleted > 0, "scan {scan}: {report:?}");
        assert!(
            after.dead_bytes < before.dead_bytes / 2,
            "scan {scan}: {before:?} -> {after:?}"
        );
        assert_eq!(after.last_maintenance_error, None);
        common::assert_gets(&node, &want);
        drop(node);
        let node = Node::open(dir.path(), opts).unwrap();
        assert_same(&dump(&node), &want, "after reopen");
    }
}

#[test]
fn compaction_copies_a_value_near_the_segment_size_alone() {
    let opts = small_opts().wal(
        kv_wal::WalOptions::new()
            .segment_size(1 << 20)
            .sync(kv_wal::SyncPolicy::Never),
    );
    compact_with_large_values(opts, &[900 << 10]);
}

#[test]
fn compaction_copies_values_larger_than_half_a_small_segment() {
    compact_with_large_values(small_opts(), &[3_000, 7_000, 3_000, 7_000]);
}

/// A hint file that cannot be deleted with its segment fails the compaction, and a later
/// compaction deletes it (and the hints after it).
#[test]
fn a_hint_file_that_cannot_be_deleted_is_deleted_by_a_later_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), small_opts()).unwrap();
    let want = churn(&node, 200, 6);
    assert!(node.write_hints().unwrap() > 3);
    let hints = hint_files(dir.path());
    // Segment 2's hint becomes a non-empty directory: `remove_file` fails on it.
    let stuck = dir.path().join("wal").join("0000000002.hint");
    std::fs::remove_file(&stuck).unwrap();
    std::fs::create_dir(&stuck).unwrap();
    std::fs::write(stuck.join("x"), b"x").unwrap();
    assert!(node.compact().is_err());
    std::fs::remove_dir_all(&stuck).unwrap();
    std::fs::write(&stuck, b"").unwrap();
    // More writes seal the segment the copies went to: something to compact again.
    let mut want = want;
    for k in 0..200u32 {
        let key = format!("more{k:03}").into_bytes();
        let ver = Version::new(2_000_000 + u64::from(k));
        node.apply(&key, Some(b"more"), ver).unwrap();
        want.insert(key, (Some(b"more".to_vec()), ver));
    }
    node.compact().unwrap();
    let first = node.stats();
    let left = hint_files(dir.path());
    for h in &hints {
        let seq: u32 = h.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let segment = dir.path().join("wal").join(format!("{seq:010}.wal"));
        assert!(
            segment.exists() || !left.contains(h),
            "hint {h:?} outlived its segment ({first:?})"
        );
    }
    common::assert_gets(&node, &without_tombstones(&want));
}
