//! Segment files written by each format version (`tests/golden/wal-v<N>/`) read back exactly
//! with today's code, so a format change cannot slip in unnoticed (after redb's
//! `tests/backward_compatibility.rs`). The files are written once, by the ignored
//! `write_golden_files` below:
//!
//! ```text
//! cargo test -p kv-wal --test golden_files -- --ignored write_golden_files
//! ```
//!
//! They use 256-byte segments (the options allow 64), so each file is 256 bytes and the whole
//! log about 1 KiB; a format change adds a new directory next to the old ones instead of
//! regenerating them.
//!
//! `wal-v2/` is the version-1 log after `truncate_before` released segments 1 and 2 into the
//! recycling pool and more appends rolled over into segment 4, made from pool file 2: a
//! recycled segment (format version 2), closed cleanly (its end marker written), with pool
//! file 1 left. Written by the ignored `write_recycled_golden_files`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::fs;
use std::path::{Path, PathBuf};

use kv_wal::{Lsn, RecoveryMode, SyncPolicy, Wal, WalOptions};

const SEGMENT: u32 = 256;

/// What the golden log holds: single appends and batches, in order.
fn appends() -> Vec<Vec<Vec<u8>>> {
    vec![
        vec![b"first".to_vec()],
        vec![Vec::new()], // an empty payload is a record too
        vec![
            b"batch:a".to_vec(),
            b"batch:b".to_vec(),
            b"batch:c".to_vec(),
        ],
        vec![vec![0xAB; 100]],
        vec![b"eight by".to_vec()], // a multiple of 8: no padding
        vec![vec![0x5A; 150]],
        vec![b"x".to_vec(), vec![0xC3; 90]],
        vec![b"last".to_vec()],
    ]
}

/// What the recycled golden log appends after the truncation: the first does not fit in what
/// segment 3 has left (88 bytes), so both go to segment 4, and they end (at 176, then the end
/// marker) before segment 2's last record did (at 192), so leftovers follow.
fn recycled_appends() -> Vec<Vec<Vec<u8>>> {
    vec![
        vec![vec![0x77; 100]],
        vec![b"r:a".to_vec(), b"r:b".to_vec()],
    ]
}

/// Writes the recycled golden log into `dir`: the version-1 log, segments 1 and 2 released
/// into the pool, then `recycled_appends`; returns every file's name (segments and pool).
fn write_recycled_log(dir: &Path) -> Vec<String> {
    write_log(dir);
    let wal = Wal::open(dir, opts().recycle_segments(2)).unwrap();
    assert_eq!(wal.truncate_before(Lsn::new(3, 0)).unwrap(), 2);
    for a in recycled_appends() {
        let refs: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
        wal.append_batch(&refs).unwrap();
    }
    wal.close().unwrap();
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wal") || n.ends_with(".pool"))
        .collect();
    names.sort();
    names
}

fn golden_dir(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/wal-v{version}"))
}

fn opts() -> WalOptions {
    WalOptions::new()
        .segment_size(SEGMENT)
        .sync(SyncPolicy::Never)
}

/// Writes the golden log into `dir` with today's code; returns the segment files' names.
fn write_log(dir: &Path) -> Vec<String> {
    let wal = Wal::open(dir, opts()).unwrap();
    for a in appends() {
        let refs: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
        if refs.len() == 1 {
            wal.append(refs[0]).unwrap();
        } else {
            wal.append_batch(&refs).unwrap();
        }
    }
    wal.close().unwrap();
    segment_files(dir)
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    names
}

