//! The crate's error type.

use std::path::PathBuf;

use kv_ring::NodeId;

/// What can go wrong in a [`Cluster`](crate::Cluster).
///
/// A variant's `Display` says what failed and where, never why: the cause is its
/// [`source`](std::error::Error::source), so a report that prints the chain (`a: b: c`, see
/// [`Error::chain`]) shows each cause once. [`Error::Unavailable`] has one source (the first
/// replica's error) and lists the other replicas' errors in its message.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation on the cluster's own files failed.
    #[error("{op} {path}")]
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
    #[error("node {node}")]
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
    ///
    /// Each replica error names its replica (`node node2: ...`, `node node2 is down`). The
    /// first is the source; the others are listed in the message, the one place they
    /// appear: `only 0 of the 2 replicas needed answered (also: node node3: ...): node node2:
    /// create segment ...: No space left on device (os error 28)`.
    #[error("only {acknowledged} of the {needed} replicas needed answered{}", also(.others))]
    Unavailable {
        /// Replicas the consistency level needs.
        needed: usize,
        /// Replicas that answered.
        acknowledged: usize,
        /// The first replica error seen, if any.
        #[source]
        cause: Option<Box<Error>>,
        /// The other replicas' errors, in the order seen.
        others: Vec<Error>,
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
    /// A replica's answer was lost before it came (its request was dropped unanswered: a
    /// connection closed, a replica shut down).
    #[error("the replica's answer was lost")]
    Dropped,
    /// A replica did not answer within the coordinator's deadline.
    #[error("node {node} did not answer within {after:?}")]
    Timeout {
        /// The node.
        node: NodeId,
        /// How long the coordinator waited.
        after: std::time::Duration,
    },
    /// A replica in another process could not be reached, or failed in a way that has no
    /// other variant here (the transport's error, or the peer's error as text).
    #[error("node {node}")]
    Remote {
        /// The node.
        node: NodeId,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An expiry that does not fit: its absolute time (milliseconds since the Unix epoch,
    /// computed without overflow) is above [`MAX_EXPIRES`](crate::MAX_EXPIRES), or the
    /// relative time overflowed computing it. Redis answers "invalid expire time".
    #[error("expiry {requested:?} is out of range (the latest is {max} ms since the Unix epoch)")]
    ExpiryOutOfRange {
        /// The expiry as the caller gave it.
        requested: crate::Expiry,
        /// The latest expiry accepted.
        max: u64,
    },
    /// A write that rewrites the key's current record (changing its expiry, or keeping it)
    /// met a concurrent write of the key on each of its attempts
    /// ([`SWAP_ATTEMPTS`](crate::SWAP_ATTEMPTS)); what it last wrote is the concurrent
    /// write's record, re-minted, so nothing was lost. Retry.
    #[error("the key was rewritten concurrently {attempts} times; retry")]
    Contended {
        /// How many times the write was tried.
        attempts: usize,
    },
    /// A membership change asked of a cluster whose topology comes from outside
    /// ([`ClusterOptions::external_topology`](crate::ClusterOptions::external_topology), or
    /// once [`Cluster::install_topology`](crate::Cluster::install_topology) was used): the
    /// metadata service (kv-meta) runs changes, not this coordinator.
    #[error("{op} is refused: this cluster's membership is kept by external metadata")]
    ExternalMetadata {
        /// The refused operation (`"add_node"`, `"remove_node"`, ...).
        op: &'static str,
    },
    /// [`Cluster::install_topology`](crate::Cluster::install_topology) of an epoch below the
    /// installed one: epochs only rise, so the routing stays where it is.
    #[error("topology epoch {offered} is older than the installed epoch {installed}")]
    EpochRegressed {
        /// The epoch routing with now.
        installed: u64,
        /// The epoch offered.
        offered: u64,
    },
    /// A [`Topology`](crate::Topology) that cannot route (no members, fewer than the
    /// replication factor, a member without tokens, a member twice, a bad slot).
    #[error("invalid topology of epoch {epoch}: {reason}")]
    InvalidTopology {
        /// The topology's epoch.
        epoch: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A replica refused the operation's epoch as stale and this coordinator could not
    /// catch up: its installed epoch did not reach the replica's within
    /// [`ClusterOptions::replica_timeout`](crate::ClusterOptions::replica_timeout), or the
    /// operation, retried once at the newer epoch, was refused again. Nothing was
    /// acknowledged; the operation may be retried once the topology is installed.
    #[error(
        "node {node} is at epoch {current}, this coordinator at {installed} (waited {waited:?} for a newer topology)"
    )]
    StaleCoordinator {
        /// The replica that refused.
        node: NodeId,
        /// The replica's epoch (its fence).
        current: u64,
        /// This coordinator's installed epoch when it gave up.
        installed: u64,
        /// How long it waited for a newer topology.
        waited: std::time::Duration,
    },
    /// A write reached a coordinator that restarted less than a lease window ago and whose
    /// wall clock has not yet passed the version lease its previous run persisted (see
    /// [`Cluster::lease_wait`](crate::Cluster::lease_wait)): minting now would either repeat
    /// a version of the previous run or run ahead of real time. Nothing was written; retry
    /// after `remaining`.
    #[error("this coordinator restarted: it mints versions again in {remaining:?}; retry")]
    LeaseWait {
        /// How long until the wall clock passes the lease (as of the refusal).
        remaining: std::time::Duration,
    },
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
            } | Error::ExpiryOutOfRange { .. }
        )
    }

    /// [`Error::Unavailable`] with the replicas' `errors` (in the order seen), or the first
    /// of them that is an invalid request: every replica would refuse the request alike.
    pub(crate) fn unavailable(needed: usize, acknowledged: usize, mut errors: Vec<Error>) -> Error {
        if let Some(i) = errors.iter().position(Error::is_invalid_request) {
            return errors.swap_remove(i);
        }
        let mut errors = errors.into_iter();
        Error::Unavailable {
            needed,
            acknowledged,
            cause: errors.next().map(Box::new),
            others: errors.collect(),
        }
    }

    /// This error and its causes on one line, `a: b: c`: what a log line or a status field
    /// shows (the `Display` alone leaves the cause out).
    ///
    /// ```
    /// use kv_cluster::Error;
    ///
    /// let e = Error::Unavailable {
    ///     needed: 2,
    ///     acknowledged: 1,
    ///     cause: Some(Box::new(Error::NodeDown { node: "node2".parse()? })),
    ///     others: Vec::new(),
    /// };
    /// assert_eq!(e.to_string(), "only 1 of the 2 replicas needed answered");
    /// assert_eq!(e.chain(), "only 1 of the 2 replicas needed answered: node node2 is down");
    /// # Ok::<(), kv_ring::Error>(())
    /// ```
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cause = e.source();
        }
        out
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl From<kv_node::durable::Error> for Error {
    fn from(e: kv_node::durable::Error) -> Self {
        Error::io(e.op, e.path, e.source)
    }
}

