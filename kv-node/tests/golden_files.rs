//! A node directory written by each payload format version (`tests/golden/node-v<N>/`: log
//! segments holding puts, tombstones, a batch and a drop record, and the hint files of the
//! sealed segments) reads back exactly with today's code, so a format change cannot slip in
//! unnoticed (after redb's `tests/backward_compatibility.rs`). The files are written once, by
//! the ignored `write_golden_files` below:
//!
//! ```text
//! cargo test -p kv-node --test golden_files -- --ignored write_golden_files
//! ```
//!
//! The log uses 512-byte segments, so the directory is a few KiB; a format change adds a new
//! directory next to the old ones instead of regenerating them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::fs;
use std::path::{Path, PathBuf};

use kv_node::{Error, Node, NodeOptions, Version, Write};
use kv_ring::{TokenRange, token};
use kv_wal::{Lsn, RecoveryMode, SyncPolicy, Wal, WalOptions};

const SEGMENT: u32 = 512;
/// The payload format version of the newest golden directory (the highest byte 1 of its
/// payloads: version 1 adds puts with an expiry; everything else is still written as 0).
const PAYLOAD_VERSION: u8 = 1;
/// An expiry long past when the tests run (2025-12-06T00:01:00Z): the key reads as deleted.
const EXPIRED: u64 = 1_764_979_260_000;
/// An expiry far ahead (2100-01-01T00:00:00Z).
const FAR: u64 = 4_102_444_800_000;

fn v(n: u64) -> Version {
    // 2025-12-06T00:00:00Z plus `n` ms, counter `n`.
    Version::from_parts(1_764_979_200_000 + n, n as u16)
}

fn wal_opts() -> WalOptions {
    WalOptions::new()
        .segment_size(SEGMENT)
        .sync(SyncPolicy::Never)
}

fn node_opts() -> NodeOptions {
    NodeOptions::new().wal(wal_opts()).background(false)
}

fn golden_dir(version: u8) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/node-v{version}"))
}

