//! The write path: submit a write to every replica, then count answers until `W`.
//!
//! [`Cluster::write_reporting`] submits the write to every node it goes to (the ring's
//! replicas, and the pending ring's during a change) with a `start_*` method of
//! [`Replica`] *before* it waits for any, then takes answers from one [`Collector`] until the
//! level is met, the deadline ([`ClusterOptions::replica_timeout`]) passes, or too many
//! replicas failed for it ever to be met. A replica in this process answers inside `start_*`,
//! so in-process every replica is written before the level is checked, with no channel and
//! no clock read.
//!
//! Each replica's answer becomes an [`Outcome`]. A replica that is down, or fails with a
//! transport error ([`Error::Remote`], [`Error::Dropped`], [`Error::Timeout`]), gets a hint
//! (hinted handoff delivers it once the node answers again); under a sloppy quorum the hint,
//! kept by a live stand-in, counts towards `W`. Answers still outstanding once `W` is met are
//! followed up off the caller's path (`follow_up.rs`, as Cassandra's write handler): on the
//! caller's tokio runtime a task waits for them until the write's deadline, and a replica that
//! then fails with a transport error, or is still silent at the deadline, gets a hint as
//! above. Nothing is spawned when every target answered before the write returned. Without
//! a runtime (the blocking API on a plain thread) they are abandoned: a replica that misses
//! the write is left to read repair and anti-entropy. A write out of reach or refused as
//! stale abandons them too (it is not acknowledged, or it is retried).
//!
//! Lock order: a plain write takes no coordinator lock across replica calls, a reporting one
//! holds its key's stripe (`key_locks.rs`); a hint store is opened under `hints.open` (see
//! `docs/design.md`, *Concurrency and lock order*).
//!
//! [`ClusterOptions::replica_timeout`]: crate::ClusterOptions::replica_timeout

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_node::{Swapped, Version, Write};
use kv_ring::{NodeId, Ring, token};
use smallvec::SmallVec;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::follow_up::{FollowUp, Outstanding, OwnedWrite};
use crate::options::Consistency;
use crate::pending::{Collector, Started, Ticket};
use crate::replica::Replica;
use crate::routing::Routing;
use crate::swap::{Ask, Replaced};

/// Whether hinted writes count towards a write's consistency level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Only replicas count (the default).
    Strict,
    /// A hint on a distinct live stand-in counts for the replica it is kept for.
    Sloppy,
}

/// One replica's part in a write, once decided.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The replica applied the write.
    Applied,
    /// The replica already held this write or a newer one (last-writer-wins): it counts.
    Unchanged,
    /// The replica failed, and a stand-in keeps the write as a hint that counts for it
    /// (sloppy quorum). The replica's error is kept for the report.
    Hinted(Error),
    /// The replica failed (a hint may be kept for it; it does not count).
    Failed(Error),
    /// The replica did not answer by the deadline (a hint is kept for it; it does not count).
    TimedOut,
    /// The replica refused the write's epoch as stale ([`Error::StaleEpoch`]) on a cluster
    /// whose topology comes from outside: the round ends at once, and the write is retried
    /// on the newer routing (`epoch_watch.rs`). No hint: the retry reaches it again.
    Stale(Error),
}

impl Outcome {
    /// Whether it counts towards the write's level.
    fn counts(&self) -> bool {
        matches!(
            self,
            Outcome::Applied | Outcome::Unchanged | Outcome::Hinted(_)
        )
    }
}

/// Whether `e` says the replica could not be reached (rather than that it refused the
/// write): such a write is kept as a hint, as for a replica known to be down.
pub(crate) fn is_transport(e: &Error) -> bool {
    matches!(
        e,
        Error::Remote { .. } | Error::Dropped | Error::Timeout { .. }
    )
}

/// A write as a client asked for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteOp<'a> {
    pub(crate) key: &'a [u8],
    /// The value, or `None` for a tombstone.
    pub(crate) value: Option<&'a [u8]>,
    /// When the value expires (ms since the Unix epoch; `None`: never).
    pub(crate) expires: Option<u64>,
    pub(crate) version: Version,
    pub(crate) consistency: Consistency,
    pub(crate) mode: Mode,
    /// What the replicas report of the record the write replaces.
    pub(crate) ask: Ask,
}

