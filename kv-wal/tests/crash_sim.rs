//! Crash tests against a simulated storage backend that tracks live versus durable bytes (in
//! the manner of redb's `tests/crash_consistency.rs` and LevelDB's `fault_injection_test.cc`).
//!
//! The log runs on real files (on tmpfs when available); a flush hook records, after every
//! `msync`, the pages it made durable into a *durable shadow*. The live bytes are the files'
//! current contents (the page cache). A simulated power cut builds a disk image from the two:
//!
//! - `DropUnflushed`: only the durable shadow survives;
//! - `Holes`: a random subset of the pages that differ survive (pages reach the disk in any
//!   order);
//! - `Torn(k)`: the unflushed bytes are written in file order and the write tears after `k`
//!   bytes, for every `k`.
//!
//! After each crash, recovery must return exactly a prefix of the appends (in `Lsn` order)
//! that includes every append acknowledged under `SyncPolicy::Always` (or covered by a
//! `sync()` under `Never`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use common::{collect, fast_tempdir, payload, read_dir, write_dir};
use kv_wal::{FlushEvent, Lsn, RecoveryMode, SyncPolicy, Wal, WalOptions};
use rand::{Rng, SeedableRng, rngs::StdRng};

const PAGE: usize = 4096;

/// The durable shadow of every segment, keyed by file name.
#[derive(Default)]
struct Disk {
    durable: BTreeMap<String, Vec<u8>>,
}

/// A snapshot taken at a simulated crash.
struct Snapshot {
    /// name -> (live bytes, durable bytes)
    files: Vec<(String, Vec<u8>, Vec<u8>)>,
    /// Appends acknowledged as durable before the crash.
    acked: Vec<Lsn>,
    /// Everything before this was flushed before the crash (`Periodic`).
    durable: Option<Lsn>,
}

#[derive(Clone)]
struct Sim {
    dir: PathBuf,
    disk: Arc<Mutex<Disk>>,
    acked: Arc<Mutex<Vec<Lsn>>>,
}

/// A segment's durable image before any flush: created files are durable with their header
/// and zeros (the log fsyncs them before renaming them into place).
fn fresh(live: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; live.len()];
    let h = kv_wal::layout::HEADER_LEN.min(live.len());
    d[..h].copy_from_slice(&live[..h]);
    d
}

impl Sim {
    fn new(dir: &Path) -> Sim {
        Sim {
            dir: dir.to_owned(),
            disk: Arc::default(),
            acked: Arc::default(),
        }
    }

