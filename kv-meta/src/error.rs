//! The crate's error types: [`MetaError`], why the state machine refused a command (replicated,
//! so serializable), and [`Error`], what can go wrong reading or writing kv-meta's files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::change::Step;
use crate::raft::MetaPeer;
use crate::state::MemberState;

/// Why [`ClusterMeta::apply`](crate::ClusterMeta::apply) refused a command.
///
/// A refusal is an answer, not a failure of the log: the entry is committed and every node
/// refuses it in the same way, leaving its state unchanged. This is how a command proposed
/// twice, or by a leader that was deposed meanwhile, is kept from being applied twice.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetaError {
    /// A command other than `Bootstrap` on a cluster that was never bootstrapped.
    #[error("the cluster is not bootstrapped")]
    NotBootstrapped,
    /// A second `Bootstrap`.
    #[error("the cluster is already bootstrapped (uuid {uuid:#034x})")]
    AlreadyBootstrapped {
        /// The cluster's uuid.
        uuid: u128,
    },
    /// A `Bootstrap` whose parameters or members are invalid.
    #[error("invalid bootstrap: {reason}")]
    InvalidBootstrap {
        /// What is wrong with it.
        reason: String,
    },
    /// A node id that is not 1 to 64 characters of `[A-Za-z0-9_.-]`.
    #[error("invalid node id {id:?}: {reason}")]
    InvalidNodeId {
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: String,
    },
    /// `Register` of an id that is already a member (in any state).
    #[error("node {id} is already a member")]
    AlreadyMember {
        /// The id.
        id: String,
    },
    /// A command naming a node that is not a member.
    #[error("node {id} is not a member")]
    UnknownMember {
        /// The id.
        id: String,
    },
    /// `Register` with an address another member uses.
    #[error("address {addr} is already used by member {member}")]
    AddressInUse {
        /// The address.
        addr: String,
        /// The member using it.
        member: String,
    },
    /// `Register` when every coordinator slot (0..64) is taken.
    #[error("every coordinator slot is taken ({max} members)")]
    NoFreeSlot {
        /// The number of slots.
        max: u32,
    },
    /// A member is not in the state the command needs.
    #[error("node {id} is {state}, expected {expected}")]
    WrongState {
        /// The member.
        id: String,
        /// Its state.
        state: MemberState,
        /// The states the command accepts.
        expected: String,
    },
    /// `StartChange` while another change is in progress.
    #[error("change {change} is in progress")]
    ChangeInProgress {
        /// The change in progress.
        change: u64,
    },
    /// A command about a change when the cluster has none.
    #[error("no change is in progress (the command names change {change})")]
    NoChange {
        /// The change the command names.
        change: u64,
    },
    /// A command about a change other than the one in progress.
    #[error("the command names change {change}, but change {current} is in progress")]
    WrongChange {
        /// The change the command names.
        change: u64,
        /// The change in progress.
        current: u64,
    },
    /// A step command in the wrong step (proposed twice, or by a deposed driver).
    #[error("change {change} is {step}, expected {expected}")]
    WrongStep {
        /// The change.
        change: u64,
        /// Its step.
        step: Step,
        /// The steps the command accepts.
        expected: String,
    },
    /// A removal that would leave fewer members than the replication factor.
    #[error(
        "removing a member would leave {remaining} members, fewer than the replication factor {rf}"
    )]
    TooFewMembers {
        /// The members that would remain.
        remaining: u32,
        /// The replication factor.
        rf: u32,
    },
    /// A `StartChange` whose new ring or tasks do not fit the current state.
    #[error("invalid change plan: {reason}")]
    InvalidPlan {
        /// What is wrong with it.
        reason: String,
    },
    /// A command naming a task the change does not have.
    #[error("change {change} has no task {task}")]
    UnknownTask {
        /// The change.
        change: u64,
        /// The task.
        task: u32,
    },
    /// `Progress` naming a range the task does not have, or a token outside it.
    #[error("task {task} of change {change}: {reason}")]
    BadProgress {
        /// The change.
        change: u64,
        /// The task.
        task: u32,
        /// What is wrong.
        reason: String,
    },
    /// `TaskSource` for a task that already finished.
    #[error("task {task} of change {change} is finished")]
    TaskFinished {
        /// The change.
        change: u64,
        /// The task.
        task: u32,
    },
    /// `EnterMid` while tasks remain.
    #[error("change {change} still has {remaining} unfinished tasks")]
    TasksUnfinished {
        /// The change.
        change: u64,
        /// How many tasks are not finished.
        remaining: u32,
    },
    /// `Ack` of an epoch the cluster has not reached.
    #[error("epoch {epoch} is ahead of the cluster's epoch {current}")]
    FutureEpoch {
        /// The acknowledged epoch.
        epoch: u64,
        /// The cluster's epoch.
        current: u64,
    },
    /// A meta protocol body of a version this build does not speak.
    #[error("meta protocol version {found} is not supported (this build speaks {supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
        /// The version this build speaks.
        supported: u8,
    },
    /// A meta protocol body that does not decode (an unknown request kind, a length past the
    /// body's end, bytes left over) or is over [`MAX_META_BODY`](crate::MAX_META_BODY).
    #[error("bad meta request: {reason}")]
    BadRequest {
        /// What is wrong with it.
        reason: String,
    },
    /// The request must go to the leader, and this node is not it.
    #[error("not the metadata leader; the leader is {}", match leader {
        Some(l) => l.to_string(),
        None => "unknown".to_string(),
    })]
    ForwardToLeader {
        /// The leader this node knows of, with its node id and peer address (resolved by the
        /// answering node, so the asker can reach it).
        leader: Option<MetaPeer>,
    },
    /// The metadata service cannot answer now: raft stopped, no quorum, no leader known, a
    /// forwarding chain too long or too slow.
    #[error("metadata service unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// A `Join` naming another cluster.
    #[error("this is cluster {expected:?}, not {found:?}")]
    WrongCluster {
        /// This cluster's name.
        expected: String,
        /// The name the joiner gave.
        found: String,
    },
    /// A request carrying another cluster's uuid (another `--peers` order, other members, a
    /// data directory of another cluster): both are printed.
    #[error("the request belongs to cluster {found:032x}, this node to cluster {expected:032x}")]
    WrongClusterUuid {
        /// This node's cluster uuid.
        expected: u128,
        /// The uuid the request carried.
        found: u128,
    },
    /// A request other than `Join` (or `Status`) from a node that is not a member.
    #[error("{id} is not a member: only Join is answered")]
    NotAMember {
        /// The asking node's id.
        id: String,
    },
}

