//! One shard: a fixed bucket array that readers walk without locking, and the eviction state
//! that writers change under the shard's lock.

use std::borrow::Borrow;
use std::collections::VecDeque;

use crossbeam_epoch::{Atomic, Guard, Owned, Shared};
use crossbeam_utils::CachePadded;

use crate::ghost::Ghost;
use crate::node::{Node, NodePtr, state};
use crate::retire::Retired;
use crate::shim::{AtomicU64, AtomicUsize, Mutex, Ordering};

/// S3-FIFO moves an entry from the small queue to the main one if it was read at least this
/// many times while in the small queue.
const PROMOTE_FREQ: u8 = 1;

/// Call `Guard::flush` after this many writes to a shard, so the up to ~64 objects a thread's
/// local bag holds get handed to the global collector instead of lingering (moka PR #169,
/// crossbeam #566). Not every write: a flush allocates a sealed bag and scans every thread's
/// epoch, which costs cross-core traffic.
const FLUSH_EVERY: u32 = 256;

/// How the eviction policy behaves; see [`Policy`](crate::Policy).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    /// Readers raise a node's `freq` up to this (1: a CLOCK bit; 3: S3-FIFO's 2-bit counter).
    pub(crate) max_freq: u8,
    /// S3-FIFO: new entries start in a small probation queue, and the ghost set is kept.
    pub(crate) s3fifo: bool,
}

/// Sizes of one shard.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShardSize {
    pub(crate) capacity: u64,
    pub(crate) buckets: usize,
    pub(crate) ghost: usize,
}

/// What an insert did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct InsertOutcome {
    pub(crate) stored: bool,
    pub(crate) evicted: u64,
    /// The caller should `guard.flush()` (after releasing the lock).
    pub(crate) flush: bool,
}

/// A bucket head or a node's `next`.
type Link<K, V> = Atomic<Node<K, V>>;

pub(crate) struct Shard<K, V> {
    /// Never resized: a table sized once from the capacity removes the hardest class of
    /// epoch-reclamation bugs (moka #34, a use-after-free during concurrent rehash).
    buckets: Box<[Atomic<Node<K, V>>]>,
    mask: usize,
    /// On its own cache line: every write changes the lock word and the counters, and must not
    /// invalidate the line readers load `buckets` and `mask` from.
    writer: CachePadded<Writer<K, V>>,
}

/// The writer side of a shard, laid out so that a CLOCK insert touches two cache lines: the
/// length mirrors, the lock word (a `Mutex`'s first byte) and the fields every insert updates
/// come first; S3-FIFO's extra state follows.
#[repr(C)]
struct Writer<K, V> {
    /// Mirrors of `ShardState::{len, weight}` for lock-free `Cache::len`.
    len: AtomicUsize,
    weight: AtomicU64,
    state: Mutex<ShardState<K, V>>,
}

#[repr(C)]
struct ShardState<K, V> {
    /// CLOCK's ring, or S3-FIFO's main queue.
    main: VecDeque<NodePtr<K, V>>,
    capacity: u64,
    /// Weight and number of the entries linked in bucket chains.
    weight: u64,
    len: usize,
    /// Queue entries whose node is `REMOVED`: garbage the queues still own.
    removed: usize,
    /// Their total weight: bounded too, or a weighted cache could hold many times its capacity
    /// in replaced values.
    removed_weight: u64,
    writes: u32,
    /// Unlinked nodes no queue owns any more, awaiting deferred destruction.
    retired: Retired<K, V>,
    /// S3-FIFO's probation queue (empty under CLOCK).
    small: VecDeque<NodePtr<K, V>>,
    small_capacity: u64,
    /// Weight of the live entries in `small`.
    small_weight: u64,
    ghost: Ghost,
}

