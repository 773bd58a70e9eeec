//! Membership changes: plan, pending (dual writes), stream, commit, cleanup.
//!
//! Each step is recorded in `cluster.json` before the next begins, so a crash anywhere leaves
//! a state the next [`Cluster::open`] rolls forward from:
//!
//! | crash during            | `cluster.json` says                 | on reopen                     |
//! |-------------------------|-------------------------------------|-------------------------------|
//! | validation, planning    | stable, old ring                    | nothing to do                 |
//! | streaming               | old ring + change `streaming`       | stream the pairs not recorded as done (a pair cut short is streamed whole), commit, clean up |
//! | after commit            | new ring + change `cleanup`         | drop the lost ranges again, delete a leaver's directory again |
//! | after cleanup           | stable, new ring                    | nothing to do                 |
//!
//! No step removes a copy before the new ring is committed, so no key ever has fewer replicas
//! than it had; streaming again is harmless because every import is last-writer-wins.
//!
//! # While a change is pending, its new replicas get every write
//! From the moment a change is recorded as streaming until it commits, every write is routed
//! to the old *and* the new replicas (a pair recorded as streamed is never streamed again, so
//! a write that skipped a new replica would be lost to it). That holds across a reopen and
//! when the joining node cannot be opened (its directory locked, its disk gone): as Dynamo
//! and Cassandra treat a pending endpoint that is unreachable, the joiner is then routed as a
//! *down* node rather than dropped from the routing.
//!
//! - Writes for it become hints on live nodes; a hint counts towards `W` only under a sloppy
//!   quorum, so a strict write still needs `W` real replicas of the old ring and `W` of the
//!   new ring besides the joiner, and fails with [`Error::Unavailable`] otherwise.
//! - Hints held for a node of either ring survive every handoff until that node is routed
//!   and up: they are handed off then, never deleted as a departed node's.
//! - The operator is told: [`Cluster::change_error`] (and `ClusterStats::change_error`) says
//!   why the change is stuck, [`Cluster::health`] shows the joiner down, and
//!   [`Cluster::resume_change`] fails with the open error until the node opens.
//! - Once it opens ([`Cluster::resume_change`] tries again first), its hints are handed off
//!   and it is streamed **everything again**: the pairs recorded as streamed into it are
//!   forgotten (durably, before any write is routed around it) when it fails to open, since
//!   what a node that could not be opened still holds is not trusted.
//!
//! A joiner cut off by [`Cluster::fail_node`] keeps its recorded pairs: its data is intact,
//! and the hints carry what it missed.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use kv_ring::{NodeId, Ring, TokenRange, TransferPlan, transfer_plan};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::health::{Down, DownReplica};
use crate::meta::{ChangeMeta, Phase, build_ring, members_of};
use crate::progress::{ChangeKind, ChangeSummary, PairSummary, Progress};
use crate::rate::RateLimiter;
use crate::replica::Replica;
use crate::routing::{NodeMap, Routing};
use crate::stream;
use crate::stream_plan::{Source, choose_source};

/// What a change streams: the copies of its plan, out of the old ring, between the nodes
/// (a handle for every member of either ring).
#[derive(Clone, Copy)]
struct Streaming<'a> {
    old: &'a Ring,
    plan: &'a TransferPlan,
    nodes: &'a NodeMap,
}

impl Cluster {
    /// Adds node `id`: the ring gains it, and it receives a copy of every range it now
    /// replicates, while client operations go on. Returns what moved.
    ///
    /// # Errors
    /// [`Error::ChangeInProgress`] if another change is under way or pending;
    /// [`Error::DuplicateNode`]; [`Error::StaleNodeDirectory`] if `<data-dir>/<id>` exists;
    /// [`Error::Ring`] for an invalid id; a node's error while
    /// streaming (the change then stays pending: see [`resume_change`](Cluster::resume_change));
    /// [`Error::ExternalMetadata`] on a cluster whose topology comes from outside
    /// ([`install_topology`](Cluster::install_topology)).
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// for i in 0..1000u32 {
    ///     cluster.put(&i.to_be_bytes(), b"v")?;
    /// }
    /// let summary = cluster.add_node("node4")?;
    /// // About rf / (n + 1) = 3/4 of the keys gain node4 as a replica.
    /// assert!((600..900).contains(&summary.keys_moved));
    /// assert!(cluster.add_node("node4").is_err()); // a duplicate
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_node(&self, id: &str) -> Result<ChangeSummary> {
        self.add_node_with_progress(id, |_| ControlFlow::Continue(()))
    }

