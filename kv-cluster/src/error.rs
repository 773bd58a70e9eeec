//! The crate's error type.

use std::path::PathBuf;

use kv_ring::NodeId;

/// What can go wrong in a [`Cluster`](crate::Cluster).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation on the cluster's own files failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process (or another `Cluster` in this one) has the data directory open.
    #[error("the cluster directory {path} is in use by another process")]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// `cluster.json` could not be parsed or describes an impossible cluster.
    #[error("invalid cluster metadata {path}: {reason}")]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `cluster.json` was written by a newer, incompatible version.
    #[error(
        "cluster metadata format version {found} is not supported (this build reads versions up to {supported})"
    )]
    FormatVersion {
        /// The version found in the file.
        found: u32,
        /// The newest version this build reads (the one it writes).
        supported: u32,
    },
    /// Options that cannot make a cluster (no nodes, replication factor 0, ...).
    #[error("invalid cluster options: {reason}")]
    InvalidOptions {
        /// What is wrong.
        reason: String,
    },
    /// A ring operation failed (invalid node id, ...).
    #[error(transparent)]
    Ring(#[from] kv_ring::Error),
    /// A storage node reported an error.
    #[error("node {node}: {source}")]
    Node {
        /// The node.
        node: NodeId,
        /// Its error.
        source: kv_node::Error,
    },
    /// A replica operation was routed with a ring older than the node has been fenced to: the
    /// caller must reload the ring and retry.
    #[error("node {node} refused an operation of epoch {epoch}: it is at epoch {current}")]
    StaleEpoch {
        /// The node that refused.
        node: NodeId,
        /// The epoch the operation carried.
        epoch: u64,
        /// The node's epoch.
        current: u64,
    },
    /// Fewer replicas acknowledged than the consistency level needs.
    #[error("only {acknowledged} of the {needed} replicas needed answered")]
    Unavailable {
        /// Replicas the consistency level needs.
        needed: usize,
        /// Replicas that answered.
        acknowledged: usize,
        /// The first replica error seen, if any.
        #[source]
        cause: Option<Box<Error>>,
    },
    /// A membership change is already under way (or was interrupted and must be resumed with
    /// [`Cluster::resume_change`](crate::Cluster::resume_change) first).
    #[error("a membership change ({kind} {node}) is in progress")]
    ChangeInProgress {
        /// What the change in progress does.
        kind: crate::ChangeKind,
        /// The node it adds or removes.
        node: NodeId,
    },
    /// `add_node` of a node that is already a member.
    #[error("node {node} is already a member of the cluster")]
    DuplicateNode {
        /// The node.
        node: NodeId,
    },
    /// `remove_node` of a node that is not a member.
    #[error("node {node} is not a member of the cluster")]
    UnknownNode {
        /// The node.
        node: String,
    },
    /// `add_node` of a node whose directory already exists in the data directory although it
    /// is not a member: its contents (old versions, keys of other ranges) would mix with the
    /// cluster's. Remove the directory or choose another id.
    #[error("{path} exists but node {node} is not a member; remove it or choose another id")]
    StaleNodeDirectory {
        /// The node.
        node: NodeId,
        /// Its directory.
        path: PathBuf,
    },
    /// A removal that would leave fewer nodes than the replication factor.
    #[error(
        "removing a node would leave {remaining} nodes, fewer than the replication factor {replication_factor}"
    )]
    BelowReplicationFactor {
        /// Nodes that would remain.
        remaining: usize,
        /// The cluster's replication factor.
        replication_factor: usize,
    },
    /// The progress callback asked to stop: the change stays pending (writes still go to old
    /// and new replicas) until [`Cluster::resume_change`](crate::Cluster::resume_change) or a
    /// reopen completes it.
    #[error("the change ({kind} {node}) was interrupted; it stays pending until resumed")]
    ChangeInterrupted {
        /// What the change does.
        kind: crate::ChangeKind,
        /// The node it adds or removes.
        node: NodeId,
    },
    /// The node is down ([`Cluster::fail_node`](crate::Cluster::fail_node)): its handle
    /// refuses every call until [`Cluster::recover_node`](crate::Cluster::recover_node).
    #[error("node {node} is down")]
    NodeDown {
        /// The node.
        node: NodeId,
    },
    /// A background repair round panicked (a replica's bug); the thread goes on.
    #[error("a background repair round panicked")]
    RepairPanicked,
    /// `recover_node` of a node that is not down.
    #[error("node {node} is not down")]
    NodeNotDown {
        /// The node.
        node: NodeId,
    },
    /// A worker thread of a membership change panicked (a bug).
    #[error("a worker thread of the membership change panicked")]
    WorkerPanicked,
}

impl Error {
    /// Whether the error is the request's fault (an empty or oversized key or value, a
    /// version past the limit), so that every replica would refuse it alike: it is returned
    /// as is rather than as [`Error::Unavailable`].
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            self,
            Error::Node {
                source: kv_node::Error::EmptyKey
                    | kv_node::Error::KeyTooLarge { .. }
                    | kv_node::Error::ValueTooLarge { .. }
                    | kv_node::Error::BatchTooLarge { .. }
                    | kv_node::Error::VersionTooLarge { .. },
                ..
            }
        )
    }

    /// [`Error::Unavailable`], or `cause` itself if it is an invalid request.
    pub(crate) fn unavailable(needed: usize, acknowledged: usize, cause: Option<Error>) -> Error {
        match cause {
            Some(e) if e.is_invalid_request() => e,
            cause => Error::Unavailable {
                needed,
                acknowledged,
                cause: cause.map(Box::new),
            },
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
