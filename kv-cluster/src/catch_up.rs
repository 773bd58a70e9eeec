//! Catching a node up: [`Cluster::catch_up`], and what it is doing now and did last, per node.
//!
//! Lock order: `catch_up` runs under `admin`; the status map (`CatchUps::by_node`) is a leaf,
//! held only to copy or replace one entry (`docs/design.md`, *Concurrency and lock order*).
//!
//! `catch_up` records its own progress, so every caller (the node process's peer watcher, a
//! test, an operator's tool) is seen the same way: [`Cluster::catch_up_status`] and
//! [`Cluster::nodes`] report the phase running (`hints`, then `repair`) and the last
//! catch-up's result. The status lives in memory: a restarted process starts with none.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kv_ring::NodeId;
use parking_lot::Mutex;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::failure::RecoverySummary;

/// What a running [`Cluster::catch_up`] is doing.
///
/// # Example
/// ```
/// assert_eq!(kv_cluster::CatchUpPhase::Hints.as_str(), "hints");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CatchUpPhase {
    /// Handing off the hints held for the node (and those it holds for others).
    Hints,
    /// Repairing the ranges the node replicates (Merkle anti-entropy).
    Repair,
}

impl CatchUpPhase {
    /// `hints` or `repair`, as `KVSTORE NODES` and `INFO` print it.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUpPhase::Hints => "hints",
            CatchUpPhase::Repair => "repair",
        }
    }
}

/// How the last [`Cluster::catch_up`] of a node ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CatchUpOutcome {
    /// Hinted writes handed off that changed a node (zero if the handoff itself failed).
    pub hints_applied: u64,
    /// Keys the repair wrote to a replica that lacked them (zero if it did not finish).
    pub keys_repaired: u64,
    /// When it finished.
    pub finished: SystemTime,
    /// How long it ran (once it held the admin lock).
    pub elapsed: Duration,
    /// Why it failed, if it did (the caller retries).
    pub error: Option<String>,
}

/// A node's catch-up, as [`Cluster::catch_up_status`] reports it.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
///
/// let dir = tempfile::tempdir()?;
/// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
/// let cluster = Cluster::open(dir.path(), opts)?;
/// assert_eq!(cluster.catch_up_status("node2"), Default::default());
/// cluster.catch_up("node2")?;
/// let status = cluster.catch_up_status("node2");
/// assert_eq!(status.running, None);
/// let last = status.last.expect("recorded");
/// assert_eq!((last.hints_applied, last.keys_repaired, last.error), (0, 0, None));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CatchUpStatus {
    /// The phase running now, if a catch-up of the node runs.
    pub running: Option<CatchUpPhase>,
    /// The last catch-up that finished (or failed), if any since the process started.
    pub last: Option<CatchUpOutcome>,
}

/// The catch-up status of every node caught up (or being caught up) since the cluster
/// opened.
#[derive(Debug, Default)]
pub(crate) struct CatchUps {
    by_node: Mutex<HashMap<NodeId, CatchUpStatus>>,
}

impl CatchUps {
    fn set_phase(&self, node: &NodeId, phase: CatchUpPhase) {
        self.by_node.lock().entry(node.clone()).or_default().running = Some(phase);
    }

    fn finish(&self, node: &NodeId, outcome: CatchUpOutcome) {
        let mut map = self.by_node.lock();
        let status = map.entry(node.clone()).or_default();
        status.running = None;
        status.last = Some(outcome);
    }

    pub(crate) fn get(&self, node: &NodeId) -> CatchUpStatus {
        self.by_node.lock().get(node).cloned().unwrap_or_default()
    }
}

