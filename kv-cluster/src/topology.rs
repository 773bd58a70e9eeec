//! Routing decided outside this process: a [`Topology`] installed with
//! [`Cluster::install_topology`] (`docs/membership.md` §1.3, §3.1).
//!
//! A node process's membership is kept by a metadata service (kv-meta, over raft), which
//! turns each routing step of a change into a `Topology` and hands it here. The mapping to
//! the coordinator's routing is direct: `read` is the ring reads use and writes always
//! reach, `extra_write` the ring writes reach besides (acknowledged when `W` of each set
//! answered):
//!
//! | step | `read` | `extra_write` | routing |
//! |---|---|---|---|
//! | stable, `Final` | the ring | `None` | `{ ring, pending: None }` |
//! | `Pending`, streaming | old | `Some(new)` | `{ ring: old, pending: Some(new) }` |
//! | `Mid` (`mid: true`) | new | `Some(old)` | `{ ring: new, pending: Some(old) }` |
//!
//! Rings are rebuilt from the members' stored tokens, never recomputed (a balanced ring
//! depends on the order of past changes), at the topology's epoch, which every replica
//! operation then carries: the metadata epoch, one per step, not a ring's own count.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use kv_ring::{NodeId, Ring};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::meta::{MemberMeta, build_ring};
use crate::routing::{NodeMap, Routing};

/// One member of a ring as metadata stores it: its id, weight and ring tokens.
///
/// # Example
/// ```
/// use kv_cluster::RingMember;
/// use kv_ring::{Ring, RingOptions};
///
/// let ring = Ring::with_nodes(RingOptions::default(), ["a", "b", "c"])?;
/// let members = RingMember::of_ring(&ring);
/// assert_eq!(members.len(), 3);
/// assert_eq!(members[0].tokens, ring.tokens_of("a").unwrap());
/// # Ok::<(), kv_ring::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RingMember {
    /// The node.
    pub id: NodeId,
    /// Its weight (1.0: an average node's share).
    pub weight: f64,
    /// Its ring tokens, as allocated when it joined.
    pub tokens: Vec<u64>,
}

impl RingMember {
    /// The members of `ring`, in its order, with their tokens.
    pub fn of_ring(ring: &Ring) -> Vec<RingMember> {
        ring.nodes()
            .map(|id| RingMember {
                id: id.clone(),
                weight: ring.weight_of(id.as_str()).unwrap_or(1.0),
                tokens: ring.tokens_of(id.as_str()).unwrap_or_default().to_vec(),
            })
            .collect()
    }
}

/// A routing step decided by the cluster's metadata: what [`Cluster::install_topology`]
/// installs. A plain value: kv-meta builds one from each applied entry that changes routing.
///
/// The same epoch always means the same topology (the metadata bumps its epoch with every
/// routing change), so installing an epoch twice does nothing the second time.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// The metadata epoch: every replica operation routed by this topology carries it, and
    /// replicas fenced above it refuse it.
    pub epoch: u64,
    /// The ring reads use; writes reach its replicas too.
    pub read: Vec<RingMember>,
    /// During a change, the other ring writes reach as well (the new one in `Pending`, the
    /// old one in `Mid`); `None` when stable or `Final`.
    pub extra_write: Option<Vec<RingMember>>,
    /// Whether `read` is the change's new ring and `extra_write` its old one (the `Mid`
    /// step). Routing does not depend on it (reads `read`, writes both either way); it says
    /// which nodes [`Cluster::nodes`](crate::Cluster::nodes) shows as joining or leaving.
    pub mid: bool,
    /// Each member's coordinator slot (`kv_node::Hlc::with_slot`), for display and for the
    /// node process to check its own; kv-cluster checks only that they are distinct and in
    /// range.
    pub slots: BTreeMap<NodeId, u8>,
}

impl Topology {
    /// A stable topology: `members` for reads and writes, no change, no slots.
    ///
    /// # Example
    /// ```
    /// use kv_cluster::{RingMember, Topology};
    /// use kv_ring::{Ring, RingOptions};
    ///
    /// let ring = Ring::with_nodes(RingOptions::default(), ["a", "b", "c"])?;
    /// let t = Topology::stable(7, RingMember::of_ring(&ring));
    /// assert_eq!((t.epoch, t.extra_write.is_none()), (7, true));
    /// # Ok::<(), kv_ring::Error>(())
    /// ```
    pub fn stable(epoch: u64, members: Vec<RingMember>) -> Topology {
        Topology {
            epoch,
            read: members,
            extra_write: None,
            mid: false,
            slots: BTreeMap::new(),
        }
    }

