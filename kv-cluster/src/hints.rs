//! Hinted handoff: writes meant for a down node, kept by a live one until it is back.
//!
//! Lock order: `hints.open` is a leaf, held while a store is opened (`docs/design.md`, *Concurrency
//! and lock order*).
//!
//! A hint store is a replica of its own, opened through the cluster's [`Backend`]
//! (a `kv_node::Node` on disk by default) at `<data-dir>/<holder>/hints/<target>/`: one store
//! per (holder, target) pair, holding the target's missed writes under their own keys and
//! versions. Last-writer-wins makes handoff idempotent: replaying a store into its target
//! twice, or after the target got a newer write, changes nothing. A store is deleted once
//! handed off and synced on the target.
//!
//! A hinted write is never dropped because its target has no claim on the key any more (a
//! membership change moved the key's range while the target was down, or the target left):
//! it goes to the key's replicas now instead, as a sloppy write may have counted the hint
//! towards `W` and its other copies may have left with the range.
//!
//! [`Backend`]: crate::Backend

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kv_node::{Record, Write};
use kv_ring::{NodeId, TokenRange, token};
use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::backend::Backend;
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::maintain;
use crate::replica::Replica;
use crate::routing::Routing;

/// The name of the directory, in a node's own directory, of the hints it holds.
pub(crate) const HINTS_DIR: &str = "hints";

/// The slices of the token ring a hint store is read in during a handoff: about `batch`
/// records each, from the store's counters (hashed tokens spread them evenly), so a handoff
/// holds a few batches in memory whatever the store's size.
fn store_slices(store: &dyn Replica, batch: usize) -> Result<Vec<TokenRange>> {
    let held = store.held()?;
    let records = held.live + held.tombstones;
    let slices = records
        .div_ceil(batch.max(1) as u64)
        .max(1)
        .next_power_of_two()
        .min(1 << 16) as u32;
    Ok((0..slices)
        .map(|i| kv_node::Node::leaf_range(TokenRange::FULL, slices, i))
        .collect())
}

/// What [`Cluster::redirect`] wrote: nodes to sync, and whether it stored hints.
#[derive(Debug, Default)]
struct Touched {
    nodes: Vec<NodeId>,
    hints: bool,
}

/// Open hint stores by `(holder, target)`. The cluster holds them in an `Arc`: a write's
/// follow-up (`write.rs`), which keeps hints for the replicas that fail after the write
/// returned, holds a `Weak` to them, so it keeps nothing open once the cluster is closed.
#[derive(Debug, Default)]
pub(crate) struct HintStores {
    open: Mutex<HashMap<(NodeId, NodeId), Arc<dyn Replica>>>,
}

impl HintStores {
    /// The hint store of `(holder, target)` under the cluster's data directory `root`,
    /// opened through `backend` (and its directory created) if needed.
    pub(crate) fn store(
        &self,
        root: &Path,
        backend: &dyn Backend,
        holder: &NodeId,
        target: &NodeId,
    ) -> Result<Arc<dyn Replica>> {
        let mut open = self.open.lock();
        if let Some(store) = open.get(&(holder.clone(), target.clone())) {
            return Ok(Arc::clone(store));
        }
        let dir = hint_dir(root, holder, target);
        kv_node::durable::create_dir_all(&dir)?;
        let store = backend.open(target, &dir)?;
        open.insert((holder.clone(), target.clone()), Arc::clone(&store));
        Ok(store)
    }
}

/// `<root>/<holder>/hints/<target>/`, `root` being the cluster's data directory.
fn hint_dir(root: &Path, holder: &NodeId, target: &NodeId) -> PathBuf {
    root.join(holder.as_str())
        .join(HINTS_DIR)
        .join(target.as_str())
}