/// A write in flight: the nodes it goes to and what each has answered.
struct Fanout<'a> {
    cluster: &'a Cluster,
    routing: &'a Routing,
    token: u64,
    write: Write<'a>,
    needed: usize,
    mode: Mode,
    /// Every node the write goes to, each once: the ring's replicas in preference order, then
    /// the pending ring's others.
    targets: SmallVec<[(&'a NodeId, &'a Arc<dyn Replica>); 8]>,
    /// Each target's outcome, `None` while it has not answered.
    outcomes: SmallVec<[Option<Outcome>; 8]>,
    /// `(replica, stand-in)` under a sloppy quorum: chosen up front for the replicas known to
    /// be down, and on demand for one that fails with a transport error.
    stand_ins: SmallVec<[(NodeId, NodeId); 4]>,
}

impl<'a> Fanout<'a> {
    /// Decides target `i`'s outcome from its answer; `on_ok` classifies a success.
    fn settle<T>(&mut self, i: usize, answer: Result<T>, on_ok: &mut impl FnMut(T) -> Outcome) {
        let outcome = match answer {
            Ok(v) => on_ok(v),
            Err(e) if self.cluster.ends_round(&e) => Outcome::Stale(e),
            Err(e) => {
                let (id, node) = self.targets[i];
                if node.is_down() || is_transport(&e) {
                    self.hint(id, e)
                } else {
                    Outcome::Failed(e)
                }
            }
        };
        self.outcomes[i] = Some(outcome);
    }

    /// Keeps the write as a hint for `id`, which failed with `e` (hinted handoff): on its
    /// stand-in under a sloppy quorum (then it counts), else on the node
    /// [`hint_holder`](Cluster::store_hint) picks.
    fn hint(&mut self, id: &NodeId, e: Error) -> Outcome {
        if self.mode == Mode::Sloppy {
            let holder = match self.stand_ins.iter().find(|(t, _)| t == id) {
                Some((_, holder)) => Some(holder.clone()),
                None => self.spare_stand_in(id),
            };
            if let Some(holder) = holder {
                return match self.cluster.store_hint_on(&holder, id, self.write) {
                    true => Outcome::Hinted(e),
                    false => Outcome::Failed(e),
                };
            }
        }
        self.cluster
            .store_hint(self.routing, id, self.token, self.write);
        match e {
            Error::Timeout { .. } => Outcome::TimedOut,
            e => Outcome::Failed(e),
        }
    }

    /// A live stand-in for `id` not yet standing in for another replica, walking the ring
    /// past every target (a replica that was up when the write started, and failed).
    fn spare_stand_in(&mut self, id: &NodeId) -> Option<NodeId> {
        let walk = self
            .routing
            .ring
            .preference_list(self.token, self.routing.ring.len())
            .ok()?;
        let holder = walk
            .iter()
            .filter(|n| !self.targets.iter().any(|(t, _)| t == n))
            .filter(|n| !self.stand_ins.iter().any(|(_, h)| h == *n))
            .find(|n| self.routing.node(n).is_some_and(|h| !h.is_down()))?
            .clone();
        self.stand_ins.push((id.clone(), holder.clone()));
        Some(holder)
    }

    /// How many of `ring`'s replicas of the key count (with `outstanding_count`, those still
    /// outstanding count too: the best the write can still do).
    fn count_in(&self, ring: &Ring, rf: usize, outstanding_count: bool) -> usize {
        ring.preference_list(self.token, rf).map_or(0, |list| {
            list.iter()
                .filter(|id| {
                    self.targets
                        .iter()
                        .position(|(t, _)| t == id)
                        .is_some_and(|i| match &self.outcomes[i] {
                            Some(o) => o.counts(),
                            None => outstanding_count,
                        })
                })
                .count()
        })
    }

    /// How many replicas count, the lower of the two rings' counts during a change (a write
    /// must reach `W` of both): with `outstanding_count`, as if every outstanding one
    /// acknowledged.
    fn count(&self, outstanding_count: bool) -> usize {
        let rf = self.cluster.rf;
        match &self.routing.pending {
            // Only the ring's replicas are targets, each once.
            None => self
                .outcomes
                .iter()
                .filter(|o| o.as_ref().map_or(outstanding_count, Outcome::counts))
                .count(),
            Some(pending) => self
                .count_in(&self.routing.ring, rf, outstanding_count)
                .min(self.count_in(pending, rf, outstanding_count)),
        }
    }

