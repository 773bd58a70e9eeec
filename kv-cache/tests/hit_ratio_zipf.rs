//! Hit ratio on a skewed trace: CLOCK must stay within 2% of an exact LRU, and S3-FIFO must
//! reach quick_cache's (the best peer measured). Cache-aside: a `get` that misses is followed by
//! an `insert` of that key.
//!
//! Trace: Zipf(1.0) over 100,000 keys, capacity 10,000, fixed seed (the workload of
//! `benches/benches/cache.rs`).

use std::num::NonZeroUsize;

use kv_cache::{Cache, CacheBuilder, Policy};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::Zipf;

const KEYS: u64 = 100_000;
const CAPACITY: u64 = 10_000;
const REQUESTS: usize = 1_000_000;
const SEED: u64 = 0x5EED_CAFE;

fn trace() -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(SEED);
    let zipf = Zipf::new(KEYS as f64, 1.0).expect("valid Zipf parameters");
    (0..REQUESTS).map(|_| rng.sample(zipf) as u64).collect()
}

fn exact_lru(trace: &[u64]) -> f64 {
    let mut lru = lru::LruCache::new(NonZeroUsize::new(CAPACITY as usize).expect("nonzero"));
    let mut hits = 0;
    for &key in trace {
        if lru.get(&key).is_some() {
            hits += 1;
        } else {
            lru.put(key, ());
        }
    }
    hits as f64 / trace.len() as f64
}

fn quick_cache_hit_ratio(trace: &[u64]) -> f64 {
    // Its defaults, except a fixed hasher and shard count (as for ours), so it is reproducible.
    let options = quick_cache::OptionsBuilder::new()
        .estimated_items_capacity(CAPACITY as usize)
        .weight_capacity(CAPACITY)
        .shards(8)
        .build()
        .expect("valid quick_cache options");
    let cache = quick_cache::sync::Cache::<u64, (), _, _, _>::with_options(
        options,
        quick_cache::UnitWeighter,
        foldhash::fast::FixedState::with_seed(SEED),
        quick_cache::sync::DefaultLifecycle::default(),
    );
    let mut hits = 0;
    for &key in trace {
        if cache.get(&key).is_some() {
            hits += 1;
        } else {
            cache.insert(key, ());
        }
    }
    hits as f64 / trace.len() as f64
}

fn ours(trace: &[u64], policy: Policy) -> f64 {
    // A fixed hasher and shard count, so the result does not depend on the machine.
    let cache: Cache<u64, (), _, _> = CacheBuilder::new(CAPACITY)
        .policy(policy)
        .shards(8)
        .hasher(foldhash::fast::FixedState::with_seed(SEED))
        .build();
    for &key in trace {
        if cache.get(&key).is_none() {
            cache.insert(key, ());
        }
    }
    cache.stats().hit_ratio()
}

#[test]
#[cfg_attr(miri, ignore = "a million requests: far too slow under Miri")]
fn clock_is_within_two_percent_of_exact_lru_and_s3fifo_reaches_quick_cache() {
    let trace = trace();
    let lru = exact_lru(&trace);
    let quick = quick_cache_hit_ratio(&trace);
    let clock = ours(&trace, Policy::Clock);
    let s3fifo = ours(&trace, Policy::S3Fifo);
    println!(
        "hit ratio: exact LRU {lru:.4}, quick_cache {quick:.4}, CLOCK {clock:.4}, \
         S3-FIFO {s3fifo:.4}"
    );
    assert!(
        clock >= 0.98 * lru,
        "CLOCK {clock:.4} < 0.98 x LRU {lru:.4}"
    );
    assert!(
        s3fifo >= quick,
        "S3-FIFO {s3fifo:.4} < quick_cache {quick:.4}"
    );
}