/// The node that keeps hints of `target` for `token` in `routing`: `own_hints` if set (a
/// node process keeps its hints itself; none for itself: it is never unreachable from its
/// own coordinator), else the first live node walking the ring clockwise past the token's
/// `rf` replicas (as Dynamo's sloppy quorum), or, on a ring with no node beyond them, the
/// first live replica other than `target`.
pub(crate) fn hint_holder(
    routing: &Routing,
    own_hints: Option<&NodeId>,
    rf: usize,
    target: &NodeId,
    token: u64,
) -> Option<NodeId> {
    if let Some(me) = own_hints {
        return (me != target).then(|| me.clone());
    }
    let all = routing
        .ring
        .preference_list(token, routing.ring.len())
        .ok()?;
    let all: Vec<&NodeId> = all.iter().collect();
    let (replicas, beyond) = all.split_at(rf.min(all.len()));
    beyond
        .iter()
        .chain(replicas.iter())
        .find(|id| **id != target && routing.node(id).is_some_and(|n| !n.is_down()))
        .map(|id| (*id).clone())
}

impl Cluster {
    /// `<data-dir>/<holder>/hints/<target>/`.
    fn hint_dir(&self, holder: &NodeId, target: &NodeId) -> PathBuf {
        hint_dir(&self.dir, holder, target)
    }

    /// The node that keeps hints of `target` for `token`: the first live node walking the
    /// ring clockwise past the token's replicas (as Dynamo's sloppy quorum), or, on a ring
    /// with no node beyond them, the first live replica other than `target`.
    fn hint_holder(&self, routing: &Routing, target: &NodeId, token: u64) -> Option<NodeId> {
        hint_holder(
            routing,
            self.opts.own_hints.as_ref(),
            self.rf,
            target,
            token,
        )
    }

    /// Sloppy quorum: a distinct live stand-in for each of `down` (in order), walking the
    /// ring clockwise from `token` past every node of `targets` (the key's replicas, in both
    /// rings during a change). Down replicas left without one (too few live nodes beyond the
    /// replicas) are not in the result.
    pub(crate) fn stand_ins(
        &self,
        routing: &Routing,
        token: u64,
        targets: &[&NodeId],
        down: &[&NodeId],
    ) -> SmallVec<[(NodeId, NodeId); 4]> {
        if down.is_empty() {
            return SmallVec::new();
        }
        let Ok(walk) = routing.ring.preference_list(token, routing.ring.len()) else {
            return SmallVec::new();
        };
        walk.iter()
            .filter(|id| !targets.contains(id))
            .filter(|id| routing.node(id).is_some_and(|n| !n.is_down()))
            .zip(down)
            .map(|(holder, target)| ((*target).clone(), holder.clone()))
            .collect()
    }

    /// Keeps `write` as a hint for `target` on `holder`; returns whether it was stored (with
    /// the holder's durability: its store's sync policy).
    pub(crate) fn store_hint_on(&self, holder: &NodeId, target: &NodeId, write: Write<'_>) -> bool {
        self.hint_store(holder, target)
            .and_then(|store| store.apply(0, write))
            .is_ok()
    }

    /// The hint store of `(holder, target)`, opened (and its directory created) if needed.
    fn hint_store(&self, holder: &NodeId, target: &NodeId) -> Result<Arc<dyn Replica>> {
        self.hints
            .store(&self.dir, self.opts.backend.as_ref(), holder, target)
    }

    /// Keeps `write`, which `target` (down) missed, as a hint on a live node; returns whether
    /// a holder took it. Such a hint does not count towards the write's consistency level
    /// (a sloppy write's stand-ins, from [`stand_ins`](Cluster::stand_ins), do).
    pub(crate) fn store_hint(
        &self,
        routing: &Routing,
        target: &NodeId,
        token: u64,
        write: Write<'_>,
    ) -> bool {
        let Some(holder) = self.hint_holder(routing, target, token) else {
            return false;
        };
        // A hint that cannot be stored is not fatal: anti-entropy repairs what it misses.
        self.store_hint_on(&holder, target, write)
    }