    /// Submits the write to every target with `start`, then collects answers until the
    /// level is met, cannot be met any more, or `timeout` passes. Targets that have not
    /// answered then are timed out (with a hint) unless the level was met: then they are
    /// returned, with the collector their answers come through and the write's deadline,
    /// for [`follow_up`](Fanout::follow_up) (out of reach or stale: abandoned).
    async fn run<T>(
        &mut self,
        timeout: Duration,
        start: impl for<'c> Fn(&dyn Replica, Ticket<'c, T>) -> Started<T>,
        mut on_ok: impl FnMut(T) -> Outcome,
    ) -> Option<(Collector<T>, Instant)> {
        let collector: Collector<T> = Collector::new();
        for i in 0..self.targets.len() {
            let node = self.targets[i].1;
            if let Started::Done(answer) = start(node.as_ref(), collector.ticket(i)) {
                self.settle(i, answer, &mut on_ok);
            }
        }
        if collector.outstanding() == 0 {
            return None;
        }
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        while !self.stale() && self.count(false) < self.needed && self.count(true) >= self.needed {
            match collector.wait(deadline).await {
                Some((i, answer)) => self.settle(i, answer, &mut on_ok),
                None => {
                    timed_out = collector.outstanding() > 0;
                    break;
                }
            }
        }
        if !timed_out {
            if collector.outstanding() > 0 && !self.stale() && self.count(false) >= self.needed {
                // Met: what is still outstanding is followed up.
                return Some((collector, deadline));
            }
            // Out of reach (the write fails), or routed by a stale epoch (it is retried):
            // what is still outstanding is abandoned.
            return None;
        }
        for i in 0..self.targets.len() {
            if self.outcomes[i].is_none() {
                let id = self.targets[i].0;
                let e = Error::Timeout {
                    node: id.clone(),
                    after: timeout,
                };
                let outcome = self.hint(id, e);
                self.outcomes[i] = Some(outcome);
            }
        }
        None
    }

    /// Hands the targets still outstanding after [`run`](Fanout::run) met the level to a
    /// follow-up on the caller's runtime, which keeps a hint for each that then fails or
    /// stays silent past `deadline` (`follow_up.rs`).
    fn follow_up<T: Send + 'static>(&self, left: Option<(Collector<T>, Instant)>) {
        let Some((collector, deadline)) = left else {
            return;
        };
        let outstanding = (0..self.targets.len())
            .filter(|&i| self.outcomes[i].is_none())
            .map(|i| Outstanding {
                index: i,
                target: self.targets[i].0.clone(),
                writes: smallvec::smallvec![0],
            })
            .collect();
        let writes = vec![OwnedWrite::of(&self.write)];
        FollowUp::spawn(self.cluster, collector, outstanding, writes, deadline);
    }

    /// Whether a replica refused the write's epoch as stale (this coordinator's routing is
    /// behind the metadata's).
    fn stale(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o, Some(Outcome::Stale(_))))
    }

    /// `Ok` if the level is met, else [`Error::Unavailable`] with every failed replica's
    /// error, in the targets' order. A stale refusal fails the write whatever the count
    /// (with the refusal of the newest epoch): it is redone on the newer routing, which may
    /// send it elsewhere.
    fn finish(mut self, timeout: Duration) -> Result<()> {
        let newest_stale = self
            .outcomes
            .iter_mut()
            .filter_map(|o| match o.take() {
                Some(Outcome::Stale(e)) => Some(e),
                other => {
                    *o = other;
                    None
                }
            })
            .max_by_key(crate::epoch_watch::stale);
        if let Some(e) = newest_stale {
            return Err(e);
        }
        let got = self.count(false);
        if got >= self.needed {
            return Ok(());
        }
        let errors = self
            .targets
            .iter()
            .zip(self.outcomes)
            .filter_map(|((id, _), outcome)| match outcome? {
                Outcome::Applied | Outcome::Unchanged => None,
                Outcome::Hinted(e) | Outcome::Failed(e) | Outcome::Stale(e) => Some(e),
                Outcome::TimedOut => Some(Error::Timeout {
                    node: (*id).clone(),
                    after: timeout,
                }),
            })
            .collect();
        Err(Error::unavailable(self.needed, got, errors))
    }
}

impl Cluster {
    /// Writes `op` to the key's replicas (and the pending ring's during a change), asking
    /// them for what the write replaced as `op.ask` says ([`Replica::apply_swap`]); gathers
    /// the answers of those that acknowledged (a hint reports nothing).
    ///
    /// # Errors
    /// [`Error::Unavailable`] before anything is written when too few replicas are up, or
    /// once too few acknowledged; [`Error::UnknownNode`] for a target without a handle.
    pub(crate) fn write_reporting(
        &self,
        routing: Arc<Routing>,
        op: WriteOp<'_>,
    ) -> Result<Replaced> {
        crate::block::block_on(self.write_reporting_async(routing, op))
    }

