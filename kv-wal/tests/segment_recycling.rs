//! Segment recycling (`WalOptions::recycle_segments`): a segment released by
//! `truncate_before` goes to the pool and comes back as a later segment, with the records of
//! its earlier incarnation still in it. Recovery must return exactly the records appended to
//! the new incarnation, whatever a crash left:
//!
//! - a crash of the process (the files as the page cache holds them) at any point;
//! - a write into the recycled segment torn at every byte (the new bytes up to the tear, the
//!   old incarnation's after it), and pages of it lost at random (pages reach the disk in any
//!   order);
//! - after such a loss, appends of records as long as the lost ones, then another crash:
//!   records from beyond the hole must not come back (the hole RocksDB's recycled logs could
//!   recover, rocksdb PR 7252);
//! - a crash inside the recycling itself: the pool file's header rewritten but not yet
//!   renamed; renamed, with no record in it yet.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::{collections::BTreeMap, fs, path::Path};

use common::{collect, payload};
use kv_wal::{Lsn, RecoveryMode, SyncPolicy, Wal, WalOptions};
use rand::{Rng, SeedableRng, rngs::StdRng};

const PAGE: usize = 4096;

fn opts(segment: u32, pool: usize) -> WalOptions {
    WalOptions::new()
        .segment_size(segment)
        .initial_segment_size(segment)
        .sync(SyncPolicy::Never)
        .recycle_segments(pool)
}

/// Every file of a log directory (segments, pool files), by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| {
            let name = e.file_name().into_string().unwrap();
            (name, fs::read(e.path()).unwrap())
        })
        .collect()
}

fn names_with(dir: &Path, ext: &str) -> Vec<String> {
    files(dir)
        .into_keys()
        .filter(|n| n.ends_with(ext))
        .collect()
}

fn write_image(image: &BTreeMap<String, Vec<u8>>) -> tempfile::TempDir {
    let dir = common::fast_tempdir();
    for (name, bytes) in image {
        fs::write(dir.path().join(name), bytes).unwrap();
    }
    dir
}

fn seg_name(seq: u32) -> String {
    format!("{seq:010}.wal")
}

fn version(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[8..12].try_into().unwrap())
}

/// A log whose segments 1..=4 were released (1 and 2 into the pool, 3 and 4 deleted) and
/// whose records go on in segment 5; `model` holds every record still in the log.
struct Setup {
    dir: tempfile::TempDir,
    wal: Wal,
    model: Vec<(Lsn, Vec<u8>)>,
    next: u64,
}

fn setup(segment: u32) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), opts(segment, 2)).unwrap();
    let mut model = Vec::new();
    let mut next = 0u64;
    while wal.end_lsn().segment() < 5 {
        let p = payload(next);
        model.push((wal.append(&p).unwrap(), p));
        next += 1;
    }
    assert_eq!(wal.truncate_before(wal.end_lsn()).unwrap(), 4);
    model.retain(|(l, _)| l.segment() >= 5);
    assert_eq!(
        names_with(dir.path(), ".pool"),
        ["0000000001.pool", "0000000002.pool"],
        "the two oldest released segments are pooled, the others deleted"
    );
    Setup {
        dir,
        wal,
        model,
        next,
    }
}

impl Setup {
    /// Appends until the log is `records` records into segment `seq`.
    fn append_into(&mut self, seq: u32, records: usize) {
        let mut n = 0;
        while self.wal.end_lsn().segment() < seq || n < records {
            let p = payload(self.next);
            let lsn = self.wal.append(&p).unwrap();
            self.model.push((lsn, p));
            self.next += 1;
            if lsn.segment() == seq {
                n += 1;
            }
        }
        assert_eq!(self.wal.end_lsn().segment(), seq);
    }
}

/// The end offset of a record at `lsn` with `len` bytes of payload.
fn end_of(lsn: Lsn, len: usize) -> usize {
    lsn.offset() as usize + kv_wal::layout::frame_len(len)
}