    fn hook(&self) -> kv_wal::FlushHook {
        let disk = Arc::clone(&self.disk);
        Arc::new(move |ev: &FlushEvent<'_>| {
            let live = std::fs::read(ev.path)?;
            let name = ev.path.file_name().unwrap().to_string_lossy().into_owned();
            let mut d = disk.lock().unwrap();
            let shadow = d.durable.entry(name).or_insert_with(|| fresh(&live));
            // Only the flushed range counts as durable. (msync writes whole pages, but the
            // file is read here after the flush, when appenders may already have written more
            // into the same pages: rounding out to pages would count those bytes as durable
            // and hide a flush that does not cover what it should.)
            let end = (ev.offset + ev.len).min(live.len());
            shadow[ev.offset..end].copy_from_slice(&live[ev.offset..end]);
            Ok(())
        })
    }

    /// Declares the durable image of segment file `name` before its first flush: a recycled
    /// segment is not zeros but its pool file as it was released (every byte of it durable:
    /// sealed segments are flushed whole, end marker included), with the new header (made
    /// durable before the rename).
    fn recycled(&self, name: String, image: Vec<u8>) {
        self.disk.lock().unwrap().durable.insert(name, image);
    }

    fn ack(&self, lsn: Lsn) {
        self.acked.lock().unwrap().push(lsn);
    }

    /// Freezes the live and durable bytes and the acknowledged set, atomically with respect
    /// to flushes (the hook holds the disk lock while it records one).
    fn snapshot(&self) -> Snapshot {
        self.snapshot_with(|| None)
    }

    /// As `snapshot`; `durable` is read while flushes are held off and, if it returns an
    /// `Lsn`, every append before it counts as acknowledged (the `Periodic` guarantee).
    fn snapshot_with(&self, durable: impl FnOnce() -> Option<Lsn>) -> Snapshot {
        let d = self.disk.lock().unwrap();
        let acked = self.acked.lock().unwrap().clone();
        let durable = durable();
        let files = read_dir(&self.dir)
            .into_iter()
            .map(|(name, live)| {
                let durable = d
                    .durable
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| fresh(&live));
                (name, live, durable)
            })
            .collect();
        Snapshot {
            files,
            acked,
            durable,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Crash {
    DropUnflushed,
    Holes(u64),
    Torn(usize),
}

impl Snapshot {
    /// Bytes that differ between live and durable, in file order: (file index, offset).
    fn diff(&self) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        for (i, (_, live, dur)) in self.files.iter().enumerate() {
            for (o, (a, b)) in live.iter().zip(dur).enumerate() {
                if a != b {
                    v.push((i, o));
                }
            }
        }
        v
    }

    fn image(&self, crash: Crash) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = self
            .files
            .iter()
            .map(|(n, _, d)| (n.clone(), d.clone()))
            .collect();
        match crash {
            Crash::DropUnflushed => {}
            Crash::Holes(seed) => {
                let mut rng = StdRng::seed_from_u64(seed);
                for (i, (_, live, dur)) in self.files.iter().enumerate() {
                    for p in (0..live.len()).step_by(PAGE) {
                        let e = (p + PAGE).min(live.len());
                        if live[p..e] != dur[p..e] && rng.random_bool(0.5) {
                            out[i].1[p..e].copy_from_slice(&live[p..e]);
                        }
                    }
                }
            }
            Crash::Torn(k) => {
                for (i, o) in self.diff().into_iter().take(k) {
                    out[i].1[o] = self.files[i].1[o];
                }
            }
        }
        out
    }
}

/// Recovers `image` and checks the prefix property against `appends` (every append, by Lsn).
fn check(
    image: &[(String, Vec<u8>)],
    appends: &BTreeMap<Lsn, Vec<u8>>,
    acked: &[Lsn],
    mode: RecoveryMode,
    what: &str,
) -> usize {
    let dir = fast_tempdir();
    write_dir(dir.path(), image);
    let wal = Wal::open(
        dir.path(),
        WalOptions::new().sync(SyncPolicy::Never).recovery(mode),
    )
    .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    let got = collect(&wal);
    let want: Vec<(Lsn, Vec<u8>)> = appends
        .iter()
        .take(got.len())
        .map(|(l, p)| (*l, p.clone()))
        .collect();
    assert_eq!(
        got, want,
        "{what}: recovered records are not a prefix of the appends"
    );
    if let Some(max_acked) = acked.iter().max() {
        let last = got.last().map(|(l, _)| *l);
        assert!(
            last >= Some(*max_acked),
            "{what}: acknowledged append {max_acked} lost (recovered up to {last:?})"
        );
    }
    got.len()
}

fn run_crashes(snap: &Snapshot, appends: &BTreeMap<Lsn, Vec<u8>>, mode: RecoveryMode, tag: &str) {
    // Under `Periodic`, every append that starts before the durable Lsn ends before it (the
    // durable Lsn is a record boundary), so it must survive.
    let mut acked = snap.acked.clone();
    if let Some(d) = snap.durable {
        acked.extend(appends.keys().filter(|l| **l < d));
    }
    let snap = &Snapshot {
        files: snap.files.clone(),
        acked,
        durable: snap.durable,
    };
    check(
        &snap.image(Crash::DropUnflushed),
        appends,
        &snap.acked,
        mode,
        &format!("{tag} drop"),
    );
    // Seeds differ from snapshot to snapshot (mixed with the tag), so the kept/dropped page
    // patterns vary across the run instead of repeating the same eight everywhere.
    let base = tag.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    for seed in (0..8).map(|k| base.wrapping_add(k)) {
        let what = format!("{tag} holes seed {seed:#x}");
        check(
            &snap.image(Crash::Holes(seed)),
            appends,
            &snap.acked,
            mode,
            &what,
        );
    }
    let n = snap.diff().len();
    // Every byte offset; for a long unflushed tail (the Periodic test), an evenly spread
    // subset of about 400 offsets keeps the test fast.
    let step = (n / 400).max(1);
    for k in (0..=n).step_by(step).chain(std::iter::once(n)) {
        let what = format!("{tag} torn at byte {k} of {n}");
        check(
            &snap.image(Crash::Torn(k)),
            appends,
            &snap.acked,
            mode,
            &what,
        );
    }
}