/// The other replicas' errors of [`Error::Unavailable`], each with its causes:
/// ` (also: a: b; c)`, or nothing.
fn also(others: &[Error]) -> String {
    if others.is_empty() {
        return String::new();
    }
    let list: Vec<String> = others.iter().map(Error::chain).collect();
    format!(" (also: {})", list.join("; "))
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The variant's position in the enum. Exhaustive, so a new variant does not compile
    /// until it is listed here, and `one_of_each` must then hold one of it.
    fn variant(e: &Error) -> usize {
        match e {
            Error::Io { .. } => 0,
            Error::Locked { .. } => 1,
            Error::Metadata { .. } => 2,
            Error::FormatVersion { .. } => 3,
            Error::InvalidOptions { .. } => 4,
            Error::Ring(_) => 5,
            Error::Node { .. } => 6,
            Error::StaleEpoch { .. } => 7,
            Error::Unavailable { .. } => 8,
            Error::ChangeInProgress { .. } => 9,
            Error::DuplicateNode { .. } => 10,
            Error::UnknownNode { .. } => 11,
            Error::StaleNodeDirectory { .. } => 12,
            Error::BelowReplicationFactor { .. } => 13,
            Error::ChangeInterrupted { .. } => 14,
            Error::NodeDown { .. } => 15,
            Error::RepairPanicked => 16,
            Error::NodeNotDown { .. } => 17,
            Error::WorkerPanicked => 18,
            Error::Dropped => 19,
            Error::Timeout { .. } => 20,
            Error::Remote { .. } => 21,
            Error::ExpiryOutOfRange { .. } => 22,
            Error::Contended { .. } => 23,
            Error::ExternalMetadata { .. } => 24,
            Error::EpochRegressed { .. } => 25,
            Error::InvalidTopology { .. } => 26,
            Error::StaleCoordinator { .. } => 27,
            Error::LeaseWait { .. } => 28,
        }
    }
    const VARIANTS: usize = 29;

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    /// `node <id>: create segment ...: disk full`, as a replica whose disk is full fails.
    fn disk_full(id: &str) -> Error {
        Error::Node {
            node: node(id),
            source: kv_node::Error::from(kv_wal::Error::Io {
                op: "create segment",
                path: format!("/data/{id}/wal/0000000002.wal").into(),
                source: std::io::Error::other("disk full"),
            }),
        }
    }

    fn one_of_each() -> Vec<Error> {
        let path = || PathBuf::from("/data");
        vec![
            Error::io(
                "write",
                "/data/cluster.json",
                std::io::Error::other("disk full"),
            ),
            Error::Locked { path: path() },
            Error::Metadata {
                path: path(),
                reason: "no members".into(),
            },
            Error::FormatVersion {
                found: 9,
                supported: 1,
            },
            Error::InvalidOptions {
                reason: "no nodes".into(),
            },
            Error::Ring(kv_ring::Error::EmptyRing),
            disk_full("node1"),
            Error::StaleEpoch {
                node: node("node1"),
                epoch: 1,
                current: 2,
            },
            Error::unavailable(
                2,
                0,
                vec![
                    disk_full("node1"),
                    disk_full("node2"),
                    Error::NodeDown {
                        node: node("node3"),
                    },
                ],
            ),
            Error::ChangeInProgress {
                kind: crate::ChangeKind::Add,
                node: node("node4"),
            },
            Error::DuplicateNode {
                node: node("node1"),
            },
            Error::UnknownNode {
                node: "node9".into(),
            },
            Error::StaleNodeDirectory {
                node: node("node4"),
                path: path(),
            },
            Error::BelowReplicationFactor {
                remaining: 2,
                replication_factor: 3,
            },
            Error::ChangeInterrupted {
                kind: crate::ChangeKind::Remove,
                node: node("node4"),
            },
            Error::NodeDown {
                node: node("node1"),
            },
            Error::RepairPanicked,
            Error::NodeNotDown {
                node: node("node1"),
            },
            Error::WorkerPanicked,
            Error::Dropped,
            Error::Timeout {
                node: node("node2"),
                after: std::time::Duration::from_secs(1),
            },
            Error::Remote {
                node: node("node3"),
                source: "connection refused".into(),
            },
            Error::ExpiryOutOfRange {
                requested: crate::Expiry::AtMillis(i64::MAX),
                max: crate::MAX_EXPIRES,
            },
            Error::Contended { attempts: 4 },
            Error::ExternalMetadata { op: "add_node" },
            Error::EpochRegressed {
                installed: 7,
                offered: 6,
            },
            Error::InvalidTopology {
                epoch: 7,
                reason: "no members".into(),
            },
            Error::StaleCoordinator {
                node: node("node2"),
                current: 8,
                installed: 7,
                waited: std::time::Duration::from_secs(1),
            },
            Error::LeaseWait {
                remaining: std::time::Duration::from_millis(700),
            },
        ]
    }

    #[test]
    fn no_error_repeats_its_source_in_its_message() {
        let errors = one_of_each();
        let mut seen: Vec<usize> = errors.iter().map(variant).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), VARIANTS, "one sample of every variant");
        let mut with_source = 0;
        for e in &errors {
            let mut current: &dyn std::error::Error = e;
            while let Some(source) = current.source() {
                with_source += 1;
                let (message, cause) = (current.to_string(), source.to_string());
                assert!(
                    !message.contains(&cause),
                    "{e:?}: {message:?} repeats its source {cause:?}"
                );
                current = source;
            }
        }
        // Io: 1; Node: 2 (the node's error, then the log's); Unavailable: 3 (its first
        // replica's Node chain); Remote: 1.
        assert_eq!(with_source, 7);
    }

    #[test]
    fn unavailable_names_every_failed_replica_and_its_cause_once() {
        let e = Error::unavailable(
            2,
            0,
            vec![
                disk_full("node1"),
                disk_full("node2"),
                Error::NodeDown {
                    node: node("node3"),
                },
            ],
        );
        assert_eq!(
            e.chain(),
            "only 0 of the 2 replicas needed answered \
             (also: node node2: create segment /data/node2/wal/0000000002.wal: disk full; \
             node node3 is down): \
             node node1: create segment /data/node1/wal/0000000002.wal: disk full"
        );
        // One replica's error: no list.
        let e = Error::unavailable(2, 1, vec![disk_full("node1")]);
        assert_eq!(
            e.chain(),
            "only 1 of the 2 replicas needed answered: \
             node node1: create segment /data/node1/wal/0000000002.wal: disk full"
        );
    }

    #[test]
    fn an_invalid_request_is_returned_as_is() {
        let invalid = Error::Node {
            node: node("node2"),
            source: kv_node::Error::EmptyKey,
        };
        let e = Error::unavailable(2, 0, vec![disk_full("node1"), invalid]);
        assert!(e.is_invalid_request(), "{e:?}");
    }
}
