//! Compaction (copy the live records of the oldest sealed segments to the head of the log,
//! then delete those segments) and hint files for sealed segments.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kv_ring::TokenRange;
use kv_wal::Lsn;
use kv_wal::layout::{HEADER_LEN, RECORD_HEADER_LEN};

use crate::hint::{self, HintBuilder};
use crate::node::{Inner, frame};
use crate::record::{self, LogRecord};
use crate::{Error, Node, Result};

/// What a compaction did: see [`Node::compact`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionReport {
    /// Sealed segments whose live records were copied.
    pub segments_compacted: usize,
    /// Segments deleted (fewer than compacted if a reader still had one open; a later
    /// compaction deletes it).
    pub segments_deleted: usize,
    /// Live records copied to the head of the log.
    pub records_copied: u64,
    /// Their framed bytes.
    pub bytes_copied: u64,
    /// Tombstones past their grace period dropped instead of copied.
    pub tombstones_purged: u64,
    /// Expired values found: each written as a tombstone at its version instead of copied,
    /// or, past the tombstone grace period, dropped (`docs/design.md`, *Expiring keys*).
    pub expired: u64,
    /// How long it took.
    pub duration: Duration,
}

/// Most bytes copied under one hold of the write gate.
const COPY_BATCH_BYTES: usize = 256 << 10;

/// A live record found in a victim segment.
struct Candidate {
    token: u64,
    key_len: usize,
    lsn: Lsn,
    payload: Bytes,
    /// The record's expiry (a put of payload format 1).
    expires: Option<u64>,
}

/// The live records gathered for the next copy, and their framed bytes.
#[derive(Default)]
struct CopyBatch {
    records: Vec<Candidate>,
    bytes: usize,
}

/// The payload length of what is written for `c`: its tombstone if it expired, else itself.
fn refs_len(c: &Candidate, tombstone: &Option<Vec<u8>>) -> usize {
    tombstone.as_ref().map_or(c.payload.len(), Vec::len)
}

impl Candidate {
    fn key(&self) -> &[u8] {
        let at = record::header_len(self.expires);
        &self.payload[at..at + self.key_len]
    }
}

impl Node {
    /// Compacts every sealed segment (all but the one being appended to): copies their live
    /// records to the head of the log, drops tombstones older than the grace period, makes
    /// the copies durable, then deletes the segments and their hint files (Bitcask's merge). Reads and writes continue meanwhile
    /// (writers wait while each batch of at most 256 KiB is copied).
    ///
    /// The background thread does the same once the dead fraction of the oldest segments
    /// passes [`NodeOptions::compaction_threshold`](crate::NodeOptions::compaction_threshold).
    ///
    /// # Errors
    ///
    /// [`Error::Wal`] / [`Error::Io`]; a crash at any point loses nothing (see the crate docs).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Node, NodeOptions};
    /// use kv_wal::WalOptions;
    /// let opts = NodeOptions::new().wal(WalOptions::new().segment_size(64 << 10));
    /// let node = Node::open(dir.path(), opts)?;
    /// for round in 0..20u32 {
    ///     for k in 0..100u32 {
    ///         node.put(&k.to_le_bytes(), &[round as u8; 100])?;
    ///     }
    /// }
    /// let before = node.stats();
    /// let report = node.compact()?;
    /// assert!(report.segments_deleted > 0);
    /// assert!(node.stats().dead_bytes < before.dead_bytes);
    /// assert_eq!(node.get(&7u32.to_le_bytes())?.unwrap().0[0], 19);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compact(&self) -> Result<CompactionReport> {
        self.inner.compact(true)
    }

    /// One pass of what the background thread does every
    /// [`NodeOptions::maintenance_interval`](crate::NodeOptions::maintenance_interval):
    /// compaction of the oldest segments if their reclaimable fraction (dead bytes, and the
    /// bytes of records with an expiry once all of a segment's have expired) passes
    /// [`NodeOptions::compaction_threshold`](crate::NodeOptions::compaction_threshold), then
    /// hint files. For a node opened without the background thread, and for tests, which
    /// advance a simulated clock and count passes instead of sleeping.
    ///
    /// # Errors
    ///
    /// As [`Node::compact`] and [`Node::write_hints`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Node, NodeOptions};
    /// let node = Node::open(dir.path(), NodeOptions::new().background(false))?;
    /// node.put(b"k", b"v")?;
    /// let report = node.maintain()?; // nothing sealed yet: nothing to do
    /// assert_eq!(report.segments_compacted, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn maintain(&self) -> Result<CompactionReport> {
        let report = self.inner.compact(false)?;
        self.inner.write_hints()?;
        Ok(report)
    }

    /// Writes the hint file of every sealed segment that lacks one; returns how many were
    /// written. The background thread does this on its own.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a file cannot be written; [`Error::Wal`] if a segment cannot be read.
    pub fn write_hints(&self) -> Result<usize> {
        self.inner.write_hints()
    }
}

