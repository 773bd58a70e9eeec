//! Rebuilding the index on open: hint files where they are valid, a scan of the log elsewhere.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kv_ring::TokenRange;
use kv_wal::Lsn;
use kv_wal::layout::HEADER_LEN;

use crate::hint::{self, HintRecord};
use crate::index::Location;
use crate::node::{Inner, frame};
use crate::record::{self, LogRecord};
use crate::{Error, Result, Version};

/// What recovery found when a node was opened: see
/// [`Node::recovery_report`](crate::Node::recovery_report).
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use kv_node::{Node, NodeOptions};
/// let node = Node::open(dir.path(), NodeOptions::new())?;
/// node.put(b"k", b"v")?;
/// node.close()?;
/// let node = Node::open(dir.path(), NodeOptions::new())?;
/// let r = node.recovery_report();
/// assert_eq!((r.records, r.live_keys), (1, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Time from the start of `open` to a usable index (WAL recovery included).
    pub duration: Duration,
    /// Segments whose index entries came from their hint file.
    pub segments_from_hints: usize,
    /// Segments read record by record (the active one, and any without a valid hint).
    pub segments_scanned: usize,
    /// Hint files found unusable, by segment, with the reason; they are deleted and written
    /// again.
    pub rejected_hints: Vec<(u32, String)>,
    /// Records seen (from hints and scans).
    pub records: u64,
    /// Keys with a value after recovery.
    pub live_keys: u64,
    /// Tombstones after recovery.
    pub tombstones: u64,
    /// What the write-ahead log's own recovery found (torn tails it cut, ...).
    pub wal: Option<kv_wal::RecoveryReport>,
}

pub(crate) fn recover(mut inner: Inner, start: Instant) -> Result<Inner> {
    let mut report = RecoveryReport {
        wal: Some(inner.wal.recovery_report().clone()),
        ..RecoveryReport::default()
    };
    let first = inner.wal.first_lsn().segment();
    let active = inner.wal.end_lsn().segment();
    let hints = list_hints(&inner, first, active)?;
    // An item of a hint file is 32 bytes and its key: size the index from them.
    let hinted: u64 = hints
        .values()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    inner.index.reserve((hinted / 48) as usize);
    let mut max_version = Version::ZERO;
    for seq in first..=active {
        if seq == 0 {
            continue;
        }
        let from_hint = match hints.get(&seq) {
            Some(path) => match load_hint(&inner, seq, path, &mut max_version) {
                Ok(records) => {
                    report.records += records;
                    true
                }
                Err(reason) => {
                    report.rejected_hints.push((seq, reason));
                    std::fs::remove_file(path)
                        .map_err(|e| Error::io("delete rejected hint file", path, e))?;
                    false
                }
            },
            _ => false,
        };
        if from_hint {
            report.segments_from_hints += 1;
            inner.hinted.get_mut().insert(seq);
        } else {
            report.records += scan_segment(&inner, seq, &mut max_version)?;
            report.segments_scanned += 1;
        }
    }
    inner.hlc.observe(max_version);
    let s = inner.stats();
    report.live_keys = s.live_keys;
    report.tombstones = s.tombstones;
    report.duration = start.elapsed();
    inner.recovery = report;
    Ok(inner)
}

/// The hint files in the log directory, by segment; deletes leftovers: temporary files,
/// hints of segments deleted (below `first`), and hints of the active segment or later ones.
///
/// A hint is written only for a sealed segment, so one for the active segment or after it
/// describes contents that recovery cut away: the WAL's recovery zeroes a torn tail only in
/// the newest segment, and a point-in-time recovery deletes every segment after the one it
/// cuts. The numbers cut away are used again by new segments, and a stale hint would be
/// checked only against the last record of its segment, which new contents can repeat. The
/// deletes are synced before any new segment is written: a stale hint that a power cut
/// brought back would be as wrong.
fn list_hints(inner: &Inner, first: u32, active: u32) -> Result<BTreeMap<u32, PathBuf>> {
    let dir = inner.wal.dir();
    let mut found = BTreeMap::new();
    let mut deleted = false;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        let stale = if name.ends_with(".hint.tmp") {
            true
        } else if let Some(seq) = hint::parse_name(name) {
            if (first..active).contains(&seq) {
                found.insert(seq, path.clone());
                false
            } else {
                true
            }
        } else {
            false
        };
        if stale {
            std::fs::remove_file(&path)
                .map_err(|e| Error::io("delete stale hint file", &path, e))?;
            deleted = true;
        }
    }
    if deleted {
        kv_wal::durable::sync_dir(dir).map_err(Error::durable)?;
    }
    Ok(found)
}

