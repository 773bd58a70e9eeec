//! Building a cache: capacity, eviction policy, weigher, hasher and shard count.

use std::hash::{BuildHasher, Hash};

use crate::cache::Cache;
use crate::shard::{Params, ShardSize};
use crate::weigher::{UnitWeigher, Weigher};

/// The default hasher: foldhash, seeded per cache (fast on short keys, and keys an attacker
/// chooses cannot be aimed at one bucket without the seed).
pub type DefaultHashBuilder = foldhash::fast::RandomState;

/// Which entry an insert evicts when the cache is full. Reads are lock-free under every policy.
///
/// # Example
///
/// ```
/// use kv_cache::{Cache, CacheBuilder, Policy};
///
/// let cache: Cache<u64, u64> = CacheBuilder::new(1000).policy(Policy::S3Fifo).build();
/// assert_eq!(cache.policy(), Policy::S3Fifo);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Policy {
    /// CLOCK, an approximation of LRU (the default): a read sets the entry's reference bit
    /// (only if it is clear); the eviction hand sweeps entries in insertion order, clears set
    /// bits and evicts the first entry whose bit is already clear. An entry read since the hand
    /// last passed it survives; among those not read, the oldest insertion goes first.
    #[default]
    Clock,
    /// S3-FIFO (Yang et al., SOSP 2023): new entries enter a small FIFO queue holding 2% of the
    /// capacity; an entry read while there moves to the main queue on reaching its front,
    /// one that was not is evicted and its hash is remembered in a ghost set, so that if it
    /// comes back it goes straight to the main queue. The main queue is a CLOCK with a 2-bit
    /// counter (SIEVE-like "lazy promotion"). It keeps one-hit wonders from flushing the cache,
    /// which on skewed workloads gives a higher hit ratio than LRU.
    S3Fifo,
}

impl Policy {
    pub(crate) fn params(self) -> Params {
        match self {
            Policy::Clock => Params {
                max_freq: 1,
                s3fifo: false,
            },
            Policy::S3Fifo => Params {
                max_freq: 3,
                s3fifo: true,
            },
        }
    }
}

/// Configures and builds a [`Cache`].
///
/// Defaults: [`Policy::Clock`], [`UnitWeigher`] (the capacity counts entries), the
/// [`DefaultHashBuilder`], and a shard count of four per available core, rounded up to a power
/// of two, at most 64, and halved until every shard holds at least 64 of the estimated entries.
///
/// # Example
///
/// ```
/// use kv_cache::{Cache, CacheBuilder, Policy};
///
/// // A cache of at most 1 MiB of values.
/// let cache: Cache<String, Vec<u8>, _> = CacheBuilder::new(1 << 20)
///     .weigher(|_key: &String, value: &Vec<u8>| value.len() as u64)
///     .estimated_items(4096)
///     .policy(Policy::S3Fifo)
///     .build();
/// cache.insert("a".to_string(), vec![0; 1000]);
/// assert_eq!(cache.weight(), 1000);
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct CacheBuilder<W = UnitWeigher, S = DefaultHashBuilder> {
    capacity: u64,
    policy: Policy,
    shards: Option<usize>,
    estimated_items: Option<usize>,
    weigher: W,
    weighted: bool,
    hasher: S,
}

impl CacheBuilder {
    /// A builder for a cache of `capacity` (entries, or the weigher's unit once one is set).
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            policy: Policy::default(),
            shards: None,
            estimated_items: None,
            weigher: UnitWeigher,
            weighted: false,
            hasher: DefaultHashBuilder::default(),
        }
    }
}

/// The most shards a cache may have ([`CacheBuilder::shards`] clamps to it).
pub const MAX_SHARDS: usize = 1 << 12;

/// The largest table a cache sizes for ([`CacheBuilder::estimated_items`] clamps to it): 2^26
/// entries, a 1 GiB bucket table.
pub const MAX_ESTIMATED_ITEMS: usize = 1 << 26;

