//! Writes that report what they replaced: [`Cluster::delete_existing`],
//! [`Cluster::delete_many`], [`Cluster::take`] and [`Cluster::swap`] (what Redis's `DEL`,
//! `GETDEL` and `SET ... GET` answer).
//!
//! The guarantee is written on [`Cluster::delete_existing`].

use bytes::Bytes;
use kv_node::{Previous, Swapped};

use crate::cluster::Cluster;
use crate::error::Result;
use crate::write::WriteOp;

/// How many versions a reporting write tries when every replica that acknowledged it held a
/// newer record.
pub const SWAP_ATTEMPTS: usize = 4;

/// What a write asks its replicas to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// Nothing: a plain write.
    Nothing,
    /// The replaced record's version and whether it was live.
    Previous,
    /// That and its value.
    PreviousValue,
}

/// What the replicas that acknowledged a write reported.
#[derive(Debug, Default)]
pub(crate) struct Replaced {
    /// Some replica applied the write.
    pub(crate) applied: bool,
    /// Some replica already held a newer record.
    pub(crate) kept: bool,
    /// The newest record a replica that applied the write replaced.
    pub(crate) newest: Option<Previous>,
}

impl Replaced {
    /// Takes one replica's answer; returns whether the replica applied the write.
    pub(crate) fn note(&mut self, swapped: Swapped) -> bool {
        match swapped {
            Swapped::Applied { previous } => {
                self.applied = true;
                if let Some(p) = previous
                    && self.newest.as_ref().is_none_or(|n| p.version > n.version)
                {
                    self.newest = Some(p);
                }
                true
            }
            // `Swapped` is non-exhaustive: anything else tells nothing about the past.
            _ => {
                self.kept = true;
                false
            }
        }
    }
}

