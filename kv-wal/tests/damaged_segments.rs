//! Segment files damaged outside the log's control: shortened, or made sparse by a copy.
//! A shortened older segment cut at a record boundary must not pass for a complete one (later
//! segments would be returned after a hole), and a sparse segment must be allocated before it
//! is mapped (else a write to a hole on a full disk is a SIGBUS).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::os::unix::fs::MetadataExt;

use common::{collect, payload, segment_files};
use kv_wal::{Error, RecoveryMode, SyncPolicy, Wal, WalOptions, layout::HEADER_LEN};

fn opts() -> WalOptions {
    WalOptions::new().segment_size(1024).sync(SyncPolicy::Never)
}

/// Writes records until the log spans at least four segments; returns the record count.
fn fill(dir: &std::path::Path) -> usize {
    let wal = Wal::open(dir, opts()).unwrap();
    let mut n = 0;
    while wal.end_lsn().segment() < 4 {
        wal.append(&payload(n as u64)).unwrap();
        n += 1;
    }
    n
}

/// Guards: a shortened older segment must not pass for a complete one.
#[test]
fn a_shortened_older_segment_is_not_taken_for_a_complete_one() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let second = &segment_files(dir.path())[1];
    // Cut the second segment right after its first record: a record boundary, so the scan
    // alone would see a clean end.
    let first_record = HEADER_LEN + kv_wal::layout::frame_len(payload(0).len());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(second)
        .unwrap();
    f.set_len(first_record.next_multiple_of(8) as u64).unwrap();
    drop(f);

    for mode in [
        RecoveryMode::TolerateCorruptedTail,
        RecoveryMode::AbsoluteConsistency,
    ] {
        match Wal::open(dir.path(), opts().recovery(mode)) {
            Err(Error::BadHeader { path, reason }) => {
                assert_eq!(&path, second);
                assert!(reason.contains("length"), "{reason}");
            }
            other => panic!("{mode:?}: expected BadHeader, got {:?}", other.map(|_| ())),
        }
    }
    // PointInTime keeps a prefix: nothing from the third segment on.
    let wal = Wal::open(dir.path(), opts().recovery(RecoveryMode::PointInTime)).unwrap();
    let got = collect(&wal);
    assert!(
        got.iter().all(|(lsn, _)| lsn.segment() < 2),
        "{:?}",
        got.last()
    );
    assert!(wal.recovery_report().truncation.is_some());
}

/// Guards: a sparse segment (as `cp --sparse=always` makes) is allocated before it is mapped.
#[test]
fn a_sparse_segment_is_allocated_again_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let n = fill(dir.path());
    let newest = segment_files(dir.path()).pop().unwrap();
    // Rewrite the newest segment as a sparse file with the same contents.
    let bytes = std::fs::read(&newest).unwrap();
    let used = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    std::fs::remove_file(&newest).unwrap();
    let f = std::fs::File::create(&newest).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &bytes[..used], 0).unwrap();
    f.set_len(bytes.len() as u64).unwrap();
    drop(f);
    let before = std::fs::metadata(&newest).unwrap().blocks() * 512;

    let wal = Wal::open(dir.path(), opts()).unwrap();
    let after = std::fs::metadata(&newest).unwrap().blocks() * 512;
    assert!(
        after >= bytes.len() as u64,
        "{before} -> {after} of {}",
        bytes.len()
    );
    assert_eq!(collect(&wal).len(), n);
    wal.append(b"after reopen").unwrap();
}

/// A log opened in directories that do not exist yet creates all of them.
#[test]
fn missing_directories_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("a").join("b").join("wal");
    let wal = Wal::open(&deep, opts()).unwrap();
    wal.append(b"x").unwrap();
    drop(wal);
    assert_eq!(collect(&Wal::open(&deep, opts()).unwrap()).len(), 1);
}