    /// Every member of either ring, each once: the nodes the routing needs handles for.
    fn members(&self) -> impl Iterator<Item = &RingMember> {
        let extra = self.extra_write.iter().flatten();
        self.read
            .iter()
            .chain(extra.filter(|m| !self.read.iter().any(|r| r.id == m.id)))
    }

    /// What is wrong with it, checked before anything is built: rings that cannot hold `rf`
    /// replicas, slots out of range or shared.
    fn check(&self, rf: usize) -> Result<()> {
        let invalid = |reason: String| Error::InvalidTopology {
            epoch: self.epoch,
            reason,
        };
        let rings = std::iter::once(("read", &self.read))
            .chain(self.extra_write.iter().map(|w| ("extra_write", w)));
        for (name, ring) in rings {
            if ring.len() < rf {
                return Err(invalid(format!(
                    "its {name} ring has {} members, fewer than the replication factor {rf}",
                    ring.len()
                )));
            }
        }
        let mut taken = [false; kv_node::MAX_SLOTS as usize];
        for (id, &slot) in &self.slots {
            match taken.get_mut(usize::from(slot)) {
                None => {
                    return Err(invalid(format!(
                        "node {id}'s slot {slot} is out of range (0..{})",
                        kv_node::MAX_SLOTS
                    )));
                }
                Some(true) => return Err(invalid(format!("slot {slot} is given twice"))),
                Some(t) => *t = true,
            }
        }
        Ok(())
    }
}

/// `members` as stored in `cluster.json`, to rebuild a ring from.
fn stored(members: &[RingMember]) -> Vec<MemberMeta> {
    members
        .iter()
        .map(|m| MemberMeta {
            id: m.id.to_string(),
            weight: m.weight,
            tokens: m.tokens.clone(),
        })
        .collect()
}

