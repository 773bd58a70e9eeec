//! Flushes that fail under concurrent load, injected through the flush hook at the `n`-th
//! flush for several `n`, with 16 writers under `SyncPolicy::Always` and frequent roll-overs
//! (a roll-over flushes too, so some failures hit one).
//!
//! Checked for each injection point: nobody hangs; an append returns `Ok` only if a flush
//! that ended well covered its record (the hook records what each successful flush made
//! durable); every error is the injected one, as `SyncFailed` or `Poisoned`; once a writer
//! has seen an error it sees nothing but errors; `durable_lsn` covers every acknowledged
//! append; after reopening, every acknowledged append is there, in `Lsn` order, and nothing
//! that was not appended. Guards the group commit's wake-ups (every waiter woken with the
//! result of the flush that covered it, errors included).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use common::{collect, fast_tempdir, payload};
use kv_wal::{Error, FlushEvent, Lsn, SyncPolicy, Wal, WalOptions};

const THREADS: u64 = 16;
const APPENDS: u64 = 120;
const SEGMENT: u32 = 8192;

/// One writer's outcomes, in order: `Ok((lsn, payload))` or the error.
type Outcomes = Vec<Result<(Lsn, Vec<u8>), Error>>;

fn run(fail_at: usize) {
    let dir = fast_tempdir();
    let flushes = Arc::new(AtomicUsize::new(0));
    // Per segment, the end of what successful flushes made durable.
    let flushed: Arc<Mutex<BTreeMap<u32, usize>>> = Arc::default();
    let (f, d) = (Arc::clone(&flushes), Arc::clone(&flushed));
    let opts = WalOptions::new()
        .segment_size(SEGMENT)
        .sync(SyncPolicy::Always)
        .flush_hook(Arc::new(move |ev: &FlushEvent<'_>| {
            if f.fetch_add(1, Ordering::SeqCst) + 1 == fail_at {
                return Err(std::io::Error::other("injected EIO"));
            }
            let mut d = d.lock().unwrap();
            let end = d.entry(ev.segment).or_default();
            *end = (*end).max(ev.offset + ev.len);
            Ok(())
        }));
    let wal = Wal::open(dir.path(), opts).unwrap();
    let outcomes: Vec<Outcomes> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let wal = &wal;
                s.spawn(move || {
                    (0..APPENDS)
                        .map(|i| {
                            let p = payload(t << 32 | i);
                            wal.append(&p).map(|lsn| (lsn, p))
                        })
                        .collect::<Outcomes>()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let failed = flushes.load(Ordering::SeqCst) >= fail_at;
    assert_eq!(wal.is_poisoned(), failed, "fail_at {fail_at}");
    let flushed = flushed.lock().unwrap().clone();
    let durable = wal.durable_lsn();
    let mut acked = BTreeMap::new();
    let mut sync_failed = 0;
    for (t, outs) in outcomes.iter().enumerate() {
        let mut seen_error = false;
        for out in outs {
            match out {
                Ok((lsn, p)) => {
                    assert!(
                        !seen_error,
                        "fail_at {fail_at}: writer {t} Ok after an error"
                    );
                    let end = flushed.get(&lsn.segment()).copied().unwrap_or(0);
                    let rec_end = lsn.offset() as usize + kv_wal::layout::frame_len(p.len());
                    assert!(
                        rec_end <= end,
                        "fail_at {fail_at}: {lsn} acknowledged but no successful flush covers it"
                    );
                    assert!(
                        *lsn < durable,
                        "fail_at {fail_at}: {lsn} >= durable {durable}"
                    );
                    acked.insert(*lsn, p.clone());
                }
                Err(e) => {
                    seen_error = true;
                    match e {
                        Error::SyncFailed { source, .. } | Error::Poisoned { source, .. } => {
                            assert_eq!(source.to_string(), "injected EIO");
                            sync_failed += usize::from(matches!(e, Error::SyncFailed { .. }));
                        }
                        other => panic!("fail_at {fail_at}: unexpected error {other}"),
                    }
                }
            }
        }
    }
    assert_eq!(failed, sync_failed > 0, "fail_at {fail_at}: SyncFailed");
    drop(wal);

    let wal = Wal::open(dir.path(), WalOptions::new().segment_size(SEGMENT)).unwrap();
    let got = collect(&wal);
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    let attempted: HashSet<Vec<u8>> = (0..THREADS)
        .flat_map(|t| (0..APPENDS).map(move |i| payload(t << 32 | i)))
        .collect();
    for (lsn, p) in &got {
        assert!(
            attempted.contains(p),
            "fail_at {fail_at}: {lsn} was never appended"
        );
    }
    let got: BTreeMap<Lsn, Vec<u8>> = got.into_iter().collect();
    for (lsn, p) in &acked {
        assert_eq!(
            got.get(lsn),
            Some(p),
            "fail_at {fail_at}: acknowledged {lsn} lost"
        );
    }
}

#[test]
fn a_failed_flush_under_load_wakes_every_waiter_with_its_result() {
    // Fixed injection points: the first flush, early ones, and later ones across roll-overs.
    for fail_at in [1, 2, 3, 7, 20, 60, 150] {
        run(fail_at);
    }
}

#[test]
fn without_failures_every_append_is_acknowledged_and_durable() {
    run(usize::MAX);
}