impl Cluster {
    /// Deletes `key` (a tombstone on its replicas, at the write consistency) and returns
    /// whether it existed: whether the newest record the acknowledging replicas replaced was
    /// a value. What Redis's `DEL` counts.
    ///
    /// # What it guarantees
    /// Each replica reports, atomically with applying the write, the record the write
    /// replaced ([`Replica::apply_swap`](crate::Replica::apply_swap): a storage node decides it
    /// under the key's index lock), or that it already held a newer record (the write lost
    /// there). The coordinator takes, among the replicas that acknowledged the write *and
    /// applied it*, the replaced record with the highest version; the write "replaced a value"
    /// if that record is a value. So:
    ///
    /// - **Acknowledged history.** With `W + W > rf` (the default quorum writes), every write
    ///   acknowledged before this one started is on at least one of the replicas that
    ///   acknowledge this one, so the newest of their answers is at least as new as the
    ///   newest acknowledged write: a key whose latest acknowledged write is a value reads as
    ///   existing, one whose latest is a delete (or that was never written) as absent. A
    ///   **stale replica in the quorum** (one that missed a write, say a delete) answers with
    ///   an older record, which loses to the newer answer of a replica that has it. With
    ///   `W = 1` the quorums need not overlap, and a stale replica alone can answer wrongly
    ///   (as a read at `R = 1` can). A failed (unacknowledged) write that reached some
    ///   replicas may or may not be seen, as for reads.
    /// - **Concurrent writes of one key.** Reporting writes of one key from this coordinator
    ///   are serialized (a striped per-key lock held from minting the version to the last
    ///   replica's answer), so of two racing deletes of a live key exactly one reports that it
    ///   existed, and racing `swap`s each return a different old value, forming one chain.
    ///   Not covered: a plain [`put`](Cluster::put) or [`delete`](Cluster::delete) racing a
    ///   reporting write of the same key (the plain write takes no lock: if it carries the
    ///   older version and reaches no replica before the reporting write, it is overwritten
    ///   unseen and the reporting write reports what preceded it), and reporting writes from
    ///   several coordinators (the network phase), which need a consensus path (as
    ///   Cassandra's lightweight transactions) to be exact. When replicas fail, two writes
    ///   acknowledged by different quorums can both report the same record.
    /// - **A write that lost everywhere.** If every replica that acknowledged the write already
    ///   held a newer record (a concurrent write with a newer version got there first), the
    ///   write changed nothing and what preceded it is unknown: it is written again with a new
    ///   version (ordered after the newer write), up to [`SWAP_ATTEMPTS`] times. A write
    ///   acknowledged only through hints ([`Cluster::put_sloppy`]) learns nothing and reports
    ///   no previous record.
    ///
    /// # Errors
    /// As [`delete`](Cluster::delete).
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// cluster.put(b"k", b"v")?;
    /// assert!(cluster.delete_existing(b"k")?);
    /// assert!(!cluster.delete_existing(b"k")?); // already a tombstone
    /// assert!(!cluster.delete_existing(b"never")?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete_existing(&self, key: &[u8]) -> Result<bool> {
        Ok(self.write_replacing(key, None, Ask::Previous)?.is_some())
    }

    /// [`delete_existing`](Cluster::delete_existing) for several keys, one after the other;
    /// answers in order. A key named twice is deleted twice: the second answer is `false`.
    ///
    /// # Errors
    /// As [`delete`](Cluster::delete), at the first key that fails (the keys before it are
    /// deleted).
    pub fn delete_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<bool>> {
        keys.iter()
            .map(|k| self.delete_existing(k.as_ref()))
            .collect()
    }

    /// Deletes `key` and returns the value it held (`None` if it was absent or deleted),
    /// decided as in [`delete_existing`](Cluster::delete_existing): Redis's `GETDEL`.
    ///
    /// # Errors
    /// As [`delete`](Cluster::delete); also a replica's error reading the replaced value back
    /// (the delete may then be applied).
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// cluster.put(b"k", b"v")?;
    /// assert_eq!(cluster.take(b"k")?.as_deref(), Some(&b"v"[..]));
    /// assert_eq!(cluster.take(b"k")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take(&self, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self
            .write_replacing(key, None, Ask::PreviousValue)?
            .and_then(|p| p.value))
    }

    /// Stores `value` under `key` and returns the value it replaced (`None` if the key was
    /// absent or deleted), decided as in [`delete_existing`](Cluster::delete_existing):
    /// Redis's `SET key value GET`.
    ///
    /// # Errors
    /// As [`take`](Cluster::take).
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// assert_eq!(cluster.swap(b"k", b"one")?, None);
    /// assert_eq!(cluster.swap(b"k", b"two")?.as_deref(), Some(&b"one"[..]));
    /// assert_eq!(cluster.get(b"k")?.as_deref(), Some(&b"two"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn swap(&self, key: &[u8], value: &[u8]) -> Result<Option<Bytes>> {
        Ok(self
            .write_replacing(key, Some(value), Ask::PreviousValue)?
            .and_then(|p| p.value))
    }

    /// Writes with a new version until a replica that acknowledged applies it (at most
    /// [`SWAP_ATTEMPTS`] versions); the newest live record the appliers replaced.
    fn write_replacing(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        ask: Ask,
    ) -> Result<Option<Previous>> {
        self.write_replacing_expiring(key, value, None, ask)
    }

    /// [`write_replacing`](Cluster::write_replacing) of a value expiring at `expires`.
    pub(crate) fn write_replacing_expiring(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        expires: Option<u64>,
        ask: Ask,
    ) -> Result<Option<Previous>> {
        // No other reporting write of this key from this coordinator is in flight until the
        // guard drops (see `key_locks`).
        let _serialized = self.key_locks.lock(kv_ring::token(key));
        for _ in 0..SWAP_ATTEMPTS {
            let routing = self.routing();
            let op = WriteOp {
                key,
                value,
                expires,
                version: self.next_version()?,
                consistency: self.opts.write,
                mode: self.default_mode(),
                ask,
            };
            let replaced = self.write_reporting(routing, op)?;
            if replaced.applied || !replaced.kept {
                return Ok(replaced.newest.filter(|p| p.live));
            }
        }
        Ok(None)
    }
}
