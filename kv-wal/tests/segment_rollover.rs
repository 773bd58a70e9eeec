//! Roll-over across segment boundaries, reopening and continuing, reading while appending,
//! and removing old segments.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;

use common::{collect, fast_tempdir, payload, segment_files};
use kv_wal::{Error, Lsn, RecoveryMode, SyncPolicy, Wal, WalOptions, layout::HEADER_LEN};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn opts() -> WalOptions {
    WalOptions::new().segment_size(1024).sync(SyncPolicy::Never)
}

/// A model-based test: random appends and batches over several sessions, checked against a
/// `BTreeMap` after every reopen.
#[test]
fn reopen_and_continue_across_segment_boundaries() {
    let dir = fast_tempdir();
    let mut rng = StdRng::seed_from_u64(7);
    let mut model: BTreeMap<Lsn, Vec<u8>> = BTreeMap::new();
    let mut n = 0u64;
    for session in 0..6 {
        let wal = Wal::open(dir.path(), opts()).unwrap();
        assert_eq!(
            wal.recovery_report().records,
            model.len() as u64,
            "session {session}"
        );
        assert_eq!(wal.recovery_report().truncation, None);
        let got: BTreeMap<Lsn, Vec<u8>> = collect(&wal).into_iter().collect();
        assert_eq!(got, model, "session {session}");
        for _ in 0..rng.random_range(10..40) {
            if rng.random_bool(0.2) {
                let k = rng.random_range(1..4);
                let ps: Vec<Vec<u8>> = (0..k).map(|i| payload(n + i)).collect();
                let refs: Vec<&[u8]> = ps.iter().map(Vec::as_slice).collect();
                let first = wal.append_batch(&refs).unwrap();
                let recs: Vec<_> = wal.iter_from(first).take(k as usize).collect();
                for (r, p) in recs.into_iter().zip(ps) {
                    let r = r.unwrap();
                    assert_eq!(r.payload, p);
                    model.insert(r.lsn, p);
                }
                n += k;
            } else {
                let p = payload(n);
                model.insert(wal.append(&p).unwrap(), p);
                n += 1;
            }
        }
        for (lsn, p) in &model {
            assert_eq!(&wal.read(*lsn).unwrap(), p);
        }
    }
    assert!(segment_files(dir.path()).len() > 5);
}

#[test]
fn iterate_while_appending() {
    let dir = fast_tempdir();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    const N: u64 = 2000;
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..N {
                wal.append(&payload(i)).unwrap();
            }
        });
        s.spawn(|| {
            let mut it = wal.iter_from(Lsn::ZERO);
            let mut seen = 0u64;
            // Bounded: each pass either makes progress or yields; the writer finishes.
            for _ in 0..10_000_000u64 {
                match it.next() {
                    Some(r) => {
                        assert_eq!(r.unwrap().payload, payload(seen));
                        seen += 1;
                        if seen == N {
                            break;
                        }
                    }
                    None => std::thread::yield_now(),
                }
            }
            assert_eq!(seen, N);
        });
    });
}

#[test]
fn concurrent_appenders_lose_nothing() {
    let dir = fast_tempdir();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    let got: BTreeMap<Lsn, Vec<u8>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8u64)
            .map(|t| {
                let wal = &wal;
                s.spawn(move || {
                    (0..300u64)
                        .map(|i| {
                            let p = payload(t << 32 | i);
                            (wal.append(&p).unwrap(), p)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(got.len(), 2400);
    let all: BTreeMap<Lsn, Vec<u8>> = collect(&wal).into_iter().collect();
    assert_eq!(all, got);
    drop(wal);
    let wal = Wal::open(dir.path(), opts()).unwrap();
    assert_eq!(collect(&wal).into_iter().collect::<BTreeMap<_, _>>(), got);
}

#[test]
fn truncate_before_removes_whole_old_segments() {
    let dir = fast_tempdir();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    let lsns: Vec<Lsn> = (0..100).map(|i| wal.append(&payload(i)).unwrap()).collect();
    let cut = lsns[60];
    let before = segment_files(dir.path()).len();
    // An iterator positioned in an old segment keeps it (and every later one) alive.
    let mut it = wal.iter_from(Lsn::ZERO);
    it.next().unwrap().unwrap();
    assert_eq!(wal.truncate_before(cut).unwrap(), 0);
    drop(it);
    let removed = wal.truncate_before(cut).unwrap();
    assert_eq!(removed, cut.segment() as usize - 1);
    assert_eq!(segment_files(dir.path()).len(), before - removed);
    assert_eq!(wal.first_lsn(), Lsn::new(cut.segment(), HEADER_LEN as u32));
    assert!(matches!(wal.read(lsns[0]), Err(Error::InvalidLsn { .. })));
    assert_eq!(wal.read(cut).unwrap(), payload(60));
    let rest: Vec<_> = wal
        .iter_from(Lsn::ZERO)
        .map(|r| r.unwrap().payload)
        .collect();
    assert_eq!(rest.last().map(|b| b.to_vec()), Some(payload(99)));
    assert!(rest.len() >= 40);
    drop(wal);
    // The log reopens from its new first segment.
    let wal = Wal::open(dir.path(), opts()).unwrap();
    assert_eq!(collect(&wal).len(), rest.len());
    // Never the active segment.
    wal.truncate_before(Lsn::from_u64(u64::MAX)).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(
        wal.iter_from(Lsn::ZERO).last().unwrap().unwrap().payload,
        payload(99)
    );
}

#[test]
fn second_open_is_locked_and_errors_are_typed() {
    let dir = fast_tempdir();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), opts()),
        Err(Error::Locked { .. })
    ));
    assert!(matches!(
        wal.append(&vec![0u8; 1024]),
        Err(Error::RecordTooLarge { max: 992, .. })
    ));
    wal.append(&vec![7u8; 1024 - HEADER_LEN - 8]).unwrap(); // the largest that fits
    assert!(matches!(
        wal.read(Lsn::new(1, 4)),
        Err(Error::InvalidLsn { .. })
    ));
    assert!(matches!(
        wal.read(wal.end_lsn()),
        Err(Error::InvalidLsn { .. })
    ));
    assert!(matches!(
        Wal::open(fast_tempdir().path(), WalOptions::new().segment_size(100)),
        Err(Error::InvalidOptions { .. })
    ));
    drop(wal);
    Wal::open(dir.path(), opts()).unwrap();
}

/// Corruption in an older segment is an error naming the segment and offset, unless the caller
/// chooses `PointInTime`, which keeps the prefix and deletes the later segments.
#[test]
fn corruption_before_the_tail() {
    let dir = fast_tempdir();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    let lsns: Vec<Lsn> = (0..60).map(|i| wal.append(&payload(i)).unwrap()).collect();
    drop(wal);
    let victim = lsns.iter().find(|l| l.segment() == 2).copied().unwrap();
    let path = dir.path().join(format!("{:010}.wal", 2));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[victim.offset() as usize + 9] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    match Wal::open(dir.path(), opts()) {
        Err(Error::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!((segment, offset), (2, u64::from(victim.offset())));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let wal = Wal::open(dir.path(), opts().recovery(RecoveryMode::PointInTime)).unwrap();
    let got = collect(&wal);
    assert_eq!(got.len(), lsns.iter().position(|l| *l == victim).unwrap());
    let t = wal.recovery_report().truncation.clone().unwrap();
    assert_eq!(t.segment, 2);
    assert!(!t.segments_removed.is_empty());
    // It keeps working.
    let lsn = wal.append(b"new").unwrap();
    assert_eq!(lsn.segment(), 2);
    assert_eq!(wal.read(lsn).unwrap(), &b"new"[..]);
}

#[test]
fn a_missing_segment_is_an_error() {
    let dir = fast_tempdir();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    for i in 0..60 {
        wal.append(&payload(i)).unwrap();
    }
    drop(wal);
    std::fs::remove_file(dir.path().join(format!("{:010}.wal", 2))).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), opts()),
        Err(Error::MissingSegment { segment: 2, .. })
    ));
}