/// Many threads append under `Always` while the test takes snapshots; after every simulated
/// crash of every snapshot, every acknowledged append is recovered and nothing else but a
/// prefix.
#[test]
fn always_concurrent_appends_survive_every_crash_mode() {
    let dir = fast_tempdir();
    let sim = Sim::new(dir.path());
    let opts = WalOptions::new()
        .segment_size(8192)
        .sync(SyncPolicy::Always)
        .flush_hook(sim.hook());
    let wal = Wal::open(dir.path(), opts).unwrap();
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 150;
    let done = AtomicUsize::new(0);
    let mut snaps = Vec::new();
    let appends: Vec<(Lsn, Vec<u8>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (wal, sim, done) = (&wal, &sim, &done);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..PER_THREAD {
                        let p = payload(t * 1_000_000 + i);
                        let lsn = wal.append(&p).unwrap();
                        sim.ack(lsn);
                        mine.push((lsn, p));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    mine
                })
            })
            .collect();
        // Snapshots at a few points while the appenders run (bounded waits).
        for target in [40usize, 200, 420] {
            for _ in 0..1_000_000 {
                if done.load(Ordering::Relaxed) >= target {
                    break;
                }
                std::thread::yield_now();
            }
            snaps.push(sim.snapshot());
        }
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    snaps.push(sim.snapshot());
    let appends: BTreeMap<Lsn, Vec<u8>> = appends.into_iter().collect();
    assert_eq!(appends.len() as u64, THREADS * PER_THREAD);
    assert!(
        wal.end_lsn().segment() > 1,
        "the test should cross segment boundaries"
    );
    for (i, snap) in snaps.iter().enumerate() {
        run_crashes(
            snap,
            &appends,
            RecoveryMode::TolerateCorruptedTail,
            &format!("snapshot {i}"),
        );
    }
}

/// One thread, `SyncPolicy::Never`, `sync()` every few appends; crash after every append.
/// Only what a `sync()` covered is acknowledged. Sealed segments are not flushed at roll-over
/// under `Never`, so the crash images are recovered with `PointInTime`.
#[test]
fn never_with_manual_sync_recovers_a_prefix_after_each_append() {
    let dir = fast_tempdir();
    let sim = Sim::new(dir.path());
    let opts = WalOptions::new()
        .segment_size(1024)
        .sync(SyncPolicy::Never)
        .flush_hook(sim.hook());
    let wal = Wal::open(dir.path(), opts).unwrap();
    let mut appends = BTreeMap::new();
    let mut snaps = Vec::new();
    for i in 0..40u64 {
        let p = payload(i);
        let lsn = if i % 7 == 3 {
            let q = payload(i + 1000);
            let lsn = wal.append_batch(&[&p, &q]).unwrap();
            appends.insert(lsn, p);
            let second = wal.iter_from(lsn).nth(1).unwrap().unwrap();
            appends.insert(second.lsn, q);
            lsn
        } else {
            let lsn = wal.append(&p).unwrap();
            appends.insert(lsn, p);
            lsn
        };
        // Every 7th append: not aligned with the roll-overs of these payloads, so snapshots
        // hold unflushed data in two segments (a cadence of 5 synced right before every
        // roll-over and hid a lost page at the end of an older segment).
        if i % 7 == 4 {
            wal.sync().unwrap();
            sim.acked.lock().unwrap().push(lsn);
        }
        snaps.push(sim.snapshot());
    }
    assert!(wal.end_lsn().segment() > 1);
    for (i, snap) in snaps.iter().enumerate() {
        run_crashes(
            snap,
            &appends,
            RecoveryMode::PointInTime,
            &format!("after append {i}"),
        );
    }
}

