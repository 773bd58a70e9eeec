//! Benchmarks for the `kv-cache` layer, side by side with its peers in one run:
//! `lru::LruCache` behind a `Mutex`, `moka::sync::Cache` and `quick_cache::sync::Cache`.
//!
//! Workload: keys drawn from Zipf(1.0) over 100,000 keys, capacity 10,000 entries,
//! 100-byte `Bytes` values, fixed seeds.
//! * `cache_get_hit/<cache>`: one thread, `get` of keys known to be present.
//! * `cache_zipf_95_5/<cache>/<threads>`: throughput of 95% `get` / 5% `insert` on 1 and 2
//!   threads, each thread replaying its own trace.
//! * `cache_zipf_read_only/<cache>/<threads>`: the same with `get` only (after the warm-up).
//! * `cache_zipf_95_5_inline/<cache>/<threads>`: 95/5 with the 100 bytes held inline in the
//!   value (`[u8; 100]`), whose clone is a copy: with `Bytes`, every hit on a hot key bumps a
//!   reference count that both threads share.
//!
//! Before measuring, it prints the cache-aside hit ratio of every cache on a 1,000,000-request
//! trace (a miss is followed by an insert), with an exact LRU and the static optimum (the
//! 10,000 most probable keys always cached) for reference.
//!
//! Run: `cargo bench -p benches --bench cache` (about two minutes).

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kv_cache::{CacheBuilder, Policy};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::Zipf;

const KEYS: u64 = 100_000;
const CAPACITY: u64 = 10_000;
const VALUE_LEN: usize = 100;
const HIT_RATIO_REQUESTS: usize = 1_000_000;
/// Per-thread trace length for the throughput benchmark (a power of two: indices wrap).
const TRACE_LEN: usize = 1 << 20;
/// Operations per criterion iteration per thread.
const BATCH: u64 = 1000;

/// A cached value.
trait Value: Clone + Send + Sync + 'static {
    /// The value stored under `key`.
    fn of(key: u64) -> Self;
}

/// 100 bytes behind a reference count: a clone is an atomic increment on a line that every
/// thread reading the same key shares.
impl Value for Bytes {
    fn of(key: u64) -> Self {
        Bytes::from(vec![key as u8; VALUE_LEN])
    }
}

/// 100 bytes held inline: a clone is a copy, and writes nothing shared.
#[derive(Clone)]
struct Inline(#[allow(dead_code)] [u8; VALUE_LEN]);

impl Value for Inline {
    fn of(key: u64) -> Self {
        Inline([key as u8; VALUE_LEN])
    }
}

/// The operations every cache under test offers.
trait BenchCache<V>: Sync {
    fn get(&self, key: u64) -> Option<V>;
    fn insert(&self, key: u64, value: V);
}

struct LruMutex<V>(Mutex<lru::LruCache<u64, V>>);

impl<V: Value> BenchCache<V> for LruMutex<V> {
    fn get(&self, key: u64) -> Option<V> {
        self.0.lock().ok()?.get(&key).cloned()
    }
    fn insert(&self, key: u64, value: V) {
        if let Ok(mut cache) = self.0.lock() {
            cache.put(key, value);
        }
    }
}

impl<V: Value> BenchCache<V> for moka::sync::Cache<u64, V> {
    fn get(&self, key: u64) -> Option<V> {
        moka::sync::Cache::get(self, &key)
    }
    fn insert(&self, key: u64, value: V) {
        moka::sync::Cache::insert(self, key, value);
    }
}

impl<V: Value> BenchCache<V> for quick_cache::sync::Cache<u64, V> {
    fn get(&self, key: u64) -> Option<V> {
        quick_cache::sync::Cache::get(self, &key)
    }
    fn insert(&self, key: u64, value: V) {
        quick_cache::sync::Cache::insert(self, key, value);
    }
}

impl<V: Value> BenchCache<V> for kv_cache::Cache<u64, V> {
    fn get(&self, key: u64) -> Option<V> {
        kv_cache::Cache::get(self, &key)
    }
    fn insert(&self, key: u64, value: V) {
        kv_cache::Cache::insert(self, key, value);
    }
}

const NAMES: [&str; 5] = [
    "lru+Mutex",
    "moka",
    "quick_cache",
    "kv-cache CLOCK",
    "kv-cache S3-FIFO",
];

fn new_cache<V: Value>(name: &str) -> Box<dyn BenchCache<V>> {
    let capacity = usize::try_from(CAPACITY).unwrap_or(usize::MAX);
    match name {
        "lru+Mutex" => Box::new(LruMutex(Mutex::new(lru::LruCache::new(
            NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
        )))),
        "moka" => Box::new(moka::sync::Cache::<u64, V>::new(CAPACITY)),
        "quick_cache" => Box::new(quick_cache::sync::Cache::<u64, V>::new(capacity)),
        "kv-cache CLOCK" => Box::new(kv_cache::Cache::<u64, V>::new(CAPACITY)),
        _ => Box::new(
            CacheBuilder::new(CAPACITY)
                .policy(Policy::S3Fifo)
                .build::<u64, V>(),
        ),
    }
}

fn zipf_keys(len: usize, seed: u64) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let zipf = Zipf::new(KEYS as f64, 1.0).unwrap_or_else(|e| panic!("Zipf: {e}"));
    (0..len).map(|_| rng.sample(zipf) as u64 - 1).collect()
}

/// One distinct 100-byte value per key, so that clones of different keys do not share a
/// reference count.
fn values<V: Value>() -> Vec<V> {
    (0..KEYS).map(V::of).collect()
}

