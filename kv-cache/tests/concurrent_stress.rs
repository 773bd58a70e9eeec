//! Threads doing mixed get/insert/remove (and the odd clear) on a small, constantly evicting
//! cache: every value read must be one that was inserted for that key, intact.

use std::sync::Arc;

use kv_cache::{Cache, CacheBuilder, Policy};
use rand::{Rng, SeedableRng, rngs::StdRng};

const THREADS: u64 = 4;
/// Smaller under Miri, which runs this about a thousand times slower.
const OPS_PER_THREAD: u64 = if cfg!(miri) { 300 } else { 100_000 };
const KEYS: u64 = 64;
const CAPACITY: u64 = 16;

/// A heap value naming its key and writer, with a checksum that a torn, stale-freed or reused
/// allocation would fail.
#[derive(Clone, Debug)]
struct Value(Arc<[u64; 4]>);

impl Value {
    fn new(key: u64, thread: u64, seq: u64) -> Self {
        Value(Arc::new([key, thread, seq, checksum(key, thread, seq)]))
    }

    fn check(&self, key: u64) {
        let [k, thread, seq, sum] = *self.0;
        assert_eq!(k, key, "a value of key {k} was read under key {key}");
        assert!(
            thread < THREADS && seq < OPS_PER_THREAD,
            "never inserted: {:?}",
            self.0
        );
        assert_eq!(sum, checksum(k, thread, seq), "corrupt value {:?}", self.0);
    }
}

fn checksum(key: u64, thread: u64, seq: u64) -> u64 {
    (key ^ 0x9E37_79B9_7F4A_7C15)
        .wrapping_mul(31)
        .wrapping_add(thread << 32)
        .wrapping_add(seq)
}

fn run(cache: &Cache<u64, Value>) {
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(0xC0FFEE + thread);
                for seq in 0..OPS_PER_THREAD {
                    let key = rng.random_range(0..KEYS);
                    match rng.random_range(0..100) {
                        0..60 => {
                            if let Some(value) = cache.get(&key) {
                                value.check(key);
                            }
                        }
                        60..90 => cache.insert(key, Value::new(key, thread, seq)),
                        90..99 => {
                            if let Some(value) = cache.remove(&key) {
                                value.check(key);
                            }
                        }
                        // About 1,000 clears by thread 0 (1% of its operations): enough to
                        // race clears against every other operation many times a run.
                        _ => {
                            if thread == 0 {
                                cache.clear();
                            }
                        }
                    }
                }
            });
        }
    });
    assert!(cache.len() as u64 <= CAPACITY);
    for key in 0..KEYS {
        if let Some(value) = cache.get(&key) {
            value.check(key);
        }
    }
}

#[test]
fn clock_under_mixed_load_only_returns_inserted_values() {
    let cache = CacheBuilder::new(CAPACITY).shards(2).build();
    run(&cache);
    let stats = cache.stats();
    assert!(stats.evictions > 0 && stats.hits > 0, "{stats:?}");
}

#[test]
fn s3fifo_under_mixed_load_only_returns_inserted_values() {
    let cache = CacheBuilder::new(CAPACITY)
        .policy(Policy::S3Fifo)
        .shards(2)
        .build();
    run(&cache);
    assert!(cache.stats().evictions > 0);
}

#[test]
fn weighted_under_mixed_load_stays_within_capacity() {
    let cache: Cache<u64, Value, _> = CacheBuilder::new(CAPACITY * 10)
        .weigher(|key: &u64, _: &Value| key % 20 + 1)
        .shards(1)
        .build();
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let cache = &cache;
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(0xBEEF + thread);
                for seq in 0..OPS_PER_THREAD / 4 {
                    let key = rng.random_range(0..KEYS);
                    if rng.random_bool(0.5) {
                        cache.insert(key, Value::new(key, thread, seq));
                    } else if let Some(value) = cache.get(&key) {
                        value.check(key);
                    }
                }
            });
        }
    });
    assert!(cache.weight() <= CAPACITY * 10);
}