/// `Periodic`: a background thread flushes every millisecond; whatever the flusher had made
/// durable when the crash hit is recovered, and nothing but a prefix.
#[test]
fn periodic_flusher_output_survives_every_crash_mode() {
    let dir = fast_tempdir();
    let sim = Sim::new(dir.path());
    let opts = WalOptions::new()
        .segment_size(8192)
        .sync(SyncPolicy::Periodic(std::time::Duration::from_millis(1)))
        .flush_hook(sim.hook());
    let wal = Wal::open(dir.path(), opts).unwrap();
    let mut appends = BTreeMap::new();
    let mut snaps = Vec::new();
    for i in 0..400u64 {
        let p = payload(i);
        appends.insert(wal.append(&p).unwrap(), p);
        if i % 50 == 49 {
            snaps.push(sim.snapshot_with(|| Some(wal.durable_lsn())));
        }
    }
    assert!(wal.end_lsn().segment() > 1);
    for (i, snap) in snaps.iter().enumerate() {
        let tag = format!("periodic snapshot {i}");
        run_crashes(snap, &appends, RecoveryMode::TolerateCorruptedTail, &tag);
    }
}

/// `Periodic` with segment recycling: segments are dropped as soon as the log rolls over, so
/// the next segment is made from the pool file (whose old records stay in it); crashes at
/// every point must recover exactly a prefix of the records still in the log, including
/// everything the flusher made durable, and never an old record.
#[test]
fn periodic_with_recycled_segments_survives_every_crash_mode() {
    const SEGMENT: u32 = 8192;
    let dir = fast_tempdir();
    let sim = Sim::new(dir.path());
    let opts = WalOptions::new()
        .segment_size(SEGMENT)
        .initial_segment_size(SEGMENT)
        .recycle_segments(1)
        .sync(SyncPolicy::Periodic(std::time::Duration::from_millis(1)))
        .flush_hook(sim.hook());
    let wal = Wal::open(dir.path(), opts).unwrap();
    let mut appends = BTreeMap::new();
    let mut snaps = Vec::new();
    let mut seg = 1;
    let mut recycled = 0;
    for i in 0..1200u64 {
        let p = payload(i);
        let lsn = wal.append(&p).unwrap();
        appends.insert(lsn, p);
        if lsn.segment() != seg {
            seg = lsn.segment();
            if seg > 2 {
                // The roll-over took the pool file if there was one.
                recycled += usize::from(
                    read_dir(dir.path())
                        .iter()
                        .any(|(n, b)| *n == format!("{seg:010}.wal") && b[8] == 2),
                );
            }
            wal.truncate_before(lsn).unwrap();
            // The pool (one file) refilled: the next segment will be made from it.
            let pool: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "pool"))
                .collect();
            if let [pool] = &pool[..] {
                let mut image = std::fs::read(pool).unwrap();
                let next = seg + 1;
                let header = kv_wal::layout::recycled_segment_header(next, image.len() as u32);
                image[..32].copy_from_slice(&header);
                sim.recycled(format!("{next:010}.wal"), image);
            }
        }
        if i % 100 == 99 {
            snaps.push(sim.snapshot_with(|| Some(wal.durable_lsn())));
        }
    }
    assert!(recycled >= 8, "only {recycled} segments were recycled");
    for (i, snap) in snaps.iter().enumerate() {
        // The records still in the log at the snapshot: from its oldest segment on.
        let first = snap
            .files
            .iter()
            .map(|(n, _, _)| n[..10].parse::<u32>().unwrap())
            .min()
            .unwrap();
        let live: BTreeMap<Lsn, Vec<u8>> = appends
            .iter()
            .filter(|(l, _)| l.segment() >= first)
            .map(|(l, p)| (*l, p.clone()))
            .collect();
        let snap = Snapshot {
            files: snap.files.clone(),
            acked: snap.acked.clone(),
            durable: snap.durable,
        };
        let tag = format!("recycling snapshot {i}");
        run_crashes(&snap, &live, RecoveryMode::TolerateCorruptedTail, &tag);
    }
}
