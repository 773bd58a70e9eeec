//! Recovery on open: scan every segment, decide what is valid, zero what is not.

use std::path::{Path, PathBuf};

use crate::{
    Error, Lsn, RecoveryMode, Result, WalOptions, durable,
    format::{self, RECORD_HEADER_LEN, Stop},
    pool::Pool,
    segment::{self, Segment},
};

/// What recovery found when the log was opened ([`Wal::recovery_report`](crate::Wal::recovery_report)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segments kept.
    pub segments: usize,
    /// Records recovered (every record of every kept segment).
    pub records: u64,
    /// Where the next append goes.
    pub end: Lsn,
    /// What was discarded, if anything.
    pub truncation: Option<Truncation>,
}

/// The part of the log that recovery discarded (zeroed or deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Truncation {
    /// The segment that was cut.
    pub path: PathBuf,
    /// Its sequence number.
    pub segment: u32,
    /// Where the valid log now ends in it (everything from here on was zeroed; in a recycled
    /// segment, whose later bytes are leftovers, an end marker was written here instead).
    pub offset: u64,
    /// Offset of the first invalid record or stray byte.
    pub invalid_at: u64,
    /// What was wrong there.
    pub reason: &'static str,
    /// Bytes zeroed in that segment (from `offset` to its last nonzero byte; 0 in a recycled
    /// segment).
    pub bytes_discarded: u64,
    /// Later segments deleted (only under [`RecoveryMode::PointInTime`]).
    pub segments_removed: Vec<u32>,
}

/// The recovered log, ready for appends.
pub(crate) struct Recovered {
    pub segments: Vec<Segment>,
    /// Offset in the last segment where the next record goes.
    pub end: usize,
    pub report: RecoveryReport,
    /// The recycling pool found in the directory.
    pub pool: Pool,
}

/// Lists the segment files in `dir` in sequence order, deleting leftover temporary files of an
/// interrupted segment creation; and the pool files (`(last seq, path)`).
#[allow(clippy::type_complexity)]
fn list(dir: &Path) -> Result<(Vec<(u32, PathBuf)>, Vec<(u32, PathBuf)>)> {
    let mut found = Vec::new();
    let mut pooled = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    let mut removed_tmp = false;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = segment::parse_file_name(name) {
            found.push((seq, entry.path()));
        } else if let Some(seq) = segment::parse_pool_file_name(name) {
            pooled.push((seq, entry.path()));
        } else if name
            .strip_suffix(".tmp")
            .and_then(segment::parse_file_name)
            .is_some()
        {
            let p = entry.path();
            std::fs::remove_file(&p).map_err(|e| Error::io("delete temporary segment", &p, e))?;
            removed_tmp = true;
        }
    }
    if removed_tmp {
        durable::sync_dir(dir)?;
    }
    found.sort_unstable_by_key(|(seq, _)| *seq);
    Ok((found, pooled))
}