impl Inner {
    /// The sealed segments to compact, as the last of a prefix of the log (segments are
    /// deleted oldest first). When `force`, all of them (so tombstones past their grace period
    /// go too). Else, among the prefixes whose dead fraction passes the threshold, the one that
    /// gains most (dead bytes reclaimed minus live bytes copied): a prefix does not reach over
    /// mostly-live segments just because older ones are dead enough to carry them.
    fn victims(&self, force: bool) -> Option<u32> {
        let active = self.wal.end_lsn().segment();
        // Expired records count as dead (active expiry: `docs/design.md`, *Expiring keys*).
        let now = self.now_millis();
        let (mut total, mut dead) = (0u64, 0u64);
        let mut best: Option<(i128, u32)> = None;
        let mut last = None;
        for s in self.segments.snapshot() {
            if s.seq >= active {
                break;
            }
            total += s.total;
            dead += s.reclaimable(now);
            last = Some(s.seq);
            let gain = i128::from(dead) - i128::from(total - dead);
            let passes = total > 0 && dead as f64 >= self.opts.compaction_threshold * total as f64;
            if passes && best.is_none_or(|(g, _)| gain > g) {
                best = Some((gain, s.seq));
            }
        }
        if force {
            last
        } else {
            best.map(|(_, seq)| seq)
        }
    }

    pub fn compact(&self, force: bool) -> Result<CompactionReport> {
        let _one = self.maintenance_lock.lock();
        let start = Instant::now();
        let mut report = CompactionReport::default();
        let Some(last) = self.victims(force) else {
            return Ok(report);
        };
        // A writer holds the gate (shared) from its append to its index update: one that
        // appended into a victim before it was sealed may not have updated the index yet, and
        // its record would look dead to the scan below and go with the segment. Wait for any
        // such writer; none can append into a sealed segment after that.
        drop(self.gate.exclusive());
        let first = self.wal.first_lsn().segment();
        // Expired tombstones found in the victims: dropped from the index only once their
        // segments are gone, so that until then (and after a failure) memory and the log agree.
        let mut purges = Vec::new();
        if self.scan_index_for(first, last) {
            self.copy_live_from_index(first, last, &mut report, &mut purges)?;
            report.segments_compacted += (last + 1 - first) as usize;
        } else {
            for seq in first..=last {
                self.copy_live(seq, &mut report, &mut purges)?;
                report.segments_compacted += 1;
            }
        }
        self.fail_point(2)?;
        // The copies must be durable before the originals go.
        self.wal.sync()?;
        self.fail_point(3)?;
        report.segments_deleted = self.wal.truncate_before(Lsn::new(last + 1, 0))?;
        let first = self.wal.first_lsn().segment();
        for c in purges.iter().filter(|c| c.lsn.segment() < first) {
            // Not if an older record logged after it arrived since (its writer logged the
            // tombstone again, which moved it; `stale_after` is left only if that failed).
            if let Some(removed) = self.index.remove_purged(c.token, c.key(), c.lsn) {
                self.forget(&removed);
                report.tombstones_purged += 1;
            }
        }
        self.fail_point(4)?;
        self.forget_segments_before(self.wal.first_lsn().segment())?;
        self.compactions.fetch_add(1, Ordering::Relaxed);
        report.duration = start.elapsed();
        Ok(report)
    }

