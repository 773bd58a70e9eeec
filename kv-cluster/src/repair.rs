//! Anti-entropy: compare replicas range by range with Merkle trees, stream only what differs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_node::{Clock, Node, Record};
use kv_ring::{NodeId, TokenRange};

use crate::cluster::Cluster;
use crate::error::Result;
use crate::maintain;
use crate::merkle::{MerkleTree, NODE_BYTES};
use crate::replica::Replica;
use crate::routing::Routing;

/// About how many keys a leaf of a repair's Merkle tree covers: a range gets
/// `keys / REPAIR_KEYS_PER_LEAF` leaves (a power of two, 1 to 65,536), estimated from the
/// node's counters without a scan. One divergent key then streams about this many records
/// per replica, and identical replicas exchange only the trees' roots.
pub const REPAIR_KEYS_PER_LEAF: u64 = 32;

/// Every maximal run of adjacent ring ranges with the same replica set, with that set (in
/// preference order of the run's first range). Comparing runs rather than virtual-node
/// ranges costs a tree per run: on 3 nodes with 3 replicas, one for the whole ring.
fn replica_runs(routing: &Routing, rf: usize) -> Result<Vec<(TokenRange, Vec<NodeId>)>> {
    let mut runs: Vec<(TokenRange, Vec<NodeId>, Vec<NodeId>)> = Vec::new();
    for r in routing.ring.ranges() {
        let replicas = routing.ring.preference_list(r.range.end, rf)?.to_vec();
        let mut set = replicas.clone();
        set.sort();
        match runs.last_mut() {
            Some((range, _, s)) if *s == set => range.end = r.range.end,
            _ => runs.push((r.range, replicas, set)),
        }
    }
    // The last run wraps into the first when they have the same replicas.
    if runs.len() > 1
        && runs.first().map(|f| &f.2) == runs.last().map(|l| &l.2)
        && let Some((last, _, _)) = runs.pop()
        && let Some(first) = runs.first_mut()
    {
        first.0.start = last.start;
    }
    if runs.len() == 1 {
        runs[0].0 = TokenRange::FULL;
    }
    Ok(runs
        .into_iter()
        .map(|(r, replicas, _)| (r, replicas))
        .collect())
}

/// Leaves for `range`'s trees: from `node`'s key count (its counters) times the range's
/// share of what it replicates, at [`REPAIR_KEYS_PER_LEAF`] keys a leaf.
async fn leaves_for(range: TokenRange, node: &dyn Replica) -> Result<u32> {
    let held = maintain::held(node).await?;
    let keys = (held.live + held.tombstones) as f64 * range.fraction();
    // `fraction` is of the whole ring; a node holds rf / n of it, so this underestimates by
    // at most that factor: a leaf then covers a few times more keys than the target.
    let leaves = (keys / REPAIR_KEYS_PER_LEAF as f64).ceil().max(1.0) as u64;
    Ok(leaves.next_power_of_two().min(1 << 16) as u32)
}

/// What a [`Cluster::repair`] compared and fixed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairSummary {
    /// Token ranges (virtual-node ranges) whose replicas were compared.
    pub ranges_compared: u64,
    /// Ranges skipped because fewer than two of their replicas were up.
    pub ranges_skipped: u64,
    /// Leaves whose digests differed between some replicas (each streamed).
    pub leaves_differing: u64,
    /// Bytes of tree hashes the comparison exchanged: every tree node compared costs 16 bytes
    /// (hash and key count) from each of the two replicas compared.
    pub hash_bytes: u64,
    /// Records read out of the replicas for the differing leaves.
    pub records_streamed: u64,
    /// Records that changed a replica (a stale or missing key, on one replica, fixed).
    pub keys_repaired: u64,
    /// Hints handed off first to targets that are up ([`Cluster::repair`] only: a handoff
    /// that failed when its target recovered is retried here).
    pub hints_applied: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl Cluster {
    /// Anti-entropy over every token range: ranges are taken in maximal runs with the same
    /// replicas; the up replicas of each build a Merkle tree over leaf digests (about
    /// [`REPAIR_KEYS_PER_LEAF`] keys a leaf), trees are compared top-down, and only
    /// the leaves that differ are exported from every replica, merged newest-wins and
    /// imported where stale. Runs alongside client traffic (last-writer-wins makes the copies
    /// commute with client writes); a down replica is skipped, to be repaired when it
    /// recovers.
    ///
    /// [`repair_async`](Cluster::repair_async) run on the calling thread.
    ///
    /// # Errors
    /// A node's error.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// for i in 0..100u32 {
    ///     cluster.put(&i.to_be_bytes(), b"v")?;
    /// }
    /// let summary = cluster.repair()?;
    /// // Identical replicas: only the trees' roots were exchanged.
    /// assert_eq!(summary.keys_repaired, 0);
    /// assert_eq!(summary.hash_bytes, summary.ranges_compared * 2 * 2 * 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn repair(&self) -> Result<RepairSummary> {
        crate::block::block_on(self.repair_async())
    }

    /// [`repair`](Cluster::repair) as a future, for a caller on an async runtime: it waits
    /// on replicas across the network (digests, export pages, imports, syncs) without
    /// blocking a worker thread, and waits for the admin gate the same way. The future is
    /// `Send`. Its only await points are replicas' answers and the gate; the replicas'
    /// transport times every request out, so it needs no timer.
    ///
    /// # Errors
    /// As [`repair`](Cluster::repair).
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
    /// let rt = tokio::runtime::Builder::new_current_thread().build()?;
    /// let summary = rt.block_on(cluster.repair_async())?;
    /// assert_eq!(summary.keys_repaired, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn repair_async(&self) -> Result<RepairSummary> {
        let _admin = self.admin.acquire().await;
        let routing = self.routing();
        // Hints whose target is up again but were not handed off (a handoff that failed
        // after the node came back): they may be counted copies of sloppy writes.
        let hints_applied = self.hand_off_async(&routing, &|_, _| true).await?;
        let mut summary = self.repair_where_async(&routing, &|_| true).await?;
        summary.hints_applied = hints_applied;
        Ok(summary)
    }

    /// Repairs the ranges whose replica set satisfies `select`. The caller holds the admin
    /// gate.
    pub(crate) fn repair_where(
        &self,
        routing: &Routing,
        select: &(dyn Fn(&[NodeId]) -> bool + Sync),
    ) -> Result<RepairSummary> {
        crate::block::block_on(self.repair_where_async(routing, select))
    }

    /// [`repair_where`](Cluster::repair_where) as a future.
    pub(crate) async fn repair_where_async(
        &self,
        routing: &Routing,
        select: &(dyn Fn(&[NodeId]) -> bool + Sync),
    ) -> Result<RepairSummary> {
        repair_where(
            routing,
            self.rf,
            self.opts.transfer_batch,
            self.opts.clock.as_ref(),
            select,
            &|| false,
        )
        .await
    }
}

