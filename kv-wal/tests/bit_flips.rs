//! Flipping every bit of a small log, one at a time: each flip is detected (an error, or a
//! reported truncation) and never returned as data.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{collect, fast_tempdir, payload, read_dir, write_dir};
use kv_wal::{RecoveryMode, SyncPolicy, Wal, WalOptions};

#[test]
fn every_bit_flip_is_detected() {
    let src = fast_tempdir();
    let opts = WalOptions::new().segment_size(256).sync(SyncPolicy::Never);
    let wal = Wal::open(src.path(), opts.clone()).unwrap();
    for i in 0..10 {
        wal.append(&payload(i * 3)).unwrap();
    }
    wal.append_batch(&[b"batch-a", b"batch-b"]).unwrap();
    wal.append(b"").unwrap();
    let original = collect(&wal);
    drop(wal);
    let files = read_dir(src.path());
    assert!(
        files.len() >= 3,
        "want several segments, got {}",
        files.len()
    );

    let dir = fast_tempdir();
    let mut flips = 0;
    for f in 0..files.len() {
        for byte in 0..files[f].1.len() {
            for bit in 0..8 {
                let mut image = files.clone();
                image[f].1[byte] ^= 1 << bit;
                write_dir(dir.path(), &image);
                flips += 1;
                let what = format!("flip {}:{byte}.{bit}", files[f].0);
                // Default mode: an error, or a reported truncation.
                match Wal::open(dir.path(), opts.clone()) {
                    Err(_) => {}
                    Ok(wal) => {
                        let got = collect(&wal);
                        assert!(
                            wal.recovery_report().truncation.is_some(),
                            "{what}: not detected"
                        );
                        assert!(got.len() <= original.len(), "{what}");
                        assert_eq!(got[..], original[..got.len()], "{what}: bad data returned");
                    }
                }
                // PointInTime never fails on content and returns only good records.
                write_dir(dir.path(), &image);
                let pit = opts.clone().recovery(RecoveryMode::PointInTime);
                let wal = Wal::open(dir.path(), pit).unwrap_or_else(|e| panic!("{what}: {e}"));
                let got = collect(&wal);
                assert!(got.len() < original.len() || wal.recovery_report().truncation.is_some());
                assert_eq!(got[..], original[..got.len()], "{what}: bad data returned");
            }
        }
    }
    assert_eq!(flips, files.iter().map(|(_, b)| b.len() * 8).sum::<usize>());
}
