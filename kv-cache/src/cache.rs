//! The cache: shards selected by hash, lock-free `get`, locked writes.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};

use crossbeam_epoch as epoch;
use crossbeam_utils::CachePadded;

use crate::builder::{CacheBuilder, DefaultHashBuilder, Policy};
use crate::shard::{Params, Shard, ShardSize};
use crate::stats::{Counters, Stats};
use crate::weigher::{UnitWeigher, Weigher};

/// A concurrent, bounded cache whose reads take no lock.
///
/// # Concurrency
///
/// `Cache` is `Send + Sync` (when its keys, values, weigher and hasher are) and is meant to be
/// shared, typically in an `Arc`. [`get`](Self::get) takes no lock: it pins a crossbeam epoch,
/// follows atomic pointers down one bucket chain, records the read with one relaxed store (only
/// if the entry's counter is not already at its maximum), clones the value and unpins. Writers
/// ([`insert`](Self::insert), [`remove`](Self::remove), [`clear`](Self::clear)) take the lock of
/// the key's shard, so writers to different shards proceed in parallel and no writer ever blocks
/// a reader. Every operation is linearizable per key: a `get` returns the value of an `insert`
/// of that key that completed or overlapped with it, never a torn or freed one.
///
/// # Capacity
///
/// The capacity is split evenly over the shards; after an `insert` returns, its shard is within
/// its share, so the cache as a whole is within its capacity whenever no insert is in flight.
/// Eviction is per shard, so the policy's order holds within a shard; with
/// [`CacheBuilder::shards`]`(1)` it holds over the whole cache.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use kv_cache::Cache;
///
/// let cache: Arc<Cache<String, Bytes>> = Arc::new(Cache::new(10_000));
/// let reader = {
///     let cache = Arc::clone(&cache);
///     std::thread::spawn(move || cache.get("k"))
/// };
/// cache.insert("k".to_string(), Bytes::from_static(b"v"));
/// // The read raced with the insert: it saw nothing or the whole value.
/// let seen = reader.join().unwrap();
/// assert!(seen.is_none() || seen == Some(Bytes::from_static(b"v")));
/// assert_eq!(cache.get("k"), Some(Bytes::from_static(b"v")));
/// ```
pub struct Cache<K, V, W = UnitWeigher, S = DefaultHashBuilder> {
    shards: Box<[CachePadded<Shard<K, V>>]>,
    shard_mask: usize,
    capacity: u64,
    policy: Policy,
    params: Params,
    weigher: W,
    hasher: S,
    counters: Counters,
    /// Aligns the cache to a cache-line pair, so that its read-only fields (loaded by every
    /// `get`) never share a line with a neighbouring allocation that some thread writes (a
    /// reference count, say), which would make every read miss.
    _align: [CachePadded<()>; 0],
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache of at most `capacity` entries, with the default [`Policy::Clock`].
    ///
    /// # Example
    ///
    /// ```
    /// let cache = kv_cache::Cache::new(2);
    /// cache.insert("a", 1);
    /// cache.insert("b", 2);
    /// cache.insert("c", 3);
    /// assert_eq!(cache.len(), 2);
    /// ```
    pub fn new(capacity: u64) -> Self {
        CacheBuilder::new(capacity).build()
    }
}

impl<K, V, W> Cache<K, V, W>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// A cache bounding the total weight of its entries (for example their size in bytes) by
    /// `capacity`.
    ///
    /// Entries are weighed once, on insertion. An entry heavier than one shard's share of the
    /// capacity is not stored (use [`CacheBuilder::shards`] to control the shares).
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use kv_cache::Cache;
    ///
    /// let cache = Cache::with_weigher(250, |_key: &u32, value: &Bytes| value.len() as u64);
    /// cache.insert(1, Bytes::from(vec![0; 100]));
    /// cache.insert(2, Bytes::from(vec![0; 100]));
    /// cache.insert(3, Bytes::from(vec![0; 100]));
    /// assert!(cache.weight() <= 250);
    /// assert_eq!(cache.len(), 2);
    /// ```
    pub fn with_weigher(capacity: u64, weigher: W) -> Self {
        CacheBuilder::new(capacity).weigher(weigher).build()
    }
}

