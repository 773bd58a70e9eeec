//! A failed flush poisons the log: the appenders that waited for it get its error, every later
//! append and sync is refused, and reopening recovers what is really there.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use common::{collect, fast_tempdir, payload};
use kv_wal::{Error, SyncPolicy, Wal, WalOptions};

#[test]
fn failed_flush_poisons_and_wakes_every_waiter_with_the_error() {
    let dir = fast_tempdir();
    let flushes = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&flushes);
    let opts = WalOptions::new()
        .segment_size(8192)
        .sync(SyncPolicy::Always)
        .flush_hook(Arc::new(move |_ev: &kv_wal::FlushEvent<'_>| {
            if f.fetch_add(1, Ordering::SeqCst) >= 20 {
                Err(std::io::Error::other("injected EIO"))
            } else {
                Ok(())
            }
        }));
    let wal = Wal::open(dir.path(), opts).unwrap();
    let results: Vec<(Vec<Vec<u8>>, Vec<Error>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                let wal = &wal;
                s.spawn(move || {
                    let (mut ok, mut errs) = (Vec::new(), Vec::new());
                    for i in 0..100u64 {
                        let p = payload(t << 32 | i);
                        match wal.append(&p) {
                            Ok(_) => ok.push(p),
                            Err(e) => errs.push(e),
                        }
                    }
                    (ok, errs)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(wal.is_poisoned());
    let mut sync_failed = 0;
    for (_, errs) in &results {
        for e in errs {
            match e {
                Error::SyncFailed { source, .. } | Error::Poisoned { source, .. } => {
                    assert_eq!(source.to_string(), "injected EIO");
                    sync_failed += usize::from(matches!(e, Error::SyncFailed { .. }));
                }
                other => panic!("unexpected error {other}"),
            }
        }
    }
    assert!(
        sync_failed >= 1,
        "the leader of the failed flush reports SyncFailed"
    );
    assert!(matches!(wal.append(b"x"), Err(Error::Poisoned { .. })));
    assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
    drop(wal);

    // Reopened, the log holds every append that was acknowledged.
    let wal = Wal::open(dir.path(), WalOptions::new().segment_size(8192)).unwrap();
    assert!(!wal.is_poisoned());
    let got: Vec<Vec<u8>> = collect(&wal).into_iter().map(|(_, p)| p).collect();
    for (ok, _) in &results {
        for p in ok {
            assert!(got.contains(p), "an acknowledged append was lost");
        }
    }
    wal.append(b"works again").unwrap();
}

#[test]
fn periodic_flusher_flushes_and_stops_on_drop() {
    let dir = fast_tempdir();
    let flushes = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&flushes);
    let opts = WalOptions::new()
        .sync(SyncPolicy::Periodic(std::time::Duration::from_millis(1)))
        .segment_size(8192)
        .flush_hook(Arc::new(move |_ev: &kv_wal::FlushEvent<'_>| {
            f.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }));
    let wal = Wal::open(dir.path(), opts).unwrap();
    let lsn = wal.append(b"x").unwrap();
    // Bounded wait for the background flush (no timing assertion: only that it happens).
    for _ in 0..10_000 {
        if wal.durable_lsn() > lsn {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(wal.durable_lsn() > lsn);
    assert!(flushes.load(Ordering::SeqCst) >= 1);
    drop(wal); // joins the flusher
    Wal::open(dir.path(), WalOptions::new()).unwrap();
}

/// A panic in the flush hook poisons the log like a failed flush. Were the flush leader left
/// marked instead, every later `Always` append, `sync()` and the `Drop` of a `Periodic` log
/// would hang: the second append below would never return.
#[test]
fn a_panicking_flush_hook_poisons_instead_of_hanging() {
    let dir = fast_tempdir();
    let opts = WalOptions::new()
        .segment_size(8192)
        .sync(SyncPolicy::Always)
        .flush_hook(Arc::new(|_ev: &kv_wal::FlushEvent<'_>| panic!("hook bug")));
    let wal = Wal::open(dir.path(), opts).unwrap();
    assert!(matches!(wal.append(b"a"), Err(Error::SyncFailed { .. })));
    assert!(matches!(wal.append(b"b"), Err(Error::Poisoned { .. })));
    assert!(wal.sync().is_err());
    drop(wal);
    // The record reached the page cache before the flush: reopening finds it.
    let wal = Wal::open(dir.path(), WalOptions::new().segment_size(8192)).unwrap();
    assert_eq!(collect(&wal).len(), 1);
}