    /// [`add_node`](Cluster::add_node), calling `progress` after each streamed batch.
    /// Returning `ControlFlow::Break` stops the change where it is, pending (see
    /// [`Error::ChangeInterrupted`]).
    ///
    /// # Errors
    /// As [`add_node`](Cluster::add_node), and [`Error::ChangeInterrupted`].
    pub fn add_node_with_progress(
        &self,
        id: &str,
        mut progress: impl FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<ChangeSummary> {
        self.change(ChangeKind::Add, id, &mut progress)
    }

    /// Removes node `id`: its ranges are copied to the nodes that take them over, then it
    /// drops them and leaves. Returns what moved.
    ///
    /// A node that is down (crashed or cut off, see [`fail_node`](Cluster::fail_node)) can be
    /// removed: its ranges are then copied from every surviving replica of each range (newest
    /// version wins) instead of from it, and its directory is deleted. Its `pairs` in the
    /// summary name it as the source, and count the records copied from the survivors. If
    /// another replica of one of its ranges is down too, the change stops (pending, with
    /// [`Error::NodeDown`]) until that node recovers.
    ///
    /// # Errors
    /// [`Error::ChangeInProgress`]; [`Error::UnknownNode`]; [`Error::BelowReplicationFactor`]
    /// if fewer nodes than the replication factor would remain; a node's error while
    /// streaming; [`Error::ExternalMetadata`] as for [`add_node`](Cluster::add_node).
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, Error, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// // Three nodes, three replicas: none can leave.
    /// assert!(matches!(cluster.remove_node("node1"), Err(Error::BelowReplicationFactor { .. })));
    /// cluster.add_node("node4")?;
    /// cluster.remove_node("node1")?;
    /// assert!(matches!(cluster.remove_node("node1"), Err(Error::UnknownNode { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove_node(&self, id: &str) -> Result<ChangeSummary> {
        self.remove_node_with_progress(id, |_| ControlFlow::Continue(()))
    }