/// Iterating from a position in a removed segment is an `InvalidLsn` error, as `read` of the
/// same position is: starting silently at the oldest remaining record would let a reader
/// resuming there skip records without noticing. `Lsn::ZERO` means "from the oldest record".
#[test]
fn iterating_from_a_removed_segment_is_an_error() {
    let dir = fast_tempdir();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    let first = wal.append(&payload(0)).unwrap();
    let mut n = 1;
    while wal.end_lsn().segment() < 3 {
        wal.append(&payload(n)).unwrap();
        n += 1;
    }
    let keep = Lsn::new(wal.end_lsn().segment(), HEADER_LEN as u32);
    wal.truncate_before(keep).unwrap();
    assert!(matches!(
        wal.iter_from(first).next(),
        Some(Err(Error::InvalidLsn { .. }))
    ));
    assert!(matches!(wal.read(first), Err(Error::InvalidLsn { .. })));
    let from_zero = wal.iter_from(Lsn::ZERO).next().unwrap().unwrap();
    assert!(from_zero.lsn.segment() >= 2);
}

/// A misaligned `Lsn`, or one inside the segment header, is `InvalidLsn` (the caller's
/// mistake), not a corrupt record, which would read like disk damage.
#[test]
fn reading_a_misaligned_lsn_is_invalid() {
    let dir = fast_tempdir();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    let lsn = wal.append(&payload(0)).unwrap();
    for bad in [
        Lsn::new(lsn.segment(), lsn.offset() + 4),
        Lsn::new(lsn.segment(), 8),
    ] {
        assert!(
            matches!(wal.read(bad), Err(Error::InvalidLsn { .. })),
            "{bad:?}"
        );
    }
    assert_eq!(wal.read(lsn).unwrap(), payload(0));
}

/// `read_many` answers exactly what `read` does for each position: records in live and
/// removed segments, positions that are not records, and the end of the log.
#[test]
fn read_many_agrees_with_read() {
    let dir = fast_tempdir();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    let lsns: Vec<Lsn> = (0..60).map(|i| wal.append(&payload(i)).unwrap()).collect();
    wal.truncate_before(lsns[30]).unwrap();
    let mut asked = lsns.clone();
    asked.reverse();
    asked.extend([
        Lsn::ZERO,
        Lsn::from_u64(lsns[40].as_u64() + 8),
        Lsn::from_u64(lsns[40].as_u64() + 3),
        wal.end_lsn(),
    ]);
    let many = wal.read_many(&asked);
    assert_eq!(many.len(), asked.len());
    let mut errors = 0;
    for (lsn, got) in asked.iter().zip(many) {
        match (wal.read(*lsn), got) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{lsn:?}"),
            (Err(a), Err(b)) => {
                assert_eq!(a.to_string(), b.to_string(), "{lsn:?}");
                errors += 1;
            }
            (a, b) => panic!("{lsn:?}: read {a:?}, read_many {b:?}"),
        }
    }
    assert!(
        errors >= 4,
        "removed segments and non-records fail: {errors}"
    );
}
