//! Hit, miss, insert and eviction counters, striped per thread so that counting a hit does not
//! bounce one cache line between every reader.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// A snapshot of a cache's counters, from [`Cache::stats`](crate::Cache::stats).
///
/// Counters are updated with relaxed atomics on per-thread stripes and summed when read, so a
/// snapshot taken while other threads run is not an atomic cut across the counters.
///
/// # Example
///
/// ```
/// let cache = kv_cache::Cache::new(10);
/// cache.insert(1, "one");
/// assert_eq!(cache.get(&1), Some("one"));
/// assert_eq!(cache.get(&2), None);
/// let stats = cache.stats();
/// assert_eq!((stats.hits, stats.misses, stats.inserts, stats.evictions), (1, 1, 1, 0));
/// assert_eq!(stats.hit_ratio(), 0.5);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// `get` calls that found the key.
    pub hits: u64,
    /// `get` calls that did not find the key.
    pub misses: u64,
    /// `insert` calls that stored their entry (new keys and replacements).
    pub inserts: u64,
    /// Entries removed to make room (not counting `remove`, `clear` or replacements).
    pub evictions: u64,
}

impl Stats {
    /// `hits / (hits + misses)`, or 0 before the first `get`.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

#[derive(Default)]
struct Stripe {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
}

/// The live counters inside a cache.
///
/// A `lock`-prefixed add on every `get` measurably slows the read path (over a third of `get`'s
/// own time in a profile), so each thread that claims one of the [`SLOTS`] exclusive
/// slots counts into its own stripe with a plain load and store; threads beyond that share an
/// overflow stripe with atomic adds. Counts are exact either way.
pub(crate) struct Counters {
    /// `SLOTS` exclusive stripes, then the shared overflow stripe.
    stripes: Box<[CachePadded<Stripe>]>,
}

/// Exclusive counter slots, claimed by threads on first use and released when they exit.
const SLOTS: usize = 64;

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            stripes: (0..=SLOTS)
                .map(|_| CachePadded::new(Stripe::default()))
                .collect(),
        }
    }

    #[inline]
    fn add(&self, field: impl Fn(&Stripe) -> &AtomicU64, n: u64) {
        match thread_slot() {
            Some(slot) => {
                // Only this thread writes this stripe (until it exits and releases the slot,
                // which happens-before the next owner's claim), so load + store loses nothing.
                let counter = field(&self.stripes[slot]);
                counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
            }
            None => {
                field(&self.stripes[SLOTS]).fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    #[inline]
    pub(crate) fn hit(&self) {
        self.add(|s| &s.hits, 1);
    }

    #[inline]
    pub(crate) fn miss(&self) {
        self.add(|s| &s.misses, 1);
    }

    #[inline]
    pub(crate) fn inserted(&self, evicted: u64) {
        self.add(|s| &s.inserts, 1);
        if evicted > 0 {
            self.add(|s| &s.evictions, evicted);
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let mut stats = Stats::default();
        for stripe in self.stripes.iter() {
            stats.hits += stripe.hits.load(Ordering::Relaxed);
            stats.misses += stripe.misses.load(Ordering::Relaxed);
            stats.inserts += stripe.inserts.load(Ordering::Relaxed);
            stats.evictions += stripe.evictions.load(Ordering::Relaxed);
        }
        stats
    }
}

/// Which slots are claimed.
static CLAIMED: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];

/// A thread's claim on an exclusive slot, released when the thread exits.
struct Claim(Option<usize>);

impl Claim {
    fn new() -> Self {
        Claim(CLAIMED.iter().position(|claimed| {
            claimed
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        }))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            CLAIMED[slot].store(false, Ordering::Release);
        }
    }
}

/// This thread's exclusive slot, if it has one.
#[inline]
fn thread_slot() -> Option<usize> {
    thread_local! {
        static CLAIM: Claim = Claim::new();
    }
    // During thread teardown the claim is gone: count in the shared stripe.
    CLAIM.try_with(|claim| claim.0).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_across_threads() {
        let counters = Counters::new();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        counters.hit();
                    }
                    counters.miss();
                    counters.inserted(2);
                });
            }
        });
        let stats = counters.snapshot();
        assert_eq!(
            (stats.hits, stats.misses, stats.inserts, stats.evictions),
            (4000, 4, 4, 8)
        );
    }

    #[test]
    fn counts_stay_exact_with_more_threads_than_slots() {
        let counters = Counters::new();
        std::thread::scope(|s| {
            for _ in 0..SLOTS + 8 {
                s.spawn(|| {
                    for _ in 0..100 {
                        counters.miss();
                    }
                });
            }
        });
        assert_eq!(counters.snapshot().misses, 100 * (SLOTS as u64 + 8));
    }

    #[test]
    fn hit_ratio_of_nothing_is_zero() {
        assert_eq!(Stats::default().hit_ratio(), 0.0);
    }
}