    /// Hands off every hint store whose holder and target are both up and `select`ed:
    /// exports it into the target, syncs the target, then deletes the store. A hint for a key
    /// the target no longer replicates, and every hint of a target in no ring (neither the
    /// committed one nor either ring of a pending change), goes to the key's replicas now
    /// instead. A store whose target is not routed but in a ring of the pending change is
    /// kept. Returns the records that changed a node.
    ///
    /// Runs with the admin lock held and with a routing in which the targets are up, so no
    /// client write adds to a store while it is handed off.
    pub(crate) fn hand_off(
        &self,
        routing: &Routing,
        select: &(dyn Fn(&NodeId, &NodeId) -> bool + Sync),
    ) -> Result<u64> {
        crate::block::block_on(self.hand_off_async(routing, select))
    }

    /// [`hand_off`](Cluster::hand_off) as a future: the targets' imports and syncs are
    /// awaited ([`maintain`](crate::maintain)); the hint stores, on this node's disk, are
    /// read in place.
    pub(crate) async fn hand_off_async(
        &self,
        routing: &Routing,
        select: &(dyn Fn(&NodeId, &NodeId) -> bool + Sync),
    ) -> Result<u64> {
        let mut changed = 0u64;
        for (holder, target) in self.hint_pairs()? {
            let holder_up = routing.node(&holder).is_some_and(|n| !n.is_down());
            if !holder_up || !select(&holder, &target) {
                continue;
            }
            let dst = match routing.node(&target) {
                Some(n) if n.is_down() => continue,
                Some(n) => Some(Arc::clone(n)),
                // Not routed, but a member of a ring of the pending change: kept until it is
                // routed (a sloppy write may have counted the hint).
                None if self.in_pending_change(&target) => continue,
                None => None, // the target left: to the keys' replicas
            };
            let store = self.hint_store(&holder, &target)?;
            let mut touched = Touched::default();
            let batch_size = self.opts.transfer_batch;
            for slice in store_slices(store.as_ref(), batch_size)? {
                // Read a slice of the store before awaiting anything: the store's export
                // iterator is not `Send`, so it is not held across an await.
                let batches: Vec<Vec<Record>> = store
                    .export(0, &[slice], batch_size)?
                    .collect::<Result<_>>()?;
                for batch in batches {
                    // A membership change may have moved a key's range away from the target
                    // since the hint was written (or the target left): such a hinted write
                    // goes to the key's replicas now instead (it may be one a sloppy write
                    // counted).
                    let (mine, moved): (Vec<Record>, Vec<Record>) = match &dst {
                        Some(_) => batch
                            .into_iter()
                            .partition(|r| self.replicates(routing, &target, token(&r.key))),
                        None => (Vec::new(), batch),
                    };
                    if let Some(dst) = &dst {
                        changed +=
                            maintain::import(dst.as_ref(), routing.epoch(), &mine).await? as u64;
                    }
                    changed += self.redirect_async(routing, &moved, &mut touched).await?;
                }
            }
            if let Some(dst) = &dst {
                maintain::sync(dst.as_ref()).await?;
            }
            self.sync_touched_async(routing, &touched).await?;
            self.remove_store(&holder, &target)?;
        }
        Ok(changed)
    }

    /// Hands off every hint this cluster holds whose target is up again (and, in an
    /// in-process cluster, whose holder is up): into the target, synced there, then the
    /// store deleted. A hint whose target no longer replicates its key goes to the key's
    /// replicas now. Runs under the admin lock, as [`repair`](Cluster::repair) does first;
    /// [`hand_off_hints_async`](Cluster::hand_off_hints_async) run on the calling thread.
    /// Returns the hinted writes that changed a node.
    ///
    /// # Errors
    /// A node's error (what was not handed off stays for the next handoff).
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// assert_eq!(cluster.hand_off_hints()?, 0); // none held
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn hand_off_hints(&self) -> Result<u64> {
        crate::block::block_on(self.hand_off_hints_async())
    }

    /// [`hand_off_hints`](Cluster::hand_off_hints) as a future, for a caller on an async
    /// runtime: it waits for the admin gate and for the targets' answers without blocking a
    /// worker thread. The future is `Send`.
    ///
    /// # Errors
    /// As [`hand_off_hints`](Cluster::hand_off_hints).
    pub async fn hand_off_hints_async(&self) -> Result<u64> {
        let _admin = self.admin.acquire().await;
        let routing = self.routing();
        self.hand_off_async(&routing, &|_, _| true).await
    }

