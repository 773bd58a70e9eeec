//! The read path: a full read and digest reads submitted together, the newest record
//! returned, stale replicas repaired.
//!
//! [`Cluster::read`] asks the first live replica of the key for its record and the next
//! `R - 1` for the version only (a digest read, as Cassandra's: a storage node answers from
//! its index), submitting all of them before it waits for any. A replica that fails or does
//! not answer within [`ClusterOptions::replica_timeout`] is replaced by the next replica of
//! the preference list, in a new round with a new deadline. A replica whose version is newer
//! than the newest record fetched is then read in full (another round), as the read must
//! return that record.
//!
//! Read repair: when the replicas that answered disagree, the newest record is written to the
//! stale ones (same version: idempotent) with [`Replica::start_apply`] before the read
//! returns. A replica in this process applies it at once, so the next read of any `R` of them
//! agrees; one in another process is not waited for (a repair that fails is left to
//! anti-entropy).
//!
//! Lock order: a read takes no coordinator lock (see `docs/design.md`, *Concurrency and lock
//! order*).
//!
//! [`ClusterOptions::replica_timeout`]: crate::ClusterOptions::replica_timeout

use std::sync::Arc;
use std::time::Instant;

use kv_node::{Cell, Version};
use kv_ring::token;
use smallvec::SmallVec;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::options::Consistency;
use crate::pending::{Collector, Started};
use crate::replica::Replica;
use crate::routing::Routing;

/// A read in flight: what each replica asked has answered.
struct ReadRound<'a> {
    /// The live replicas of the key, in preference order.
    live: SmallVec<[&'a Arc<dyn Replica>; 4]>,
    /// The next of `live` not asked yet.
    next: usize,
    /// Replicas that answered (index into `live`) and the version each holds
    /// (`Version::ZERO`: none).
    answered: SmallVec<[(usize, Version); 4]>,
    /// Whether some replica returned its full record (or that it holds none).
    have_full: bool,
    /// The newest record fetched.
    newest: Option<Cell>,
    errors: Vec<Error>,
    /// Whether a stale refusal ends the read (an external topology: the read is redone on
    /// the newer routing instead of asking the next replica).
    stale_ends: bool,
    /// The stale refusal that ended the read, if any.
    stale: Option<Error>,
}

impl ReadRound<'_> {
    fn newest_version(&self) -> Version {
        self.newest.as_ref().map_or(Version::ZERO, |c| c.version)
    }

    /// Takes a full read's answer from replica `i`.
    fn full(&mut self, i: usize, answer: Result<Option<Cell>>) {
        match answer {
            Ok(found) => {
                let version = found.as_ref().map_or(Version::ZERO, |c| c.version);
                // A replica read again in full (it reported a newer version) answers once.
                self.answered.retain(|(j, _)| *j != i);
                self.answered.push((i, version));
                self.have_full = true;
                if let Some(found) = found
                    && version > self.newest_version()
                {
                    self.newest = Some(found);
                }
            }
            Err(e) => {
                self.answered.retain(|(j, _)| *j != i);
                self.failed(e);
            }
        }
    }

    /// Takes a replica's error: a stale refusal ends the read when `stale_ends`.
    fn failed(&mut self, e: Error) {
        if self.stale_ends && matches!(e, Error::StaleEpoch { .. }) {
            self.stale.get_or_insert(e);
        } else {
            self.errors.push(e);
        }
    }

    /// Takes a digest read's answer from replica `i`.
    fn version(&mut self, i: usize, answer: Result<Option<Version>>) {
        match answer {
            Ok(v) => self.answered.push((i, v.unwrap_or(Version::ZERO))),
            Err(e) => self.failed(e),
        }
    }

    /// The replica that answered with a version newer than the newest record fetched, if
    /// any (the newest such): its record is the one to return.
    fn newer(&self) -> Option<usize> {
        let have = self.newest_version();
        self.answered
            .iter()
            .filter(|(_, v)| *v > have)
            .max_by_key(|(_, v)| *v)
            .map(|(i, _)| *i)
    }
}

/// Puts the replicas in this process before those across the network, each group in
/// preference order ([`Replica::is_remote`]): the full read is then answered locally and only
/// digest reads cost a round trip. In process (every replica local) nothing moves.
pub(crate) fn local_first(live: &mut [&Arc<dyn Replica>]) {
    if live.first().is_some_and(|n| n.is_remote()) {
        live.sort_by_key(|n| n.is_remote());
    }
}