/// Cache-aside hit ratio: `get`, and `insert` on a miss.
fn cache_aside<V: Value>(cache: &dyn BenchCache<V>, trace: &[u64], values: &[V]) -> f64 {
    let mut hits = 0usize;
    for &key in trace {
        if cache.get(key).is_some() {
            hits += 1;
        } else {
            cache.insert(key, values[key as usize].clone());
        }
    }
    hits as f64 / trace.len() as f64
}

fn print_hit_ratios(values: &[Bytes]) {
    let trace = zipf_keys(HIT_RATIO_REQUESTS, 42);
    let mut lru =
        lru::LruCache::new(NonZeroUsize::new(CAPACITY as usize).unwrap_or(NonZeroUsize::MIN));
    let mut lru_hits = 0usize;
    for &key in &trace {
        if lru.get(&key).is_some() {
            lru_hits += 1;
        } else {
            lru.put(key, ());
        }
    }
    // Zipf(1.0): key k (0-based) has probability 1/(k+1) / H(KEYS).
    let harmonic: f64 = (1..=KEYS).map(|k| 1.0 / k as f64).sum();
    let optimum: f64 = (1..=CAPACITY).map(|k| 1.0 / k as f64).sum::<f64>() / harmonic;
    eprintln!("cache-aside hit ratio, Zipf(1.0) over {KEYS} keys, capacity {CAPACITY},");
    eprintln!("{HIT_RATIO_REQUESTS} requests (a miss is followed by an insert):");
    eprintln!(
        "  exact LRU (lru crate)   {:.2}%",
        100.0 * lru_hits as f64 / trace.len() as f64
    );
    for name in NAMES {
        let cache = new_cache::<Bytes>(name);
        eprintln!(
            "  {name:<22}  {:.2}%",
            100.0 * cache_aside(cache.as_ref(), &trace, values)
        );
    }
    eprintln!("  static optimum          {:.2}%", 100.0 * optimum);
}

fn get_hit(c: &mut Criterion) {
    let values = values::<Bytes>();
    print_hit_ratios(&values);
    // Keys 0..5000 are inserted into an empty cache of 10,000: all present, for every peer.
    let mut rng = StdRng::seed_from_u64(7);
    let probes: Vec<u64> = (0..4096).map(|_| rng.random_range(0..5000)).collect();
    let mut group = c.benchmark_group("cache_get_hit");
    group.throughput(Throughput::Elements(1));
    for name in NAMES {
        let cache = new_cache::<Bytes>(name);
        for key in 0..5000 {
            cache.insert(key, values[key as usize].clone());
        }
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & (probes.len() - 1);
                black_box(cache.get(black_box(probes[i])))
            })
        });
    }
    group.finish();
}

/// Keys with an insert flag in the top bit, `inserts_per_100` of them.
fn workload(seed: u64, inserts_per_100: u32) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x95);
    zipf_keys(TRACE_LEN, seed)
        .into_iter()
        .map(|key| {
            if rng.random_ratio(inserts_per_100, 100) {
                key | 1 << 63
            } else {
                key
            }
        })
        .collect()
}

fn zipf_95_5(c: &mut Criterion) {
    zipf_throughput::<Bytes>(c, "cache_zipf_95_5", 5);
}

/// The same without inserts (after the warm-up): how reads alone scale.
fn zipf_read_only(c: &mut Criterion) {
    zipf_throughput::<Bytes>(c, "cache_zipf_read_only", 0);
}

/// 95/5 with values held inline, whose clone writes nothing shared: what the caches scale to
/// when two threads reading one hot key do not also bounce its reference count.
fn zipf_95_5_inline(c: &mut Criterion) {
    zipf_throughput::<Inline>(c, "cache_zipf_95_5_inline", 5);
}

fn zipf_throughput<V: Value>(c: &mut Criterion, group_name: &str, inserts_per_100: u32) {
    let values = values::<V>();
    let traces: Vec<Vec<u64>> = (0..2)
        .map(|t| workload(1000 + t, inserts_per_100))
        .collect();
    let mut group = c.benchmark_group(group_name);
    for name in NAMES {
        let cache = new_cache::<V>(name);
        // Warm up to a steady state: cache-aside over a quarter of the first trace.
        let warm_up: Vec<u64> = traces[0][..TRACE_LEN / 4]
            .iter()
            .map(|k| k & !(1 << 63))
            .collect();
        cache_aside(cache.as_ref(), &warm_up, &values);
        for threads in [1usize, 2] {
            group.throughput(Throughput::Elements(BATCH * threads as u64));
            let mut start = 0usize;
            group.bench_function(format!("{name}/{threads}"), |b| {
                b.iter_custom(|iters| {
                    let ops = (iters * BATCH) as usize;
                    let begin = start;
                    start = (start + ops) & (TRACE_LEN - 1);
                    let elapsed: Vec<Duration> = std::thread::scope(|s| {
                        let handles: Vec<_> = traces[..threads]
                            .iter()
                            .map(|trace| {
                                let cache = cache.as_ref();
                                let values = &values;
                                s.spawn(move || {
                                    let t0 = Instant::now();
                                    for i in 0..ops {
                                        let op = trace[(begin + i) & (TRACE_LEN - 1)];
                                        let key = op & !(1 << 63);
                                        if op >> 63 == 1 {
                                            cache.insert(key, values[key as usize].clone());
                                        } else {
                                            black_box(cache.get(key));
                                        }
                                    }
                                    t0.elapsed()
                                })
                            })
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| h.join().unwrap_or_default())
                            .collect()
                    });
                    // The slowest thread bounds the run.
                    elapsed.into_iter().max().unwrap_or_default()
                })
            });
        }
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = get_hit, zipf_95_5, zipf_read_only, zipf_95_5_inline
}
criterion_main!(benches);
