//! The raft type configuration (membership.md §2.1).

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::command::{Command, MetaResponse};
use crate::raft::runtime::KvRuntime;

/// A raft node as the cluster's raft membership records it: its raft id and the address of
/// its peer port.
///
/// # Example
///
/// ```
/// let node = kv_meta::MetaNode { id: 4, cluster_addr: "127.0.0.1:7004".into() };
/// assert_eq!(node.to_string(), "4@127.0.0.1:7004");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaNode {
    /// The raft id (`Member::raft_id`).
    pub id: u64,
    /// `host:port` of the node's peer port.
    pub cluster_addr: String,
}

impl fmt::Display for MetaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.cluster_addr)
    }
}

openraft::declare_raft_types!(
    /// kv-meta's raft types: [`Command`]s in, [`MetaResponse`]s out, `u64` node ids,
    /// [`MetaNode`]s, snapshots as bytes in memory (a snapshot is small: a 64-node ring with
    /// 256 vnodes is 130 KB of tokens). The runtime is [`KvRuntime`]: tokio's, with a
    /// seedable generator for election timeouts (membership.md §2.1).
    pub MetaTypes:
        D = Command,
        R = MetaResponse,
        NodeId = u64,
        Node = MetaNode,
        Entry = openraft::Entry<MetaTypes>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = KvRuntime,
);
