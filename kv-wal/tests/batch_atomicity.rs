//! A batch is atomic in recovery: cutting the log anywhere inside a batch recovers all of it
//! or none of it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{collect, fast_tempdir, payload, read_dir, write_dir};
use kv_wal::{Lsn, SyncPolicy, Wal, WalOptions, layout::frame_len};

#[test]
fn cut_inside_a_batch_recovers_all_or_none() {
    let src = fast_tempdir();
    let opts = WalOptions::new().segment_size(4096).sync(SyncPolicy::Never);
    let wal = Wal::open(src.path(), opts.clone()).unwrap();
    wal.append(b"before").unwrap();
    let parts: Vec<Vec<u8>> = (0..5).map(|i| payload(100 + i)).collect();
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let start = wal.append_batch(&refs).unwrap();
    let all = collect(&wal);
    assert_eq!(all.len(), 6);
    let (last_lsn, last_payload) = all.last().unwrap();
    let batch_end = last_lsn.offset() as usize + frame_len(last_payload.len());
    // The batch is whole once its last payload byte is (its zero padding may be cut).
    let complete_at = last_lsn.offset() as usize + 8 + last_payload.len();
    drop(wal);
    let files = read_dir(src.path());
    let dir = fast_tempdir();
    for cut in start.offset() as usize..=batch_end {
        let mut image = files.clone();
        image[0].1[cut..].fill(0);
        write_dir(dir.path(), &image);
        let wal = Wal::open(dir.path(), opts.clone()).unwrap();
        let got = collect(&wal);
        if cut >= complete_at {
            assert_eq!(got, all, "cut at {cut}");
        } else {
            assert_eq!(got, all[..1], "cut at {cut}: a partial batch was recovered");
            if cut > start.offset() as usize {
                let t = wal.recovery_report().truncation.clone().unwrap();
                assert_eq!(t.offset, u64::from(start.offset()), "cut at {cut}");
            }
        }
    }
}

#[test]
fn batches_read_back_record_by_record() {
    let dir = fast_tempdir();
    let wal = Wal::open(dir.path(), WalOptions::new().segment_size(4096)).unwrap();
    let first = wal.append_batch(&[b"a", b"bb", b""]).unwrap();
    let recs: Vec<(Lsn, Vec<u8>)> = collect(&wal);
    assert_eq!(recs[0].0, first);
    let payloads: Vec<&[u8]> = recs.iter().map(|(_, p)| p.as_slice()).collect();
    assert_eq!(payloads, [&b"a"[..], b"bb", b""]);
    for (lsn, p) in &recs {
        assert_eq!(&wal.read(*lsn).unwrap(), p);
    }
    assert!(matches!(
        wal.append_batch(&[]),
        Err(kv_wal::Error::EmptyBatch)
    ));
}
