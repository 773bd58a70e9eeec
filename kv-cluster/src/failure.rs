//! Failing and recovering nodes: `fail_node`, `crash_node`, `recover_node`.
//!
//! Lock order: each runs under `admin`, taking `health` and the routing stripes as leaves
//! (`docs/design.md`, *Concurrency and lock order*).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kv_ring::NodeId;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::health::{Down, DownReplica, Health};
use crate::repair::RepairSummary;
use crate::replica::Replica;
use crate::routing::Routing;

/// What [`Cluster::recover_node`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoverySummary {
    /// The node.
    pub node: NodeId,
    /// How long it was down (by the wall clock).
    pub down_for: Duration,
    /// Whether it was reopened from its directory (it had crashed) rather than reconnected.
    pub reopened: bool,
    /// Hinted writes handed off (to it, and from hints it holds for others) that changed a
    /// node.
    pub hints_applied: u64,
    /// The anti-entropy repair of the ranges it replicates.
    pub repair: RepairSummary,
}

impl Cluster {
    /// Takes node `id` down as a partition would: from now on its handle refuses every call
    /// ([`Error::NodeDown`]), the node itself stays open. Writes that should reach it are
    /// kept as hints on a live node; reads skip it; an operation that cannot reach its
    /// consistency level without it fails with [`Error::Unavailable`] at once.
    ///
    /// Health is the coordinator's view, kept in memory: a reopened cluster opens every
    /// member.
    ///
    /// # Errors
    /// [`Error::UnknownNode`]; [`Error::NodeDown`] if it is already down.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, Consistency, Error, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// cluster.fail_node("node2")?;
    /// cluster.put(b"k", b"v")?; // quorum: node1 and node3 acknowledge, node2 gets a hint
    /// cluster.fail_node("node3")?;
    /// assert!(matches!(cluster.put(b"k", b"w"), Err(Error::Unavailable { .. })));
    /// // node3 comes back, then node2, which gets the hinted write (from whichever of node1
    /// // and node3 held it).
    /// let a = cluster.recover_node("node3")?;
    /// let b = cluster.recover_node("node2")?;
    /// assert_eq!(a.hints_applied + b.hints_applied, 1);
    /// assert_eq!(cluster.get(b"k")?.as_deref(), Some(&b"v"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fail_node(&self, id: &str) -> Result<()> {
        self.take_down(id, false)
    }

    /// As [`fail_node`](Cluster::fail_node), as a crash: the node's handle is dropped
    /// without clean shutdown (no sync, no close), and [`recover_node`](Cluster::recover_node)
    /// reopens it from its directory (WAL recovery).
    ///
    /// # Errors
    /// As [`fail_node`](Cluster::fail_node).
    pub fn crash_node(&self, id: &str) -> Result<()> {
        self.take_down(id, true)
    }

    fn take_down(&self, id: &str, crash: bool) -> Result<()> {
        let _admin = self.admin.lock();
        let node = NodeId::new(id)?;
        let routing = self.routing();
        let Some(handle) = routing.node(&node).cloned() else {
            return Err(Error::UnknownNode { node: id.into() });
        };
        if handle.is_down() {
            return Err(Error::NodeDown { node });
        }
        let down: Arc<dyn Replica> = Arc::new(DownReplica { id: node.clone() });
        let next = with_node(&routing, &node, down);
        // Our snapshot must go before the install, which waits for every holder of it.
        drop(routing);
        self.install(next);
        // Installed and drained: no operation holds the real handle any more.
        let parked = (!crash).then_some(handle);
        self.health.lock().insert(
            node,
            Down {
                since: SystemTime::now(),
                parked,
                unopened: false,
            },
        );
        Ok(())
    }

    /// Brings node `id` back: reconnects it (after [`fail_node`](Cluster::fail_node)) or
    /// reopens it from its own directory (after [`crash_node`](Cluster::crash_node): the
    /// storage node recovers from its log before it serves), routes to it again, hands off
    /// the hints held for it (and those it holds for others), then repairs the ranges it
    /// replicates with anti-entropy.
    ///
    /// # Errors
    /// [`Error::UnknownNode`]; [`Error::NodeNotDown`]; the node's error if it cannot be
    /// reopened (it stays down); a node's error during handoff or repair (it is up by then;
    /// run [`repair`](Cluster::repair) again).
    pub fn recover_node(&self, id: &str) -> Result<RecoverySummary> {
        let _admin = self.admin.lock();
        self.recover_locked(NodeId::new(id)?)
    }

    /// [`recover_node`](Cluster::recover_node) with the admin lock held.
    pub(crate) fn recover_locked(&self, node: NodeId) -> Result<RecoverySummary> {
        let routing = self.routing();
        match routing.node(&node) {
            None => {
                return Err(Error::UnknownNode {
                    node: node.to_string(),
                });
            }
            Some(h) if !h.is_down() => return Err(Error::NodeNotDown { node }),
            Some(_) => {}
        }
        let Some(down) = self.health.lock().remove(&node) else {
            return Err(Error::NodeNotDown { node });
        };
        let reopened = down.parked.is_none();
        let handle = match down.parked {
            Some(h) => h,
            None => match self.opts.backend.open(&node, &self.dir.join(node.as_str())) {
                Ok(h) => h,
                Err(e) => {
                    let again = Down {
                        since: down.since,
                        parked: None,
                        unopened: down.unopened,
                    };
                    self.health.lock().insert(node, again);
                    return Err(e);
                }
            },
        };
        handle.fence(routing.epoch());
        let next = with_node(&routing, &node, handle);
        drop(routing);
        self.install(next);
        let routing = self.routing();
        let hints_applied = self.hand_off(&routing, &|holder, target| {
            *target == node || *holder == node
        })?;
        let repair = self.repair_where(&routing, &|replicas| replicas.contains(&node))?;
        Ok(RecoverySummary {
            node,
            down_for: down.since.elapsed().unwrap_or_default(),
            reopened,
            hints_applied,
            repair,
        })
    }

    /// The nodes routed as down because the cluster could not open them, in id order.
    pub(crate) fn unopened_nodes(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .health
            .lock()
            .iter()
            .filter(|(_, d)| d.unopened)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Node `id`'s health as the coordinator sees it; `None` for a non-member.
    pub fn health(&self, id: &str) -> Option<Health> {
        let node = NodeId::new(id).ok()?;
        self.routing().node(&node)?;
        Some(match self.health.lock().get(&node) {
            Some(d) => Health::Down { since: d.since },
            None => Health::Up,
        })
    }

    /// Forgets the health of nodes that are no longer routed (they left).
    pub(crate) fn forget_departed(&self) {
        let routing = self.routing();
        self.health
            .lock()
            .retain(|id, _| routing.node(id).is_some());
        self.close_departed_hints(&routing);
    }
}

/// `routing` with `id`'s handle replaced.
fn with_node(routing: &Routing, id: &NodeId, handle: Arc<dyn Replica>) -> Routing {
    let mut next = routing.clone();
    next.nodes.insert(id.clone(), handle);
    next
}