impl Cluster {
    /// The newest record of `key` among `R` replicas of the ring (tombstones included), with
    /// read repair; see the module docs. A down replica is skipped for the next one. The
    /// record is returned as the replicas hold it, its expiry **not judged**: callers judge
    /// it against [`Cluster::now_millis`] ([`Cell::judged`]).
    ///
    /// # Errors
    /// [`Error::Unavailable`] at once when fewer than `R` replicas are up, or once fewer
    /// than `R` answered (with [`Error::Timeout`] for those that did not in time);
    /// [`Error::UnknownNode`] for a replica without a handle.
    pub(crate) fn read(
        &self,
        routing: Arc<Routing>,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<Option<Cell>> {
        crate::block::block_on(self.read_async(routing, key, consistency))
    }

    /// [`read`](Cluster::read) as a future: it waits on remote replicas without blocking
    /// the thread.
    ///
    /// On an external topology, a read a replica refuses as stale is retried once, once the
    /// newer topology is installed (`epoch_watch.rs`).
    ///
    /// # Errors
    /// As [`read`](Cluster::read); [`Error::StaleCoordinator`].
    pub(crate) async fn read_async(
        &self,
        routing: Arc<Routing>,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<Option<Cell>> {
        let first = self.read_once(&routing, key, consistency).await;
        match first {
            Err(e) if self.ends_round(&e) => {
                // Not held while it waits: see `refresh`.
                drop(routing);
                let (next, started) = self.refresh(e).await?;
                let again = self.read_once(&next, key, consistency).await;
                self.retried(again, started)
            }
            done => done,
        }
    }

    /// One attempt of [`read_async`](Cluster::read_async), routed by `routing`: a stale
    /// refusal on an external topology ends it with that [`Error::StaleEpoch`].
    pub(crate) async fn read_once(
        &self,
        routing: &Routing,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<Option<Cell>> {
        let needed = consistency.required(self.rf);
        let epoch = routing.epoch();
        let token = token(key);
        let replicas = routing.replicas(token, self.rf)?;
        if routing.pending.is_some() {
            self.check_up(routing, token, needed, &[])?;
        } else {
            crate::ops::check_up_in(&replicas, needed, &[])?;
        }
        let mut live = SmallVec::new();
        for &(id, node) in replicas.iter() {
            let node = node.ok_or_else(|| Error::UnknownNode {
                node: id.to_string(),
            })?;
            if !node.is_down() {
                live.push(node);
            }
        }
        local_first(&mut live);
        let mut r = ReadRound {
            live,
            next: 0,
            answered: SmallVec::new(),
            have_full: false,
            newest: None,
            errors: Vec::new(),
            stale_ends: self.is_external(),
            stale: None,
        };
        let timeout = self.opts.replica_timeout;
        loop {
            let full: Collector<Option<Cell>> = Collector::new();
            let digests: Collector<Option<Version>> = Collector::new();
            let mut asked = 0;
            // Deferred this round, not answered yet.
            let mut waiting: SmallVec<[usize; 4]> = SmallVec::new();
            // A replica that holds a newer version than the record fetched: read it in full.
            if let Some(i) = r.newer() {
                asked += 1;
                match r.live[i].start_read(epoch, key, full.ticket(i)) {
                    Started::Done(a) => r.full(i, a),
                    Started::Deferred => waiting.push(i),
                }
            }
            // Enough replicas asked for `R` answers: the first for its record (until one
            // gave it), the others for their versions.
            // (A replica read again in full has answered already: it is counted once.)
            let counted = |r: &ReadRound<'_>, waiting: &[usize]| {
                let again = waiting
                    .iter()
                    .filter(|i| r.answered.iter().any(|(j, _)| j == *i))
                    .count();
                r.answered.len() + waiting.len() - again
            };
            while r.stale.is_none() && counted(&r, &waiting) < needed && r.next < r.live.len() {
                let i = r.next;
                r.next += 1;
                asked += 1;
                let node = r.live[i];
                if !r.have_full && full.outstanding() == 0 {
                    match node.start_read(epoch, key, full.ticket(i)) {
                        Started::Done(a) => r.full(i, a),
                        Started::Deferred => waiting.push(i),
                    }
                } else {
                    match node.start_read_version(epoch, key, digests.ticket(i)) {
                        Started::Done(a) => r.version(i, a),
                        Started::Deferred => waiting.push(i),
                    }
                }
            }
            if let Some(e) = r.stale.take() {
                return Err(e);
            }
            if asked == 0 {
                break;
            }
            if !waiting.is_empty() {
                // Every request of the round was submitted before this wait: waiting on one
                // collector after the other takes as long as the slower answer.
                let deadline = Instant::now() + timeout;
                while r.stale.is_none()
                    && let Some((i, a)) = full.wait(deadline).await
                {
                    waiting.retain(|j| *j != i);
                    r.full(i, a);
                }
                while r.stale.is_none()
                    && let Some((i, a)) = digests.wait(deadline).await
                {
                    waiting.retain(|j| *j != i);
                    r.version(i, a);
                }
                if let Some(e) = r.stale.take() {
                    // The round ends here: what is outstanding is abandoned.
                    return Err(e);
                }
                // Those still missing time out (their answers are discarded if they come); a
                // replica read again in full no longer counts.
                for i in waiting {
                    r.answered.retain(|(j, _)| *j != i);
                    r.errors.push(Error::Timeout {
                        node: r.live[i].id().clone(),
                        after: timeout,
                    });
                }
            }
        }
        if r.answered.len() < needed {
            return Err(Error::unavailable(needed, r.answered.len(), r.errors));
        }
        if let Some(cell) = &r.newest {
            self.observe(cell.version);
            self.repair_stale(epoch, key, cell, &r);
        }
        Ok(r.newest)
    }

    /// Writes the newest record to the replicas of `r` that answered with an older version,
    /// without waiting for a deferred one. The record goes as it was read, expiry included
    /// (same version, same expiry: the write that was missed, not a new one).
    fn repair_stale(&self, epoch: u64, key: &[u8], cell: &Cell, r: &ReadRound<'_>) {
        let write = cell.as_write(key);
        for &(i, seen) in &r.answered {
            if seen < cell.version {
                // Best effort: a replica that fails here is left to anti-entropy. A deferred
                // answer is dropped with the collector, unread.
                let abandon: Collector<bool> = Collector::new();
                let _ = r.live[i].start_apply(epoch, write, abandon.ticket(i));
            }
        }
    }
}