    /// After segments were deleted: drop their counters and hint files. A hint file that
    /// cannot be deleted stops the deletes with an error; it and the ones after it stay in
    /// `hinted`, so that the next compaction deletes them (recovery deletes them too). The
    /// deletes that succeeded are synced all the same.
    fn forget_segments_before(&self, first: u32) -> Result<()> {
        self.segments.remove_below(first);
        let gone: Vec<u32> = {
            let mut hinted = self.hinted.lock();
            let keep = hinted.split_off(&first);
            std::mem::replace(&mut *hinted, keep).into_iter().collect()
        };
        let dir = self.wal.dir();
        let mut deleted = 0;
        let mut outcome = Ok(());
        for (i, seq) in gone.iter().enumerate() {
            let p = hint::path(dir, *seq);
            match std::fs::remove_file(&p) {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.hinted.lock().extend(&gone[i..]);
                    outcome = Err(Error::io("delete hint file", &p, e));
                    break;
                }
            }
        }
        let synced = if deleted > 0 {
            kv_wal::durable::sync_dir(dir).map_err(Error::durable)
        } else {
            Ok(())
        };
        outcome.and(synced)
    }

    /// Whether to find the live records of segments `first..=last` by a pass over the index
    /// rather than by reading the segments. Reading a segment costs every byte of it (each
    /// record parsed and checksummed, and an index lookup per record, live or dead); the
    /// index pass costs its entries (64 bytes each, read in order) plus a random read of
    /// each live record. In an overwrite workload over few keys the victims are mostly dead
    /// records of keys long since rewritten: the index is then far smaller than they are.
    fn scan_index_for(&self, first: u32, last: u32) -> bool {
        if let Some(from_index) = self.opts.compaction_scan {
            return from_index;
        }
        let (mut total, mut live) = (0u64, 0u64);
        for s in self.segments.snapshot() {
            if (first..=last).contains(&s.seq) {
                total += s.total;
                live += s.total.saturating_sub(s.dead);
            }
        }
        let entries = (self.live_keys.sum() + self.tombstones.sum()).max(0) as u64;
        // A random read of a live record is taken to cost as much as reading it twice in
        // order, an index entry as much as 8 bytes of log.
        entries.saturating_mul(8) + live.saturating_mul(2) < total
    }

    /// [`Inner::copy_live`] for segments `first..=last` at once, finding their live records
    /// in the index (see [`Inner::scan_index_for`]). Each record is read back through its
    /// checksum; dead records are never read, so a corrupt one goes with its segment
    /// unnoticed, as it should (nothing points at it).
    fn copy_live_from_index(
        &self,
        first: u32,
        last: u32,
        report: &mut CompactionReport,
        purges: &mut Vec<Candidate>,
    ) -> Result<()> {
        let mut live = Vec::new();
        let full = [TokenRange::FULL];
        for part in self.index.partitions_for(&full) {
            self.index.scan_partition(part, &full, |e| {
                if (first..=last).contains(&e.loc.lsn.segment()) {
                    live.push((e.loc.lsn, e.token));
                }
            });
        }
        // In log order: the reads go through each segment front to back.
        live.sort_unstable_by_key(|&(lsn, _)| lsn);
        let mut batch = CopyBatch::default();
        for (lsn, token) in live {
            let payload = self.wal.read(lsn)?;
            let decoded = record::decode(&payload).map_err(|e| e.at(lsn))?;
            let LogRecord::Entry {
                token: t,
                key,
                expires,
                ..
            } = decoded
            else {
                return Err(Error::CorruptRecord {
                    lsn,
                    reason: "the index points at a record that is not an entry",
                });
            };
            if t != token {
                return Err(Error::CorruptRecord {
                    lsn,
                    reason: "the index points at a record of another key",
                });
            }
            let key_len = key.len();
            let c = Candidate {
                token,
                key_len,
                lsn,
                payload,
                expires,
            };
            self.gather(&mut batch, c, report, purges)?;
        }
        self.copy_batch(&mut batch.records, report, purges)
    }

    /// Copies the live records of segment `seq` to the head of the log.
    fn copy_live(
        &self,
        seq: u32,
        report: &mut CompactionReport,
        purges: &mut Vec<Candidate>,
    ) -> Result<()> {
        let mut batch = CopyBatch::default();
        for rec in self.wal.iter_from(Lsn::new(seq, HEADER_LEN as u32)) {
            let rec = rec?;
            if rec.lsn.segment() != seq {
                break;
            }
            let decoded = record::decode(&rec.payload).map_err(|e| e.at(rec.lsn))?;
            let LogRecord::Entry {
                token,
                key,
                expires,
                ..
            } = decoded
            else {
                continue; // A drop record only concerns records before it: all deleted too.
            };
            if self
                .index
                .get(token, key)
                .is_none_or(|loc| loc.lsn != rec.lsn)
            {
                continue;
            }
            let c = Candidate {
                token,
                key_len: key.len(),
                lsn: rec.lsn,
                payload: rec.payload,
                expires,
            };
            self.gather(&mut batch, c, report, purges)?;
        }
        self.copy_batch(&mut batch.records, report, purges)
    }

    /// Adds a live record to the copy batch being gathered, copying the batch first if the
    /// record would make it overflow a segment (a batch must fit in one), and after if it
    /// reaches the batch size. A record that cannot share a batch so goes alone: it fits in a
    /// segment, since it was in one.
    fn gather(
        &self,
        batch: &mut CopyBatch,
        c: Candidate,
        report: &mut CompactionReport,
        purges: &mut Vec<Candidate>,
    ) -> Result<()> {
        let len = frame(c.payload.len()) as usize;
        // What an empty segment holds of a batch, framing included.
        let room = self.max_payload() + RECORD_HEADER_LEN;
        if !batch.records.is_empty() && batch.bytes + len > room {
            self.copy_batch(&mut batch.records, report, purges)?;
            batch.bytes = 0;
        }
        batch.records.push(c);
        batch.bytes += len;
        if batch.bytes >= COPY_BATCH_BYTES.min(self.max_payload() / 2) {
            self.copy_batch(&mut batch.records, report, purges)?;
            batch.bytes = 0;
        }
        Ok(())
    }

    /// Copies a batch, with writers held off so none can slip a newer version in between the
    /// check and the copy (a stale copy after a newer write could outlive a purged tombstone).
    fn copy_batch(
        &self,
        batch: &mut Vec<Candidate>,
        report: &mut CompactionReport,
        purges: &mut Vec<Candidate>,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let now = self.opts.clock.now_millis();
        let grace = self.opts.tombstone_grace.as_millis() as u64;
        let _gate = self.gate.exclusive();
        // Drops in progress (registered under the gate too): what they cover is dropped here,
        // not moved past their drop record where their scan would miss it.
        let drops = self.pending_drops.lock().clone();
        // Each record to write, with its index entry and, for an expired value, the tombstone
        // payload written in its place.
        let mut keep: Vec<(Candidate, crate::index::Location, Option<Vec<u8>>)> =
            Vec::with_capacity(batch.len());
        for c in batch.drain(..) {
            let Some(loc) = self.index.get(c.token, c.key()) else {
                continue;
            };
            if loc.lsn != c.lsn {
                continue;
            }
            if let Some(d) = drops.iter().find(|d| d.covers(c.token, c.lsn)) {
                if let Some(removed) = self.index.remove_at(c.token, c.key(), c.lsn) {
                    self.forget(&removed);
                    self.cache.remove(c.key());
                    d.removed.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            // A tombstone with an older record of its key logged after it is copied (to the
            // head, after everything), not purged: that record would come back on reopen.
            if loc.tombstone
                && !loc.stale_after
                && now.saturating_sub(loc.version.millis()) >= grace
            {
                purges.push(c); // not copied: gone with its segment
                continue;
            }
            // An expired value shadows older versions of its key as a tombstone at its
            // version would: it becomes one, under the same rules (purged past the grace
            // period unless an older record is logged after it).
            if loc.expiring && crate::is_expired(c.expires, now) {
                report.expired += 1;
                if !loc.stale_after && now.saturating_sub(loc.version.millis()) >= grace {
                    purges.push(c);
                    continue;
                }
                let mut tombstone = Vec::new();
                record::encode_entry(&mut tombstone, c.token, loc.version, c.key(), None, None);
                keep.push((c, loc, Some(tombstone)));
                continue;
            }
            keep.push((c, loc, None));
        }
        if keep.is_empty() {
            return Ok(());
        }
        let refs: Vec<&[u8]> = keep
            .iter()
            .map(|(c, _, t)| t.as_deref().unwrap_or(&c.payload[..]))
            .collect();
        let mut lsn = self.wal.append_batch(&refs)?;
        for (c, loc, tombstone) in &keep {
            let len = frame(refs_len(c, tombstone));
            if let Some(t) = tombstone {
                if let Some(old) =
                    self.index
                        .convert_expired(c.token, c.key(), c.lsn, lsn, t.len() as u32)
                {
                    self.segments.written(lsn.segment(), len);
                    self.bury(&old);
                    self.count(false, -1);
                    self.count(true, 1);
                    self.expiring_keys.add(-1);
                    self.live_bytes
                        .add(len as i64 - frame(old.len as usize) as i64);
                    self.cache.remove(c.key());
                } else {
                    // Cannot be: the gate is held since the check. Counted as the dead record
                    // it would be.
                    self.segments.written(lsn.segment(), len);
                    self.segments.dead(lsn.segment(), len);
                }
            } else {
                self.written(&crate::index::Location { lsn, ..*loc }, c.expires);
                self.bury(loc);
                self.index.relocate(c.token, c.key(), c.lsn, lsn);
            }
            report.records_copied += 1;
            report.bytes_copied += len;
            lsn = Lsn::new(lsn.segment(), lsn.offset() + len as u32);
        }
        self.fail_point(1)
    }

    /// Fault injection for tests ([`NodeOptions::fail_compaction_at`](crate::NodeOptions)).
    fn fail_point(&self, step: u8) -> Result<()> {
        if self.opts.fail_compaction_at == Some(step) {
            return Err(Error::io(
                "compaction (injected failure)",
                self.wal.dir(),
                std::io::Error::other(format!("fail point {step}")),
            ));
        }
        Ok(())
    }

    pub fn write_hints(&self) -> Result<usize> {
        let _one = self.maintenance_lock.lock();
        let first = self.wal.first_lsn().segment();
        let active = self.wal.end_lsn().segment();
        let mut written = 0;
        let mut first_error = None;
        for seq in first.max(1)..active {
            if self.hinted.lock().contains(&seq) {
                continue;
            }
            // A hint that cannot be written costs a scan at recovery, nothing more: go on with
            // the other segments and report the first failure at the end.
            match self.write_hint(seq) {
                Ok(()) => written += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }

    fn write_hint(&self, seq: u32) -> Result<()> {
        {
            let mut b = HintBuilder::new(seq);
            for rec in self.wal.iter_from(Lsn::new(seq, HEADER_LEN as u32)) {
                let rec = rec?;
                if rec.lsn.segment() != seq {
                    break;
                }
                let decoded = record::decode(&rec.payload).map_err(|e| e.at(rec.lsn))?;
                b.add(rec.lsn.offset(), &rec.payload, &decoded);
            }
            hint::write(self.wal.dir(), seq, &b.finish())?;
            self.hinted.lock().insert(seq);
            self.hints_written.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use crate::record::{self, Write};
    use crate::{Node, NodeOptions, Version};

    /// A writer appended version 2 of `k` to a segment that was then sealed, and is slow to
    /// update the index (preempted between the two). A compaction that starts meanwhile must
    /// not take the record for dead and delete it with its segment.
    ///
    /// The compaction runs on another thread while this one holds the gate as that writer
    /// would; 200 ms later the writer finishes. Without the barrier the compaction has scanned
    /// the segment by then (it needs well under a millisecond) and the test fails; with it,
    /// the compaction waits for the writer, whatever the machine's speed.
    #[test]
    fn a_write_between_its_append_and_its_index_update_survives_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let opts = NodeOptions::small();
        let node = Node::open(dir.path(), opts.clone()).unwrap();
        let inner = &node.inner;
        node.apply(b"k", Some(b"one"), Version::new(1)).unwrap();
        let token = kv_ring::token(b"k");
        let two = Write {
            key: b"k",
            value: Some(b"two"),
            version: Version::new(2),
            expires: None,
        };
        let len = record::entry_len(two.key, two.value, None);
        let mut buf = Vec::new();
        record::encode_entry(&mut buf, token, two.version, two.key, two.value, None);
        std::thread::scope(|s| {
            let gate = inner.gate.shared();
            let lsn = inner.wal.append(&buf).unwrap();
            // Other writers seal the segment (their gate shards may be this one: shared).
            let active = inner.wal.end_lsn().segment();
            for i in 0u32.. {
                if inner.wal.end_lsn().segment() != active {
                    break;
                }
                node.apply(
                    format!("filler{i}").as_bytes(),
                    Some(&[0; 100]),
                    Version::new(3),
                )
                .unwrap();
            }
            let compaction = s.spawn(|| node.compact().unwrap());
            std::thread::sleep(Duration::from_millis(200));
            let loc = crate::index::Location {
                version: two.version,
                lsn,
                len: len as u32,
                tombstone: false,
                stale_after: false,
                expiring: false,
            };
            inner
                .segments
                .written(lsn.segment(), crate::node::frame(len));
            let outcome = inner.index.upsert(token, b"k", loc, false);
            inner.account(&outcome, loc);
            drop(gate);
            let report = compaction.join().unwrap();
            assert!(report.segments_deleted > 0, "{report:?}");
        });
        assert_eq!(&node.get(b"k").unwrap().unwrap().0[..], b"two");
        drop(node);
        let node = Node::open(dir.path(), opts).unwrap();
        assert_eq!(&node.get(b"k").unwrap().unwrap().0[..], b"two");
    }

    /// The cost estimate reads the index when the victims are mostly dead records of few
    /// keys, and the log when they are mostly live.
    #[test]
    fn compaction_reads_the_index_for_churn_and_the_log_for_live_data() {
        let opts = NodeOptions::small;
        let churn = tempfile::tempdir().unwrap();
        let node = Node::open(churn.path(), opts()).unwrap();
        for round in 0..200u64 {
            for k in 0..20u8 {
                node.apply(&[k + 1], Some(&[0; 100]), Version::new(round + 1))
                    .unwrap();
            }
        }
        let active = node.inner.wal.end_lsn().segment();
        let first = node.inner.wal.first_lsn().segment();
        assert!(node.inner.scan_index_for(first, active - 1));

        let live = tempfile::tempdir().unwrap();
        let node = Node::open(live.path(), opts()).unwrap();
        for k in 0..2_000u32 {
            node.apply(&k.to_le_bytes(), Some(&[0; 100]), Version::new(1))
                .unwrap();
        }
        let active = node.inner.wal.end_lsn().segment();
        let first = node.inner.wal.first_lsn().segment();
        assert!(!node.inner.scan_index_for(first, active - 1));
    }
}