impl<K, V, W, S> Cache<K, V, W, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
    S: BuildHasher,
{
    pub(crate) fn from_parts(
        capacity: u64,
        policy: Policy,
        params: Params,
        sizes: impl ExactSizeIterator<Item = ShardSize>,
        weigher: W,
        hasher: S,
    ) -> Self {
        let shards: Box<[_]> = sizes
            .map(|size| CachePadded::new(Shard::new(size, params)))
            .collect();
        debug_assert!(shards.len().is_power_of_two());
        Self {
            shard_mask: shards.len() - 1,
            shards,
            capacity,
            policy,
            params,
            weigher,
            hasher,
            counters: Counters::new(),
            _align: [],
        }
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K, V> {
        // High bits pick the shard, low bits the bucket within it.
        &self.shards[(hash >> 40) as usize & self.shard_mask]
    }

    /// The value stored under `key`, cloned; `None` if absent. Takes no lock.
    ///
    /// A hit records the read for the eviction policy. Values are returned by clone, never
    /// behind a guard, so a caller cannot hold the epoch pinned: use a cheaply clonable `V`
    /// (`Bytes`, `Arc<T>`).
    ///
    /// # Example
    ///
    /// ```
    /// let cache = kv_cache::Cache::new(10);
    /// cache.insert("k".to_string(), 7);
    /// assert_eq!(cache.get("k"), Some(7));
    /// assert_eq!(cache.get("missing"), None);
    /// ```
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash);
        let guard = epoch::pin();
        let value = shard.get(hash, key, self.params.max_freq, &guard).cloned();
        drop(guard);
        if value.is_some() {
            self.counters.hit();
        } else {
            self.counters.miss();
        }
        value
    }

    /// The value stored under `key`, cloned, without recording a read: neither the eviction
    /// policy nor the hit/miss counters see it. Takes no lock.
    ///
    /// # Example
    ///
    /// ```
    /// let cache = kv_cache::Cache::new(10);
    /// cache.insert("k", 7);
    /// assert_eq!(cache.peek("k"), Some(7));
    /// assert_eq!(cache.stats().hits, 0);
    /// ```
    pub fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let hash = self.hasher.hash_one(key);
        let guard = epoch::pin();
        // max_freq 0: a lookup that leaves the counter alone.
        self.shard(hash).get(hash, key, 0, &guard).cloned()
    }

    /// Whether `key` is present. Does not count as a read for the policy or the statistics.
    ///
    /// # Example
    ///
    /// ```
    /// let cache = kv_cache::Cache::new(10);
    /// cache.insert(1, ());
    /// assert!(cache.contains_key(&1));
    /// ```
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let hash = self.hasher.hash_one(key);
        let guard = epoch::pin();
        // max_freq 0: a lookup that leaves the counter alone.
        self.shard(hash).get(hash, key, 0, &guard).is_some()
    }

    /// Stores `value` under `key`, replacing any previous value, then evicts by the policy until
    /// the key's shard is within its capacity.
    ///
    /// A replaced entry keeps its recency. An entry heavier than its shard's share of the
    /// capacity is not stored, and any previous value of `key` is removed.
    ///
    /// # Example
    ///
    /// ```
    /// let cache = kv_cache::Cache::new(10);
    /// cache.insert("k", 1);
    /// cache.insert("k", 2);
    /// assert_eq!(cache.get("k"), Some(2));
    /// assert_eq!(cache.len(), 1);
    /// ```
    pub fn insert(&self, key: K, value: V) {
        let hash = self.hasher.hash_one(&key);
        let weight = self.weigher.weight(&key, &value).max(1);
        let guard = epoch::pin();
        let outcome = self
            .shard(hash)
            .insert(hash, key, value, weight, self.params, &guard);
        if outcome.flush {
            guard.flush();
        }
        drop(guard);
        if outcome.stored {
            self.counters.inserted(outcome.evicted);
        }
    }

    /// Removes `key`, returning its value if it was present.
    ///
    /// # Example
    ///
    /// ```
    /// let cache = kv_cache::Cache::new(10);
    /// cache.insert(1, "one");
    /// assert_eq!(cache.remove(&1), Some("one"));
    /// assert_eq!(cache.remove(&1), None);
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let hash = self.hasher.hash_one(key);
        let guard = epoch::pin();
        let (value, flush) = self.shard(hash).remove(hash, key, &guard);
        // Cloned outside the shard lock, while `guard` keeps the unlinked node alive.
        let value = value.cloned();
        if flush {
            guard.flush();
        }
        value
    }

    /// Removes every entry. Readers already inside a `get` finish with the entry they found.
    ///
    /// # Example
    ///
    /// ```
    /// let cache = kv_cache::Cache::new(10);
    /// cache.insert(1, 1);
    /// cache.clear();
    /// assert!(cache.is_empty());
    /// ```
    pub fn clear(&self) {
        let guard = epoch::pin();
        for shard in self.shards.iter() {
            shard.clear(&guard);
        }
        guard.flush();
    }
}

