//! Cutting the log at every byte offset of its last records, on real files: every record
//! wholly before the cut is recovered, nothing after it, and recovery never panics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{collect, fast_tempdir, payload, read_dir, write_dir};
use kv_wal::{Lsn, RecoveryMode, SyncPolicy, Wal, WalOptions, layout::HEADER_LEN};

const SEGMENT: u32 = 1024;

/// Writes `n` records (crossing segment boundaries) and returns them.
fn build(dir: &std::path::Path, n: u64) -> Vec<(Lsn, Vec<u8>)> {
    let opts = WalOptions::new()
        .segment_size(SEGMENT)
        .sync(SyncPolicy::Never);
    let wal = Wal::open(dir, opts).unwrap();
    for i in 0..n {
        wal.append(&payload(i)).unwrap();
    }
    wal.sync().unwrap();
    let all = collect(&wal);
    assert_eq!(all.len() as u64, n);
    all
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    /// The bytes after the cut are zeroed (what a preallocated segment looks like).
    ZeroFill,
    /// The file is shortened to the cut (`ftruncate`).
    Shorten,
}

fn cut_every_byte(how: Cut) {
    let src = tempfile::tempdir().unwrap();
    let records = build(src.path(), 30);
    let files = read_dir(src.path());
    let newest_seg = records.last().unwrap().0.segment();
    assert!(newest_seg > 1, "the log should span several segments");
    let (newest_name, newest_bytes) = files.last().unwrap().clone();
    // Cut at every byte of the last six records of the newest segment.
    let in_newest: Vec<&(Lsn, Vec<u8>)> = records
        .iter()
        .filter(|(l, _)| l.segment() == newest_seg)
        .collect();
    let first_cut = in_newest[in_newest.len().saturating_sub(6)].0.offset() as usize;
    let last = in_newest.last().unwrap();
    let end = last.0.offset() as usize + kv_wal::layout::frame_len(last.1.len()) + 8;
    // The hundreds of reopens run on tmpfs when there is one (the files are built on disk).
    let dir = fast_tempdir();
    for cut in first_cut.max(HEADER_LEN)..=end {
        let mut image = files.clone();
        let bytes = &mut image.last_mut().unwrap().1;
        match how {
            Cut::ZeroFill => bytes[cut..].fill(0),
            Cut::Shorten => bytes.truncate(cut),
        }
        write_dir(dir.path(), &image);
        let wal = Wal::open(
            dir.path(),
            WalOptions::new()
                .segment_size(SEGMENT)
                .sync(SyncPolicy::Never),
        )
        .unwrap_or_else(|e| panic!("{how:?} cut at {cut}: {e}"));
        let got = collect(&wal);
        // A record survives iff its header and payload are wholly before the cut.
        let want: Vec<(Lsn, Vec<u8>)> = records
            .iter()
            .filter(|(l, p)| l.segment() < newest_seg || l.offset() as usize + 8 + p.len() <= cut)
            .cloned()
            .collect();
        assert_eq!(got, want, "{how:?} cut at {cut}");
        // Bytes of a torn record left between the last whole record and the cut must be
        // discarded and reported.
        let valid_end = want
            .iter()
            .filter(|(l, _)| l.segment() == newest_seg)
            .map(|(l, p)| l.offset() as usize + kv_wal::layout::frame_len(p.len()))
            .max()
            .unwrap_or(HEADER_LEN);
        if newest_bytes[valid_end.min(cut)..cut]
            .iter()
            .any(|&b| b != 0)
        {
            let t = wal.recovery_report().truncation.clone();
            let t = t.unwrap_or_else(|| panic!("{how:?} cut at {cut}: no truncation reported"));
            assert_eq!(t.segment, newest_seg);
            assert_eq!(t.offset, valid_end as u64);
            assert!(t.path.ends_with(&newest_name));
        } else {
            assert_eq!(
                wal.recovery_report().truncation,
                None,
                "{how:?} cut at {cut}"
            );
        }
        // The log continues after the cut, and what it appends is recovered next time.
        if cut % 5 == 0 {
            let lsn = wal.append(b"after the cut").unwrap();
            wal.sync().unwrap();
            drop(wal);
            let wal = Wal::open(
                dir.path(),
                WalOptions::new()
                    .segment_size(SEGMENT)
                    .sync(SyncPolicy::Never),
            )
            .unwrap();
            let again = collect(&wal);
            assert_eq!(again.len(), want.len() + 1, "{how:?} cut at {cut}");
            assert_eq!(again.last().unwrap(), &(lsn, b"after the cut".to_vec()));
            assert!(wal.recovery_report().truncation.is_none());
        }
    }
}

#[test]
fn zero_filled_cut_at_every_byte_of_the_last_records() {
    cut_every_byte(Cut::ZeroFill);
}

#[test]
fn shortened_file_at_every_byte_of_the_last_records() {
    cut_every_byte(Cut::Shorten);
}

/// Under `AbsoluteConsistency` a torn tail is an error, not a truncation.
#[test]
fn absolute_consistency_refuses_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let records = build(dir.path(), 5);
    let mut files = read_dir(dir.path());
    let last = records.last().unwrap().0.offset() as usize;
    files.last_mut().unwrap().1[last + 9..].fill(0);
    write_dir(dir.path(), &files);
    let opts = WalOptions::new().recovery(RecoveryMode::AbsoluteConsistency);
    match Wal::open(dir.path(), opts) {
        Err(kv_wal::Error::Corrupt { offset, .. }) => assert_eq!(offset, last as u64),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The default mode truncates it.
    let wal = Wal::open(dir.path(), WalOptions::new()).unwrap();
    assert_eq!(collect(&wal).len(), 4);
    let t = wal.recovery_report().truncation.clone().unwrap();
    assert_eq!((t.offset, t.invalid_at), (last as u64, last as u64));
    assert!(t.bytes_discarded > 0);
}