/// What can go wrong reading or writing kv-meta's files: the snapshot and the raft log.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A snapshot shorter than its header.
    #[error("snapshot of {len} bytes is shorter than its 16-byte header")]
    SnapshotTruncated {
        /// Its length.
        len: u64,
    },
    /// A snapshot that does not begin with `KVMETA\0\n`.
    #[error("not a kv-meta snapshot (bad magic)")]
    SnapshotMagic,
    /// A snapshot of a format version this build does not read.
    #[error("snapshot format version {found} is not supported (this build reads {supported})")]
    SnapshotVersion {
        /// The version in the header.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// A snapshot whose body does not match the CRC in its header.
    #[error("snapshot body CRC32C {computed:#010x} does not match the header's {stored:#010x}")]
    SnapshotCrc {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the body read.
        computed: u32,
    },
    /// A snapshot larger than [`MAX_SNAPSHOT_LEN`](crate::MAX_SNAPSHOT_LEN).
    #[error("snapshot of {len} bytes is over the limit of {max} bytes")]
    SnapshotTooLarge {
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A snapshot body that does not decode, or that decodes to a state breaking an invariant.
    #[error("corrupt snapshot body: {reason}")]
    SnapshotCorrupt {
        /// What is wrong.
        reason: String,
    },
    /// A joiner's `<data-dir>/meta/joined` of another length or version.
    #[error("corrupt {}: {reason}", path.display())]
    JoinedCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A value that could not be encoded (postcard).
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A raft log record of a version this build does not read: the node does not start.
    #[error("meta log record at {lsn} has version {version}; this build reads {supported}")]
    UnsupportedRecord {
        /// The record's position in the log (`Lsn` as a `u64`).
        lsn: u64,
        /// Its version byte.
        version: u8,
        /// The version this build reads and writes.
        supported: u8,
    },
    /// A raft log record that does not decode, or does not fit the records before it.
    #[error("corrupt meta log record at {lsn}: {reason}")]
    BadRecord {
        /// The record's position in the log (`Lsn` as a `u64`).
        lsn: u64,
        /// What is wrong.
        reason: String,
    },
    /// The write-ahead log failed.
    #[error("meta log")]
    Wal(#[source] kv_wal::Error),
    /// A file operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// The step that failed.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The storage thread has stopped (after a panic or a fatal log error).
    #[error("the meta storage thread has stopped")]
    StoreStopped,
    /// openraft refused the configuration, failed to start or to stop.
    #[error("raft: {reason}")]
    Raft {
        /// openraft's error.
        reason: String,
    },
}

impl From<kv_wal::Error> for Error {
    fn from(e: kv_wal::Error) -> Self {
        Error::Wal(e)
    }
}

impl From<kv_wal::durable::Error> for Error {
    fn from(e: kv_wal::durable::Error) -> Self {
        Error::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
