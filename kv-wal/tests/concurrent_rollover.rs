//! Many writers appending records and batches across frequent roll-overs (small segments),
//! under each sync policy, while a reader tails the log: guards the lock-free reservation and
//! publication protocol (see the `sequencer` module).
//!
//! Checked: every append returns an `Lsn` that reads back its payload at once (an append
//! returns only once published); the published watermark never exposes a hole (a tailing
//! reader reaches every `end_lsn()` it saw, record by record); each writer's `Lsn`s increase;
//! a batch is contiguous and within one segment; the iterator sees every record exactly once,
//! in `Lsn` order, before and after reopening.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use common::{collect, fast_tempdir, payload};
use kv_wal::{Lsn, SyncPolicy, Wal, WalOptions};
use rand::{Rng, SeedableRng, rngs::StdRng};

const THREADS: u64 = 16;
const APPENDS: u64 = 150;
const SEGMENT: u32 = 4096;

/// What one writer appended: `(lsn, payload)` per record.
type Appended = Vec<(Lsn, Vec<u8>)>;

fn writer(wal: &Wal, t: u64) -> Appended {
    let mut rng = StdRng::seed_from_u64(t);
    let mut out: Appended = Vec::new();
    let mut n = 0u64;
    for _ in 0..APPENDS {
        let k = if rng.random_bool(0.25) {
            rng.random_range(2..5)
        } else {
            1
        };
        let ps: Vec<Vec<u8>> = (0..k).map(|i| payload(t << 32 | (n + i))).collect();
        n += k;
        let first = if k == 1 {
            wal.append(&ps[0]).unwrap()
        } else {
            let refs: Vec<&[u8]> = ps.iter().map(Vec::as_slice).collect();
            wal.append_batch(&refs).unwrap()
        };
        // Published before the append returned: readable now, and the watermark is past it.
        assert_eq!(wal.read(first).unwrap(), &ps[0][..]);
        assert!(wal.end_lsn() > first);
        if let Some((last, _)) = out.last() {
            assert!(first > *last, "writer {t}: {first} after {last}");
        }
        // A batch: contiguous, in one segment.
        let recs: Vec<_> = wal
            .iter_from(first)
            .take(k as usize)
            .map(Result::unwrap)
            .collect();
        assert_eq!(recs.len(), k as usize);
        for (r, p) in recs.iter().zip(&ps) {
            assert_eq!(
                r.lsn.segment(),
                first.segment(),
                "writer {t}: batch spans segments"
            );
            assert_eq!(&r.payload[..], &p[..]);
            out.push((r.lsn, p.clone()));
        }
    }
    out
}

/// Tails the log until `done`: every `end_lsn()` it sees is reached record by record.
fn tailer(wal: &Wal, done: &AtomicBool) -> Vec<Lsn> {
    let mut seen = Vec::new();
    let mut it = wal.iter_from(Lsn::ZERO);
    loop {
        let finished = done.load(Ordering::Acquire);
        let end = wal.end_lsn();
        while it.position() < end {
            match it.next() {
                Some(r) => seen.push(r.unwrap().lsn),
                None => assert!(
                    it.position() >= end,
                    "a hole below the published watermark {end} at {}",
                    it.position()
                ),
            }
        }
        if finished {
            // Whatever was published after `end`.
            seen.extend(it.by_ref().map(|r| r.unwrap().lsn));
            return seen;
        }
        std::thread::yield_now();
    }
}

fn check(policy: SyncPolicy) {
    check_with(WalOptions::new().segment_size(SEGMENT).sync(policy));
}

fn check_with(opts: WalOptions) {
    let policy = opts.get_sync();
    let dir = fast_tempdir();
    let wal = Wal::open(dir.path(), opts.clone()).unwrap();
    let done = AtomicBool::new(false);
    let (appended, tailed) = std::thread::scope(|s| {
        let tail = s.spawn(|| tailer(&wal, &done));
        let ws: Vec<_> = (0..THREADS)
            .map(|t| {
                let wal = &wal;
                s.spawn(move || writer(wal, t))
            })
            .collect();
        let appended: BTreeMap<Lsn, Vec<u8>> =
            ws.into_iter().flat_map(|w| w.join().unwrap()).collect();
        done.store(true, Ordering::Release);
        (appended, tail.join().unwrap())
    });
    let n = appended.len();
    assert!(n as u64 >= THREADS * APPENDS);
    // No Lsn was handed out twice.
    let records: u64 = (0..THREADS)
        .map(|t| {
            let mut rng = StdRng::seed_from_u64(t);
            (0..APPENDS)
                .map(|_| {
                    if rng.random_bool(0.25) {
                        rng.random_range(2..5u64)
                    } else {
                        1
                    }
                })
                .sum::<u64>()
        })
        .sum();
    assert_eq!(n as u64, records, "{policy:?}: duplicate Lsns");
    assert!(
        appended.keys().last().unwrap().segment() > 20,
        "{policy:?}: should roll over many times"
    );
    // The tailing reader saw every record exactly once, in order.
    let want: Vec<Lsn> = appended.keys().copied().collect();
    assert_eq!(tailed, want, "{policy:?}: tailing reader");
    // So does a fresh iterator, and every Lsn reads back.
    assert_eq!(
        collect(&wal),
        appended.clone().into_iter().collect::<Vec<_>>()
    );
    for (lsn, p) in &appended {
        assert_eq!(&wal.read(*lsn).unwrap()[..], &p[..]);
    }
    drop(wal);
    let wal = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(wal.recovery_report().truncation, None);
    assert_eq!(collect(&wal), appended.into_iter().collect::<Vec<_>>());
}

#[test]
fn never() {
    check(SyncPolicy::Never);
}

#[test]
fn periodic() {
    check(SyncPolicy::Periodic(Duration::from_millis(2)));
}

#[test]
fn always() {
    check(SyncPolicy::Always);
}

/// Segments growing from 64 bytes, smaller than most records and batches: the first
/// roll-overs happen from empty segments, for records that do not fit them, and make
/// segments of the records' sizes.
#[test]
fn growing_segments() {
    for initial in [64, 512] {
        check_with(
            WalOptions::new()
                .segment_size(SEGMENT)
                .initial_segment_size(initial)
                .sync(SyncPolicy::Never),
        );
    }
}

/// More writers than the completion ring has slots is not needed for correctness here (the
/// ring waits), but many more writers than cores exercises preemption between reservation
/// and completion.
#[test]
fn many_more_writers_than_cores() {
    let dir = fast_tempdir();
    let opts = WalOptions::new()
        .segment_size(SEGMENT)
        .sync(SyncPolicy::Never);
    let wal = Wal::open(dir.path(), opts).unwrap();
    let appended: BTreeMap<Lsn, Vec<u8>> = std::thread::scope(|s| {
        let ws: Vec<_> = (0..96u64)
            .map(|t| {
                let wal = &wal;
                s.spawn(move || {
                    (0..60u64)
                        .map(|i| {
                            let p = payload(t << 32 | i);
                            let lsn = wal.append(&p).unwrap();
                            assert_eq!(wal.read(lsn).unwrap(), &p[..]);
                            (lsn, p)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        ws.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(appended.len(), 96 * 60);
    assert_eq!(collect(&wal), appended.into_iter().collect::<Vec<_>>());
}
