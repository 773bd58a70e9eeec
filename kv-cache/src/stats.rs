//! Hit, miss, insert and eviction counters, striped per thread so that counting a hit does not
//! bounce one cache line between every reader.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// Number of counter stripes; threads beyond this share stripes (counts stay exact, since
/// every update is an atomic add).
const STRIPES: usize = 16;

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
pub(crate) struct Counters {
    stripes: Box<[CachePadded<Stripe>]>,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            stripes: (0..STRIPES)
                .map(|_| CachePadded::new(Stripe::default()))
                .collect(),
        }
    }

    #[inline]
    fn stripe(&self) -> &Stripe {
        &self.stripes[thread_stripe() % STRIPES]
    }

    #[inline]
    pub(crate) fn hit(&self) {
        self.stripe().hits.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn miss(&self) {
        self.stripe().misses.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn inserted(&self, evicted: u64) {
        let stripe = self.stripe();
        stripe.inserts.fetch_add(1, Ordering::Relaxed);
        if evicted > 0 {
            stripe.evictions.fetch_add(evicted, Ordering::Relaxed);
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

/// A small per-thread number, assigned round-robin on a thread's first use.
#[inline]
fn thread_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE
        .try_with(|cell| {
            let mut stripe = cell.get();
            if stripe == usize::MAX {
                stripe = NEXT.fetch_add(1, Ordering::Relaxed);
                cell.set(stripe);
            }
            stripe
        })
        // During thread teardown the thread-local is gone; any stripe is correct.
        .unwrap_or(0)
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
    fn hit_ratio_of_nothing_is_zero() {
        assert_eq!(Stats::default().hit_ratio(), 0.0);
    }
}
