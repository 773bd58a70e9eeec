//! Batched deferred destruction of unlinked nodes.
//!
//! Deferring each node separately costs crossbeam-epoch one entry in the thread's bag, and every
//! 64 entries a sealed bag pushed to the global queue and a collection that reads every thread's
//! epoch: cross-core traffic on every write. Retiring nodes into a per-shard batch and deferring
//! the whole batch at once cuts that by the batch size, at the price of keeping up to
//! `BATCH - 1` unlinked nodes per shard alive until the batch fills (or `clear`, or `Drop`).

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
}

impl<K, V> Retired<K, V> {
    pub(crate) fn new() -> Self {
        Self { batch: Vec::new() }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.batch.len()
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
        self.batch.push(node);
        if self.batch.len() >= BATCH {
            self.defer_all(guard);
        }
    }

    /// Defers the destruction of every retired node to when all threads pinned now have unpinned.
    pub(crate) fn defer_all(&mut self, guard: &Guard) {
        if self.batch.is_empty() {
            return;
        }
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