impl<K, V, W, S> Cache<K, V, W, S> {
    /// The number of entries. Exact when no write is in flight.
    ///
    /// # Example
    ///
    /// ```
    /// let cache = kv_cache::Cache::new(10);
    /// cache.insert(1, 1);
    /// assert_eq!(cache.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.len()).sum()
    }

    /// Whether the cache holds no entry.
    ///
    /// # Example
    ///
    /// ```
    /// let cache: kv_cache::Cache<u8, u8> = kv_cache::Cache::new(10);
    /// assert!(cache.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The total weight of the entries (their number, without a weigher).
    ///
    /// # Example
    ///
    /// ```
    /// let cache = kv_cache::Cache::with_weigher(100, |_: &u8, v: &String| v.len() as u64);
    /// cache.insert(1, "four".to_string());
    /// assert_eq!(cache.weight(), 4);
    /// ```
    pub fn weight(&self) -> u64 {
        self.shards.iter().map(|shard| shard.weight()).sum()
    }

    /// The capacity the cache was built with.
    ///
    /// # Example
    ///
    /// ```
    /// let cache: kv_cache::Cache<u8, u8> = kv_cache::Cache::new(10);
    /// assert_eq!(cache.capacity(), 10);
    /// ```
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The eviction policy.
    ///
    /// # Example
    ///
    /// ```
    /// let cache: kv_cache::Cache<u8, u8> = kv_cache::Cache::new(10);
    /// assert_eq!(cache.policy(), kv_cache::Policy::Clock);
    /// ```
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Hits, misses, inserts and evictions so far.
    ///
    /// # Example
    ///
    /// ```
    /// let cache = kv_cache::Cache::new(1);
    /// cache.insert(1, 1);
    /// cache.insert(2, 2);
    /// assert_eq!(cache.stats().evictions, 1);
    /// ```
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    #[cfg(test)]
    pub(crate) fn shard_capacities(&self) -> Vec<u64> {
        self.shards.iter().map(|shard| shard.capacity()).collect()
    }
}