#[test]
fn released_segments_come_back_and_their_old_records_never_do() {
    let mut s = setup(4096);
    // Segment 6 is recycled from pool file 2 (the newest), 7 from pool file 1, 8 is fresh.
    s.append_into(6, 1);
    assert_eq!(names_with(s.dir.path(), ".pool"), ["0000000001.pool"]);
    s.append_into(7, 3);
    assert!(names_with(s.dir.path(), ".pool").is_empty());
    let f = files(s.dir.path());
    assert_eq!(version(&f[&seg_name(5)]), 1, "fresh");
    assert_eq!(version(&f[&seg_name(6)]), 2, "recycled");
    assert_eq!(version(&f[&seg_name(7)]), 2, "recycled");
    assert_eq!(collect(&s.wal), s.model);
    for (lsn, p) in &s.model {
        assert_eq!(s.wal.read(*lsn).unwrap(), &p[..]);
    }

    // A crash of the process now: the newest segment is recycled, with no end marker.
    let image = write_image(&files(s.dir.path()));
    let wal = Wal::open(image.path(), opts(4096, 2)).unwrap();
    assert_eq!(collect(&wal), s.model);
    // The log goes on in a new segment, never after the recovered records in segment 7.
    assert_eq!(wal.end_lsn(), Lsn::new(8, 32));
    let lsn = wal.append(b"after the crash").unwrap();
    assert_eq!(lsn.segment(), 8);
    drop(wal);
    let wal = Wal::open(image.path(), opts(4096, 2)).unwrap();
    let mut want = s.model.clone();
    want.push((lsn, b"after the crash".to_vec()));
    assert_eq!(collect(&wal), want);
    drop(wal);

    // A clean close writes an end marker: a reopen finds a clean end, even under
    // `AbsoluteConsistency`.
    let Setup {
        dir, wal, model, ..
    } = s;
    drop(wal);
    let wal = Wal::open(
        dir.path(),
        opts(4096, 2).recovery(RecoveryMode::AbsoluteConsistency),
    )
    .unwrap();
    assert!(wal.recovery_report().truncation.is_none());
    assert_eq!(collect(&wal), model);
}

/// New records exactly as long as the old ones: the slot after the last new record holds an
/// intact record of the earlier incarnation, checksum and all. It is a clean end, not a record.
#[test]
fn an_intact_old_record_right_after_the_new_ones_is_a_clean_end() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), opts(4096, 1)).unwrap();
    let same = |i: u64| vec![(i % 251) as u8; 100];
    let mut i = 0;
    while wal.end_lsn().segment() < 2 {
        wal.append(&same(i)).unwrap();
        i += 1;
    }
    wal.truncate_before(wal.end_lsn()).unwrap();
    let mut model = collect(&wal);
    while wal.end_lsn().segment() < 3 {
        model.push((wal.append(&same(i)).unwrap(), same(i)));
        i += 1;
    }
    // Three records into the recycled segment 3: the fourth slot is segment 1's fourth record.
    for _ in 0..2 {
        model.push((wal.append(&same(i)).unwrap(), same(i)));
        i += 1;
    }
    let image = write_image(&files(dir.path()));
    let f = files(dir.path());
    let seg3 = &f[&seg_name(3)];
    assert_eq!(version(seg3), 2);
    let next = end_of(model.last().unwrap().0, 100);
    assert_ne!(&seg3[next..next + 8], &[0u8; 8], "an old record follows");
    let wal = Wal::open(
        image.path(),
        opts(4096, 1).recovery(RecoveryMode::AbsoluteConsistency),
    )
    .unwrap();
    assert!(wal.recovery_report().truncation.is_none());
    assert_eq!(collect(&wal), model);
}

/// The bytes of segment `seq` of `live`, with the new incarnation's bytes kept only where
/// `keep(offset)` says, the old incarnation's (`old`) elsewhere; the header is always the new
/// one (it is made durable before the file is renamed into place).
fn torn(
    live: &BTreeMap<String, Vec<u8>>,
    old: &[u8],
    seq: u32,
    keep: impl Fn(usize) -> bool,
) -> BTreeMap<String, Vec<u8>> {
    let mut image = live.clone();
    let seg = image.get_mut(&seg_name(seq)).unwrap();
    for (o, b) in seg.iter_mut().enumerate().skip(32) {
        if !keep(o) {
            *b = old[o];
        }
    }
    image
}

/// Checks a recovered log against the model: a prefix of it, holding at least every record
/// that ends by `intact` in segment `seq` (and every record before that segment), and none
/// that starts at or after `lost` in it.
fn check_prefix(
    got: &[(Lsn, Vec<u8>)],
    model: &[(Lsn, Vec<u8>)],
    seq: u32,
    intact: usize,
    lost: usize,
    what: &str,
) {
    assert_eq!(
        got,
        &model[..got.len()],
        "{what}: not a prefix of the appends"
    );
    for (lsn, p) in model {
        if lsn.segment() < seq || (lsn.segment() == seq && end_of(*lsn, p.len()) <= intact) {
            assert!(
                got.iter().any(|(l, _)| l == lsn),
                "{what}: intact record {lsn} lost"
            );
        }
        if lsn.segment() == seq && lsn.offset() as usize >= lost {
            assert!(
                got.iter().all(|(l, _)| l != lsn),
                "{what}: record {lsn} past the loss"
            );
        }
    }
}

