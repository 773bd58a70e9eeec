//! The crate's error type.

/// What can go wrong when building or querying a [`Ring`](crate::Ring).
///
/// No variant has a [`source`](std::error::Error::source): each is a cause in itself. Like
/// every error of the workspace, a variant with a cause would leave it out of its `Display`,
/// so a report that prints the chain (`a: b: c`) shows it once.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A node id that is not 1 to 64 characters of `[A-Za-z0-9_.-]`.
    #[error("invalid node id {id:?}: {reason}")]
    InvalidNodeId {
        /// The rejected id, as given.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The node is already a member of the ring.
    #[error("node {id} is already in the ring")]
    DuplicateNode {
        /// The node that was added twice.
        id: String,
    },
    /// The node is not a member of the ring.
    #[error("node {id} is not in the ring")]
    UnknownNode {
        /// The node that was looked for.
        id: String,
    },
    /// A lookup on a ring without nodes.
    #[error("the ring has no nodes")]
    EmptyRing,
    /// A replication factor of zero, or larger than the number of nodes.
    #[error(
        "replication factor {rf} is invalid for a ring of {nodes} nodes (it must be 1..={nodes})"
    )]
    InvalidReplicationFactor {
        /// The replication factor asked for.
        rf: usize,
        /// The number of nodes in the ring.
        nodes: usize,
    },
    /// A node weight that is not a finite number above zero.
    #[error("invalid weight {weight} for node {id}: it must be a finite number above zero")]
    InvalidWeight {
        /// The node the weight was given for.
        id: String,
        /// The rejected weight.
        weight: f64,
    },
    /// A virtual node count of zero or above [`MAX_VNODES`](crate::MAX_VNODES).
    #[error("invalid number of virtual nodes {vnodes}: it must be 1..={max}")]
    InvalidVnodes {
        /// The rejected count (after weighting).
        vnodes: u64,
        /// The largest count accepted.
        max: u32,
    },
    /// Explicit tokens for a node that are empty, repeated or already taken by another node.
    #[error("invalid tokens for node {id}: {reason}")]
    InvalidTokens {
        /// The node the tokens were given for.
        id: String,
        /// What is wrong with them.
        reason: String,
    },
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
            Error::InvalidNodeId { .. } => 0,
            Error::DuplicateNode { .. } => 1,
            Error::UnknownNode { .. } => 2,
            Error::EmptyRing => 3,
            Error::InvalidReplicationFactor { .. } => 4,
            Error::InvalidWeight { .. } => 5,
            Error::InvalidVnodes { .. } => 6,
            Error::InvalidTokens { .. } => 7,
        }
    }
    const VARIANTS: usize = 8;

    fn one_of_each() -> Vec<Error> {
        let id = || "node1".to_owned();
        vec![
            Error::InvalidNodeId {
                id: "a/b".into(),
                reason: "bad character",
            },
            Error::DuplicateNode { id: id() },
            Error::UnknownNode { id: id() },
            Error::EmptyRing,
            Error::InvalidReplicationFactor { rf: 4, nodes: 3 },
            Error::InvalidWeight {
                id: id(),
                weight: 0.0,
            },
            Error::InvalidVnodes { vnodes: 0, max: 1 },
            Error::InvalidTokens {
                id: id(),
                reason: "empty".into(),
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
        for e in &errors {
            // Nothing to repeat: a ring error is a cause in itself.
            assert!(std::error::Error::source(e).is_none(), "{e:?}");
            assert!(!e.to_string().is_empty(), "{e:?}");
        }
    }
}