    /// [`remove_node`](Cluster::remove_node) with a progress callback, as in
    /// [`add_node_with_progress`](Cluster::add_node_with_progress).
    ///
    /// # Errors
    /// As [`remove_node`](Cluster::remove_node), and [`Error::ChangeInterrupted`].
    pub fn remove_node_with_progress(
        &self,
        id: &str,
        mut progress: impl FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<ChangeSummary> {
        self.change(ChangeKind::Remove, id, &mut progress)
    }

    /// Completes a pending change (one interrupted by the progress callback or by an error);
    /// `Ok(None)` if none is pending. [`Cluster::open`] does this by itself. A joining node
    /// the cluster could not open is opened again first (as by
    /// [`recover_node`](Cluster::recover_node): its hints are handed off), then streamed
    /// every range it gains.
    ///
    /// # Errors
    /// [`Error::ChangeInProgress`] if a change is running right now; the joining node's error
    /// if it still cannot be opened (the change stays pending, writes for it are kept as
    /// hints); as [`add_node`](Cluster::add_node) (a pending change recorded in
    /// `cluster.json` is refused with [`Error::ExternalMetadata`] on an external topology:
    /// finish it without one first).
    pub fn resume_change(
        &self,
        mut progress: impl FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Option<ChangeSummary>> {
        let Some((kind, node)) = self.pending_change() else {
            return Ok(None);
        };
        if self.is_external() {
            return Err(Error::ExternalMetadata {
                op: "resume_change",
            });
        }
        let _running = self.start_change(kind, node)?;
        let _admin = self.admin.lock();
        // A joiner the cluster could not open is tried again first: streaming needs it.
        let outcome = self
            .unopened_nodes()
            .into_iter()
            .try_for_each(|id| self.recover_locked(id).map(drop))
            .and_then(|()| self.drive(&mut progress));
        self.note_change_outcome(&outcome);
        outcome.map(Some)
    }

    /// The change pending, if any: what it does and to which node.
    pub fn pending_change(&self) -> Option<(ChangeKind, NodeId)> {
        let meta = self.meta.lock();
        let c = meta.change.as_ref()?;
        Some((c.kind, NodeId::new(&c.node).ok()?))
    }

    /// Marks a change as running, or refuses if one already is.
    fn start_change(&self, kind: ChangeKind, node: NodeId) -> Result<Running<'_>> {
        let mut running = self.running.lock();
        if let Some((kind, node)) = running.clone() {
            return Err(Error::ChangeInProgress { kind, node });
        }
        *running = Some((kind, node));
        Ok(Running(&self.running))
    }

    fn change(
        &self,
        kind: ChangeKind,
        id: &str,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<ChangeSummary> {
        if self.is_external() {
            // The metadata service runs changes across processes; one run here would route
            // this coordinator alone by a ring nobody else has.
            return Err(Error::ExternalMetadata {
                op: match kind {
                    ChangeKind::Add => "add_node",
                    ChangeKind::Remove => "remove_node",
                },
            });
        }
        let _running = self.start_change(kind, NodeId::new(id)?)?;
        // After `start_change`, so that a change started from a progress callback is refused
        // rather than waiting for the lock its own thread holds.
        let _admin = self.admin.lock();
        if let Some((kind, node)) = self.pending_change() {
            return Err(Error::ChangeInProgress { kind, node });
        }
        let old = self.ring();
        let new = match kind {
            ChangeKind::Add => {
                let node = NodeId::new(id)?;
                if old.contains(id) {
                    return Err(Error::DuplicateNode { node });
                }
                let path = self.dir.join(id);
                if path.exists() {
                    return Err(Error::StaleNodeDirectory { node, path });
                }
                old.add_node(id)?
            }
            ChangeKind::Remove => {
                if !old.contains(id) {
                    return Err(Error::UnknownNode { node: id.into() });
                }
                if old.len() - 1 < self.rf {
                    return Err(Error::BelowReplicationFactor {
                        remaining: old.len() - 1,
                        replication_factor: self.rf,
                    });
                }
                old.remove_node(id)?
            }
        };
        let mut meta = self.meta.lock().clone();
        meta.change = Some(ChangeMeta {
            kind,
            node: id.to_owned(),
            from_epoch: old.epoch(),
            from_members: members_of(&old),
            to_epoch: new.epoch(),
            to_members: members_of(&new),
            phase: Phase::Streaming,
            streamed: Vec::new(),
        });
        self.persist(meta)?;
        let outcome = self.drive(progress);
        self.note_change_outcome(&outcome);
        outcome
    }

    /// Keeps why the change stopped, for [`change_error`](Cluster::change_error); clears it
    /// when the change completed or its progress callback stopped it.
    fn note_change_outcome<T>(&self, outcome: &Result<T>) {
        *self.change_error.lock() = match outcome {
            Ok(_) | Err(Error::ChangeInterrupted { .. }) => None,
            Err(e) => Some(crate::cluster::describe(e)),
        };
    }

    /// Why the pending change could not complete the last time it was driven (by
    /// [`Cluster::open`], [`resume_change`](Cluster::resume_change) or the call that started
    /// it), with its causes: e.g. that the joining node could not be opened. `None` if no
    /// change is pending, if the last attempt was stopped by its progress callback, or if no
    /// attempt was made since the cluster opened. Also in [`ClusterStats`](crate::ClusterStats).
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// cluster.add_node("node4")?;
    /// assert_eq!(cluster.change_error(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn change_error(&self) -> Option<String> {
        self.change_error.lock().clone()
    }

    /// The recorded change with its old and new rings, if one is pending.
    pub(crate) fn change_rings(&self) -> Result<Option<(ChangeMeta, Ring, Ring)>> {
        let meta = self.meta.lock().clone();
        let Some(change) = meta.change.clone() else {
            return Ok(None);
        };
        let ring_options = meta.ring_options()?;
        let old = build_ring(ring_options, &change.from_members, change.from_epoch)?;
        let new = build_ring(ring_options, &change.to_members, change.to_epoch)?;
        Ok(Some((change, old, new)))
    }

    /// Routes writes to the old and the new replicas of the recorded change (phase
    /// `streaming`): installs the pending routing, opening the members not routed yet.
    ///
    /// A member of the new ring only (a joiner) that cannot be opened is routed as a down
    /// node, so the pending routing goes in all the same: writes for it become hints (counted
    /// towards `W` only by a sloppy quorum), and it is tried again by
    /// [`resume_change`](Cluster::resume_change) (or [`recover_node`](Cluster::recover_node)).
    /// Its pairs recorded as streamed are forgotten first, so they are streamed again once it
    /// opens: what a node that failed to open still holds is not trusted. Returns the handles
    /// and that open error, if any.
    ///
    /// # Errors
    /// An old member that cannot be opened; a failure to persist `cluster.json`.
    pub(crate) fn enter_pending(&self, old: &Ring, new: &Ring) -> Result<(NodeMap, Option<Error>)> {
        let mut nodes = self.routing().nodes.clone();
        let mut unopened: Vec<NodeId> = Vec::new();
        let mut first_err = None;
        for id in old.nodes().chain(new.nodes()) {
            if nodes.contains_key(id) {
                continue;
            }
            match self.opts.backend.open(id, &self.dir.join(id.as_str())) {
                Ok(node) => {
                    node.fence(old.epoch());
                    nodes.insert(id.clone(), node);
                }
                Err(e) if !old.contains(id.as_str()) => {
                    let down: Arc<dyn Replica> = Arc::new(DownReplica { id: id.clone() });
                    nodes.insert(id.clone(), down);
                    unopened.push(id.clone());
                    first_err.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        if !unopened.is_empty() {
            // Durable before any write can skip the node.
            let mut meta = self.meta.lock().clone();
            if let Some(change) = &mut meta.change {
                change
                    .streamed
                    .retain(|(_, to)| !unopened.iter().any(|u| u.as_str() == to));
            }
            self.persist(meta)?;
            let mut health = self.health.lock();
            for id in unopened {
                let down = Down {
                    since: SystemTime::now(),
                    parked: None,
                    unopened: true,
                };
                health.insert(id, down);
            }
        }
        self.install(Routing::new(old.clone(), Some(new.clone()), nodes.clone()));
        Ok((nodes, first_err))
    }

    /// Runs the recorded change from its recorded phase to the end. The caller has marked it
    /// running ([`start_change`](Cluster::start_change)).
    fn drive(
        &self,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<ChangeSummary> {
        let started = Instant::now();
        let Some((change, old, new)) = self.change_rings()? else {
            return Err(Error::Metadata {
                path: self.dir.join(crate::meta::FILE_NAME),
                reason: "no change to drive".into(),
            });
        };
        let node = NodeId::new(&change.node)?;
        let plan = transfer_plan(&old, &new, self.rf)?;
        let nodes = if change.phase == Phase::Streaming {
            // Pending: writes reach old and new replicas; reads stay on the old ring. Stream
            // only once no write routed without the new replicas is still in flight (the
            // install drains them).
            let (nodes, unopened) = self.enter_pending(&old, &new)?;
            if let Some(e) = unopened {
                return Err(e);
            }
            nodes
        } else {
            self.open_all(&old, &new)?
        };
        let mut summary = ChangeSummary {
            kind: change.kind,
            node: node.clone(),
            from_epoch: old.epoch(),
            to_epoch: new.epoch(),
            pairs: Vec::new(),
            keys_moved: 0,
            bytes_moved: 0,
            keys_dropped: 0,
            hints_handed_over: 0,
            fraction_moved: plan.fraction_moved(),
            streaming: Duration::ZERO,
            cleanup: Duration::ZERO,
            elapsed: Duration::ZERO,
        };

        if change.phase == Phase::Streaming {
            let mut change = change;
            let job = Streaming {
                old: &old,
                plan: &plan,
                nodes: &nodes,
            };
            self.stream(job, &mut change, &mut summary, started, progress)?;
            summary.streaming = started.elapsed();

            // Commit: the new ring is in force from here on.
            let mut meta = self.meta.lock().clone();
            meta.epoch = new.epoch();
            meta.members = change.to_members.clone();
            change.phase = Phase::Cleanup;
            meta.change = Some(change);
            self.persist(meta)?;
        }
        let routed: NodeMap = nodes
            .iter()
            .filter(|(id, _)| new.contains(id.as_str()))
            .map(|(id, n)| (id.clone(), Arc::clone(n)))
            .collect();
        self.install(Routing::new(new.clone(), None, routed));
        // Every operation routed by the old ring has finished; refuse any that was not
        // (a remote one delayed in the network), so none lands after the cleanup.
        for n in nodes.values() {
            n.fence(new.epoch());
        }

        // Cleanup: the nodes that lost ranges drop them. A node that left loses everything:
        // its directory is deleted instead, which costs no scan.
        let cleanup = Instant::now();
        let mut nodes = nodes;
        let mut leavers = Vec::new();
        for id in old.nodes().filter(|id| !new.contains(id.as_str())) {
            if let Some(node) = nodes.remove(id) {
                leavers.push((id.clone(), node));
            }
        }
        summary.keys_dropped = stream::drop_lost(&nodes, &plan, new.epoch())?;
        // A live leaver's hints go to their targets (or to another holder) before its
        // directory does. A dead one's are lost with it: a strict write was acknowledged by W
        // real replicas besides; a sloppy one may have counted the hint, so it is down to
        // W - 1 copies, as with any lost replica, and repair restores its target. Hints for a
        // leaver go to their keys' replicas now.
        let routing = self.routing();
        for (id, node) in &leavers {
            summary.hints_handed_over += self.hand_over_hints(&routing, id, !node.is_down())?;
        }
        drop(routing);
        for (id, node) in leavers {
            // A down leaver cannot count what it held; its directory goes all the same.
            let held = node.held().unwrap_or_default();
            // The last handles: the routing no longer has it, and the old one is drained; a
            // failed (cut off) leaver's real handle is parked with its health: close it too
            // before its directory goes.
            drop(node);
            let parked = self.health.lock().remove(&id);
            drop(parked);
            let node_dir = self.dir.join(id.as_str());
            self.opts.backend.destroy(&id, &node_dir)?;
            // The hint stores' directory is the cluster's, not the backend's: a backend that
            // keeps nothing on disk leaves it, and a directory left would refuse a later
            // `add_node` of the same id.
            let hints = node_dir.join(crate::hints::HINTS_DIR);
            match std::fs::remove_dir_all(&hints) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove directory", &hints, e)),
            }
            // Only if empty: what else is there is the backend's.
            let _ = std::fs::remove_dir(&node_dir);
            summary.keys_dropped += held.live + held.tombstones;
        }
        summary.cleanup = cleanup.elapsed();
        let mut meta = self.meta.lock().clone();
        meta.change = None;
        self.persist(meta)?;
        self.forget_departed();
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    /// Handles for every member of either ring: the routed ones, plus any other opened now
    /// (after the commit: a leaver that is not routed any more).
    fn open_all(&self, old: &Ring, new: &Ring) -> Result<NodeMap> {
        let mut nodes = self.routing().nodes.clone();
        for id in old.nodes().chain(new.nodes()) {
            if !nodes.contains_key(id) {
                let node = self.opts.backend.open(id, &self.dir.join(id.as_str()))?;
                node.fence(old.epoch());
                nodes.insert(id.clone(), node);
            }
        }
        Ok(nodes)
    }

    /// Copies every transfer of the plan not yet recorded as streamed.
    ///
    /// Each pair's ranges are cut into stretches of consecutive ranges, one per stream
    /// ([`ClusterOptions::transfer_streams`](crate::ClusterOptions::transfer_streams)), and
    /// the streams take stretches pair after pair, so they share the work evenly and several
    /// sources and destinations work at once. A pair whose stretches are all imported is
    /// synced on `to` by the stream that finished it (the others go on meanwhile), then
    /// recorded in `cluster.json` by this thread, which also reports progress: a crash
    /// re-streams only pairs not recorded. On an error or a `Break` from `progress`, every
    /// stream stops at its next batch.
    fn stream(
        &self,
        job: Streaming<'_>,
        change: &mut ChangeMeta,
        summary: &mut ChangeSummary,
        started: Instant,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<()> {
        let Streaming { old, plan, nodes } = job;
        let epoch = plan.from_epoch;
        let pairs = stream::pairs(plan);
        let done = |change: &ChangeMeta, from: &NodeId, to: &NodeId| {
            change
                .streamed
                .iter()
                .any(|(f, t)| f == from.as_str() && t == to.as_str())
        };
        let estimates = self.estimate(&pairs, nodes, |f, t| done(change, f, t))?;
        let mut report = Progress {
            kind: change.kind,
            node: summary.node.clone(),
            from: summary.node.clone(),
            to: summary.node.clone(),
            pair_keys: 0,
            keys: 0,
            bytes: 0,
            estimated_keys: estimates.iter().sum(),
            pairs_done: 0,
            pairs_total: pairs.len(),
            elapsed: Duration::ZERO,
        };
        // Each destination sizes its index once for everything coming its way.
        let mut incoming: BTreeMap<&NodeId, (Vec<TokenRange>, u64)> = BTreeMap::new();
        for (((_, to), ranges), keys) in pairs.iter().zip(&estimates) {
            if *keys == 0 {
                continue; // streamed already, or nothing to count
            }
            let into = incoming.entry(to).or_default();
            into.0.extend_from_slice(ranges);
            into.1 = into.1.saturating_add(*keys);
        }
        for (to, (ranges, keys)) in incoming {
            if let Some(dst) = nodes.get(to) {
                dst.reserve(&ranges, keys);
            }
        }
        let streams = self.opts.transfer_streams.max(1);
        // The work: (pair, stretch of its ranges), pair after pair.
        let mut work: Vec<(usize, Vec<TokenRange>)> = Vec::new();
        let mut stretches = vec![0usize; pairs.len()];
        for (i, ((from, to), ranges)) in pairs.iter().enumerate() {
            if done(change, from, to) {
                report.pairs_done += 1;
                continue;
            }
            if !nodes.contains_key(to) {
                return Err(Error::UnknownNode {
                    node: to.to_string(),
                });
            }
            let ranges = stream::coalesce(ranges);
            for stretch in ranges.chunks(ranges.len().div_ceil(streams).max(1)) {
                work.push((i, stretch.to_vec()));
                stretches[i] += 1;
            }
        }
        let left: Vec<AtomicUsize> = stretches.into_iter().map(AtomicUsize::new).collect();
        let mut moved: Vec<PairSummary> = pairs
            .iter()
            .map(|((from, to), _)| PairSummary {
                from: from.clone(),
                to: to.clone(),
                keys: 0,
                bytes: 0,
            })
            .collect();
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let limiter = RateLimiter::new(self.opts.rate_limit.into());
        let batch_size = self.opts.transfer_batch;
        let mut finished: Vec<usize> = Vec::new();
        let mut first_err: Option<Error> = None;
        let mut interrupted = false;
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel::<Event>();
            for _ in 0..streams.min(work.len()) {
                let tx = tx.clone();
                let (work, pairs, left, next, stop) = (&work, &pairs, &left, &next, &stop);
                let limiter = &limiter;
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Some((pair, ranges)) = work.get(next.fetch_add(1, Ordering::Relaxed))
                        else {
                            return;
                        };
                        let pair = *pair;
                        let ((from, to), _) = &pairs[pair];
                        // Checked above.
                        let Some(dst) = nodes.get(to) else { return };
                        let mut on_batch = |batch: &[kv_node::Record]| {
                            let keys = batch.len() as u64;
                            let bytes = stream::batch_bytes(batch);
                            limiter.pace(keys, bytes);
                            let _ = tx.send(Event::Batch { pair, keys, bytes });
                            if stop.load(Ordering::Relaxed) {
                                ControlFlow::Break(())
                            } else {
                                ControlFlow::Continue(())
                            }
                        };
                        // A down source (a dead node being removed): copy from every survivor.
                        let transfer = stream::Transfer {
                            old,
                            rf: self.rf,
                            nodes,
                            dst: dst.as_ref(),
                            epoch,
                            batch_size,
                        };
                        let up = nodes.get(from).is_none_or(|n| !n.is_down());
                        let copied = match choose_source(from, up) {
                            Source::Survivors { down } => {
                                transfer.copy_from_survivors(&down, ranges, &mut on_batch)
                            }
                            Source::Loser(from) => {
                                transfer.copy_from_live(&from, ranges, &mut on_batch)
                            }
                        };
                        let event = match copied {
                            Ok(ControlFlow::Break(())) => return,
                            // The last stretch of its pair: make the pair durable on `to`.
                            Ok(ControlFlow::Continue(())) => {
                                if left[pair].fetch_sub(1, Ordering::AcqRel) != 1 {
                                    continue;
                                }
                                match dst.sync() {
                                    Ok(()) => Event::Copied { pair },
                                    Err(e) => Event::Failed(e),
                                }
                            }
                            Err(e) => Event::Failed(e),
                        };
                        if matches!(event, Event::Failed(_)) {
                            stop.store(true, Ordering::Relaxed);
                        }
                        let _ = tx.send(event);
                    }
                });
            }
            drop(tx);
            // Until every stream has ended (each holds a sender).
            for event in rx {
                match event {
                    Event::Batch { pair, keys, bytes } => {
                        let p = &mut moved[pair];
                        p.keys += keys;
                        p.bytes += bytes;
                        report.from = p.from.clone();
                        report.to = p.to.clone();
                        report.pair_keys = p.keys;
                        report.keys += keys;
                        report.bytes += bytes;
                        report.elapsed = started.elapsed();
                        if !interrupted && progress(&report).is_break() {
                            interrupted = true;
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    // Copied and synced: record it even if the change stops now, so that a
                    // resume does not stream it again.
                    Event::Copied { pair } => {
                        let ((from, to), _) = &pairs[pair];
                        change.streamed.push((from.to_string(), to.to_string()));
                        let mut meta = self.meta.lock().clone();
                        meta.change = Some(change.clone());
                        if let Err(e) = self.persist(meta) {
                            first_err.get_or_insert(e);
                            stop.store(true, Ordering::Relaxed);
                            continue;
                        }
                        report.pairs_done += 1;
                        finished.push(pair);
                    }
                    Event::Failed(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        });
        if let Some(e) = first_err {
            return Err(e);
        }
        if interrupted {
            return Err(Error::ChangeInterrupted {
                kind: change.kind,
                node: summary.node.clone(),
            });
        }
        // In plan order.
        finished.sort_unstable();
        for pair in finished {
            let p = &moved[pair];
            summary.keys_moved += p.keys;
            summary.bytes_moved += p.bytes;
            summary.pairs.push(p.clone());
        }
        Ok(())
    }

    /// An estimate of the records left to stream per pair (0 for a pair already streamed),
    /// without scanning: each source's key count times the share of its ranges that the pair
    /// copies.
    fn estimate(
        &self,
        pairs: &[((NodeId, NodeId), Vec<TokenRange>)],
        nodes: &NodeMap,
        done: impl Fn(&NodeId, &NodeId) -> bool,
    ) -> Result<Vec<u64>> {
        let routing = self.routing();
        let owned: Vec<(NodeId, f64)> = routing
            .ring
            .ownership(self.rf)?
            .into_iter()
            .map(|o| (o.node, o.replica))
            .collect();
        let mut estimates = vec![0; pairs.len()];
        for (((from, to), ranges), estimate) in pairs.iter().zip(&mut estimates) {
            let Some(node) = nodes.get(from) else {
                continue;
            };
            let share = owned
                .iter()
                .find(|(n, _)| n == from)
                .map_or(0.0, |(_, s)| *s);
            // A down source is streamed from another replica; it cannot count for the estimate.
            if done(from, to) || share <= 0.0 || node.is_down() {
                continue;
            }
            // A down leaver cannot count what it held; its directory goes all the same.
            let held = node.held().unwrap_or_default();
            let fraction: f64 = ranges.iter().map(|r| r.fraction()).sum();
            *estimate =
                ((held.live + held.tombstones) as f64 * (fraction / share).min(1.0)).round() as u64;
        }
        Ok(estimates)
    }
}

/// What a streaming thread tells the thread driving the change.
enum Event {
    /// A batch of `pair` was imported.
    Batch { pair: usize, keys: u64, bytes: u64 },
    /// Every stretch of `pair` was imported and its destination synced.
    Copied { pair: usize },
    /// A copy or a sync failed: the streams stop.
    Failed(Error),
}

/// Clears the running change when dropped, however the change ended.
struct Running<'a>(&'a parking_lot::Mutex<Option<(ChangeKind, NodeId)>>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        *self.0.lock() = None;
    }
}
