//! Segments start small and double up to the configured size: an empty log takes a
//! megabyte of disk, not a full segment, and a record too large for a young segment opens
//! one its size.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use common::segment_files;
use kv_wal::{SyncPolicy, Wal, WalOptions};

const MIB: u64 = 1 << 20;

/// The sizes of the segment files, in order.
fn sizes(dir: &Path) -> Vec<u64> {
    segment_files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect()
}

/// Bytes allocated on disk for the files directly in `dir`.
fn allocated(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
        .sum()
}

#[test]
fn a_fresh_log_with_a_few_records_allocates_about_a_megabyte() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), WalOptions::new()).unwrap();
    for i in 0..10u32 {
        wal.append(&i.to_le_bytes()).unwrap();
    }
    wal.close().unwrap();
    assert_eq!(sizes(dir.path()), [MIB]);
    let used = allocated(dir.path());
    assert!(used <= 2 * MIB, "{used} bytes allocated");
    // Every mapped byte is allocated (a hole would be a SIGBUS on a full disk).
    assert!(used >= MIB, "{used} bytes allocated");
}

#[test]
fn each_segment_doubles_the_previous_up_to_the_configured_size() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions::new()
        .segment_size(8 << 20)
        .sync(SyncPolicy::Never);
    let wal = Wal::open(dir.path(), opts.clone()).unwrap();
    let record = vec![5u8; 100 << 10];
    let mut lsns = Vec::new();
    while segment_files(dir.path()).len() < 6 {
        lsns.push(wal.append(&record).unwrap());
    }
    assert_eq!(
        sizes(dir.path()),
        [MIB, 2 * MIB, 4 * MIB, 8 * MIB, 8 * MIB, 8 * MIB]
    );
    drop(wal);
    // Recovery reads segments of every size, and growth goes on from the newest.
    let wal = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(wal.recovery_report().records, lsns.len() as u64);
    for lsn in &lsns {
        assert_eq!(wal.read(*lsn).unwrap(), &record[..]);
    }
}

#[test]
fn a_record_larger_than_a_young_segment_opens_a_segment_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions::new().sync(SyncPolicy::Never);
    let wal = Wal::open(dir.path(), opts.clone()).unwrap();
    let small = wal.append(b"small").unwrap();
    let big = vec![9u8; 16 << 20];
    let at = wal.append(&big).unwrap();
    let after = wal.append(b"after").unwrap();
    assert_eq!(at.segment(), small.segment() + 1);
    let sizes = sizes(dir.path());
    assert_eq!(sizes[0], MIB);
    assert!(
        sizes[1] >= (16 << 20) + 40 && sizes[1] < (17 << 20),
        "{sizes:?}"
    );
    // The largest record of all fits too: one that fills a whole configured segment.
    let largest = vec![3u8; (64 << 20) - 40];
    let l = wal.append(&largest).unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(wal.read(small).unwrap(), &b"small"[..]);
    assert_eq!(wal.read(at).unwrap(), &big[..]);
    assert_eq!(wal.read(after).unwrap(), &b"after"[..]);
    assert_eq!(wal.read(l).unwrap().len(), largest.len());
}

#[test]
fn a_log_reopened_with_a_smaller_segment_size_keeps_its_segments() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), WalOptions::new().sync(SyncPolicy::Never)).unwrap();
    let a = wal.append(&vec![1u8; 700 << 10]).unwrap();
    let b = wal.append(&vec![2u8; 700 << 10]).unwrap();
    drop(wal);
    let opts = WalOptions::new()
        .segment_size(64 << 10)
        .sync(SyncPolicy::Never);
    let wal = Wal::open(dir.path(), opts).unwrap();
    let c = wal.append(&vec![3u8; 60 << 10]).unwrap();
    let d = wal.append(&vec![4u8; 60 << 10]).unwrap();
    assert_eq!(sizes(dir.path())[..2], [MIB, 2 * MIB]);
    assert!(
        sizes(dir.path())[2..].iter().all(|&s| s <= 64 << 10),
        "{:?}",
        sizes(dir.path())
    );
    for (lsn, byte) in [(a, 1), (b, 2), (c, 3), (d, 4)] {
        assert_eq!(wal.read(lsn).unwrap()[0], byte);
    }
}