impl Cluster {
    /// Routes by `topology` from now on: builds its rings from the members' tokens, opens a
    /// handle (through the [`Backend`](crate::Backend)) for every member not routed yet,
    /// and installs the routing as a membership change does: once this returns, no client
    /// operation routed by an older topology is still running (an operation never mixes two
    /// snapshots). Returns whether it installed anything.
    ///
    /// **Epochs only rise.** A topology of the epoch already installed is not installed
    /// again (`Ok(false)`: the metadata redelivers an epoch with entries that do not change
    /// routing); one of a lower epoch is refused ([`Error::EpochRegressed`]) and routing
    /// stays where it is. The first topology installed may carry the epoch of the ring the
    /// cluster opened with (then it replaces that ring), not a lower one: [`Cluster::open`]
    /// fenced the replicas it opened at that epoch, and they would refuse a lower one.
    ///
    /// From the first install on the cluster runs on an external topology (as with
    /// [`ClusterOptions::external_topology`](crate::ClusterOptions::external_topology)):
    /// membership changes here are refused, and a client operation refused as stale by a
    /// replica waits for a newer topology and is retried once (see
    /// [`Error::StaleCoordinator`]). Nothing is written to `cluster.json` (the metadata
    /// service keeps the membership) and no replica is fenced (its barriers do that); handles
    /// of nodes in neither ring are dropped from the routing.
    ///
    /// # Errors
    /// [`Error::EpochRegressed`]; [`Error::InvalidTopology`] for a ring with fewer members
    /// than the replication factor, or a bad slot; [`Error::Ring`] for members that do not
    /// make a ring (a token given twice, a bad weight); a backend's error opening a new
    /// member. Routing is unchanged on any error.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, Error, MemoryBackend, RingMember, Topology};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// let members = RingMember::of_ring(&cluster.ring());
    /// assert!(cluster.install_topology(Topology::stable(10, members.clone()))?);
    /// assert!(!cluster.install_topology(Topology::stable(10, members.clone()))?);
    /// assert!(matches!(
    ///     cluster.install_topology(Topology::stable(9, members)),
    ///     Err(Error::EpochRegressed { installed: 10, offered: 9 })
    /// ));
    /// assert_eq!(cluster.topology_epoch(), 10);
    /// cluster.put(b"k", b"v")?; // carries epoch 10
    /// assert!(matches!(cluster.add_node("node4"), Err(Error::ExternalMetadata { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn install_topology(&self, topology: Topology) -> Result<bool> {
        crate::block::block_on(self.install_topology_async(topology))
    }

    /// [`install_topology`](Cluster::install_topology) for a task on an async runtime: it
    /// awaits the admin gate and the drain instead of blocking its worker, so the client
    /// operations it waits for (and every other task) keep running on that worker meanwhile.
    /// The drain is handed to a short-lived thread that wakes this future when no operation
    /// holds the old routing any more (an `Arc` does not announce its last drop; see
    /// `routing.rs`'s `Drained`). The same semantics, errors and guarantees as the blocking
    /// form, which runs this future on the calling thread.
    ///
    /// **Cancellation**: dropped before the swap, nothing is installed; dropped while it
    /// drains, the new routing stays installed (and shown by [`topology`](Cluster::topology))
    /// and only the wait for the old routing's operations (and the cleanup after it) is
    /// abandoned.
    ///
    /// # Errors
    /// As [`install_topology`](Cluster::install_topology).
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend, RingMember, Topology};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// let members = RingMember::of_ring(&cluster.ring());
    /// assert!(cluster.install_topology_async(Topology::stable(10, members)).await?);
    /// assert_eq!(cluster.topology_epoch(), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn install_topology_async(&self, topology: Topology) -> Result<bool> {
        topology.check(self.rf)?;
        let _admin = self.admin.acquire().await;
        let Some(next) = self.prepare_topology(&topology)? else {
            return Ok(false);
        };
        self.external.store(true, Ordering::Release);
        let epoch = next.epoch();
        let old = self.routing.swap(next, || self.epochs.publish(epoch));
        // Recorded with the swap, not after the drain: a future dropped while it drains
        // leaves the new routing installed (its drain thread runs on), and `topology()` must
        // say so.
        *self.topology.lock() = Some(topology);
        // Outside a runtime (the blocking `install_topology`) there is no timer to look on.
        if self.opts.drain_on_timer && tokio::runtime::Handle::try_current().is_ok() {
            crate::routing::Drained::on_timer(old).await;
        } else {
            crate::routing::Drained::new(old).await;
        }
        // Health and hint stores of nodes no longer routed: after the drain, since an
        // operation of the old routing may still write a hint for one of them.
        self.forget_departed();
        Ok(true)
    }

    /// The routing `topology` installs, or `None` if its epoch is installed already. Runs
    /// under the admin gate; nothing in it waits.
    fn prepare_topology(&self, topology: &Topology) -> Result<Option<Routing>> {
        let installed = self.epochs.current();
        if topology.epoch < installed {
            return Err(Error::EpochRegressed {
                installed,
                offered: topology.epoch,
            });
        }
        if topology.epoch == installed && self.topology.lock().is_some() {
            return Ok(None);
        }
        let options = self.meta.lock().ring_options()?;
        let read = build_ring(options, &stored(&topology.read), topology.epoch)?;
        let extra = match &topology.extra_write {
            Some(members) => Some(build_ring(options, &stored(members), topology.epoch)?),
            None => None,
        };
        let current = self.routing();
        let mut nodes = NodeMap::default();
        for m in topology.members() {
            let node = match current.node(&m.id) {
                Some(n) => Arc::clone(n),
                None => self
                    .opts
                    .backend
                    .open(&m.id, &self.dir.join(m.id.as_str()))?,
            };
            nodes.insert(m.id.clone(), node);
        }
        let mut next = Routing::with_epoch(read, extra, nodes, topology.epoch);
        next.mid = topology.mid && topology.extra_write.is_some();
        // `current` drops here: ours must go before the drain, which waits for every holder.
        Ok(Some(next))
    }

    /// The epoch of the routing installed last: a ring's own epoch in process, the
    /// metadata epoch of the last [`install_topology`](Cluster::install_topology).
    pub fn topology_epoch(&self) -> u64 {
        self.epochs.current()
    }

    /// The topology installed last by [`install_topology`](Cluster::install_topology), if
    /// any.
    pub fn topology(&self) -> Option<Topology> {
        self.topology.lock().clone()
    }

    /// Whether this cluster's membership comes from outside (see
    /// [`install_topology`](Cluster::install_topology)).
    pub fn has_external_topology(&self) -> bool {
        self.is_external()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use super::*;
    use crate::{ClusterOptions, MemoryBackend};

    /// An install on a one-worker runtime waits for an operation in flight (a task holding
    /// the old routing, as a put waiting on a remote replica does) without blocking the
    /// worker: the operation's task and a ticking task both run while the install waits,
    /// and the install finishes once the operation lets go. A blocking drain on this worker
    /// would wait forever for a task that could never run.
    #[test]
    fn install_async_leaves_the_worker_to_other_tasks() {
        // On a thread of its own: a blocking drain would hang the runtime, and this thread
        // then fails the test instead of hanging with it.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(install_on_one_worker());
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("the install blocked the only worker (or the test failed)");
    }

    async fn install_on_one_worker() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
        let cluster = Arc::new(Cluster::open(dir.path(), opts).unwrap());
        let members = RingMember::of_ring(&cluster.ring());

        let ticks = Arc::new(AtomicU64::new(0));
        let ticker = {
            let ticks = Arc::clone(&ticks);
            tokio::spawn(async move {
                loop {
                    ticks.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let before = cluster.topology_epoch();
        assert!(before < 10);
        // The operation in flight: it holds the routing it started with until released.
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let in_flight = {
            let held = cluster.routing();
            tokio::spawn(async move {
                let _ = released.await;
                held.epoch()
            })
        };
        let install = {
            let c = Arc::clone(&cluster);
            let m = members.clone();
            tokio::spawn(async move { c.install_topology_async(Topology::stable(10, m)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!install.is_finished(), "the install ended before the drain");
        let seen = ticks.load(Ordering::SeqCst);
        assert!(seen >= 5, "the ticker ran {seen} times during the install");
        // New operations already route by the new topology while the old one drains.
        assert_eq!(cluster.topology_epoch(), 10);
        cluster.put(b"k", b"v").unwrap();

        release.send(()).unwrap();
        assert_eq!(in_flight.await.unwrap(), before);
        let installed = tokio::time::timeout(Duration::from_secs(5), install)
            .await
            .expect("the install never finished after the drain")
            .unwrap()
            .unwrap();
        assert!(installed);
        assert_eq!(
            cluster.topology(),
            Some(Topology::stable(10, members.clone()))
        );
        // Installing the same epoch again does nothing, asynchronously too.
        assert!(
            !cluster
                .install_topology_async(Topology::stable(10, members))
                .await
                .unwrap()
        );
        ticker.abort();
    }

    /// With `drain_on_timer`, the install waits for an operation in flight on the runtime's
    /// timer and keeps no reference to the old routing: abandoned after the swap, it leaves
    /// the operation the only holder (no thread drops it later); awaited, it finishes once
    /// the operation lets go.
    #[test]
    fn install_drains_on_the_timer_without_holding_the_old_routing() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let opts = ClusterOptions::new()
                .backend(Arc::new(MemoryBackend::default()))
                .drain_on_timer(true);
            let cluster = Arc::new(Cluster::open(dir.path(), opts).unwrap());
            let members = RingMember::of_ring(&cluster.ring());
            let held = cluster.routing();
            assert_eq!(Arc::strong_count(&held), 2, "ours and the routing table's");

            // Abandoned after one look: the routing is swapped, and nothing but `held`
            // keeps the old one.
            let abandoned = tokio::time::timeout(
                Duration::from_millis(20),
                cluster.install_topology_async(Topology::stable(10, members.clone())),
            )
            .await;
            assert!(abandoned.is_err(), "the install ended before the drain");
            assert_eq!(cluster.topology_epoch(), 10);
            assert_eq!(Arc::strong_count(&held), 1, "the old routing is still held");

            // Awaited: it looks again on the timer and ends once the operation lets go.
            let held = cluster.routing();
            let install = {
                let c = Arc::clone(&cluster);
                tokio::spawn(async move {
                    c.install_topology_async(Topology::stable(11, members))
                        .await
                })
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(!install.is_finished(), "the install ended before the drain");
            drop(held);
            let installed = tokio::time::timeout(Duration::from_secs(5), install)
                .await
                .expect("the install never saw the drain")
                .unwrap()
                .unwrap();
            assert!(installed);
            assert_eq!(cluster.topology_epoch(), 11);
        });
    }
}