impl Cluster {
    /// Catches up member `id` after its handle reported [`is_down`](crate::Replica::is_down)
    /// for a while and now reports it up again (a networked replica whose heartbeats stopped
    /// and resumed): hands off the hints held for it, and those it holds for others, then
    /// repairs the ranges it replicates, as [`recover_node`](Cluster::recover_node) does
    /// after reconnecting a node. No [`fail_node`](Cluster::fail_node) is needed first: the
    /// handle is not replaced, and the coordinator's health entry, if any, is left alone.
    /// The node process calls it from the watcher that sees a peer come back.
    /// [`catch_up_async`](Cluster::catch_up_async) run on the calling thread.
    ///
    /// While it runs, [`catch_up_status`](Cluster::catch_up_status) (and
    /// [`nodes`](Cluster::nodes)) report its phase, [`CatchUpPhase::Hints`] then
    /// [`CatchUpPhase::Repair`]; once it ends, its result (or error) as the last catch-up.
    ///
    /// `down_for` is zero and `reopened` false in the summary: the coordinator did not take
    /// the node down, so it does not know since when it was.
    ///
    /// # Errors
    /// [`Error::UnknownNode`]; [`Error::NodeDown`] if the handle still reports the node down
    /// (neither is recorded as a catch-up); a node's error during handoff or repair (recorded;
    /// run it again).
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
    /// let summary = cluster.catch_up("node2")?; // nothing was missed
    /// assert_eq!((summary.hints_applied, summary.repair.keys_repaired), (0, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn catch_up(&self, id: &str) -> Result<RecoverySummary> {
        crate::block::block_on(self.catch_up_async(id))
    }

    /// [`catch_up`](Cluster::catch_up) as a future, for a caller on an async runtime (the
    /// node process's watcher runs it as a task): it waits for the admin gate and on the
    /// replicas across the network (hint imports, digests, export pages, syncs) without
    /// blocking a worker thread, and spawns nothing. The future is `Send`. Times
    /// (`elapsed`, `finished`) are read from the cluster's clock
    /// ([`ClusterOptions::clock`](crate::ClusterOptions::clock)).
    ///
    /// # Errors
    /// As [`catch_up`](Cluster::catch_up).
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Arc::new(Cluster::open(dir.path(), opts)?);
    /// cluster.put(b"k", b"v")?;
    /// let rt = tokio::runtime::Builder::new_current_thread().build()?;
    /// let c = Arc::clone(&cluster);
    /// let summary = rt.block_on(async move { tokio::spawn(async move {
    ///     c.catch_up_async("node2").await
    /// }).await })??;
    /// assert_eq!(summary.hints_applied, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn catch_up_async(&self, id: &str) -> Result<RecoverySummary> {
        let _admin = self.admin.acquire().await;
        let node = NodeId::new(id)?;
        let routing = self.routing();
        match routing.node(&node) {
            None => return Err(Error::UnknownNode { node: id.into() }),
            Some(h) if h.is_down() => return Err(Error::NodeDown { node }),
            Some(_) => {}
        }
        let clock = self.opts.clock.as_ref();
        let started = clock.now_millis();
        self.catch_ups.set_phase(&node, CatchUpPhase::Hints);
        let mut hints_applied = 0;
        let handed = self
            .hand_off_async(&routing, &|holder, target| {
                *target == node || *holder == node
            })
            .await;
        let result = match handed {
            Ok(applied) => {
                hints_applied = applied;
                self.catch_ups.set_phase(&node, CatchUpPhase::Repair);
                self.repair_where_async(&routing, &|replicas| replicas.contains(&node))
                    .await
            }
            Err(e) => Err(e),
        };
        let now = clock.now_millis();
        self.catch_ups.finish(
            &node,
            CatchUpOutcome {
                hints_applied,
                keys_repaired: result.as_ref().map_or(0, |r| r.keys_repaired),
                finished: UNIX_EPOCH + Duration::from_millis(now),
                elapsed: Duration::from_millis(now.saturating_sub(started)),
                error: result.as_ref().err().map(Error::chain),
            },
        );
        Ok(RecoverySummary {
            node,
            down_for: Duration::ZERO,
            reopened: false,
            hints_applied,
            repair: result?,
        })
    }

    /// Node `id`'s catch-up: the phase running now, if any, and the last one's result.
    /// Empty for a node never caught up since the cluster opened (or not a member).
    pub fn catch_up_status(&self, id: &str) -> CatchUpStatus {
        NodeId::new(id).map_or_else(|_| CatchUpStatus::default(), |n| self.catch_ups.get(&n))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::{Cluster, ClusterOptions, MemoryBackend};

    /// A catch-up that hands off hints records how many, and leaves no phase running.
    #[test]
    fn hints_count_per_target_and_a_catch_up_records_its_result() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
        let cluster = Cluster::open(dir.path(), opts).unwrap();
        cluster.fail_node("node2").unwrap();
        for i in 0..50u32 {
            cluster.put(&i.to_be_bytes(), b"v").unwrap();
        }
        assert_eq!(cluster.hints_pending_for("node2"), 50);
        // Recovered by the coordinator's own path, then caught up again: the second finds
        // nothing, the first handed the hints off.
        let r = cluster.recover_node("node2").unwrap();
        assert_eq!(r.hints_applied, 50);
        assert_eq!(cluster.hints_pending_for("node2"), 0);
        cluster.catch_up("node2").unwrap();
        let last = cluster.catch_up_status("node2").last.unwrap();
        assert_eq!((last.hints_applied, last.keys_repaired), (0, 0));
        assert!(last.error.is_none());
        assert!(cluster.catch_up_status("node1").last.is_none());
    }

    /// A catch-up of a node whose handle reports it down is refused and not recorded.
    #[test]
    fn a_refused_catch_up_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
        let cluster = Cluster::open(dir.path(), opts).unwrap();
        cluster.fail_node("node3").unwrap();
        assert!(cluster.catch_up("node3").is_err());
        assert_eq!(cluster.catch_up_status("node3"), Default::default());
    }
}