impl<K, V> Shard<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.writer.len.load(Ordering::Relaxed)
    }

    pub(crate) fn weight(&self) -> u64 {
        self.writer.weight.load(Ordering::Relaxed)
    }

    /// Queue entries, live and removed.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        let st = self.writer.state.lock();
        st.small.len() + st.main.len()
    }

    /// Nodes retired and not yet handed to the epoch collector.
    #[cfg(test)]
    pub(crate) fn retired(&self) -> usize {
        self.writer.state.lock().retired.len()
    }

    /// Weight of the unlinked nodes the shard still holds: removed ones in its queues, and
    /// retired ones not yet handed to the epoch collector.
    #[cfg(test)]
    pub(crate) fn garbage_weight(&self) -> u64 {
        let st = self.writer.state.lock();
        st.removed_weight + st.retired.weight()
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> u64 {
        self.writer.state.lock().capacity
    }
}

impl<K, V> Shard<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    pub(crate) fn new(size: ShardSize, params: Params) -> Self {
        let buckets = size.buckets.next_power_of_two();
        // 2% of the capacity: on the Zipf trace of `tests/hit_ratio_zipf.rs` this beats the
        // paper's 10% (78.5% vs 77.8% hits; 5% gives 78.3%).
        let small_capacity = if params.s3fifo { size.capacity / 50 } else { 0 };
        Self {
            buckets: (0..buckets).map(|_| Atomic::null()).collect(),
            mask: buckets - 1,
            writer: CachePadded::new(Writer {
                state: Mutex::new(ShardState {
                    small: VecDeque::new(),
                    main: VecDeque::new(),
                    ghost: Ghost::new(if params.s3fifo { size.ghost } else { 0 }),
                    capacity: size.capacity,
                    small_capacity,
                    weight: 0,
                    len: 0,
                    small_weight: 0,
                    removed: 0,
                    removed_weight: 0,
                    writes: 0,
                    retired: Retired::new(size.capacity.saturating_add(64)),
                }),
                len: AtomicUsize::new(0),
                weight: AtomicU64::new(0),
            }),
        }
    }

    #[inline]
    fn bucket(&self, hash: u64) -> &Atomic<Node<K, V>> {
        &self.buckets[hash as usize & self.mask]
    }

    /// Finds `key` without taking any lock, and records the read in the node.
    #[inline]
    pub(crate) fn get<'a, Q>(
        &'a self,
        hash: u64,
        key: &Q,
        max_freq: u8,
        guard: &'a Guard,
    ) -> Option<&'a V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        let mut cur = self.bucket(hash).load(Ordering::Acquire, guard);
        // SAFETY: every node reachable from a bucket was published with a Release store after
        // it was fully built, and is freed only through epoch-deferred destruction after it has
        // been unlinked, so while `guard` pins the epoch it stays allocated. Unlinking never
        // changes the victim's own `next`, so a reader standing on it walks on into live (or
        // likewise epoch-protected) nodes.
        while let Some(node) = unsafe { cur.as_ref() } {
            if node.hash == hash && node.key.borrow() == key {
                node.touch(max_freq);
                return Some(&node.value);
            }
            cur = node.next.load(Ordering::Acquire, guard);
        }
        None
    }

    /// Inserts or replaces `key`, then evicts until the shard is within its capacity.
    pub(crate) fn insert(
        &self,
        hash: u64,
        key: K,
        value: V,
        weight: u64,
        params: Params,
        guard: &Guard,
    ) -> InsertOutcome
    where
        K: Eq,
    {
        let mut st = self.writer.state.lock();
        let mut outcome = InsertOutcome {
            flush: st.tick(),
            ..InsertOutcome::default()
        };
        if weight > st.capacity {
            // Too heavy to ever fit: do not store it, and do not keep serving an older value.
            self.remove_locked(&mut st, hash, &key, guard);
            self.maybe_compact(&mut st, guard);
            outcome.flush |= st.retired.take_flush();
            self.publish_len(&st);
            return outcome;
        }

        let bucket = self.bucket(hash);
        let (pred, cur) = self.find(bucket, hash, &key, guard);
        let new = Owned::new(Node::new(hash, key, value, weight, 0, state::MAIN));
        // CLOCK makes room *before* the new entry joins the queue: evicting after would sweep
        // the re-circulated entries behind the new one and evict it first.
        // SAFETY: `cur` was loaded under `guard` from a chain we hold the lock of; see `get`.
        let (queue, new) = if let Some(old) = unsafe { cur.as_ref() } {
            // Replacement: the new node takes the old one's place in the chain (and keeps its
            // recency and queue); the old one stays owned by its queue, marked removed. This
            // happens before evicting, while `pred` is still known to be current.
            new.next
                .store(old.next.load(Ordering::Relaxed, guard), Ordering::Relaxed);
            new.freq
                .store(old.freq.load(Ordering::Relaxed), Ordering::Relaxed);
            let queue = old.state();
            new.set_state(queue);
            let new = new.into_shared(guard);
            pred.store(new, Ordering::Release);
            st.forget(old);
            outcome.evicted = self.make_room(&mut st, weight, params, guard);
            (queue, new)
        } else {
            let queue = if params.s3fifo && !st.ghost.take(hash) {
                state::SMALL
            } else {
                state::MAIN
            };
            new.set_state(queue);
            // Evict first: eviction may unlink nodes of this very chain.
            outcome.evicted = self.make_room(&mut st, weight, params, guard);
            new.next
                .store(bucket.load(Ordering::Relaxed, guard), Ordering::Relaxed);
            let new = new.into_shared(guard);
            bucket.store(new, Ordering::Release);
            (queue, new)
        };
        st.enqueue(queue, new.as_raw(), weight);
        outcome.stored = true;
        self.maybe_compact(&mut st, guard);
        outcome.flush |= st.retired.take_flush();
        self.publish_len(&st);
        outcome
    }

    /// Removes `key`, returning its (unlinked) value and whether to flush.
    ///
    /// The value is returned by reference so that the caller clones it after the lock is
    /// released: a panicking or slow `V::clone` then neither runs under the lock nor leaves the
    /// shard half-updated. The reference borrows the shard too, since `Drop` frees directly.
    pub(crate) fn remove<'g, Q>(
        &'g self,
        hash: u64,
        key: &Q,
        guard: &'g Guard,
    ) -> (Option<&'g V>, bool)
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        let mut st = self.writer.state.lock();
        let mut flush = st.tick();
        let value = self.remove_locked(&mut st, hash, key, guard);
        self.maybe_compact(&mut st, guard);
        flush |= st.retired.take_flush();
        self.publish_len(&st);
        (value, flush)
    }

    /// Unlinks every entry; readers already standing on one finish undisturbed.
    pub(crate) fn clear(&self, guard: &Guard) {
        let mut locked = self.writer.state.lock();
        let st = &mut *locked;
        for bucket in self.buckets.iter() {
            bucket.store(Shared::null(), Ordering::Release);
        }
        for ptr in st.small.drain(..).chain(st.main.drain(..)) {
            // SAFETY: the node was just unlinked (every bucket is now empty) and its queue entry,
            // its only owner, was just drained.
            unsafe { st.retired.retire(ptr, guard) };
        }
        st.retired.defer_all(guard);
        // `Cache::clear` flushes after clearing every shard.
        st.retired.take_flush();
        st.ghost.clear();
        st.weight = 0;
        st.len = 0;
        st.small_weight = 0;
        st.removed = 0;
        st.removed_weight = 0;
        self.publish_len(st);
    }

    /// The link that points at `key`'s node (or at the chain's end), and what it points at.
    fn find<'a, 'g, Q>(
        &'a self,
        bucket: &'a Atomic<Node<K, V>>,
        hash: u64,
        key: &Q,
        guard: &'g Guard,
    ) -> (&'a Link<K, V>, Shared<'g, Node<K, V>>)
    where
        'g: 'a,
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        let mut pred = bucket;
        let mut cur = pred.load(Ordering::Relaxed, guard);
        // SAFETY: see `get`; in addition we hold the shard lock, so the chain cannot change.
        while let Some(node) = unsafe { cur.as_ref() } {
            if node.hash == hash && node.key.borrow() == key {
                break;
            }
            pred = &node.next;
            cur = node.next.load(Ordering::Relaxed, guard);
        }
        (pred, cur)
    }

    /// Unlinks `key`'s node, leaving it to its queue, and returns its value.
    fn remove_locked<'g, Q>(
        &self,
        st: &mut ShardState<K, V>,
        hash: u64,
        key: &Q,
        guard: &'g Guard,
    ) -> Option<&'g V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        let (pred, cur) = self.find(self.bucket(hash), hash, key, guard);
        // SAFETY: as in `find`. The reference outlives the shard lock: the node is freed only
        // through epoch-deferred destruction once it leaves its queue (which `guard`, pinned
        // before the unlink below, holds off), or in `Drop`, which needs `&mut` access to the
        // cache that the caller's borrow excludes.
        let node = unsafe { cur.as_ref() }?;
        // Unlink without touching `node.next`: a reader standing on `node` walks on.
        pred.store(node.next.load(Ordering::Relaxed, guard), Ordering::Release);
        st.forget(node);
        Some(&node.value)
    }

    /// Evicts until an entry of `weight` fits.
    fn make_room(
        &self,
        st: &mut ShardState<K, V>,
        weight: u64,
        params: Params,
        guard: &Guard,
    ) -> u64 {
        let mut evicted = 0;
        while st.weight.saturating_add(weight) > st.capacity {
            if !self.evict_one(st, params, guard) {
                break;
            }
            evicted += 1;
        }
        evicted
    }

    /// Unlinks `node` from its chain (it must be linked).
    fn unlink(&self, node: &Node<K, V>, guard: &Guard) {
        let mut pred = self.bucket(node.hash);
        let mut cur = pred.load(Ordering::Relaxed, guard);
        // SAFETY: as in `find`.
        while let Some(n) = unsafe { cur.as_ref() } {
            if std::ptr::eq(n, node) {
                pred.store(n.next.load(Ordering::Relaxed, guard), Ordering::Release);
                return;
            }
            pred = &n.next;
            cur = n.next.load(Ordering::Relaxed, guard);
        }
        debug_assert!(false, "an enqueued live node is always linked");
    }

    /// Evicts one entry by the policy's hand; false if the shard holds no entry.
    ///
    /// CLOCK (one queue, `max_freq` 1): the front entry goes if its bit is clear, else its bit is
    /// cleared and it goes round again. S3-FIFO: the small queue is swept while it holds more
    /// than its 2% of the capacity; its front entry moves to the main queue if it was read
    /// there, else it is evicted and its hash remembered in the ghost set. The main queue is a
    /// CLOCK with a 2-bit counter.
    fn evict_one(&self, st: &mut ShardState<K, V>, params: Params, guard: &Guard) -> bool {
        // Each entry can be passed over at most `max_freq` times (plus one promotion) unless
        // readers keep raising its counter; after that budget, the front entry goes regardless,
        // which bounds the loop.
        let budget = (st.small.len() + st.main.len()) * (usize::from(params.max_freq) + 2) + 1;
        for round in 0..2 * budget {
            let force = round >= budget;
            let from_small =
                !st.small.is_empty() && (st.small_weight > st.small_capacity || st.main.is_empty());
            let popped = if from_small {
                st.small.pop_front()
            } else {
                st.main.pop_front()
            };
            let Some(ptr) = popped else { return false };
            // SAFETY: a queue entry owns a node that has not been freed (it is freed only when
            // its entry is dropped, below or in `clear`/`Drop`), and we hold the shard lock.
            let node = unsafe { &*ptr.0 };
            if node.state() == state::REMOVED {
                st.removed -= 1;
                st.removed_weight = st.removed_weight.saturating_sub(node.weight);
                // SAFETY: a removed node was unlinked when it was marked; its queue entry, its
                // only owner, was just popped.
                unsafe { st.retired.retire(ptr, guard) };
                continue;
            }
            let freq = node.freq.load(Ordering::Relaxed);
            if from_small {
                st.small_weight -= node.weight;
                if freq >= PROMOTE_FREQ && !force {
                    node.freq.store(0, Ordering::Relaxed);
                    node.set_state(state::MAIN);
                    st.main.push_back(ptr);
                    continue;
                }
                st.ghost.push(node.hash);
            } else if freq > 0 && !force {
                node.freq.store(freq - 1, Ordering::Relaxed);
                st.main.push_back(ptr);
                continue;
            }
            self.unlink(node, guard);
            st.weight -= node.weight;
            st.len -= 1;
            // SAFETY: just unlinked, and its only owner (the queue entry) was popped.
            unsafe { st.retired.retire(ptr, guard) };
            return true;
        }
        false
    }

    /// Frees removed nodes once they outnumber the live ones (by more than 64), or outweigh the
    /// capacity (by more than 64), so that a workload of replacements and removals (which never
    /// triggers eviction) cannot grow the queues, or the memory they hold, without bound. With
    /// unit weights the count triggers first, since `len <= capacity`.
    fn maybe_compact(&self, st: &mut ShardState<K, V>, guard: &Guard) {
        if st.removed <= st.len + 64 && st.removed_weight <= st.capacity.saturating_add(64) {
            return;
        }
        let retired = &mut st.retired;
        let mut retain = |ptr: &NodePtr<K, V>| {
            // SAFETY: a queue entry's node is allocated (see `evict_one`) and we hold the lock.
            let node = unsafe { &*ptr.0 };
            if node.state() == state::REMOVED {
                // SAFETY: unlinked when marked removed; its owning queue entry is being dropped.
                unsafe { retired.retire(*ptr, guard) };
                false
            } else {
                true
            }
        };
        st.small.retain(&mut retain);
        st.main.retain(&mut retain);
        st.removed = 0;
        st.removed_weight = 0;
    }

    fn publish_len(&self, st: &ShardState<K, V>) {
        self.writer.len.store(st.len, Ordering::Relaxed);
        self.writer.weight.store(st.weight, Ordering::Relaxed);
    }
}