impl<K, V, W, S> fmt::Debug for Cache<K, V, W, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("capacity", &self.capacity)
            .field("policy", &self.policy)
            .field("shards", &self.shards.len())
            .field("len", &self.len())
            .field("weight", &self.weight())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operations of the longer loops below; fewer under Miri, which interprets every one of
    /// them (each loop still overflows the capacity or the bound it checks several times).
    const OPS: u32 = if cfg!(miri) { 1_000 } else { 10_000 };

    /// One shard, so CLOCK order is over the whole cache.
    fn clock(capacity: u64) -> Cache<&'static str, u32> {
        CacheBuilder::new(capacity).shards(1).build()
    }

    #[test]
    fn the_least_recently_read_entry_goes_first() {
        let cache = clock(3);
        cache.insert("a", 1);
        cache.insert("b", 2);
        cache.insert("c", 3);
        assert_eq!(cache.get("a"), Some(1));
        assert_eq!(cache.get("b"), Some(2));
        cache.insert("d", 4); // c was never read: it goes
        assert_eq!(cache.get("c"), None);
        // Recency is now a, b, d (d just read); a exact LRU evicts a next, and so does CLOCK.
        assert_eq!(cache.get("d"), Some(4));
        cache.insert("e", 5);
        assert!(!cache.contains_key("a"));
        assert!(cache.contains_key("b") && cache.contains_key("d") && cache.contains_key("e"));
        assert_eq!(cache.stats().evictions, 2);
    }

    #[test]
    fn a_peek_is_not_a_read() {
        let cache = clock(2);
        cache.insert("a", 1);
        cache.insert("b", 2);
        assert_eq!(cache.peek("a"), Some(1));
        assert_eq!(cache.peek("z"), None);
        cache.insert("c", 3); // "a" was only peeked at: it goes first
        assert!(!cache.contains_key("a") && cache.contains_key("b"));
        let s = cache.stats();
        assert_eq!((s.hits, s.misses), (0, 0));
    }

    #[test]
    fn without_reads_the_oldest_insertion_goes_first() {
        let cache = clock(3);
        for (i, key) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            cache.insert(key, i as u32);
        }
        assert!(!cache.contains_key("a") && !cache.contains_key("b"));
        assert_eq!(cache.len(), 3);
    }

    /// The documented approximation: once every entry has been read, CLOCK degrades to FIFO
    /// order (the hand clears all bits, then evicts the oldest insertion), where an exact LRU
    /// would evict the least recently read.
    ///
    /// The new entry is enqueued after the eviction: enqueued before it, the hand would sweep
    /// the re-circulated entries behind it and evict the entry being inserted.
    #[test]
    fn when_everything_was_read_clock_falls_back_to_insertion_order() {
        let cache = clock(2);
        cache.insert("a", 1);
        cache.insert("b", 2);
        cache.get("b");
        cache.get("a"); // LRU would now evict b
        cache.insert("c", 3);
        assert!(
            !cache.contains_key("a"),
            "CLOCK evicts the oldest insertion"
        );
        assert!(cache.contains_key("b"));
    }

    #[test]
    fn capacity_is_never_exceeded_after_an_insert_returns() {
        for shards in [1, 4, 16] {
            let cache: Cache<u64, u64> = CacheBuilder::new(100).shards(shards).build();
            for i in 0..u64::from(OPS) {
                let key = (i * 7919) % 1000;
                if i % 3 == 0 {
                    cache.get(&key);
                }
                cache.insert(key, i);
                assert!(cache.len() <= 100, "len {} after insert {i}", cache.len());
            }
        }
    }

    #[test]
    fn weighted_capacity_bounds_the_total_weight() {
        let cache: Cache<u32, Vec<u8>, _> = CacheBuilder::new(1000)
            .weigher(|_: &u32, v: &Vec<u8>| v.len() as u64)
            .shards(1)
            .build();
        for i in 0..200u32 {
            cache.insert(i, vec![0; (i as usize % 50) + 1]);
            assert!(
                cache.weight() <= 1000,
                "weight {} after insert {i}",
                cache.weight()
            );
        }
        assert!(cache.len() > 20, "small values fill the cache");
        // Too heavy to fit: not stored, and the key's old value is dropped too.
        cache.insert(7, vec![1; 10]);
        assert!(cache.contains_key(&7));
        cache.insert(7, vec![1; 1001]);
        assert_eq!(cache.get(&7), None);
        assert!(cache.weight() <= 1000);
    }

    #[test]
    fn a_zero_weight_counts_as_one() {
        let cache = Cache::with_weigher(3, |_: &u8, _: &u8| 0);
        for i in 0..10 {
            cache.insert(i, i);
        }
        assert_eq!((cache.len(), cache.weight()), (3, 3));
    }

    #[test]
    fn replacing_keeps_one_entry_and_the_newest_value() {
        let cache = clock(2);
        cache.insert("a", 1);
        cache.insert("a", 2);
        cache.insert("a", 3);
        assert_eq!((cache.len(), cache.get("a")), (1, Some(3)));
        assert_eq!(cache.stats().inserts, 3);
    }

    #[test]
    fn remove_and_clear() {
        let cache = clock(10);
        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            cache.insert(key, i as u32);
        }
        assert_eq!(cache.remove("b"), Some(1));
        assert_eq!(cache.remove("b"), None);
        assert_eq!((cache.len(), cache.get("b")), (2, None));
        cache.clear();
        assert!(cache.is_empty());
        assert_eq!(
            (cache.get("a"), cache.get("c"), cache.weight()),
            (None, None, 0)
        );
        cache.insert("a", 9);
        assert_eq!(cache.get("a"), Some(9));
    }

    #[test]
    fn removes_and_replacements_do_not_grow_the_queues() {
        let cache: Cache<u32, u32> = CacheBuilder::new(10).shards(1).build();
        for i in 0..OPS {
            cache.insert(i % 4, i);
            if i % 3 == 0 {
                cache.remove(&(i % 4));
            }
        }
        let queued = cache.shards[0].queued();
        assert!(
            queued <= cache.len() + 65 + 1,
            "{queued} queue entries for {} live",
            cache.len()
        );
    }

    #[test]
    fn retired_nodes_wait_in_bounded_batches_and_clear_hands_them_over() {
        let cache: Cache<u32, u32> = CacheBuilder::new(10).shards(1).build();
        for i in 0..OPS / 10 {
            cache.insert(i, i);
            assert!(cache.shards[0].retired() < 64);
        }
        cache.clear();
        assert_eq!(cache.shards[0].retired(), 0);
    }

    #[test]
    fn s3fifo_keeps_a_hot_entry_through_a_scan() {
        let s3: Cache<u32, u32> = CacheBuilder::new(10)
            .policy(Policy::S3Fifo)
            .shards(1)
            .build();
        let clock: Cache<u32, u32> = CacheBuilder::new(10).shards(1).build();
        for cache in [&s3, &clock] {
            cache.insert(0, 0);
            for _ in 0..3 {
                cache.get(&0);
            }
            for key in 1..100 {
                cache.insert(key, key); // one-hit wonders
            }
        }
        assert!(s3.contains_key(&0), "S3-FIFO protects the hot entry");
        assert!(!clock.contains_key(&0), "CLOCK lets a long scan flush it");
        assert_eq!(s3.len(), 10);
    }

    #[test]
    fn s3fifo_readmits_a_ghost_to_the_main_queue() {
        let cache: Cache<u32, u32> = CacheBuilder::new(10)
            .policy(Policy::S3Fifo)
            .shards(1)
            .build();
        for key in 0..20 {
            cache.insert(key, key);
        }
        assert!(!cache.contains_key(&0));
        cache.insert(0, 0); // 0 is a ghost: back into the main queue
        for key in 100..105 {
            cache.insert(key, key);
        }
        assert!(
            cache.contains_key(&0),
            "a re-admitted ghost outlives new one-hit wonders"
        );
    }

    /// Removed and replaced nodes are bounded by their weight too, not only by their count
    /// (live + 64): by count alone, a weighted cache replacing a heavy value keeps ~75 copies
    /// of it, 60 times its capacity.
    #[test]
    fn replacing_heavy_values_keeps_unlinked_garbage_within_the_capacity() {
        let cache: Cache<u32, Vec<u8>, _> = CacheBuilder::new(1000)
            .weigher(|_: &u32, v: &Vec<u8>| v.len() as u64)
            .shards(1)
            .build();
        for i in 0..10 {
            cache.insert(i, vec![0; 1]);
        }
        // 10 + 900 fits: nothing is ever evicted, so the hand never frees the old nodes.
        for round in 0..OPS / 20 {
            cache.insert(100, vec![0; 900]);
            if round % 3 == 0 {
                cache.remove(&100);
            }
            let garbage = cache.shards[0].garbage_weight();
            assert!(
                garbage <= 2 * (1000 + 64),
                "round {round}: {garbage} weight of unlinked values for capacity 1000"
            );
        }
        assert_eq!(cache.len(), 11);
    }

    /// A value whose `clone` panics when asked to.
    #[derive(Debug)]
    struct Fragile(bool);

    impl Clone for Fragile {
        fn clone(&self) -> Self {
            assert!(!self.0, "Fragile::clone");
            Fragile(false)
        }
    }

    /// `remove` clones the value after the shard lock is released (the epoch guard keeps the
    /// unlinked node alive): a `clone` that panicked under the lock, after the unlink, would
    /// skip publishing the new length and leave `len()` stale.
    #[test]
    fn a_panicking_clone_in_remove_leaves_len_exact() {
        let cache: Cache<u32, Fragile> = CacheBuilder::new(10).shards(1).build();
        cache.insert(1, Fragile(true));
        cache.insert(2, Fragile(false));
        let removed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cache.remove(&1)));
        assert!(removed.is_err(), "the clone panicked");
        assert!(!cache.contains_key(&1));
        assert_eq!((cache.len(), cache.weight()), (1, 1));
        cache.insert(3, Fragile(false)); // the lock is neither held nor poisoned
        assert_eq!(cache.len(), 2);
    }

    /// Every key hashes to the same value: one bucket chain, one shard.
    #[derive(Clone, Default)]
    struct Collide;

    impl std::hash::Hasher for Collide {
        fn finish(&self) -> u64 {
            42
        }
        fn write(&mut self, _: &[u8]) {}
    }

    impl BuildHasher for Collide {
        type Hasher = Collide;
        fn build_hasher(&self) -> Collide {
            Collide
        }
    }

    #[test]
    fn keys_with_equal_hashes_are_kept_apart() {
        let cache: Cache<u32, u32, UnitWeigher, Collide> =
            CacheBuilder::new(10).hasher(Collide).build();
        for key in 0..30 {
            cache.insert(key, key * 10);
        }
        assert_eq!(cache.len(), 10);
        for key in 20..30 {
            assert_eq!(cache.get(&key), Some(key * 10));
        }
        assert_eq!(cache.remove(&25), Some(250));
        cache.insert(24, 1);
        assert_eq!(
            (cache.get(&24), cache.get(&25), cache.get(&26)),
            (Some(1), None, Some(260))
        );
    }

    /// A key whose `eq` panics when either side is marked.
    #[derive(Debug)]
    struct Touchy(u32, bool);

    impl std::hash::Hash for Touchy {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.hash(state);
        }
    }

    impl PartialEq for Touchy {
        fn eq(&self, other: &Self) -> bool {
            assert!(!self.1 && !other.1, "Touchy::eq");
            self.0 == other.0
        }
    }
    impl Eq for Touchy {}

    #[test]
    fn a_panicking_eq_under_the_shard_lock_leaves_the_cache_usable() {
        let cache: Cache<Touchy, u32, UnitWeigher, Collide> =
            CacheBuilder::new(10).hasher(Collide).build();
        cache.insert(Touchy(1, false), 1);
        cache.insert(Touchy(2, false), 2);
        // Walks the shared chain, comparing under the shard lock, and panics there.
        let inserted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache.insert(Touchy(3, true), 3)
        }));
        assert!(inserted.is_err(), "eq panicked");
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&Touchy(1, false)), Some(1));
        cache.insert(Touchy(2, false), 20);
        assert_eq!(cache.remove(&Touchy(1, false)), Some(1));
        assert_eq!((cache.len(), cache.get(&Touchy(2, false))), (1, Some(20)));
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let cache = clock(0);
        cache.insert("a", 1);
        assert_eq!((cache.len(), cache.get("a")), (0, None));
    }

    #[test]
    fn cache_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Cache<String, bytes::Bytes>>();
        assert_send_sync::<Cache<u64, std::sync::Arc<Vec<u8>>>>();
    }

    #[test]
    fn debug_shows_the_shape() {
        let cache = clock(5);
        cache.insert("a", 1);
        let debug = format!("{cache:?}");
        assert!(
            debug.contains("capacity: 5") && debug.contains("len: 1"),
            "{debug}"
        );
    }
}
