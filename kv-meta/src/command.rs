//! The commands raft replicates (membership.md §1.2) and the state machine's answer.

use serde::{Deserialize, Serialize};

use crate::change::{ChangeKind, Source, StreamTask};
use crate::error::MetaError;
use crate::state::{RateLimit, RingMember};

/// A member of the initial ring, as `Bootstrap` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMember {
    /// The node's id.
    pub id: String,
    /// `host:port` of its peer port.
    pub cluster_addr: String,
    /// `host:port` of its RESP port.
    pub client_addr: String,
    /// Its weight.
    pub weight: f64,
    /// Its ring tokens (computed once by the proposer, stored).
    pub tokens: Vec<u64>,
}

/// One entry of the metadata log. Each is validated against the state when it is applied,
/// so a command proposed twice or by a deposed leader is refused, never applied twice.
///
/// Variants are only ever appended (the log and snapshots store them by index).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// The initial cluster: members get raft ids 1, 2, ... and slots 0, 1, ... in list
    /// order. Epoch becomes 1.
    Bootstrap {
        /// The cluster's uuid (not 0).
        uuid: u128,
        /// The cluster's name.
        name: String,
        /// Replicas per key.
        rf: u32,
        /// Virtual nodes of a node of weight 1.
        vnodes: u32,
        /// The initial ring.
        members: Vec<NewMember>,
    },
    /// A node asks to join: it becomes `Registered` with a fresh raft id and the lowest free
    /// slot.
    Register {
        /// The node's id.
        id: String,
        /// `host:port` of its peer port.
        cluster_addr: String,
        /// `host:port` of its RESP port.
        client_addr: String,
    },
    /// Starts adding or removing `node`: the change enters `Pending` (epoch + 1).
    StartChange {
        /// Add or remove.
        kind: ChangeKind,
        /// The node.
        node: String,
        /// The ring after the change, computed by the proposer.
        to_members: Vec<RingMember>,
        /// The stream plan (fresh tasks), computed by the proposer.
        tasks: Vec<StreamTask>,
        /// The proposer's wall clock in ms (display only).
        started_ms: u64,
    },
    /// Barrier B1 passed: the change enters `Streaming`.
    BeginStreaming {
        /// The change.
        change: u64,
    },
    /// Progress of one range of a task; a `done_through` at or behind the recorded one is
    /// ignored.
    Progress {
        /// The change.
        change: u64,
        /// The task.
        task: u32,
        /// The range's index in the task.
        range: u32,
        /// The last token copied and synced.
        done_through: u64,
        /// Keys copied by the task so far.
        keys: u64,
        /// Bytes copied by the task so far.
        bytes: u64,
    },
    /// Replaces a task's source (a dead losing replica by `Survivors`).
    TaskSource {
        /// The change.
        change: u64,
        /// The task.
        task: u32,
        /// The new source.
        from: Source,
    },
    /// Every task finished: the change enters `Mid` (epoch + 1).
    EnterMid {
        /// The change.
        change: u64,
    },
    /// Barrier B2 passed: the change enters `Final` and the new ring is the ring (epoch + 1).
    EnterFinal {
        /// The change.
        change: u64,
    },
    /// Cleanup finished: the change ends; a leaver becomes `Left`.
    FinishChange {
        /// The change.
        change: u64,
    },
    /// The operator aborts a change in `Pending` or `Streaming` (epoch + 1).
    Abort {
        /// The change.
        change: u64,
    },
    /// The aborted change is cleaned up: it ends; the joiner is `Registered` again (a
    /// leaver `Normal`).
    FinishAbort {
        /// The change.
        change: u64,
    },
    /// A new cluster-wide streaming limit.
    SetStreamRate {
        /// The limit.
        rate: RateLimit,
    },
    /// A node reports the highest epoch it fenced.
    Ack {
        /// The node.
        node: String,
        /// The epoch.
        epoch: u64,
    },
    /// Removes a `Left` or `Registered` member and frees its slot (its raft id stays used).
    Deregister {
        /// The member.
        id: String,
    },
    /// `Bootstrap` of a cluster that already routes by a ring of epoch `epoch`: a static
    /// `--peers` cluster, whose nodes open their ring (and fence their replicas at its epoch)
    /// before the metadata exists. The same as `Bootstrap`, except that the epoch becomes
    /// `epoch` (at least 1) instead of 1, so the first topology the nodes install is the ring
    /// they opened (same tokens, same epoch) and later epochs rise from there.
    BootstrapAt {
        /// The cluster's uuid (not 0).
        uuid: u128,
        /// The cluster's name.
        name: String,
        /// Replicas per key.
        rf: u32,
        /// Virtual nodes of a node of weight 1.
        vnodes: u32,
        /// The initial ring (the tokens the nodes opened with).
        members: Vec<NewMember>,
        /// The epoch of that ring.
        epoch: u64,
    },
}

impl Command {
    /// The members of a `Bootstrap` or `BootstrapAt`, `None` for any other command.
    pub fn bootstrap_members(&self) -> Option<&[NewMember]> {
        match self {
            Command::Bootstrap { members, .. } | Command::BootstrapAt { members, .. } => {
                Some(members)
            }
            _ => None,
        }
    }
}

/// What applying a command answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// Applied (or, for a stale `Progress`, ignored); the epoch after it.
    Ok {
        /// The epoch after the command.
        epoch: u64,
    },
    /// Refused; the state is unchanged.
    Refused(MetaError),
}

impl MetaResponse {
    /// Whether the command was applied.
    pub fn is_ok(&self) -> bool {
        matches!(self, MetaResponse::Ok { .. })
    }
}
