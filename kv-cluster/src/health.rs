//! Node health as the coordinator sees it, and the handle that stands in for a down node.

use std::sync::Arc;
use std::time::SystemTime;

use kv_node::{RangeCount, Record, Swapped, Write};
use kv_ring::{NodeId, TokenRange};

use crate::error::{Error, Result};
use crate::replica::{RecordStream, Replica};

/// Whether a node answers, as the coordinator sees it (see [`Cluster::nodes`]).
///
/// [`Cluster::nodes`]: crate::Cluster::nodes
///
/// # Example
/// ```
/// use kv_cluster::Health;
///
/// assert!(Health::Up.is_up());
/// assert!(!Health::Down { since: std::time::SystemTime::now() }.is_up());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// The node answers.
    Up,
    /// The node was failed (crashed or cut off) at `since` and has not recovered.
    Down {
        /// When it went down.
        since: SystemTime,
    },
    /// The coordinator did not take the node down, but its handle reports it down: a peer
    /// process whose heartbeats stopped (dead, hung or cut off). Reads skip it and writes
    /// for it become hints until it answers again.
    Unreachable,
}

impl Health {
    /// Whether the node answers.
    pub fn is_up(&self) -> bool {
        matches!(self, Health::Up)
    }
}

/// What the coordinator keeps of a down node.
#[derive(Debug)]
pub(crate) struct Down {
    pub(crate) since: SystemTime,
    /// The node's real handle while it is cut off but alive (a partition); `None` once it
    /// was dropped without clean shutdown (a crash): recovery reopens it from its directory.
    pub(crate) parked: Option<Arc<dyn Replica>>,
    /// The cluster could not open the node (a joiner of a pending change, see
    /// [`Cluster::open`](crate::Cluster::open)): [`Cluster::resume_change`] tries again
    /// before it streams.
    ///
    /// [`Cluster::resume_change`]: crate::Cluster::resume_change
    pub(crate) unopened: bool,
}

/// The routed handle of a down node: refuses every call with [`Error::NodeDown`], as a
/// crashed or unreachable node would, but at once (a remote one would time out).
#[derive(Debug)]
pub(crate) struct DownReplica {
    pub(crate) id: NodeId,
}

impl DownReplica {
    fn refuse<T>(&self) -> Result<T> {
        Err(Error::NodeDown {
            node: self.id.clone(),
        })
    }
}

impl Replica for DownReplica {
    fn id(&self) -> &NodeId {
        &self.id
    }
    fn apply(&self, _: u64, _: Write<'_>) -> Result<bool> {
        self.refuse()
    }
    fn apply_swap(&self, _: u64, _: Write<'_>, _: bool) -> Result<Swapped> {
        self.refuse()
    }
    fn apply_batch(&self, _: u64, _: &[Write<'_>]) -> Result<usize> {
        self.refuse()
    }
    fn read(&self, _: u64, _: &[u8]) -> Result<Option<kv_node::Cell>> {
        self.refuse()
    }
    fn export<'a>(&'a self, _: u64, _: &[TokenRange], _: usize) -> Result<RecordStream<'a>> {
        self.refuse()
    }
    fn import(&self, _: u64, _: &[Record]) -> Result<usize> {
        self.refuse()
    }
    fn drop_ranges(&self, _: u64, _: &[TokenRange]) -> Result<usize> {
        self.refuse()
    }
    fn count_in_ranges(&self, _: &[TokenRange]) -> Result<RangeCount> {
        self.refuse()
    }
    fn held(&self) -> Result<RangeCount> {
        self.refuse()
    }
    fn fence(&self, _: u64) {}
    fn sync(&self) -> Result<()> {
        self.refuse()
    }
    fn is_down(&self) -> bool {
        true
    }
}
