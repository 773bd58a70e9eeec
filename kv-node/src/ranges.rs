//! Range operations for redistribution: export, import, drop, count.

use std::collections::VecDeque;

use bytes::Bytes;
use kv_ring::TokenRange;
use kv_wal::Lsn;

use crate::index::{Key, Location};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::node::{Inner, PendingDrop, frame};
use crate::record::{self, Record, Write};
use crate::stats::RangeCount;
use crate::{Error, Node, Result};

impl Node {
    /// Iterates over every key whose token lies in `ranges`, values and tombstones, in
    /// batches of at most `batch_size` records. Costs time in proportion to the keys in the
    /// ranges (plus at most two partial index partitions per range), not to all keys.
    ///
    /// Writes made while the export runs may or may not be included; a redistribution covers
    /// them with dual writes.
    ///
    /// The keys and values of a batch are slices of one buffer (one allocation per batch): a
    /// record kept after its batch keeps the whole batch's buffer alive.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Node, NodeOptions};
    /// use kv_ring::{TokenRange, token};
    /// let node = Node::open(dir.path(), NodeOptions::new())?;
    /// for i in 0..100 {
    ///     node.put(format!("key{i}").as_bytes(), b"v")?;
    /// }
    /// let half = TokenRange::new(0, u64::MAX / 2);
    /// let exported: Vec<_> = node.export(&[half], 10).collect::<Result<Vec<_>, _>>()?;
    /// assert!(exported.iter().all(|b| b.len() <= 10));
    /// let n: usize = exported.iter().map(Vec::len).sum();
    /// assert_eq!(n as u64, node.count_in_ranges(&[half]).live);
    /// assert!(exported.iter().flatten().all(|r| half.contains(token(&r.key))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn export(&self, ranges: &[TokenRange], batch_size: usize) -> Export<'_> {
        Export {
            inner: &self.inner,
            parts: self.inner.index.partitions_for(ranges),
            ranges: ranges.to_vec(),
            next_part: 0,
            pending: VecDeque::new(),
            batch_size: batch_size.max(1),
            failed: false,
        }
    }

    /// Applies exported records with last-writer-wins (as [`Node::apply`] each); returns how
    /// many changed something. Records are written in as few log batches as fit.
    ///
    /// # Errors
    ///
    /// As [`Node::apply_batch`].
    ///
    /// ```
    /// # let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    /// use kv_node::{Node, NodeOptions};
    /// use kv_ring::TokenRange;
    /// let from = Node::open(a.path(), NodeOptions::new())?;
    /// let to = Node::open(b.path(), NodeOptions::new())?;
    /// from.put(b"k", b"v")?;
    /// for batch in from.export(&[TokenRange::FULL], 1000) {
    ///     to.import(&batch?)?;
    /// }
    /// assert_eq!(to.get(b"k")?, from.get(b"k")?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn import(&self, batch: &[Record]) -> Result<usize> {
        let limit = (self.inner.max_payload() / 2).max(1);
        let mut changed = 0;
        let mut chunk: Vec<Write<'_>> = Vec::new();
        let mut bytes = 0;
        for r in batch {
            let w = r.as_write();
            let expires = record::normalize(w.value, w.expires);
            let len = kv_wal::layout::frame_len(record::entry_len(w.key, w.value, expires));
            if !chunk.is_empty() && bytes + len > limit {
                changed += self.inner.apply_batch(&chunk)?;
                chunk.clear();
                bytes = 0;
            }
            chunk.push(w);
            bytes += len;
        }
        if !chunk.is_empty() {
            changed += self.inner.apply_batch(&chunk)?;
        }
        Ok(changed)
    }

    /// Makes room in the index for about `keys` more keys whose tokens lie in `ranges`: what
    /// a redistribution calls on a node before importing into it, so that the index does not
    /// double (and rehash) several times as the import fills it. A hint: nothing breaks if
    /// more or fewer keys arrive; the memory is what the keys would take anyway. Bounded:
    /// it makes room for at most 2^23 keys (about 1 GiB of index), so an absurd estimate
    /// cannot exhaust memory; a larger import grows the index as it arrives.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Node, NodeOptions};
    /// use kv_ring::TokenRange;
    /// let node = Node::open(dir.path(), NodeOptions::new())?;
    /// let half = TokenRange::new(0, u64::MAX / 2);
    /// node.reserve(&[half], 10_000);
    /// node.put(b"k", b"v")?;
    /// assert_eq!(node.stats().live_keys, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reserve(&self, ranges: &[TokenRange], keys: u64) {
        self.inner
            .index
            .reserve_in(ranges, usize::try_from(keys).unwrap_or(usize::MAX));
    }

    /// Forgets every key and tombstone whose token lies in `ranges` (the node no longer
    /// replicates them). Durable: a drop record in the log keeps them forgotten after a
    /// restart. Writes that arrive after it are kept. Returns the number of keys and
    /// tombstones dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Wal`] if the drop record cannot be written.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Node, NodeOptions};
    /// use kv_ring::TokenRange;
    /// let node = Node::open(dir.path(), NodeOptions::new())?;
    /// node.put(b"k", b"v")?;
    /// assert_eq!(node.drop_ranges(&[TokenRange::FULL])?, 1);
    /// assert_eq!(node.get(b"k")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn drop_ranges(&self, ranges: &[TokenRange]) -> Result<usize> {
        if ranges.is_empty() {
            return Ok(0);
        }
        let inner = &self.inner;
        let payload = record::encode_drop(ranges);
        if payload.len() > inner.max_payload() {
            return Err(Error::BatchTooLarge {
                bytes: payload.len(),
                max: inner.max_payload(),
            });
        }
        // Exclusive: every write before the drop record has updated the index when we scan,
        // and every write after it has a later Lsn, which the scan keeps. Compaction, which
        // could move a covered record past the drop record meanwhile, sees the pending drop
        // (registered under the same exclusion) and drops such records instead of moving them.
        let pending = {
            let _gate = inner.gate.exclusive();
            let marker = inner.wal.append(&payload)?;
            let pending = Arc::new(PendingDrop {
                ranges: ranges.to_vec(),
                marker,
                removed: AtomicU64::new(0),
            });
            inner.pending_drops.lock().push(Arc::clone(&pending));
            pending
        };
        let lsn = pending.marker;
        let bytes = frame(payload.len());
        inner.segments.written(lsn.segment(), bytes);
        inner.segments.dead(lsn.segment(), bytes);
        let mut dropped = 0;
        let mut keys = Vec::new();
        for part in inner.index.partitions_for(ranges) {
            inner.index.drop_in_partition(part, ranges, lsn, |e| {
                inner.forget(&e.loc);
                keys.push(e.key.clone());
            });
            dropped += keys.len();
            for k in keys.drain(..) {
                inner.cache.remove(&k[..]);
            }
        }
        inner
            .pending_drops
            .lock()
            .retain(|p| !Arc::ptr_eq(p, &pending));
        dropped += pending.removed.load(Ordering::Relaxed) as usize;
        Ok(dropped)
    }

    /// Counts the keys and tombstones whose token lies in `ranges` (from the index, without
    /// reading values).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let node = kv_node::Node::open(dir.path(), kv_node::NodeOptions::new())?;
    /// node.put(b"a", b"1")?;
    /// node.delete(b"b")?;
    /// let c = node.count_in_ranges(&[kv_ring::TokenRange::FULL]);
    /// assert_eq!((c.live, c.tombstones), (1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn count_in_ranges(&self, ranges: &[TokenRange]) -> RangeCount {
        let mut c = RangeCount::default();
        for part in self.inner.index.partitions_for(ranges) {
            self.inner.index.scan_partition(part, ranges, |e| {
                if e.loc.tombstone {
                    c.tombstones += 1;
                } else {
                    c.live += 1;
                }
                c.live_bytes += frame(e.loc.len as usize);
            });
        }
        c
    }
}