impl<W, S> CacheBuilder<W, S> {
    /// The eviction policy (default [`Policy::Clock`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The number of shards, rounded up to a power of two and clamped to `1..=`[`MAX_SHARDS`].
    /// Each shard has its own writer lock and an equal share of the capacity; an entry heavier
    /// than one share is never stored. One shard gives exact CLOCK order over the whole cache.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards.clamp(1, MAX_SHARDS).next_power_of_two());
        self
    }

    /// How many entries the cache is expected to hold, which sizes its fixed bucket table: 16
    /// bytes per entry, allocated up front (default: the capacity without a weigher,
    /// `capacity / 1024` with one, at most 2^22 either way; a value given here is clamped to
    /// `1..=`[`MAX_ESTIMATED_ITEMS`]). The table never resizes; more entries than this only make
    /// bucket chains longer.
    pub fn estimated_items(mut self, items: usize) -> Self {
        self.estimated_items = Some(items.clamp(1, MAX_ESTIMATED_ITEMS));
        self
    }

    /// Measures entries with `weigher`: the capacity then bounds the sum of their weights.
    ///
    /// The bucket table is then sized for entries of 1 KiB on average (`capacity / 1024`): if
    /// entries are smaller, or the weigher counts something else (1 per entry), say how many
    /// entries to expect with [`estimated_items`](Self::estimated_items), or lookups walk long
    /// bucket chains (a 1,000-entry cache of small entries sized by weight alone gets 2
    /// buckets, and its hits are 30x slower).
    pub fn weigher<W2>(self, weigher: W2) -> CacheBuilder<W2, S> {
        CacheBuilder {
            capacity: self.capacity,
            policy: self.policy,
            shards: self.shards,
            estimated_items: self.estimated_items,
            weigher,
            weighted: true,
            hasher: self.hasher,
        }
    }

    /// Hashes keys with `hasher` (for example a fixed-seed one, for reproducible tests).
    pub fn hasher<S2>(self, hasher: S2) -> CacheBuilder<W, S2> {
        CacheBuilder {
            capacity: self.capacity,
            policy: self.policy,
            shards: self.shards,
            estimated_items: self.estimated_items,
            weigher: self.weigher,
            weighted: self.weighted,
            hasher,
        }
    }

    /// Builds the cache.
    pub fn build<K, V>(self) -> Cache<K, V, W, S>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        W: Weigher<K, V>,
        S: BuildHasher,
    {
        let items = self.estimated_items.unwrap_or_else(|| {
            let items = if self.weighted {
                self.capacity / 1024
            } else {
                self.capacity
            };
            usize::try_from(items)
                .unwrap_or(usize::MAX)
                .clamp(1, 1 << 22)
        });
        let shards = self.shards.unwrap_or_else(|| default_shards(items));
        let params = self.policy.params();
        let shard_count = shards as u64;
        let sizes = (0..shards).map(|i| {
            // Spread the capacity exactly: the shares sum to `capacity`.
            let extra = u64::from((i as u64) < self.capacity % shard_count);
            let per_shard_items = items.div_ceil(shards);
            ShardSize {
                capacity: self.capacity / shard_count + extra,
                // Twice as many buckets as entries: a miss then finds an empty bucket about
                // three times in four, without touching any node.
                buckets: per_shard_items.saturating_mul(2).max(1),
                ghost: per_shard_items / 2,
            }
        });
        Cache::from_parts(
            self.capacity,
            self.policy,
            params,
            sizes,
            self.weigher,
            self.hasher,
        )
    }
}

fn default_shards(items: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut shards = (cores * 4).next_power_of_two().min(64);
    while shards > 1 && items / shards < 64 {
        shards /= 2;
    }
    shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_caches_get_one_shard() {
        assert_eq!(default_shards(1), 1);
        assert_eq!(default_shards(64), 1);
        assert!(default_shards(1 << 20) <= 64);
    }

    #[test]
    fn shard_capacities_sum_to_the_capacity() {
        let cache: Cache<u32, u32> = CacheBuilder::new(1003).shards(8).build();
        assert_eq!(cache.shard_capacities().iter().sum::<u64>(), 1003);
        assert_eq!(cache.capacity(), 1003);
    }

    /// `shards(usize::MAX)` and a huge `estimated_items` are clamped, not a panic: unclamped,
    /// the first overflows `next_power_of_two` and the second tries to allocate its table.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "4,096 shards: over 6 minutes under Miri; no unsafe code is specific to it"
    )]
    fn absurd_sizes_are_clamped() {
        let cache: Cache<u32, u32> = CacheBuilder::new(10)
            .shards(usize::MAX)
            .estimated_items(usize::MAX / 2)
            .estimated_items(4)
            .build();
        assert_eq!(cache.shard_capacities().len(), MAX_SHARDS);
        cache.insert(1, 1);
        assert_eq!(
            CacheBuilder::new(10)
                .estimated_items(usize::MAX)
                .estimated_items,
            Some(MAX_ESTIMATED_ITEMS)
        );
    }
}
