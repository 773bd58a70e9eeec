//! The transfer plan between two rings.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::node_id::NodeId;
use crate::replicas::Indices;
use crate::ring::{Ring, prev};
use crate::token::TokenRange;

/// One move of a redistribution: copy the keys of `range` from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Transfer {
    /// The token range to copy.
    pub range: TokenRange,
    /// A node that is a replica of `range` under the old ring (it holds the data).
    pub from: NodeId,
    /// A node that is a replica of `range` under the new ring but was not under the old one.
    pub to: NodeId,
}

/// A range a node no longer replicates under the new ring: it may drop the keys once the new
/// ring is committed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cleanup {
    /// The token range to drop.
    pub range: TokenRange,
    /// The node that drops it.
    pub node: NodeId,
}

/// What it takes to go from one ring to another with `rf` replicas: the copies to make and the
/// ranges to drop afterwards. Ranges whose replica set did not change appear in neither.
///
/// Built by [`transfer_plan`]. Transfers are grouped by `(from, to)` pair and in token order within
/// a pair; adjacent ranges of one pair are merged.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferPlan {
    /// The epoch of the ring the plan starts from.
    pub from_epoch: u64,
    /// The epoch of the ring the plan leads to.
    pub to_epoch: u64,
    /// The replication factor the plan was computed for.
    pub replication_factor: usize,
    /// The copies to make.
    pub transfers: Vec<Transfer>,
    /// The ranges to drop once the new ring is in force.
    pub cleanups: Vec<Cleanup>,
}

impl TransferPlan {
    /// Whether nothing needs to move.
    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty() && self.cleanups.is_empty()
    }

    /// The fraction of the token space copied, summed over transfers (a range copied to two new
    /// replicas counts twice). With `rf` replicas, at most `rf`.
    pub fn fraction_moved(&self) -> f64 {
        self.transfers.iter().map(|t| t.range.fraction()).sum()
    }

    /// The fraction of the token space each `(from, to)` pair copies, in pair order.
    pub fn by_pair(&self) -> BTreeMap<(NodeId, NodeId), f64> {
        let mut pairs = BTreeMap::new();
        for t in &self.transfers {
            *pairs.entry((t.from.clone(), t.to.clone())).or_insert(0.0) += t.range.fraction();
        }
        pairs
    }

    /// The transfers whose range holds `token`.
    pub fn transfers_for(&self, token: u64) -> impl Iterator<Item = &Transfer> {
        self.transfers
            .iter()
            .filter(move |t| t.range.contains(token))
    }
}

