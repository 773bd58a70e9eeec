//! Batched deferred destruction of unlinked nodes.
//!
//! Deferring each node separately costs crossbeam-epoch one entry in the thread's bag, and every
//! 64 entries a sealed bag pushed to the global queue and a collection that reads every thread's
//! epoch: cross-core traffic on every write. Retiring nodes into a per-shard batch and deferring
//! the whole batch at once cuts that by the batch size, at the price of keeping up to
//! `BATCH - 1` unlinked nodes per shard alive until the batch fills (or `clear`, or `Drop`).
//!
//! Counting nodes is not enough for a weighted cache: 63 nodes of nearly a shard's capacity each
//! would hold 63 times the capacity. So a batch is also deferred once its weight exceeds the
//! shard's garbage limit (its capacity plus 64), and the shard asks its writer to flush the
//! thread's epoch bag once that much weight has been deferred since the last flush.

use crossbeam_epoch::{Guard, Owned};

use crate::node::NodePtr;

/// Nodes per deferred batch. One under loom, so the model checks every deferral.
#[cfg(not(crossbeam_loom))]
const BATCH: usize = 64;
#[cfg(crossbeam_loom)]
const BATCH: usize = 1;

/// Unlinked nodes waiting to be handed to the epoch collector. Owned by a shard's writer state.
pub(crate) struct Retired<K, V> {
    batch: Vec<NodePtr<K, V>>,
    /// Total weight of `batch`.
    weight: u64,
    /// Weight deferred since the last [`take_flush`](Self::take_flush) said to flush.
    unflushed: u64,
    /// Weight of garbage tolerated per shard before it is handed over (and then flushed).
    limit: u64,
}

impl<K, V> Retired<K, V> {
    /// `limit`: the shard's capacity plus 64. With unit weights a batch (64 nodes) never
    /// exceeds it, so only the node count triggers a deferral.
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            batch: Vec::new(),
            weight: 0,
            unflushed: 0,
            limit,
        }
    }

    /// Whether the writer should `Guard::flush`: more than `limit` weight was deferred into
    /// this thread's (or another writer's) epoch bag since the last time this said so.
    pub(crate) fn take_flush(&mut self) -> bool {
        let flush = self.unflushed > self.limit;
        if flush {
            self.unflushed = 0;
        }
        flush
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.batch.len()
    }

    #[cfg(test)]
    pub(crate) fn weight(&self) -> u64 {
        self.weight
    }
}

impl<K, V> Retired<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Takes ownership of a node, to be freed once no pinned reader can still see it.
    ///
    /// # Safety
    ///
    /// `node` must already be unlinked from its bucket chain (so that no reader pinning after
    /// this call can reach it), must be owned by nothing else (no queue entry), and must not
    /// have been retired before.
    pub(crate) unsafe fn retire(&mut self, node: NodePtr<K, V>, guard: &Guard) {
        // SAFETY: the caller hands over the only owner of a node that has not been freed.
        self.weight = self.weight.saturating_add(unsafe { (*node.0).weight });
        self.batch.push(node);
        if self.batch.len() >= BATCH || self.weight > self.limit {
            self.defer_all(guard);
        }
    }

    /// Defers the destruction of every retired node to when all threads pinned now have unpinned.
    pub(crate) fn defer_all(&mut self, guard: &Guard) {
        if self.batch.is_empty() {
            return;
        }
        self.unflushed = self.unflushed.saturating_add(self.weight);
        self.weight = 0;
        let batch = Batch(std::mem::replace(
            &mut self.batch,
            Vec::with_capacity(BATCH),
        ));
        // Every node in `batch` was unlinked before it was retired, hence before this call: a
        // reader that can still reach one is pinned now, and the closure runs after it unpins.
        guard.defer(move || drop(batch));
    }
}

/// A batch of retired nodes; dropping it frees them.
struct Batch<K, V>(Vec<NodePtr<K, V>>);

impl<K, V> Drop for Batch<K, V> {
    fn drop(&mut self) {
        for node in self.0.drain(..) {
            // SAFETY: `retire`'s contract makes this batch the node's only owner, and the batch
            // is dropped either by the epoch collector once no reader can reach the node, or
            // through `Retired::drop`, when the cache itself is being dropped.
            drop(unsafe { Owned::from_raw(node.0.cast_mut()) });
        }
    }
}

impl<K, V> Drop for Retired<K, V> {
    fn drop(&mut self) {
        // Only reached when the shard is dropped (`&mut` access: no reader is left), so the
        // nodes can be freed directly.
        drop(Batch(std::mem::take(&mut self.batch)));
    }
}

#[cfg(all(test, not(crossbeam_loom)))]
mod tests {
    use crossbeam_epoch::Owned;

    use super::*;
    use crate::node::{Node, state};

    fn node(weight: u64, guard: &Guard) -> NodePtr<u32, u32> {
        NodePtr(
            Owned::new(Node::new(0, 0, 0, weight, 0, state::MAIN))
                .into_shared(guard)
                .as_raw(),
        )
    }

    /// A batch heavier than the limit is deferred at once, not only once it holds 64 nodes.
    #[test]
    fn a_heavy_batch_is_handed_over_and_asks_for_a_flush() {
        let guard = crossbeam_epoch::pin();
        let mut retired = Retired::new(100);
        // SAFETY: fresh nodes, never linked, owned by nothing else.
        unsafe { retired.retire(node(60, &guard), &guard) };
        assert_eq!((retired.len(), retired.take_flush()), (1, false));
        // SAFETY: as above.
        unsafe { retired.retire(node(60, &guard), &guard) };
        assert_eq!(retired.len(), 0, "120 > 100: deferred");
        assert!(retired.take_flush());
        assert!(!retired.take_flush(), "asks once");
    }
}
