//! Ring parameters.

use crate::error::{Error, Result};

/// The default number of virtual nodes per node (the seed's `ConsistentHash hash_ring(100)`).
pub const DEFAULT_VNODES: u32 = 100;

/// The most virtual nodes one node may have (after weighting).
pub const MAX_VNODES: u32 = 4096;

/// How a node's virtual node positions are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Each position is a hash of the node id and the virtual node's index
    /// (`xxh3_64(id ++ [0xff] ++ index)`): the ring is a pure function of its membership, the same
    /// in every process whatever the order of joins. The busiest node typically holds 15-25% more
    /// than the mean at 100 virtual nodes (the spread shrinks as `1/sqrt(vnodes)`).
    Random,
    /// Dynamo's strategy 3: the token space is cut into `vnodes * 60` equal partitions and each
    /// node owns its weighted share of them, laid out so that no node owns two partitions within
    /// `replication_factor` of each other. Every node then holds its share *counting all
    /// replicas* to within one partition (1.05x the mean or better while each node has 20 or
    /// more partitions). A join steals only the new node's share; a leave hands only the
    /// leaver's partitions out.
    ///
    /// The layout depends on the order of changes, so a ring built this way must be persisted
    /// by its tokens ([`Ring::tokens_of`](crate::Ring::tokens_of) and
    /// [`Ring::add_node_with_tokens`](crate::Ring::add_node_with_tokens)) rather than rebuilt from
    /// its member list.
    Balanced {
        /// The replication factor the allocator balances for.
        replication_factor: usize,
    },
}

/// Parameters of a [`Ring`](crate::Ring), with documented defaults.
///
/// # Example
/// ```
/// use kv_ring::{Placement, RingOptions};
///
/// let options = RingOptions::default()
///     .vnodes(16)?
///     .placement(Placement::Balanced { replication_factor: 3 });
/// assert_eq!(options.vnodes_per_node(), 16);
/// # Ok::<(), kv_ring::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RingOptions {
    pub(crate) vnodes: u32,
    pub(crate) placement: Placement,
}

impl Default for RingOptions {
    /// [`DEFAULT_VNODES`] virtual nodes per node, [`Placement::Random`].
    fn default() -> Self {
        RingOptions {
            vnodes: DEFAULT_VNODES,
            placement: Placement::Random,
        }
    }
}

impl RingOptions {
    /// Sets the number of virtual nodes of a node of weight 1.
    ///
    /// # Errors
    /// [`Error::InvalidVnodes`] for 0 or more than [`MAX_VNODES`].
    pub fn vnodes(mut self, vnodes: u32) -> Result<Self> {
        if vnodes == 0 || vnodes > MAX_VNODES {
            return Err(Error::InvalidVnodes {
                vnodes: u64::from(vnodes),
                max: MAX_VNODES,
            });
        }
        self.vnodes = vnodes;
        Ok(self)
    }

    /// Sets how virtual node positions are chosen.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// The number of virtual nodes of a node of weight 1.
    pub fn vnodes_per_node(&self) -> u32 {
        self.vnodes
    }

    /// How virtual node positions are chosen.
    pub fn placement_strategy(&self) -> Placement {
        self.placement
    }

    /// The number of virtual nodes of a node of the given weight: `round(vnodes * weight)`.
    pub(crate) fn vnodes_for(&self, id: &str, weight: f64) -> Result<u32> {
        if !weight.is_finite() || weight <= 0.0 {
            return Err(Error::InvalidWeight {
                id: id.to_owned(),
                weight,
            });
        }
        let n = (f64::from(self.vnodes) * weight).round();
        if !(1.0..=f64::from(MAX_VNODES)).contains(&n) {
            return Err(Error::InvalidVnodes {
                vnodes: n as u64,
                max: MAX_VNODES,
            });
        }
        Ok(n as u32)
    }
}