/// The iterator of [`Node::export`]: batches of records in the requested token ranges.
pub struct Export<'a> {
    inner: &'a Inner,
    ranges: Vec<TokenRange>,
    parts: Vec<usize>,
    next_part: usize,
    pending: VecDeque<(u64, Key, Location)>,
    batch_size: usize,
    failed: bool,
}

impl std::fmt::Debug for Export<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("ranges", &self.ranges)
            .field("partitions_left", &(self.parts.len() - self.next_part))
            .finish_non_exhaustive()
    }
}

/// What reading one exported put gave: its value's place in the batch buffer (`None` for a
/// tombstone found where a put was expected), a corrupt record, or the log's error.
type ReadValue = kv_wal::Result<
    std::result::Result<(Option<std::ops::Range<usize>>, Option<u64>), crate::record::DecodeError>,
>;

impl Export<'_> {
    /// The next up to `batch_size` entries of the scan, scanning partitions as needed.
    fn take_entries(&mut self) -> Vec<(u64, Key, Location)> {
        while self.pending.len() < self.batch_size && self.next_part < self.parts.len() {
            let part = self.parts[self.next_part];
            self.next_part += 1;
            let pending = &mut self.pending;
            self.inner.index.scan_partition(part, &self.ranges, |e| {
                pending.push_back((e.token, e.key.clone(), e.loc));
            });
        }
        let n = self.pending.len().min(self.batch_size);
        self.pending.drain(..n).collect()
    }

    /// The records of `entries`, their keys and values slices of one buffer. The values are
    /// read with [`kv_wal::Wal::read_many_with`], which asks the memory for every record
    /// before parsing the first: the scan visits the log in no order, so each record is a
    /// cache (and TLB) miss, and one after another they were most of an export's time.
    fn records(&self, entries: Vec<(u64, Key, Location)>) -> Result<Vec<Record>> {
        let keys_len: usize = entries.iter().map(|(_, k, _)| k.len()).sum();
        let values_len: usize = entries.iter().map(|(_, _, l)| l.len as usize).sum();
        let mut buf = Vec::with_capacity(keys_len + values_len);
        for (_, key, _) in &entries {
            buf.extend_from_slice(key);
        }
        // Per entry: `None` for a tombstone, else what reading its record gave.
        let mut read: Vec<Option<ReadValue>> = (0..entries.len()).map(|_| None).collect();
        let puts: Vec<usize> = (0..entries.len())
            .filter(|&i| !entries[i].2.tombstone)
            .collect();
        let lsns: Vec<Lsn> = puts.iter().map(|&i| entries[i].2.lsn).collect();
        self.inner.wal.read_many_with(&lsns, |j, payload| {
            read[puts[j]] = Some(payload.map(|p| {
                record::value_in(p).map(|(v, expires)| {
                    let span = v.map(|v| {
                        buf.extend_from_slice(v);
                        buf.len() - v.len()..buf.len()
                    });
                    (span, expires)
                })
            }));
        });
        let buf = Bytes::from(buf);
        // An expired value is exported as the tombstone it stands for (`docs/design.md`,
        // *Expiring keys*): one clock reading for the batch.
        let now = self.inner.now_millis();
        let mut at = 0;
        let mut out = Vec::with_capacity(entries.len());
        for ((token, key, loc), read) in entries.into_iter().zip(read) {
            let key_bytes = buf.slice(at..at + key.len());
            at += key.len();
            let found = match read {
                None => Some((None, loc.version, None)),
                Some(Ok(Ok((value, expires)))) => {
                    Some((value.map(|s| buf.slice(s)), loc.version, expires))
                }
                Some(Ok(Err(e))) => return Err(e.at(loc.lsn)),
                // Moved by compaction since the scan: look it up again.
                Some(Err(kv_wal::Error::InvalidLsn { .. })) => self.inner.read(token, &key)?,
                Some(Err(e)) => return Err(e.into()),
            };
            // `None`: deleted and purged since the scan.
            if let Some((value, version, expires)) = found {
                let (value, expires) = if crate::is_expired(expires, now) {
                    (None, None)
                } else {
                    (value, expires)
                };
                out.push(Record {
                    key: key_bytes,
                    value,
                    version,
                    expires,
                });
            }
        }
        Ok(out)
    }
}

impl Iterator for Export<'_> {
    type Item = Result<Vec<Record>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        // Bounded: each turn consumes pending entries or partitions, and stops when both are
        // gone.
        loop {
            let entries = self.take_entries();
            if entries.is_empty() {
                return None;
            }
            match self.records(entries) {
                Ok(batch) if batch.is_empty() => {} // all purged since the scan
                Ok(batch) => return Some(Ok(batch)),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