/// Opens and checks every segment in `dir`, applying `mode`.
pub(crate) fn recover(dir: &Path, opts: &WalOptions) -> Result<Recovered> {
    let mode = opts.recovery;
    let (files, pooled) = list(dir)?;
    let mut pool = Pool::load(
        dir,
        pooled,
        opts.get_recycle_segments(),
        opts.get_segment_size(),
    )?;
    let n = files.len();
    let mut kept: Vec<Segment> = Vec::with_capacity(n);
    let mut records = 0u64;
    let mut end = format::HEADER_LEN;
    let mut truncation: Option<Truncation> = None;
    // Index in `files` from which everything is to be deleted (PointInTime cuts).
    let mut cut_from: Option<usize> = None;
    // A torn or corrupt tail to zero: (index in `kept`, from, length).
    let mut zero_tail: Option<(usize, usize, usize)> = None;

    for (i, (seq, path)) in files.iter().enumerate() {
        let newest = i + 1 == n;
        if let Some(prev) = kept.last()
            && prev.seq().checked_add(1) != Some(*seq)
        {
            let missing = prev.seq().saturating_add(1);
            if mode == RecoveryMode::PointInTime {
                cut_from = Some(i);
                truncation = Some(Truncation {
                    path: prev.path().to_owned(),
                    segment: prev.seq(),
                    offset: end as u64,
                    invalid_at: prev.len() as u64,
                    reason: "next segment is missing",
                    bytes_discarded: 0,
                    segments_removed: Vec::new(),
                });
                break;
            }
            return Err(Error::MissingSegment {
                dir: dir.to_owned(),
                segment: missing,
            });
        }
        // Only the newest segment can be torn (older ones were flushed whole before the next
        // received records), so only it may be shorter than its header says, and not under
        // AbsoluteConsistency.
        let short_ok = newest && mode != RecoveryMode::AbsoluteConsistency;
        let seg = match Segment::open(path, *seq, short_ok) {
            Ok(s) => s,
            Err(Error::BadHeader { reason, .. }) if mode == RecoveryMode::PointInTime => {
                cut_from = Some(i);
                if let Some(prev) = kept.last() {
                    truncation = Some(Truncation {
                        path: prev.path().to_owned(),
                        segment: prev.seq(),
                        offset: end as u64,
                        invalid_at: prev.len() as u64,
                        reason,
                        bytes_discarded: 0,
                        segments_removed: Vec::new(),
                    });
                } else {
                    truncation = Some(Truncation {
                        path: path.clone(),
                        segment: *seq,
                        offset: 0,
                        invalid_at: 0,
                        reason,
                        bytes_discarded: 0,
                        segments_removed: Vec::new(),
                    });
                }
                break;
            }
            Err(e) => return Err(e),
        };
        // SAFETY: recovery runs before the log is shared; nothing else touches the mapping.
        let scan = format::scan(unsafe { seg.bytes(seg.len()) }, seg.mask());
        let problem = match (scan.stop, scan.last_nonzero) {
            (Stop::Invalid { offset, reason }, _) => Some((offset, reason)),
            (_, Some(at)) => Some((at, "nonzero bytes after the end of the log")),
            _ => None,
        };
        records += scan.records;
        end = scan.end;
        let Some((invalid_at, reason)) = problem else {
            kept.push(seg);
            continue;
        };
        let discardable = match mode {
            RecoveryMode::AbsoluteConsistency => false,
            RecoveryMode::TolerateCorruptedTail => newest,
            RecoveryMode::PointInTime => true,
        };
        if !discardable {
            return Err(Error::Corrupt {
                path: path.clone(),
                segment: *seq,
                offset: invalid_at as u64,
                reason,
            });
        }
        let last = scan.last_nonzero.unwrap_or(scan.end.saturating_sub(1));
        let discard = (last + 1).saturating_sub(scan.end);
        // Zeroed only after every later segment is gone (below): zeroing first and crashing
        // before the deletes would leave a clean-looking end followed by later segments, which
        // the next open would accept, records after a hole.
        zero_tail = Some((kept.len(), scan.end, discard));
        truncation = Some(Truncation {
            path: path.clone(),
            segment: *seq,
            offset: scan.end as u64,
            invalid_at: invalid_at as u64,
            reason,
            bytes_discarded: discard as u64,
            segments_removed: Vec::new(),
        });
        kept.push(seg);
        if !newest {
            cut_from = Some(i + 1);
        }
        break;
    }

    if let Some(from) = cut_from {
        // Newest first, so an interrupted cut never leaves a gap in the sequence.
        let mut removed = Vec::new();
        for (seq, path) in files[from..].iter().rev() {
            std::fs::remove_file(path).map_err(|e| Error::io("delete segment", path, e))?;
            removed.push(*seq);
        }
        removed.reverse();
        durable::sync_dir(dir)?;
        if let Some(t) = truncation.as_mut() {
            t.segments_removed = removed;
        }
    }
    if let Some((index, from, len)) = zero_tail {
        let seg = &kept[index];
        // SAFETY: recovery has exclusive access to the mapping.
        unsafe { seg.zero(from, len) };
        seg.flush(from, len)
            .map_err(|e| Error::io("flush truncated segment", seg.path(), e))?;
    }

    // A recycled newest segment is never appended to again: the bytes after its end may be
    // records of this very incarnation beyond a hole a power cut left (pages reach the disk
    // in any order), which appends of the same lengths would bring back to life; and unlike
    // a fresh segment's, its tail cannot be zeroed up to the last nonzero byte (that is the
    // whole file). It gets an end marker (an all-zero record header, so that later scans of
    // it stop there, as at a sealed segment's), and the log goes on in a new segment.
    // (RocksDB never appends to a recovered log file at all; its recycled logs with
    // point-in-time recovery could recover a hole: rocksdb PR 7252.)
    let mut roll_from: Option<(u32, usize)> = None;
    if let Some(last) = kept.last()
        && last.is_recycled()
    {
        if end + RECORD_HEADER_LEN <= last.len() {
            // SAFETY: recovery has exclusive access to the mapping.
            unsafe { last.zero(end, RECORD_HEADER_LEN) };
        }
        roll_from = Some((last.seq(), last.len()));
    }

    // Make whatever the previous process left in the page cache durable before we build on
    // it (after a SIGKILL the kernel still holds its unflushed writes), and the end marker.
    for seg in &kept {
        seg.sync_file()?;
    }

    if let Some((seq, len)) = roll_from {
        let next = seq.checked_add(1).ok_or_else(|| Error::SequenceExhausted {
            dir: dir.to_owned(),
        })?;
        let size = opts.next_segment_size(len, 0);
        kept.push(pool.new_segment(next, size, opts.prefault)?);
        end = format::HEADER_LEN;
    }
    if kept.is_empty() {
        let seq = files.first().map(|(s, _)| *s).unwrap_or(1);
        let size = opts.get_initial_segment_size();
        kept.push(pool.new_segment(seq, size, opts.prefault)?);
        end = format::HEADER_LEN;
    }
    let last_seq = kept.last().map(Segment::seq).unwrap_or(1);
    let report = RecoveryReport {
        segments: kept.len(),
        records,
        end: Lsn::new(last_seq, end as u32),
        truncation,
    };
    Ok(Recovered {
        segments: kept,
        end,
        report,
        pool,
    })
}