#[test]
fn a_torn_write_into_a_recycled_segment_recovers_exactly_the_intact_records() {
    let mut s = setup(4096);
    let old = files(s.dir.path())["0000000002.pool"].clone();
    s.append_into(6, 20);
    let live = files(s.dir.path());
    assert_eq!(version(&live[&seg_name(6)]), 2);
    let end = s.wal.end_lsn().offset() as usize;
    for k in 32..=end {
        let image = write_image(&torn(&live, &old, 6, |o| o < k));
        let wal = Wal::open(image.path(), opts(4096, 2))
            .unwrap_or_else(|e| panic!("torn at {k}: recovery failed: {e}"));
        check_prefix(&collect(&wal), &s.model, 6, k, k, &format!("torn at {k}"));
    }
}

#[test]
fn lost_pages_of_a_recycled_segment_never_bring_back_records_from_beyond_the_hole() {
    // 16 KiB segments: four pages each, so that a page can go missing between two others.
    let mut s = setup(4 * PAGE as u32);
    let old = files(s.dir.path())["0000000002.pool"].clone();
    s.append_into(6, 1);
    while s.wal.end_lsn().offset() < 3 * PAGE as u32 + 100 {
        let p = payload(s.next);
        s.model.push((s.wal.append(&p).unwrap(), p));
        s.next += 1;
    }
    let live = files(s.dir.path());
    let mut rng = StdRng::seed_from_u64(0x5eed_2026_1206);
    let mut resurrection_checks = 0;
    for round in 0..40 {
        let kept: Vec<bool> = (0..4).map(|_| rng.random_bool(0.5)).collect();
        let first_lost = kept.iter().position(|k| !k).unwrap_or(4) * PAGE;
        let image = torn(&live, &old, 6, |o| kept[o / PAGE]);
        let dir = write_image(&image);
        let wal = Wal::open(dir.path(), opts(4 * PAGE as u32, 2)).unwrap();
        let got = collect(&wal);
        let what = format!("round {round}, pages kept {kept:?}");
        check_prefix(&got, &s.model, 6, first_lost, first_lost.max(32), &what);
        if got.len() == s.model.len() {
            continue;
        }
        // Append records exactly as long as the lost ones up to the end of the first lost
        // page (appended in place, the next slot would be the first record beyond the hole,
        // intact, with this incarnation's checksum), then crash again.
        let hole_end = first_lost + PAGE;
        if !kept[first_lost / PAGE + 1..].iter().any(|&k| k) {
            continue; // nothing beyond the hole to bring back
        }
        let lost: Vec<_> = s.model[got.len()..]
            .iter()
            .filter(|(l, _)| (l.offset() as usize) < hole_end)
            .collect();
        let mut want = got.clone();
        for (i, (_, p)) in lost.iter().enumerate() {
            let q = vec![0xEE ^ i as u8; p.len()];
            want.push((wal.append(&q).unwrap(), q));
        }
        let again = write_image(&files(dir.path()));
        drop(wal);
        let wal = Wal::open(again.path(), opts(4 * PAGE as u32, 2)).unwrap();
        assert_eq!(collect(&wal), want, "{what}: after appending again");
        resurrection_checks += 1;
    }
    assert!(
        resurrection_checks >= 5,
        "too few rounds lost a page before a kept one"
    );
}

#[test]
fn a_crash_inside_the_recycling_leaves_a_pool_file_or_an_empty_recycled_segment() {
    let mut s = setup(4096);
    let before = files(s.dir.path());
    let model = s.model.clone();

    // (a) The pool file's header is rewritten (and durable) but the rename did not happen.
    let mut image = before.clone();
    let pool = image.get_mut("0000000002.pool").unwrap();
    pool[..32].copy_from_slice(&kv_wal::layout::recycled_segment_header(6, 4096));
    let dir = write_image(&image);
    let wal = Wal::open(dir.path(), opts(4096, 2)).unwrap();
    assert_eq!(collect(&wal), model);
    assert_eq!(names_with(dir.path(), ".pool").len(), 2, "still pool files");
    let mut want = model.clone();
    while wal.end_lsn().segment() < 6 {
        let p = payload(1 << 20 | want.len() as u64);
        want.push((wal.append(&p).unwrap(), p));
    }
    assert_eq!(version(&files(dir.path())[&seg_name(6)]), 2);
    assert_eq!(collect(&wal), want);
    drop(wal);

    // (b) Renamed into place: a recycled segment 6 with no record of its own yet.
    s.append_into(6, 1);
    let mut image = before.clone();
    let mut seg6 = image.remove("0000000002.pool").unwrap();
    seg6[..32].copy_from_slice(&kv_wal::layout::recycled_segment_header(6, 4096));
    image.insert(seg_name(6), seg6);
    let dir = write_image(&image);
    let wal = Wal::open(dir.path(), opts(4096, 2)).unwrap();
    assert_eq!(
        collect(&wal),
        model,
        "no leftover of segment 2 read as segment 6's"
    );
    assert_eq!(wal.end_lsn(), Lsn::new(7, 32));
    let lsn = wal.append(b"x").unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), opts(4096, 2)).unwrap();
    let mut want = model.clone();
    want.push((lsn, b"x".to_vec()));
    assert_eq!(collect(&wal), want);
}