    /// [`write_reporting`](Cluster::write_reporting) as a future: it waits on remote
    /// replicas without blocking the thread.
    ///
    /// On an external topology, a write a replica refuses as stale is retried once, with
    /// the same version, once the newer topology is installed (`epoch_watch.rs`).
    ///
    /// # Errors
    /// As [`write_reporting`](Cluster::write_reporting); [`Error::StaleCoordinator`].
    pub(crate) async fn write_reporting_async(
        &self,
        routing: Arc<Routing>,
        op: WriteOp<'_>,
    ) -> Result<Replaced> {
        // One report over both attempts: a replica that applied the write in the first
        // answers the retry with "kept" (it holds this very version), and what it replaced
        // is known from its first answer only.
        let mut replaced = Replaced::default();
        let first = self.write_once(&routing, op, &mut replaced).await;
        match first {
            Err(e) if self.ends_round(&e) => {
                // Not held while it waits: see `refresh`.
                drop(routing);
                let (next, started) = self.refresh(e).await?;
                let again = self.write_once(&next, op, &mut replaced).await;
                self.retried(again, started)?;
            }
            done => done?,
        }
        Ok(replaced)
    }

    /// One attempt of [`write_reporting_async`](Cluster::write_reporting_async), routed by
    /// `routing`, adding what the replicas report to `replaced`.
    pub(crate) async fn write_once(
        &self,
        routing: &Routing,
        op: WriteOp<'_>,
        replaced: &mut Replaced,
    ) -> Result<()> {
        #[cfg(feature = "testing")]
        let stripped;
        #[cfg(feature = "testing")]
        let routing = if self.opts.sabotage == Some(crate::testing::Sabotage::SkipPendingDualWrite)
            && routing.pending.is_some()
            && !routing.mid
        {
            // The old ring alone, as if no change were pending (see `Sabotage`).
            stripped = Routing {
                pending: None,
                placement: None,
                ..routing.clone()
            };
            &stripped
        } else {
            routing
        };
        let needed = op.consistency.required(self.rf);
        let token = token(op.key);
        let write = Write {
            key: op.key,
            value: op.value,
            version: op.version,
            expires: op.value.and(op.expires),
        };
        let epoch = routing.epoch();
        let old = routing.replicas(token, self.rf)?;
        let pending = match &routing.pending {
            Some(p) => Some(p.preference_list(token, self.rf)?),
            None => None,
        };
        let mut ids: SmallVec<[&NodeId; 8]> = old.iter().map(|(id, _)| *id).collect();
        for id in pending.iter().flat_map(|p| p.iter()) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        // Sloppy: each down replica (of either ring) gets its own live stand-in beyond them.
        let stand_ins = match op.mode {
            Mode::Strict => SmallVec::new(),
            Mode::Sloppy => {
                let down: SmallVec<[&NodeId; 4]> = ids
                    .iter()
                    .copied()
                    .filter(|id| routing.node(id).is_none_or(|n| n.is_down()))
                    .collect();
                self.stand_ins(routing, token, &ids, &down)
            }
        };
        {
            let covered: SmallVec<[&NodeId; 4]> = stand_ins.iter().map(|(t, _)| t).collect();
            if routing.pending.is_some() {
                self.check_up(routing, token, needed, &covered)?;
            } else {
                crate::ops::check_up_in(&old, needed, &covered)?;
            }
        }
        let mut targets = SmallVec::new();
        for id in ids {
            let node = routing.node(id).ok_or_else(|| Error::UnknownNode {
                node: id.to_string(),
            })?;
            targets.push((id, node));
        }
        let mut fanout = Fanout {
            cluster: self,
            routing,
            token,
            write,
            needed,
            mode: op.mode,
            outcomes: targets.iter().map(|_| None).collect(),
            targets,
            stand_ins,
        };
        let timeout = self.opts.replica_timeout;
        match op.ask {
            Ask::Nothing => {
                let left = fanout
                    .run(
                        timeout,
                        |node, ticket| node.start_apply(epoch, write, ticket),
                        |applied| match applied {
                            true => Outcome::Applied,
                            false => Outcome::Unchanged,
                        },
                    )
                    .await;
                fanout.follow_up(left);
            }
            Ask::Previous | Ask::PreviousValue => {
                let read_value = op.ask == Ask::PreviousValue;
                let left = fanout
                    .run(
                        timeout,
                        |node, ticket| node.start_apply_swap(epoch, write, read_value, ticket),
                        |swapped| {
                            match &swapped {
                                Swapped::Applied { previous: Some(p) } => self.observe(p.version),
                                Swapped::Kept { current } => self.observe(*current),
                                _ => {}
                            }
                            match replaced.note(swapped) {
                                true => Outcome::Applied,
                                false => Outcome::Unchanged,
                            }
                        },
                    )
                    .await;
                fanout.follow_up(left);
            }
        }
        fanout.finish(timeout)
    }
}
