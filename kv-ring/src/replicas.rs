//! The preference list of a token: its replicas, in order.

use smallvec::SmallVec;

use crate::NodeId;
use crate::ring::Ring;

/// Node indices of a preference list; replication factors up to 8 need no allocation.
pub(crate) type Indices = SmallVec<[u32; 8]>;

/// The replicas of a token, in preference order: the first `rf` distinct nodes met walking
/// clockwise from the token. The first is the primary.
///
/// Borrows the ring it came from, so it costs no allocation for `rf <= 8` and no reference
/// count traffic; use [`to_vec`](Replicas::to_vec) to keep it.
///
/// # Example
/// ```
/// use kv_ring::{Ring, RingOptions};
///
/// let ring = Ring::with_nodes(RingOptions::default(), ["node1", "node2", "node3"])?;
/// let replicas = ring.preference_list(kv_ring::token(b"user:1001"), 2)?;
/// assert_eq!(replicas.len(), 2);
/// assert_ne!(replicas.primary(), &replicas[1]);
/// assert!(replicas.contains(replicas.primary().as_str()));
/// # Ok::<(), kv_ring::Error>(())
/// ```
#[derive(Clone)]
pub struct Replicas<'a> {
    ring: &'a Ring,
    indices: Indices,
}

impl<'a> Replicas<'a> {
    pub(crate) fn new(ring: &'a Ring, indices: Indices) -> Self {
        Replicas { ring, indices }
    }

    /// The number of replicas (the `rf` asked for).
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Never true: a preference list holds at least one node.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The first replica: the node that owns the token.
    pub fn primary(&self) -> &'a NodeId {
        // A preference list is built with rf >= 1, so index 0 exists.
        self.ring.member_id(self.indices[0])
    }

    /// The replicas in preference order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a NodeId> + '_ {
        self.indices.iter().map(|&i| self.ring.member_id(i))
    }

    /// Whether `node` is one of the replicas.
    pub fn contains(&self, node: &str) -> bool {
        self.iter().any(|n| n.as_str() == node)
    }

    /// The replicas as owned ids.
    pub fn to_vec(&self) -> Vec<NodeId> {
        self.iter().cloned().collect()
    }
}

impl std::ops::Index<usize> for Replicas<'_> {
    type Output = NodeId;
    fn index(&self, i: usize) -> &NodeId {
        self.ring.member_id(self.indices[i])
    }
}

impl std::fmt::Debug for Replicas<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