#[test]
fn the_pool_is_bounded_and_sized_and_off_when_asked() {
    let fill = |dir: &Path, o: WalOptions| {
        let wal = Wal::open(dir, o).unwrap();
        let mut i = 0;
        while wal.end_lsn().segment() < 8 {
            wal.append(&payload(i)).unwrap();
            i += 1;
        }
        wal.truncate_before(wal.end_lsn()).unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), opts(4096, 0));
    assert!(names_with(dir.path(), ".pool").is_empty(), "0 turns it off");

    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), opts(4096, 3));
    assert_eq!(names_with(dir.path(), ".pool").len(), 3);
    // A smaller bound on reopen: the newest pool files stay.
    drop(Wal::open(dir.path(), opts(4096, 1)).unwrap());
    assert_eq!(names_with(dir.path(), ".pool"), ["0000000003.pool"]);
    // Another segment size: pool files of the old size go.
    drop(Wal::open(dir.path(), opts(8192, 1)).unwrap());
    assert!(names_with(dir.path(), ".pool").is_empty());

    // Young segments (smaller than `segment_size`) are deleted, not pooled.
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), opts(1 << 20, 2).initial_segment_size(4096));
    assert!(names_with(dir.path(), ".pool").is_empty());

    // `Always` ignores the option.
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), opts(4096, 2).sync(SyncPolicy::Always));
    assert!(names_with(dir.path(), ".pool").is_empty());
}

/// Rolling over from a recycled segment flushes its end marker before the next segment is
/// created (so before any of its records can be durable): otherwise a power cut could leave
/// the sealed segment ending in leftovers, which recovery refuses in an older segment.
#[test]
fn the_end_marker_of_a_sealed_recycled_segment_is_flushed_before_the_next_segment_exists() {
    use std::sync::{Arc, Mutex};
    /// (segment, offset, len, segment files existing when the flush completed)
    type Flushes = Arc<Mutex<Vec<(u32, usize, usize, usize)>>>;
    let events: Flushes = Arc::default();
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::clone(&events);
    let d = dir.path().to_owned();
    let hook: kv_wal::FlushHook = Arc::new(move |ev: &kv_wal::FlushEvent<'_>| {
        // How many segment files exist when the flush completes.
        let segments = fs::read_dir(&d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "wal")
            })
            .count();
        e.lock()
            .unwrap()
            .push((ev.segment, ev.offset, ev.len, segments));
        Ok(())
    });
    let wal = Wal::open(dir.path(), opts(4096, 2).flush_hook(hook)).unwrap();
    let mut i = 0;
    while wal.end_lsn().segment() < 4 {
        wal.append(&payload(i)).unwrap();
        i += 1;
    }
    wal.truncate_before(wal.end_lsn()).unwrap();
    // Into segment 5 (recycled), then out of it into 6.
    let mut last_in_5 = Lsn::ZERO;
    while wal.end_lsn().segment() < 6 {
        let p = payload(i);
        let lsn = wal.append(&p).unwrap();
        if lsn.segment() == 5 {
            last_in_5 = Lsn::new(5, end_of(lsn, p.len()) as u32);
        }
        i += 1;
    }
    assert_eq!(version(&files(dir.path())[&seg_name(5)]), 2);
    let events = events.lock().unwrap().clone();
    let marker = events
        .iter()
        .position(|&(seg, off, len, _)| seg == 5 && off == last_in_5.offset() as usize && len == 8)
        .expect("the end marker's flush");
    // Segments 4 and 5 exist, 6 not yet.
    assert_eq!(events[marker].3, 2, "{events:?}");
    let seg5 = &files(dir.path())[&seg_name(5)];
    let at = last_in_5.offset() as usize;
    assert_eq!(&seg5[at..at + 8], &[0u8; 8]);
}