/// Where each payload must be, from the format alone: records from offset 32, each taking
/// `8 + len` rounded up to 8 bytes; a batch that does not fit in what is left of a segment
/// starts the next one.
fn expected_lsns() -> Vec<(Lsn, Vec<u8>)> {
    let frame = |len: usize| 8 + len.div_ceil(8) * 8;
    let (mut seg, mut at) = (1u32, 32usize);
    let mut out = Vec::new();
    for batch in appends() {
        let need: usize = batch.iter().map(|p| frame(p.len())).sum();
        if at + need > SEGMENT as usize {
            seg += 1;
            at = 32;
        }
        for p in batch {
            out.push((Lsn::new(seg, at as u32), p.clone()));
            at += frame(p.len());
        }
    }
    out
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn version_1_segments_read_back_exactly() {
    let golden = golden_dir(1);
    let names = segment_files(&golden);
    assert_eq!(
        names,
        ["0000000001.wal", "0000000002.wal", "0000000003.wal"]
    );

    // The bytes, field by field, as docs/format.md lays them out.
    let expected = expected_lsns();
    for (i, name) in names.iter().enumerate() {
        let seq = i as u32 + 1;
        let b = fs::read(golden.join(name)).unwrap();
        assert_eq!(b.len(), SEGMENT as usize, "{name}");
        assert_eq!(&b[0..8], b"KVWAL\0\r\n");
        assert_eq!(le32(&b, 8), 1, "format version");
        assert_eq!(le32(&b, 12), SEGMENT, "segment size");
        assert_eq!(&b[16..24], &u64::from(seq).to_le_bytes(), "sequence number");
        assert_eq!(le32(&b, 24), crc32c::crc32c(&b[0..24]), "header checksum");
        assert_eq!(le32(&b, 28), 0, "reserved");
        let records: Vec<_> = expected
            .iter()
            .filter(|(l, _)| l.segment() == seq)
            .collect();
        for (n, (lsn, payload)) in records.iter().enumerate() {
            let at = lsn.offset() as usize;
            let word = le32(&b, at);
            assert_eq!(word & !(1 << 31), payload.len() as u32, "{lsn:?} length");
            let more = records
                .get(n + 1)
                .is_some_and(|(next, _)| appends_in_same_batch(lsn, next));
            assert_eq!(word >> 31 == 1, more, "{lsn:?} MORE bit");
            let crc = crc32c::crc32c_append(crc32c::crc32c(&word.to_le_bytes()), payload);
            assert_eq!(le32(&b, at + 4), crc, "{lsn:?} checksum");
            assert_eq!(&b[at + 8..at + 8 + payload.len()], &payload[..]);
        }
        // After the last record: zeros (the end marker, then the preallocated tail).
        let (last, p) = records.last().unwrap();
        let end = last.offset() as usize + 8 + p.len().div_ceil(8) * 8;
        assert!(b[end..].iter().all(|&x| x == 0), "{name} tail");
    }

    // And through the reader: every record, at its Lsn, nothing else, nothing truncated.
    let dir = tempfile::tempdir().unwrap();
    for n in &names {
        fs::copy(golden.join(n), dir.path().join(n)).unwrap();
    }
    let wal = Wal::open(
        dir.path(),
        opts().recovery(RecoveryMode::AbsoluteConsistency),
    )
    .unwrap();
    assert!(wal.recovery_report().truncation.is_none());
    let read: Vec<(Lsn, Vec<u8>)> = wal
        .iter_from(Lsn::ZERO)
        .map(|r| r.map(|r| (r.lsn, r.payload.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(read, expected);
    for (lsn, payload) in &expected {
        assert_eq!(wal.read(*lsn).unwrap(), &payload[..]);
    }
}

#[test]
fn a_segment_of_an_unknown_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let golden = golden_dir(1);
    for n in segment_files(&golden) {
        fs::copy(golden.join(&n), dir.path().join(&n)).unwrap();
    }
    // Version 3 (unknown: 2 is a recycled segment) in the newest segment's header, with a
    // checksum that matches it.
    let path = dir.path().join("0000000003.wal");
    let mut b = fs::read(&path).unwrap();
    b[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..24]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, b).unwrap();
    match Wal::open(dir.path(), opts()) {
        Err(kv_wal::Error::BadHeader { reason, .. }) => {
            assert_eq!(reason, "unsupported format version");
        }
        other => panic!("expected BadHeader, got {:?}", other.map(|_| ())),
    }
}

/// Whether the records at `a` and `b` (consecutive in a segment) belong to one batch.
fn appends_in_same_batch(a: &Lsn, b: &Lsn) -> bool {
    let expected = expected_lsns();
    let index = |l: &Lsn| expected.iter().position(|(x, _)| x == l).unwrap();
    let (ia, ib) = (index(a), index(b));
    let mut i = 0;
    for batch in appends() {
        let range = i..i + batch.len();
        if range.contains(&ia) {
            return range.contains(&ib);
        }
        i += batch.len();
    }
    false
}

#[test]
fn todays_writer_writes_the_newest_golden_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let names = write_log(dir.path());
    let golden = golden_dir(kv_wal::layout::FORMAT_VERSION);
    assert_eq!(names, segment_files(&golden));
    for n in &names {
        assert!(
            fs::read(dir.path().join(n)).unwrap() == fs::read(golden.join(n)).unwrap(),
            "{n} differs from the golden file: a format change needs a new format version \
             and new golden files (keep the old ones and their test)"
        );
    }
}

#[test]
fn version_2_recycled_segments_read_back_exactly() {
    let golden = golden_dir(2);
    let v1 = golden_dir(1);
    let mut names: Vec<String> = fs::read_dir(&golden)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["0000000001.pool", "0000000003.wal", "0000000004.wal"]
    );
    // Segment 3 is version 1's, untouched; pool file 1 is version 1's segment 1.
    let read = |d: &Path, n: &str| fs::read(d.join(n)).unwrap();
    assert_eq!(read(&golden, "0000000003.wal"), read(&v1, "0000000003.wal"));
    assert_eq!(
        read(&golden, "0000000001.pool"),
        read(&v1, "0000000001.wal")
    );

    // Segment 4: version 1's segment 2 with a version-2 header, the new records (checksums
    // masked with the sequence number 4), an end marker, then segment 2's old bytes.
    let b = read(&golden, "0000000004.wal");
    let old = read(&v1, "0000000002.wal");
    assert_eq!(b.len(), SEGMENT as usize);
    assert_eq!(&b[0..8], b"KVWAL\0\r\n");
    assert_eq!(le32(&b, 8), 2, "format version");
    assert_eq!(le32(&b, 12), SEGMENT, "segment size");
    assert_eq!(&b[16..24], &4u64.to_le_bytes(), "sequence number");
    assert_eq!(le32(&b, 24), crc32c::crc32c(&b[0..24]), "header checksum");
    assert_eq!(le32(&b, 28), 0, "reserved");
    let mut at = 32;
    let mut expected = Vec::new();
    for batch in recycled_appends() {
        for (i, payload) in batch.iter().enumerate() {
            let word = le32(&b, at);
            assert_eq!(word & !(1 << 31), payload.len() as u32, "length at {at}");
            assert_eq!(word >> 31 == 1, i + 1 < batch.len(), "MORE bit at {at}");
            let crc = crc32c::crc32c_append(crc32c::crc32c(&word.to_le_bytes()), payload);
            assert_eq!(le32(&b, at + 4), crc ^ 4, "masked checksum at {at}");
            assert_eq!(&b[at + 8..at + 8 + payload.len()], &payload[..]);
            expected.push((Lsn::new(4, at as u32), payload.clone()));
            at += 8 + payload.len().div_ceil(8) * 8;
        }
    }
    assert_eq!(&b[at..at + 8], &[0u8; 8], "end marker");
    assert_eq!(&b[at + 8..], &old[at + 8..], "leftovers of segment 2");
    assert!(old[at + 8..].iter().any(|&x| x != 0), "there are leftovers");

    // Through the reader (`AbsoluteConsistency`: the clean close left nothing torn).
    let dir = tempfile::tempdir().unwrap();
    for n in &names {
        fs::copy(golden.join(n), dir.path().join(n)).unwrap();
    }
    let wal = Wal::open(
        dir.path(),
        opts().recovery(RecoveryMode::AbsoluteConsistency),
    )
    .unwrap();
    assert!(wal.recovery_report().truncation.is_none());
    let mut want: Vec<(Lsn, Vec<u8>)> = expected_lsns()
        .into_iter()
        .filter(|(l, _)| l.segment() == 3)
        .collect();
    want.extend(expected);
    let read: Vec<(Lsn, Vec<u8>)> = wal
        .iter_from(Lsn::ZERO)
        .map(|r| r.map(|r| (r.lsn, r.payload.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(read, want);
    for (lsn, payload) in &want {
        assert_eq!(wal.read(*lsn).unwrap(), &payload[..]);
    }
    // A recycled newest segment is not appended to after a reopen: the log went on in 5.
    assert_eq!(wal.end_lsn(), Lsn::new(5, 32));
}

#[test]
fn todays_writer_writes_the_recycled_golden_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let names = write_recycled_log(dir.path());
    let golden = golden_dir(kv_wal::layout::RECYCLED_FORMAT_VERSION);
    for n in &names {
        assert!(
            fs::read(dir.path().join(n)).unwrap() == fs::read(golden.join(n)).unwrap(),
            "{n} differs from the golden file: a format change needs a new format version"
        );
    }
    assert_eq!(names.len(), 3);
}

/// Writes `tests/golden/wal-v2/` (the recycled log): run once.
#[test]
#[ignore = "generator: writes the golden files"]
fn write_recycled_golden_files() {
    let dir = golden_dir(kv_wal::layout::RECYCLED_FORMAT_VERSION);
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(&dir).unwrap();
    for n in write_recycled_log(tmp.path()) {
        fs::copy(tmp.path().join(&n), dir.join(&n)).unwrap();
    }
}

/// Writes `tests/golden/wal-v<FORMAT_VERSION>/`: run once when a format version is new.
#[test]
#[ignore = "generator: writes the golden files"]
fn write_golden_files() {
    let dir = golden_dir(kv_wal::layout::FORMAT_VERSION);
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(&dir).unwrap();
    for n in write_log(tmp.path()) {
        fs::copy(tmp.path().join(&n), dir.join(&n)).unwrap();
    }
}
