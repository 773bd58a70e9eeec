//! The recycling pool: released segment files kept for reuse as new segments (RocksDB's
//! `recycle_log_file_num`).
//!
//! Why: a new segment is a fresh file, and the first write to each of its pages makes the
//! kernel allocate a page-cache page and zero it (and, on ext4, convert an unwritten extent
//! when the page is written back). A segment that [`Wal::truncate_before`](crate::Wal::truncate_before)
//! releases is renamed to `NNNNNNNNNN.pool` instead of being deleted, up to
//! [`WalOptions::recycle_segments`](crate::WalOptions::recycle_segments) files; the next roll-over
//! that wants a segment of its size renames it back as the new segment, with a version-2
//! header (`Segment::recycle`). Its old records stay where they are: the checksum mask
//! (`format::mask`) keeps them from passing for the new incarnation's.
//!
//! Only files of exactly the configured `segment_size` are pooled: a young log's smaller
//! segments are deleted as before, and a pooled file always fits a full-size roll-over.

use std::path::{Path, PathBuf};

use crate::{
    Error, Result, durable, format,
    segment::{self, Segment},
};

/// The pool of one log directory.
#[derive(Debug)]
pub(crate) struct Pool {
    dir: PathBuf,
    /// At most this many files.
    cap: usize,
    /// The size of the files it keeps (the configured segment size).
    size: u32,
    /// The files, by the sequence number they had last (the name), oldest first.
    files: Vec<u32>,
}

impl Pool {
    /// The pool of `dir` from the pool files found there (`(last seq, path)`), keeping the
    /// newest `cap` files of `size` bytes and deleting the others (then syncing `dir`).
    pub(crate) fn load(
        dir: &Path,
        found: Vec<(u32, PathBuf)>,
        cap: usize,
        size: u32,
    ) -> Result<Pool> {
        let mut keep = Vec::new();
        let mut drop = Vec::new();
        for (seq, path) in found {
            let len = std::fs::metadata(&path)
                .map_err(|e| Error::io("stat pool file", &path, e))?
                .len();
            if len == u64::from(size) {
                keep.push((seq, path));
            } else {
                drop.push(path);
            }
        }
        keep.sort_unstable_by_key(|(seq, _)| *seq);
        let excess = keep.len().saturating_sub(cap);
        drop.extend(keep.drain(..excess).map(|(_, p)| p));
        for path in &drop {
            std::fs::remove_file(path).map_err(|e| Error::io("delete pool file", path, e))?;
        }
        if !drop.is_empty() {
            durable::sync_dir(dir)?;
        }
        Ok(Pool {
            dir: dir.to_owned(),
            cap,
            size,
            files: keep.into_iter().map(|(seq, _)| seq).collect(),
        })
    }

    /// Releases `seg` into the pool if it has room and the segment is of the pooled size:
    /// `Ok(None)` once renamed (the caller syncs the directory), `Ok(Some(seg))` if the pool
    /// does not take it (the caller deletes it), `Err` with the segment back if the rename
    /// failed.
    pub(crate) fn release(
        &mut self,
        seg: Segment,
    ) -> std::result::Result<Option<Segment>, (Segment, Error)> {
        if self.files.len() >= self.cap || seg.len() != self.size as usize {
            return Ok(Some(seg));
        }
        let seq = seg.seq();
        seg.release(&self.dir.join(segment::pool_file_name(seq)))?;
        self.files.push(seq);
        Ok(None)
    }

    /// Creates segment `seq` of `size` bytes: a pool file recycled if the pool has one of that
    /// size (and `seq` may be recycled), else a fresh file. A pool file that cannot be
    /// recycled is left for the next open to find (best effort: the fresh file is made
    /// instead).
    pub(crate) fn new_segment(&mut self, seq: u32, size: u32, prefault: bool) -> Result<Segment> {
        if size == self.size
            && format::recyclable_seq(seq)
            && let Some(last) = self.files.pop()
        {
            let pool = self.dir.join(segment::pool_file_name(last));
            if let Ok(seg) = Segment::recycle(&self.dir, &pool, seq, prefault) {
                return Ok(seg);
            }
        }
        Segment::create(&self.dir, seq, size, prefault)
    }
}