/// The moves that take the data placement of `old` to that of `new`, with `rf` replicas.
///
/// The token space is cut at every virtual node of either ring; in each piece the old and new
/// preference lists are compared. Each node that gains the piece gets one [`Transfer`] from a
/// node that had it: preferably one that loses it (so a leaving node streams its own data and the
/// load spreads), otherwise an old replica in turn. Each node that loses the piece gets a
/// [`Cleanup`]. Pieces whose replica set is unchanged produce nothing, so the plan's size tracks
/// what actually moves: about `rf / (N + 1)` of the token space for a join to N nodes.
///
/// # Errors
/// [`Error::EmptyRing`](crate::Error::EmptyRing) if either ring is empty;
/// [`Error::InvalidReplicationFactor`](crate::Error::InvalidReplicationFactor) if `rf` is 0 or
/// more than either ring's node count.
///
/// # Example
/// ```
/// use kv_ring::{Ring, RingOptions, transfer_plan};
///
/// let old = Ring::with_nodes(RingOptions::default(), ["node1", "node2", "node3"])?;
/// let new = old.add_node("node4")?;
/// let plan = transfer_plan(&old, &new, 2)?;
/// assert!(plan.transfers.iter().all(|t| t.to.as_str() == "node4"));
/// // About rf / (N + 1) = 2 / 4 of the token space moves, not all of it.
/// assert!((0.3..0.7).contains(&plan.fraction_moved()));
/// # Ok::<(), kv_ring::Error>(())
/// ```
pub fn transfer_plan(old: &Ring, new: &Ring, rf: usize) -> Result<TransferPlan> {
    old.check_rf(rf)?;
    new.check_rf(rf)?;
    // Every boundary of either ring: within a piece both preference lists are constant.
    let mut cuts: Vec<u64> = old.points().iter().chain(new.points()).copied().collect();
    cuts.sort_unstable();
    cuts.dedup();

    let mut transfers: Vec<Transfer> = Vec::new();
    let mut cleanups: Vec<Cleanup> = Vec::new();
    let (mut before, mut after) = (Indices::new(), Indices::new());
    for (k, &end) in cuts.iter().enumerate() {
        let range = TokenRange::new(cuts[prev(k, cuts.len())], end);
        old.walk(old.point_index(end), rf, &mut before);
        new.walk(new.point_index(end), rf, &mut after);
        let before: Vec<&NodeId> = before.iter().map(|&i| old.member_id(i)).collect();
        let after: Vec<&NodeId> = after.iter().map(|&i| new.member_id(i)).collect();
        let gained: Vec<&NodeId> = after
            .iter()
            .copied()
            .filter(|n| !before.contains(n))
            .collect();
        let lost: Vec<&NodeId> = before
            .iter()
            .copied()
            .filter(|n| !after.contains(n))
            .collect();
        for (i, to) in gained.iter().enumerate() {
            let from = lost.get(i).copied().unwrap_or(before[i % before.len()]);
            transfers.push(Transfer {
                range,
                from: from.clone(),
                to: (*to).clone(),
            });
        }
        for node in lost {
            cleanups.push(Cleanup {
                range,
                node: node.clone(),
            });
        }
    }
    Ok(TransferPlan {
        from_epoch: old.epoch(),
        to_epoch: new.epoch(),
        replication_factor: rf,
        transfers: merge(
            transfers,
            |t| (t.from.clone(), t.to.clone()),
            |t| &mut t.range,
        ),
        cleanups: merge(cleanups, |c| c.node.clone(), |c| &mut c.range),
    })
}

/// Groups items by key (stable, in key order) and merges adjacent ranges within a group.
fn merge<T, K: Ord>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> K,
    range: impl Fn(&mut T) -> &mut TokenRange,
) -> Vec<T> {
    items.sort_by_key(|t| key(t)); // stable: token order is kept within a group
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for mut item in items {
        if let Some(last) = out.last_mut()
            && key(last) == key(&item)
        {
            let next = *range(&mut item);
            let prev = range(last);
            if prev.end == next.start && !prev.is_full() {
                *prev = TokenRange::new(prev.start, next.end);
                continue;
            }
        }
        out.push(item);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, RingOptions};

    #[test]
    fn identical_rings_need_nothing() {
        let r = Ring::with_nodes(RingOptions::default(), ["a", "b", "c"]).unwrap();
        let plan = transfer_plan(&r, &r, 3).unwrap();
        assert!(plan.is_empty());
        assert_eq!(plan.fraction_moved(), 0.0);
    }

    #[test]
    fn remove_streams_from_the_leaving_node() {
        let old = Ring::with_nodes(RingOptions::default(), ["a", "b", "c", "d"]).unwrap();
        let new = old.remove_node("d").unwrap();
        let plan = transfer_plan(&old, &new, 1).unwrap();
        assert!(plan.transfers.iter().all(|t| t.from.as_str() == "d"));
        assert!(plan.cleanups.iter().all(|c| c.node.as_str() == "d"));
        let moved = plan.fraction_moved();
        let owned = old.ownership(1).unwrap()[3].primary;
        assert!((moved - owned).abs() < 1e-9, "{moved} vs {owned}");
    }

    #[test]
    fn errors() {
        let a = Ring::with_nodes(RingOptions::default(), ["a", "b"]).unwrap();
        assert!(matches!(
            transfer_plan(&a, &a, 0),
            Err(Error::InvalidReplicationFactor { .. })
        ));
        assert!(matches!(
            transfer_plan(&a, &a, 3),
            Err(Error::InvalidReplicationFactor { .. })
        ));
        let empty = Ring::new(RingOptions::default());
        assert_eq!(transfer_plan(&empty, &a, 1).unwrap_err(), Error::EmptyRing);
    }
}