/// A write of a batch: key, value (`None`: a tombstone), version.
type BatchWrite = (&'static [u8], Option<Vec<u8>>, Version);
/// What a get of a key returns: `(value or tombstone, version)`, `None` if unknown.
type Found = Option<(Option<Vec<u8>>, Version)>;

/// The writes, in log order, as the spec encodes them (docs/format.md): what each payload in
/// the golden log must be, byte for byte.
enum Logged {
    Put(&'static [u8], Vec<u8>, Version),
    /// A put with an expiry (payload format 1).
    PutExpiring(&'static [u8], Vec<u8>, Version, u64),
    Tombstone(&'static [u8], Version),
    Batch(Vec<BatchWrite>),
    Drop(Vec<TokenRange>),
}

fn dropped_range() -> TokenRange {
    let t = token(b"gone:1");
    TokenRange::new(t.wrapping_sub(1), t)
}

/// What the golden node of payload format `version` logged.
fn history(version: u8) -> Vec<Logged> {
    use Logged::*;
    let mut h = vec![
        Put(b"user:1", b"Alice".to_vec(), v(1)),
        Put(b"user:2", b"Bob".to_vec(), v(2)),
        Put(b"gone:1", b"dropped".to_vec(), v(3)),
        Tombstone(b"user:1", v(4)),
        Batch(vec![
            (b"batch:a", Some(b"A".to_vec()), v(5)),
            (b"batch:b", Some(Vec::new()), v(6)), // an empty value is a put
            (b"batch:c", None, v(7)),
        ]),
        Drop(vec![dropped_range()]),
        Put(b"user:3", vec![0x33; 200], v(8)),
        Put(b"user:4", vec![0x44; 150], v(9)),
        Put(b"user:5", vec![0x55; 150], v(10)),
        Put(b"user:2", b"Bob Smith".to_vec(), v(11)),
    ];
    if version >= 1 {
        h.extend([
            PutExpiring(b"user:1", b"Alice".to_vec(), v(12), EXPIRED),
            PutExpiring(b"session:1", b"active".to_vec(), v(13), FAR),
            Put(b"user:6", vec![0x66; 150], v(14)),
            Put(b"user:7", vec![0x77; 150], v(15)),
        ]);
    }
    h
}

/// What a get of each key must return afterwards: `(value or tombstone, version)`.
fn expected_state(version: u8) -> Vec<(&'static [u8], Found)> {
    let mut s: Vec<(&'static [u8], Found)> = vec![
        (b"user:1", Some((None, v(4)))),
        (b"user:2", Some((Some(b"Bob Smith".to_vec()), v(11)))),
        (b"gone:1", None),
        (b"batch:a", Some((Some(b"A".to_vec()), v(5)))),
        (b"batch:b", Some((Some(Vec::new()), v(6)))),
        (b"batch:c", Some((None, v(7)))),
        (b"user:3", Some((Some(vec![0x33; 200]), v(8)))),
        (b"user:4", Some((Some(vec![0x44; 150]), v(9)))),
        (b"user:5", Some((Some(vec![0x55; 150]), v(10)))),
    ];
    if version >= 1 {
        // Expired: reads as the tombstone at its version that it stands for.
        s[0] = (b"user:1", Some((None, v(12))));
        s.push((b"session:1", Some((Some(b"active".to_vec()), v(13)))));
        s.push((b"user:7", Some((Some(vec![0x77; 150]), v(15)))));
    }
    s
}

/// A put or tombstone payload by the spec: `kind, format, 0, 0, key_len, version, token, key,
/// value` (format 0), with `expires` after the token for a put with an expiry (format 1).
fn entry(key: &[u8], value: Option<&[u8]>, version: Version) -> Vec<u8> {
    entry_expiring(key, value, version, None)
}

fn entry_expiring(
    key: &[u8],
    value: Option<&[u8]>,
    version: Version,
    expires: Option<u64>,
) -> Vec<u8> {
    let format = u8::from(expires.is_some());
    let mut p = vec![if value.is_some() { 1 } else { 2 }, format, 0, 0];
    p.extend_from_slice(&(key.len() as u32).to_le_bytes());
    p.extend_from_slice(&version.as_u64().to_le_bytes());
    p.extend_from_slice(&token(key).to_le_bytes());
    if let Some(e) = expires {
        p.extend_from_slice(&e.to_le_bytes());
    }
    p.extend_from_slice(key);
    p.extend_from_slice(value.unwrap_or_default());
    p
}

/// A drop payload by the spec: `3, format, 0, 0, n, n × (start, end)`.
fn drop_payload(ranges: &[TokenRange]) -> Vec<u8> {
    let mut p = vec![3, 0, 0, 0];
    p.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    for r in ranges {
        p.extend_from_slice(&r.start.to_le_bytes());
        p.extend_from_slice(&r.end.to_le_bytes());
    }
    p
}

fn expected_payloads(version: u8) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for h in history(version) {
        match h {
            Logged::Put(k, val, ver) => out.push(entry(k, Some(&val), ver)),
            Logged::PutExpiring(k, val, ver, e) => {
                out.push(entry_expiring(k, Some(&val), ver, Some(e)));
            }
            Logged::Tombstone(k, ver) => out.push(entry(k, None, ver)),
            Logged::Batch(ws) => {
                for (k, val, ver) in ws {
                    out.push(entry(k, val.as_deref(), ver));
                }
            }
            Logged::Drop(r) => out.push(drop_payload(&r)),
        }
    }
    out
}

/// Writes the golden node into `dir` with today's code.
fn write_node(dir: &Path) {
    let node = Node::open(dir, node_opts()).unwrap();
    for h in history(PAYLOAD_VERSION) {
        match h {
            Logged::Put(k, val, ver) => assert!(node.apply(k, Some(&val), ver).unwrap()),
            Logged::PutExpiring(k, val, ver, e) => {
                assert!(node.apply_expiring(k, Some(&val), ver, Some(e)).unwrap());
            }
            Logged::Tombstone(k, ver) => assert!(node.apply(k, None, ver).unwrap()),
            Logged::Batch(ws) => {
                let writes: Vec<Write<'_>> = ws
                    .iter()
                    .map(|(k, val, ver)| Write {
                        key: k,
                        value: val.as_deref(),
                        version: *ver,
                        expires: None,
                    })
                    .collect();
                assert_eq!(node.apply_batch(&writes).unwrap(), writes.len());
            }
            Logged::Drop(r) => assert_eq!(node.drop_ranges(&r).unwrap(), 1),
        }
    }
    assert!(
        node.write_hints().unwrap() >= 2,
        "at least two sealed segments"
    );
    node.close().unwrap();
}

/// The files of a node directory (`wal/*.wal`, `wal/*.hint`), sorted, without the lock.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wal") || n.ends_with(".hint"))
        .collect();
    names.sort();
    names
}

fn copy_node(from: &Path, to: &Path, hints: bool) {
    fs::create_dir_all(to.join("wal")).unwrap();
    for n in files(from) {
        if hints || n.ends_with(".wal") {
            fs::copy(from.join("wal").join(&n), to.join("wal").join(&n)).unwrap();
        }
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn check_state(node: &Node, version: u8) {
    for (key, want) in expected_state(version) {
        let got = node
            .get_versioned(key)
            .unwrap()
            .map(|(val, ver)| (val.map(|b| b.to_vec()), ver));
        assert_eq!(got, want, "{}", String::from_utf8_lossy(key));
    }
}

#[test]
fn version_0_payloads_and_hint_files_read_back_exactly() {
    read_back_exactly(0, 1);
}

/// Version 1 (puts with an expiry) beside version 0 payloads, hint files of format 2.
#[test]
fn version_1_payloads_and_hint_files_read_back_exactly() {
    read_back_exactly(1, 2);
}

/// The golden directory of payload format `version`, whose hint files are of format `hint`.
fn read_back_exactly(version: u8, hint: u32) {
    let golden = golden_dir(version);

    // Every payload in the log, byte for byte as the spec encodes it.
    let tmp = tempfile::tempdir().unwrap();
    copy_node(&golden, tmp.path(), false);
    let wal = Wal::open(
        tmp.path().join("wal"),
        wal_opts().recovery(RecoveryMode::AbsoluteConsistency),
    )
    .unwrap();
    let records: Vec<(Lsn, Vec<u8>)> = wal
        .iter_from(Lsn::ZERO)
        .map(|r| r.map(|r| (r.lsn, r.payload.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap();
    drop(wal);
    let payloads: Vec<Vec<u8>> = records.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(payloads, expected_payloads(version));

    // Each hint file, field by field: header, one item per record of its segment, footer.
    let hints: Vec<String> = files(&golden)
        .into_iter()
        .filter(|n| n.ends_with(".hint"))
        .collect();
    assert!(hints.len() >= 2, "{hints:?}");
    for name in &hints {
        let seq: u32 = name.trim_end_matches(".hint").parse().unwrap();
        let b = fs::read(golden.join("wal").join(name)).unwrap();
        assert_eq!(&b[0..8], b"KVHINT\0\n");
        assert_eq!(le32(&b, 8), hint, "hint format version");
        assert_eq!(le32(&b, 12), 0, "reserved");
        assert_eq!(le64(&b, 16), u64::from(seq));
        let in_segment: Vec<&(Lsn, Vec<u8>)> =
            records.iter().filter(|(l, _)| l.segment() == seq).collect();
        assert_eq!(le64(&b, 24), in_segment.len() as u64, "{name} item count");
        let mut at = 32;
        for (lsn, payload) in &in_segment {
            // The item's first 24 bytes: a put's or tombstone's are its payload's (kind,
            // format, key length, version, token); a drop's are its 8 (kind, format, range
            // count) and 16 zeros.
            let is_drop = payload[0] == 3;
            let mut head = payload[..if is_drop { 8 } else { 24 }].to_vec();
            head.resize(24, 0);
            assert_eq!(&b[at..at + 24], &head[..], "{name} item at {lsn:?}");
            assert_eq!(le32(&b, at + 24), lsn.offset(), "{name} offset");
            assert_eq!(
                le32(&b, at + 28) as usize,
                payload.len(),
                "{name} payload length"
            );
            let n = le32(&b, at + 4) as usize;
            // A put with an expiry (format 1): its expiry follows the item header, as it
            // follows the payload's first 24 bytes.
            let expiry = if payload[1] == 1 { 8 } else { 0 };
            let tail = if is_drop { 16 * n } else { n + expiry };
            // The key (a drop's ranges) follows the 32-byte item header, as in the payload.
            let from_payload = if is_drop {
                &payload[8..8 + tail]
            } else {
                &payload[24..24 + tail]
            };
            assert_eq!(
                &b[at + 32..at + 32 + tail],
                from_payload,
                "{name} item body"
            );
            at += 32 + tail;
        }
        let (last_lsn, last) = in_segment.last().unwrap();
        let end = last_lsn.offset() as usize + 8 + last.len().div_ceil(8) * 8;
        assert_eq!(le32(&b, at) as usize, end, "{name} end");
        assert_eq!(
            le32(&b, at + 4),
            crc32c::crc32c(last),
            "{name} last payload checksum"
        );
        assert_eq!(
            le32(&b, at + 8),
            crc32c::crc32c(&b[..at + 8]),
            "{name} checksum"
        );
        assert_eq!(b.len(), at + 12, "{name} length");
    }

    // Through the node, from the hint files (each accepted), then by scanning alone.
    for hints_too in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        copy_node(&golden, tmp.path(), hints_too);
        let node = Node::open(tmp.path(), node_opts()).unwrap();
        let report = node.recovery_report();
        assert!(
            report.rejected_hints.is_empty(),
            "{:?}",
            report.rejected_hints
        );
        let from_hints = if hints_too { hints.len() } else { 0 };
        assert_eq!(report.segments_from_hints, from_hints);
        check_state(&node, version);
    }
}

#[test]
fn a_hint_file_of_an_unknown_format_version_is_replaced_by_a_scan() {
    let tmp = tempfile::tempdir().unwrap();
    copy_node(&golden_dir(0), tmp.path(), true);
    // Version 3 in the first hint file, with a checksum that matches it.
    let path = tmp.path().join("wal/0000000001.hint");
    let mut b = fs::read(&path).unwrap();
    b[8..12].copy_from_slice(&3u32.to_le_bytes());
    let body = b.len() - 4;
    let crc = crc32c::crc32c(&b[..body]);
    b[body..].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, b).unwrap();
    let node = Node::open(tmp.path(), node_opts()).unwrap();
    let report = node.recovery_report();
    assert_eq!(
        report.rejected_hints.len(),
        1,
        "{:?}",
        report.rejected_hints
    );
    assert_eq!(report.rejected_hints[0].0, 1);
    check_state(&node, 0);
}

#[test]
fn a_payload_of_an_unknown_format_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    copy_node(&golden_dir(0), tmp.path(), true);
    let mut next = entry(b"user:9", Some(b"from the future"), v(20));
    next[1] = PAYLOAD_VERSION + 1;
    let wal = Wal::open(tmp.path().join("wal"), wal_opts()).unwrap();
    wal.append(&next).unwrap();
    wal.close().unwrap();
    match Node::open(tmp.path(), node_opts()) {
        Err(Error::UnsupportedRecordVersion {
            version, supported, ..
        }) => assert_eq!((version, supported), (PAYLOAD_VERSION + 1, PAYLOAD_VERSION)),
        other => panic!(
            "expected UnsupportedRecordVersion, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[test]
fn todays_writer_writes_the_newest_golden_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    write_node(tmp.path());
    let golden = golden_dir(PAYLOAD_VERSION);
    assert_eq!(files(tmp.path()), files(&golden));
    for n in files(&golden) {
        assert!(
            fs::read(tmp.path().join("wal").join(&n)).unwrap()
                == fs::read(golden.join("wal").join(&n)).unwrap(),
            "{n} differs from the golden file: a format change needs a new format version \
             and new golden files (keep the old ones and their test)"
        );
    }
}

/// Writes `tests/golden/node-v<PAYLOAD_VERSION>/`: run once when a format version is new.
#[test]
#[ignore = "generator: writes the golden files"]
fn write_golden_files() {
    let tmp = tempfile::tempdir().unwrap();
    write_node(tmp.path());
    copy_node(tmp.path(), &golden_dir(PAYLOAD_VERSION), true);
}
