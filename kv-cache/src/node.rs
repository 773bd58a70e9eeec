//! One cache entry, and the raw handle the eviction queues keep to it.

use crossbeam_epoch::Atomic;

use crate::shim::{AtomicU8, Ordering};

/// `Node::state` values. Written only under the shard lock.
pub(crate) mod state {
    /// In the small (probation) FIFO queue.
    pub(crate) const SMALL: u8 = 0;
    /// In the main FIFO queue (CLOCK uses only this one).
    pub(crate) const MAIN: u8 = 1;
    /// Unlinked from its bucket chain by `remove`, a replacement or `clear`, but still owned by
    /// a queue, which frees it when it reaches it (or when the queue is compacted).
    pub(crate) const REMOVED: u8 = 2;
}

/// An immutable key/value pair in a bucket chain.
///
/// The key and value never change after publication: a new value for a key is a new node that
/// replaces this one in its chain. Only `next` (by writers, under the shard lock) and the
/// recency counter `freq` (by readers, lock-free) change.
pub(crate) struct Node<K, V> {
    pub(crate) hash: u64,
    /// Recency/frequency: readers raise it (up to the policy's maximum, reading before
    /// writing so a hot entry's line is not written on every hit); the eviction hand lowers it.
    pub(crate) freq: AtomicU8,
    /// One of [`state`]'s values; only touched under the shard lock.
    pub(crate) state: AtomicU8,
    pub(crate) weight: u64,
    pub(crate) next: Atomic<Node<K, V>>,
    pub(crate) key: K,
    pub(crate) value: V,
}

impl<K, V> Node<K, V> {
    pub(crate) fn new(hash: u64, key: K, value: V, weight: u64, freq: u8, state: u8) -> Self {
        Self {
            hash,
            freq: AtomicU8::new(freq),
            state: AtomicU8::new(state),
            weight,
            next: Atomic::null(),
            key,
            value,
        }
    }

    /// Records a read. Lock-free; a lost update under a race only loses one count.
    #[inline]
    pub(crate) fn touch(&self, max_freq: u8) {
        let freq = self.freq.load(Ordering::Relaxed);
        if freq < max_freq {
            self.freq.store(freq + 1, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn state(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn set_state(&self, state: u8) {
        self.state.store(state, Ordering::Relaxed);
    }
}

/// A queue's owning handle to a node (the pointer `Owned::into_shared` gave).
///
/// Every node is in exactly one eviction queue from its insertion until it is freed, and the
/// queue entry is the node's owner: a node is freed (deferred through the epoch, or directly in
/// `Drop`) exactly when its queue entry is dropped. Bucket chains only borrow.
pub(crate) struct NodePtr<K, V>(pub(crate) *const Node<K, V>);

impl<K, V> Clone for NodePtr<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for NodePtr<K, V> {}

// SAFETY: a `NodePtr` is only dereferenced by threads holding the shard lock (or `&mut Cache`),
// and the node it points to is shared with readers on other threads, so moving the handle
// between threads is sound exactly when the node may be shared: `K` and `V` are `Send + Sync`.
unsafe impl<K: Send + Sync, V: Send + Sync> Send for NodePtr<K, V> {}