    /// Writes hinted `records`, whose target no longer replicates them, to their keys'
    /// replicas now (in both rings during a change): imported where up, kept as a hint for
    /// one that is down. Notes the nodes and hint stores written in `touched`; returns the
    /// records that changed a node.
    fn redirect(
        &self,
        routing: &Routing,
        records: &[Record],
        touched: &mut Touched,
    ) -> Result<u64> {
        crate::block::block_on(self.redirect_async(routing, records, touched))
    }

    /// [`redirect`](Cluster::redirect) as a future.
    async fn redirect_async(
        &self,
        routing: &Routing,
        records: &[Record],
        touched: &mut Touched,
    ) -> Result<u64> {
        let mut changed = 0u64;
        for r in records {
            let t = token(&r.key);
            for id in self.targets(routing, t)? {
                match routing.node(&id) {
                    Some(n) if !n.is_down() => {
                        let one = std::slice::from_ref(r);
                        changed += maintain::import(n.as_ref(), routing.epoch(), one).await? as u64;
                        if !touched.nodes.contains(&id) {
                            touched.nodes.push(id);
                        }
                    }
                    _ => {
                        let write = r.as_write();
                        touched.hints |= self.store_hint(routing, &id, t, write);
                    }
                }
            }
        }
        Ok(changed)
    }

    /// Makes what [`redirect`](Cluster::redirect) wrote durable, before the hint store it came
    /// from is deleted.
    fn sync_touched(&self, routing: &Routing, touched: &Touched) -> Result<()> {
        crate::block::block_on(self.sync_touched_async(routing, touched))
    }

    /// [`sync_touched`](Cluster::sync_touched) as a future.
    async fn sync_touched_async(&self, routing: &Routing, touched: &Touched) -> Result<()> {
        for id in &touched.nodes {
            if let Some(n) = routing.node(id) {
                maintain::sync(n.as_ref()).await?;
            }
        }
        if touched.hints {
            self.sync_hints()?;
        }
        Ok(())
    }

    /// Whether `id` is a member of the old or the new ring of the change pending, if any.
    fn in_pending_change(&self, id: &NodeId) -> bool {
        let meta = self.meta.lock();
        meta.change.as_ref().is_some_and(|c| {
            c.from_members
                .iter()
                .chain(&c.to_members)
                .any(|m| m.id == id.as_str())
        })
    }