/// Repairs the ranges of `routing` whose replica set satisfies `select`, streaming
/// `batch` records at a time; stops early (with what it did so far) once `stop` says so,
/// checked between replica runs and between differing leaves (so a stop does not wait for
/// a whole run: on 3 nodes with RF 3 the ring is one run). The caller holds the cluster's
/// admin gate. Elapsed time is read from `clock`.
pub(crate) async fn repair_where(
    routing: &Routing,
    rf: usize,
    batch: usize,
    clock: &dyn Clock,
    select: &(dyn Fn(&[NodeId]) -> bool + Sync),
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<RepairSummary> {
    // Timed on the cluster's clock (the simulation's, under simulation).
    let started = clock.now_millis();
    let mut summary = RepairSummary::default();
    for (range, replicas) in replica_runs(routing, rf)? {
        if stop() {
            break;
        }
        if !select(&replicas) {
            continue;
        }
        let up: Vec<&Arc<dyn Replica>> = replicas
            .iter()
            .filter_map(|id| routing.node(id))
            .filter(|n| !n.is_down())
            .collect();
        if up.len() < 2 {
            summary.ranges_skipped += 1;
            continue;
        }
        repair_range(routing, batch, range, &up, &mut summary, stop).await?;
    }
    summary.elapsed = Duration::from_millis(clock.now_millis().saturating_sub(started));
    Ok(summary)
}

async fn repair_range(
    routing: &Routing,
    batch: usize,
    range: TokenRange,
    up: &[&Arc<dyn Replica>],
    summary: &mut RepairSummary,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<()> {
    let epoch = routing.epoch();
    let leaves = leaves_for(range, up[0].as_ref()).await?;
    // Every replica builds its tree at once.
    let trees: Vec<MerkleTree> = maintain::ask_each(up.len(), |t| {
        up[t.index()].start_digests(epoch, range, leaves, t)
    })
    .await
    .into_iter()
    .map(|d| d.map(MerkleTree::new))
    .collect::<Result<_>>()?;
    summary.ranges_compared += 1;
    let mut differing: Vec<usize> = Vec::new();
    for other in &trees[1..] {
        let (diff, compared) = trees[0].diff(other);
        summary.hash_bytes += 2 * compared * NODE_BYTES;
        differing.extend(diff);
    }
    differing.sort_unstable();
    differing.dedup();
    for leaf in differing {
        if stop() {
            break;
        }
        summary.leaves_differing += 1;
        let part = Node::leaf_range(range, leaves, leaf as u32);
        // The newest record of every key any replica holds in the leaf.
        let mut newest: BTreeMap<Bytes, Record> = BTreeMap::new();
        for n in up {
            for r in maintain::export_all(n.as_ref(), epoch, &[part], batch).await? {
                summary.records_streamed += 1;
                match newest.get(&r.key) {
                    Some(have) if have.version >= r.version => {}
                    _ => {
                        newest.insert(r.key.clone(), r);
                    }
                }
            }
        }
        let merged: Vec<Record> = newest.into_values().collect();
        for chunk in merged.chunks(batch.max(1)) {
            // Every replica imports the chunk at once.
            for changed in
                maintain::ask_each(up.len(), |t| up[t.index()].start_import(epoch, chunk, t)).await
            {
                summary.keys_repaired += changed? as u64;
            }
        }
    }
    Ok(())
}