impl<K, V> ShardState<K, V> {
    /// Counts a write; true every `FLUSH_EVERY` writes.
    fn tick(&mut self) -> bool {
        self.writes = self.writes.wrapping_add(1);
        self.writes.is_multiple_of(FLUSH_EVERY)
    }

    fn enqueue(&mut self, queue: u8, node: *const Node<K, V>, weight: u64) {
        self.weight += weight;
        self.len += 1;
        if queue == state::SMALL {
            self.small_weight += weight;
            self.small.push_back(NodePtr(node));
        } else {
            self.main.push_back(NodePtr(node));
        }
    }

    /// Accounts for a node that was just unlinked; its queue entry frees it later.
    fn forget(&mut self, node: &Node<K, V>) {
        if node.state() == state::SMALL {
            self.small_weight -= node.weight;
        }
        node.set_state(state::REMOVED);
        self.weight -= node.weight;
        self.len -= 1;
        self.removed += 1;
        self.removed_weight = self.removed_weight.saturating_add(node.weight);
    }
}

impl<K, V> Drop for Shard<K, V> {
    fn drop(&mut self) {
        let st = self.writer.state.get_mut();
        for ptr in st.small.drain(..).chain(st.main.drain(..)) {
            // SAFETY: `&mut self` means no reader or writer can reach the node any more, and its
            // queue entry is its only owner, so it is freed here exactly once and directly
            // (nodes that left their queue earlier went to `retired`, which frees its own).
            drop(unsafe { Owned::from_raw(ptr.0.cast_mut()) });
        }
    }
}