/// Loads a segment's index entries from its hint file, if the hint is valid for the segment.
/// Returns the number of records, or why the hint cannot be used.
fn load_hint(
    inner: &Inner,
    seq: u32,
    path: &PathBuf,
    max_version: &mut Version,
) -> Result<u64, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let hint = hint::parse(&bytes, seq)?;
    // The segment must still end where the hint says, with the record the hint names last.
    match hint.items.last() {
        Some(last) => {
            let payload = inner
                .wal
                .read(Lsn::new(seq, last.offset))
                .map_err(|e| format!("its last record cannot be read: {e}"))?;
            if payload.len() != last.payload_len as usize
                || crc32c::crc32c(&payload) != hint.last_crc
            {
                return Err("stale: its last record differs from the segment's".into());
            }
        }
        None if hint.end != HEADER_LEN as u32 => return Err("no items but a nonzero end".into()),
        None => {}
    }
    if inner.wal.read(Lsn::new(seq, hint.end)).is_ok() {
        return Err("stale: the segment has records after the hint's end".into());
    }
    for item in &hint.items {
        let lsn = Lsn::new(seq, item.offset);
        match &item.record {
            HintRecord::Entry {
                token,
                version,
                key,
                tombstone,
                expires,
            } => {
                *max_version = (*max_version).max(*version);
                load_entry(
                    inner,
                    *token,
                    key,
                    Location {
                        version: *version,
                        lsn,
                        len: item.payload_len,
                        tombstone: *tombstone,
                        stale_after: false,
                        expiring: expires.is_some(),
                    },
                    *expires,
                );
            }
            HintRecord::Drop(ranges) => load_drop(inner, ranges, lsn, item.payload_len),
        }
    }
    Ok(hint.items.len() as u64)
}

/// Loads a segment's records by reading them.
fn scan_segment(inner: &Inner, seq: u32, max_version: &mut Version) -> Result<u64> {
    let mut n = 0;
    for rec in inner.wal.iter_from(Lsn::new(seq, HEADER_LEN as u32)) {
        let rec = rec?;
        if rec.lsn.segment() != seq {
            break;
        }
        n += 1;
        let decoded = record::decode(&rec.payload).map_err(|e| e.at(rec.lsn))?;
        match decoded {
            LogRecord::Entry {
                token,
                version,
                key,
                value,
                expires,
            } => {
                *max_version = (*max_version).max(version);
                load_entry(
                    inner,
                    token,
                    key,
                    Location {
                        version,
                        lsn: rec.lsn,
                        len: rec.payload.len() as u32,
                        tombstone: value.is_none(),
                        stale_after: false,
                        expiring: expires.is_some(),
                    },
                    expires,
                );
            }
            LogRecord::Drop(ranges) => {
                load_drop(inner, &ranges, rec.lsn, rec.payload.len() as u32);
            }
        }
    }
    Ok(n)
}

/// Indexes one record. Records come in log order, so one older than the key's indexed
/// tombstone and logged after it (a writer that crashed before logging the tombstone again,
/// see `Inner::restate_tombstone`) marks the tombstone `stale_after`, and compaction copies it
/// rather than purging it.
fn load_entry(inner: &Inner, token: u64, key: &[u8], loc: Location, expires: Option<u64>) {
    inner.written(&loc, expires);
    // On equal versions the later copy wins: compaction's copy, whose original is deleted next.
    let outcome = inner.index.upsert(token, key, loc, true);
    inner.account(&outcome, loc);
}

/// A drop record: forget every key in `ranges` written before it.
pub(crate) fn load_drop(inner: &Inner, ranges: &[TokenRange], lsn: Lsn, len: u32) {
    let bytes = frame(len as usize);
    inner.segments.written(lsn.segment(), bytes);
    inner.segments.dead(lsn.segment(), bytes);
    for part in inner.index.partitions_for(ranges) {
        inner
            .index
            .drop_in_partition(part, ranges, lsn, |e| inner.forget(&e.loc));
    }
}