    /// Closes and deletes the hint store of `(holder, target)`.
    fn remove_store(&self, holder: &NodeId, target: &NodeId) -> Result<()> {
        // The cache held the last handle: nobody else writes to the store now.
        self.hints
            .open
            .lock()
            .remove(&(holder.clone(), target.clone()));
        let dir = self.hint_dir(holder, target);
        self.opts.backend.destroy(target, &dir)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove directory", &dir, e)),
        }
    }

    /// Hands over the hints held by `leaver`, a node leaving the cluster, before its
    /// directory (hints included) is deleted; `routing` no longer routes it. Each hint goes
    /// to its target if that is up (then synced; a key it no longer replicates to the key's
    /// replicas now), else into a hint store on the live node
    /// [`hint_holder`](Cluster::hint_holder) picks now. A leaver that is down (`leaver_up`
    /// false) hands nothing over: its hints go with its directory. Hints *for* the leaver, on
    /// other nodes, go to their keys' replicas now, and their stores are deleted (a node
    /// added later under the same id must not receive them). Returns the records that
    /// changed a node or were kept by a new holder.
    ///
    /// Idempotent (last-writer-wins), so a crash midway is rolled forward by doing it again;
    /// runs with the admin lock held, after the routing without the leaver is installed and
    /// drained, so no client adds a hint to the leaver's stores meanwhile.
    pub(crate) fn hand_over_hints(
        &self,
        routing: &Routing,
        leaver: &NodeId,
        leaver_up: bool,
    ) -> Result<u64> {
        let mut moved = 0u64;
        for (holder, target) in self.hint_pairs()? {
            if holder != *leaver && target != *leaver {
                continue;
            }
            if holder == *leaver && !leaver_up {
                // Unreachable with the node; deleted with its directory.
                continue;
            }
            let store = self.hint_store(&holder, &target)?;
            let mut touched = Touched::default();
            if target == *leaver {
                // Hints for the leaver: their keys' ranges went to other nodes, which get
                // them (a sloppy write may have counted one).
                for batch in store.export(0, &[TokenRange::FULL], self.opts.transfer_batch)? {
                    moved += self.redirect(routing, &batch?, &mut touched)?;
                }
            } else {
                match routing.node(&target) {
                    // The target left too (or is not routed): to the keys' replicas.
                    None => {
                        for batch in
                            store.export(0, &[TokenRange::FULL], self.opts.transfer_batch)?
                        {
                            moved += self.redirect(routing, &batch?, &mut touched)?;
                        }
                    }
                    Some(dst) if !dst.is_down() => {
                        for batch in
                            store.export(0, &[TokenRange::FULL], self.opts.transfer_batch)?
                        {
                            let (mine, elsewhere): (Vec<Record>, Vec<Record>) = batch?
                                .into_iter()
                                .partition(|r| self.replicates(routing, &target, token(&r.key)));
                            moved += dst.import(routing.epoch(), &mine)? as u64;
                            moved += self.redirect(routing, &elsewhere, &mut touched)?;
                        }
                        dst.sync()?;
                    }
                    Some(_) => {
                        for batch in
                            store.export(0, &[TokenRange::FULL], self.opts.transfer_batch)?
                        {
                            for r in batch? {
                                let t = token(&r.key);
                                let Some(next) = self.hint_holder(routing, &target, t) else {
                                    continue; // no live holder left: repair restores it
                                };
                                let write = r.as_write();
                                let next = self.hint_store(&next, &target)?;
                                next.apply(0, write)?;
                                moved += 1;
                            }
                        }
                        // The new holders' stores are as durable as the old one was.
                        for (h, t) in self.hint_pairs()? {
                            if t == target && h != *leaver {
                                self.hint_store(&h, &t)?.sync()?;
                            }
                        }
                    }
                }
            }
            self.sync_touched(routing, &touched)?;
            self.remove_store(&holder, &target)?;
        }
        Ok(moved)
    }

    /// Whether `node` is a replica of `token` in the ring or the pending ring.
    fn replicates(&self, routing: &Routing, node: &NodeId, token: u64) -> bool {
        let of = |ring: &kv_ring::Ring| {
            ring.preference_list(token, self.rf)
                .is_ok_and(|l| l.contains(node.as_str()))
        };
        of(&routing.ring) || routing.pending.as_ref().is_some_and(of)
    }

    /// Closes the hint stores whose holder or target is no longer routed (it left: the
    /// holder's directory, hints included, is gone; hints for a leaver went to their keys'
    /// replicas).
    pub(crate) fn close_departed_hints(&self, routing: &Routing) {
        self.hints
            .open
            .lock()
            .retain(|(h, t), _| routing.node(h).is_some() && routing.node(t).is_some());
    }

    /// Every `(holder, target)` with a hint store on disk or open.
    fn hint_pairs(&self) -> Result<Vec<(NodeId, NodeId)>> {
        let mut pairs: Vec<(NodeId, NodeId)> = self.hints.open.lock().keys().cloned().collect();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => return Err(Error::io("read directory", &self.dir, e)),
        };
        for holder in entries.flatten() {
            let Ok(holder_id) = NodeId::new(holder.file_name().to_string_lossy()) else {
                continue;
            };
            let Ok(targets) = std::fs::read_dir(holder.path().join(HINTS_DIR)) else {
                continue;
            };
            for target in targets.flatten() {
                if let Ok(target_id) = NodeId::new(target.file_name().to_string_lossy()) {
                    let pair = (holder_id.clone(), target_id);
                    if !pairs.contains(&pair) {
                        pairs.push(pair);
                    }
                }
            }
        }
        pairs.sort();
        Ok(pairs)
    }

    /// Syncs every open hint store.
    pub(crate) fn sync_hints(&self) -> Result<()> {
        let stores: Vec<Arc<dyn Replica>> = self.hints.open.lock().values().cloned().collect();
        stores.iter().try_for_each(|s| s.sync())
    }

    /// Hints held, counted from the open stores (a diagnostic).
    pub(crate) fn hints_pending(&self) -> u64 {
        self.hints_by_target().values().sum()
    }

    /// Hinted writes this cluster (this process, in a cluster of processes) holds for node
    /// `target`, in every holder's store: what a handoff to it would replay. Counted from
    /// the stores' counters (no scan); a store left on disk by a previous process counts
    /// once the cluster opened it (at [`Cluster::open`], or at its next hinted write).
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// cluster.fail_node("node2")?;
    /// cluster.put(b"k", b"v")?;
    /// assert_eq!(cluster.hints_pending_for("node2"), 1);
    /// cluster.recover_node("node2")?; // handed off
    /// assert_eq!(cluster.hints_pending_for("node2"), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn hints_pending_for(&self, target: &str) -> u64 {
        self.hints_by_target()
            .into_iter()
            .find(|(t, _)| t.as_str() == target)
            .map_or(0, |(_, n)| n)
    }

    /// Hinted writes held per target node (only targets with a store open), in id order.
    pub(crate) fn hints_by_target(&self) -> std::collections::BTreeMap<NodeId, u64> {
        // Copied out first: a store's counters are read without the map's lock held.
        let stores: Vec<(NodeId, Arc<dyn Replica>)> = self
            .hints
            .open
            .lock()
            .iter()
            .map(|((_, target), s)| (target.clone(), Arc::clone(s)))
            .collect();
        let mut out = std::collections::BTreeMap::new();
        for (target, store) in stores {
            let held = store.held().map_or(0, |c| c.live + c.tombstones);
            *out.entry(target).or_insert(0) += held;
        }
        out
    }

    /// Opens every hint store found on disk (best effort: one that fails to open is
    /// retried by its next use), so that [`hints_pending_for`](Cluster::hints_pending_for)
    /// counts the hints a previous process left.
    pub(crate) fn open_hint_stores(&self) {
        if let Ok(pairs) = self.hint_pairs() {
            for (holder, target) in pairs {
                let _ = self.hint_store(&holder, &target);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{ClusterOptions, MemoryBackend};

    /// Hints a leaver held for a target that is still down move to another live holder, and
    /// reach the target when it recovers: its repair then finds nothing to fix.
    #[test]
    fn hints_for_a_down_target_move_to_another_holder() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ClusterOptions::new()
            .backend(Arc::new(MemoryBackend::default()))
            .initial_nodes(["n1", "n2", "n3", "n4", "n5"]);
        let cluster = Cluster::open(dir.path(), opts).unwrap();
        cluster.fail_node("n1").unwrap();
        for i in 0..300u32 {
            cluster.put(&i.to_be_bytes(), b"while down").unwrap();
        }
        let target = NodeId::new("n1").unwrap();
        let pairs = cluster.hint_pairs().unwrap();
        let (leaver, _) = pairs.iter().find(|(_, t)| *t == target).unwrap().clone();
        let before = cluster.hints_pending();

        // The routing once the leaver is gone (as the change's cleanup sees it).
        let mut routing = (*cluster.routing()).clone();
        routing.ring = routing.ring.remove_node(leaver.as_str()).unwrap();
        routing.nodes.remove(&leaver);
        let moved = cluster.hand_over_hints(&routing, &leaver, true).unwrap();
        assert!(moved > 0);
        let after = cluster.hint_pairs().unwrap();
        assert!(after.iter().all(|(h, _)| *h != leaver), "{after:?}");
        assert!(
            !dir.path()
                .join(leaver.as_str())
                .join(HINTS_DIR)
                .join("n1")
                .exists()
        );
        // Moved, not copied: as many hints as before, on the other holders.
        assert_eq!(cluster.hints_pending(), before);

        let r = cluster.recover_node("n1").unwrap();
        assert_eq!(r.hints_applied, before);
        assert_eq!(r.repair.keys_repaired, 0, "{r:?}");
    }
}
