//! Progress reports and summaries of membership changes.

use std::fmt;
use std::time::Duration;

use kv_ring::NodeId;
use serde::{Deserialize, Serialize};

/// What a membership change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// A node joins.
    Add,
    /// A node leaves.
    Remove,
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeKind::Add => "add",
            ChangeKind::Remove => "remove",
        })
    }
}

/// A report sent to the progress callback after each streamed batch of a membership change.
///
/// # Example
/// ```
/// use std::ops::ControlFlow;
/// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
///
/// let dir = tempfile::tempdir()?;
/// let opts = ClusterOptions::new().backend(std::sync::Arc::new(MemoryBackend::default()));
/// let cluster = Cluster::open(dir.path(), opts)?;
/// for i in 0..100u32 {
///     cluster.put(&i.to_be_bytes(), b"v")?;
/// }
/// let mut last = 0;
/// let summary = cluster.add_node_with_progress("node4", |p| {
///     last = p.keys;
///     ControlFlow::Continue(())
/// })?;
/// assert_eq!(last, summary.keys_moved);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// What the change does.
    pub kind: ChangeKind,
    /// The node it adds or removes.
    pub node: NodeId,
    /// The node streaming the current batch.
    pub from: NodeId,
    /// The node receiving it.
    pub to: NodeId,
    /// Records moved so far from `from` to `to`.
    pub pair_keys: u64,
    /// Records moved so far in the whole change (tombstones included).
    pub keys: u64,
    /// Key and value bytes moved so far in the whole change.
    pub bytes: u64,
    /// Records the change is expected to move in all: an estimate from the sources' key counts
    /// and the share of their ranges that moves.
    pub estimated_keys: u64,
    /// `(from, to)` pairs finished.
    pub pairs_done: usize,
    /// `(from, to)` pairs in the plan.
    pub pairs_total: usize,
    /// Time since the change started (or was resumed).
    pub elapsed: Duration,
}

/// What one `(from, to)` pair of a change moved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PairSummary {
    /// The node that streamed.
    pub from: NodeId,
    /// The node that received.
    pub to: NodeId,
    /// Records moved (tombstones included).
    pub keys: u64,
    /// Key and value bytes moved.
    pub bytes: u64,
}

/// The outcome of a membership change.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChangeSummary {
    /// What the change did.
    pub kind: ChangeKind,
    /// The node added or removed.
    pub node: NodeId,
    /// The ring epoch before.
    pub from_epoch: u64,
    /// The ring epoch after.
    pub to_epoch: u64,
    /// Records moved per `(from, to)` pair, in plan order. Pairs finished before a crash and
    /// not streamed again on resume are absent.
    pub pairs: Vec<PairSummary>,
    /// Records moved in all.
    pub keys_moved: u64,
    /// Key and value bytes moved in all.
    pub bytes_moved: u64,
    /// Records dropped by nodes that stopped replicating ranges.
    pub keys_dropped: u64,
    /// Hinted writes a leaving node held for others, handed to their targets (or, for a
    /// target still down, to another holder) before its directory was deleted.
    pub hints_handed_over: u64,
    /// The fraction of the token space copied (summed over transfers; at most the replication
    /// factor).
    pub fraction_moved: f64,
    /// Time spent streaming (export and import, until every pair was synced).
    pub streaming: Duration,
    /// Time spent dropping ranges on nodes that lost them, after the commit.
    pub cleanup: Duration,
    /// Wall time of the change (or of its resumption).
    pub elapsed: Duration,
}
