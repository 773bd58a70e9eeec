//! A concurrent, bounded cache whose reads take no lock.
//!
//! [`Cache::get`] pins a `crossbeam-epoch` epoch, follows atomic pointers down one bucket chain,
//! records the read with at most one relaxed store, clones the value and unpins: no mutex, no
//! read-write lock, no spin. Writers take the lock of one shard and never block readers. Entries
//! are bounded by count ([`Cache::new`]) or by weight, e.g. bytes ([`Cache::with_weigher`]).
//!
//! ```
//! use bytes::Bytes;
//! use kv_cache::Cache;
//!
//! let cache: Cache<Vec<u8>, Bytes> = Cache::new(10_000);
//! cache.insert(b"user:1".to_vec(), Bytes::from_static(b"alice"));
//! assert_eq!(cache.get(&b"user:1"[..]), Some(Bytes::from_static(b"alice")));
//! assert_eq!(cache.stats().hits, 1);
//! ```
//!
//! # The design decision: a table that never resizes, walked under an epoch
//!
//! Each shard owns a bucket array sized once, from the capacity (or
//! [`CacheBuilder::estimated_items`]), and never resized. Entries are immutable nodes in
//! singly linked bucket chains; a new value for a key is a new node swapped into the chain. A
//! reader therefore only ever sees fully built nodes reached through `Acquire` loads, and a node
//! is freed only through the epoch collector after it has been unlinked, so no node a pinned
//! reader can reach is freed under it. Without rehashing, the protocol is small enough to model
//! check (`tests/loom.rs`) and to reason about in the `// SAFETY:` comments.
//!
//! Eviction order lives beside the table, not in it: each shard keeps FIFO queues of node
//! handles, touched only by writers under the shard lock. A read records recency in the node
//! itself, in a small counter that it reads before writing, so a hot entry's cache line is not
//! written on every hit. The queue entry is the node's owner: a node is freed exactly when its
//! queue entry is dropped (evicted, compacted after a `remove`, `clear`ed, or in `Drop`).
//!
//! # Policies
//!
//! * [`Policy::Clock`] (default), the LRU approximation: one reference bit per entry, a hand
//!   sweeping in insertion order. An entry read since the hand last passed survives; among the
//!   others the oldest insertion goes first. On a Zipf(1.0) trace over 100,000 keys with
//!   capacity 10,000 its hit ratio is within 2% of an exact LRU's (`tests/hit_ratio_zipf.rs`).
//! * [`Policy::S3Fifo`]: a small probation FIFO, a main CLOCK with a 2-bit counter, and a ghost
//!   set of recently evicted hashes. Reads are exactly as lock-free; one-hit wonders do not
//!   push out the working set, so skewed workloads hit more often than under LRU.
//!
//! # What was learnt from whom
//!
//! * **quick_cache**: sharding with a writer lock per shard and a per-shard capacity; the
//!   atomics behind a shim module so loom can replace them (`src/shim.rs`); and the `MAX_F`
//!   check, reading the reference counter before writing it. Unlike quick_cache, our readers
//!   take no read lock: the epoch replaces it.
//! * **moka**: its bug tracker. The use-after-free during concurrent rehash (moka #34) is why
//!   the table never resizes; lagging epoch garbage (moka PR #169, crossbeam #566) is why the
//!   write path calls `Guard::flush` every 256 writes per shard (and sooner once more than a
//!   shard's capacity in weight was deferred) and `Drop` frees what the cache owns directly. We did
//!   not take moka's (or Caffeine's) read buffers: replaying reads into a policy under a lock
//!   costs more than a relaxed store into the node.
//! * **CLOCK / SIEVE**: recency as a bit in the entry, set by readers without moving anything;
//!   only eviction moves entries. SIEVE's "lazy promotion, quick demotion" is what the S3-FIFO
//!   main queue does.
//! * **S3-FIFO** (Yang et al., SOSP 2023): the small queue and ghost set. Tuned on the Zipf
//!   trace of `tests/hit_ratio_zipf.rs`: a small queue of 2% of the capacity (hits: 78.5%; the
//!   paper's 10% gave 77.8%, 5% gave 78.3%) and a ghost set of half the entries (a larger one
//!   admits too much to the main queue). A small queue this small favours frequency over
//!   recency; workloads with bursts of recency may prefer CLOCK.
//! * **Redis' sampled LRU**: considered for eviction (sample a few entries, evict the oldest
//!   stamp). A stamp per read is a write per read, which is what the bit avoids, and sampling
//!   needs random access to entries that chained buckets do not give; a clock hand over a queue
//!   gives the same approximation deterministically.
//!
//! # Memory reclamation
//!
//! Removed and evicted nodes go to crossbeam-epoch's deferred destruction, so memory is
//! reclaimed once every reader pinned at the time has unpinned; `get` returns clones, never a
//! guard, so no caller can hold the epoch. Unlinked nodes are retired per shard and deferred in
//! batches of 64 (`src/retire.rs`): one deferred closure instead of 64 saves most of the
//! cross-core traffic of crossbeam's bag pushes and collections. `remove` and replacements leave
//! a marked node in its queue until the hand reaches it; the queues are compacted once marked
//! nodes outnumber live ones by 64. Both are also bounded by weight, not only by count: a batch
//! is deferred (and then flushed) once it weighs more than the shard's capacity plus 64, and the
//! queues are compacted once marked nodes do, so a weighted cache replacing heavy values does
//! not hold dozens of copies of them. So garbage stays proportional to the capacity plus a
//! constant per shard and thread (`tests/no_garbage_growth.rs`, and in weight
//! `replacing_heavy_values_keeps_unlinked_garbage_within_the_capacity`), while readers stay
//! pinned no longer than one `get`. `Drop` frees what the cache still owns directly; batches
//! already deferred are freed by the collector.
//!
//! # Performance
//!
//! Measured side by side with `lru` (behind a `Mutex`), moka and quick_cache by
//! `benches/benches/cache.rs`; the table is in the workspace's `BENCHMARKS.md`. On a 2-core VM
//! (medians of three runs, Zipf(1.0) over 100,000 keys, 100-byte `Bytes`
//! values; the machine was noisy, runs varied by up to 30%):
//!
//! * a get hit costs what it costs in quick_cache or `lru`: 46-59 ns for all four;
//! * reads alone scale from 1 to 2 threads (CLOCK 16.2 -> 23.0 Mops/s) where quick_cache's
//!   per-shard read lock makes it slower on 2 threads (19.5 -> 17.2). What limits us is the
//!   values' reference count, which both cores bump on hot keys: with `'static` `Bytes` (no
//!   count) reads scale about 1.6x;
//! * with 5% inserts, ahead of quick_cache on 2 threads (CLOCK 14.5, S3-FIFO 17.7, quick_cache
//!   13.8 Mops/s) but with little scaling (CLOCK 12.0 -> 14.5): each insert moves its shard's
//!   lock, queue and bucket cache lines between the cores and allocates a node.
//!
//! # Checking the unsafe code
//!
//! * Loom, on the insert/publish/remove/reclaim protocol with two threads and capacity 1-2:
//!   `RUSTFLAGS="--cfg crossbeam_loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p kv-cache --release
//!   --test loom` (run by `.ci/run`).
//! * Miri, on the unit tests and the integration tests that reach the unsafe code (they shrink
//!   their workloads under `cfg(miri)`; the hit-ratio test and one clamping test of 4,096
//!   shards are ignored there as too slow):
//!   `MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-ignore-leaks" cargo +nightly miri test -p kv-cache
//!   --lib --test concurrent_stress --test model_btreemap --test no_garbage_growth --test
//!   hit_ratio_zipf`. Result (2026-12-06, nightly Miri 2026-05-19): no undefined behaviour and
//!   no data race; every test passes (20 minutes on the loaded 2-core VM). The flags:
//!   under Miri's default aliasing model, Stacked Borrows, the first `epoch::pin` stops inside
//!   crossbeam-epoch 0.9 (`Local::element_of`, `internal.rs:567`, "trying to retag ... but that
//!   tag does not exist in the borrow stack"), before any of our code runs: crossbeam-epoch is
//!   known not to fit Stacked Borrows (crossbeam #545) and runs its own Miri tests under Tree
//!   Borrows. The default collector is a static that is never dropped, so its thread records
//!   and the garbage still deferred at exit are reported as leaks (crossbeam #579); the tests
//!   count their values' drops instead. crossbeam-epoch stores pointers as integers, so Miri
//!   warns of integer-to-pointer casts: it still checks every access through them against a
//!   live allocation, but cannot track their provenance exactly.
//! * AddressSanitizer on the same tests (nightly, no extra component; passes):
//!   `RUSTFLAGS=-Zsanitizer=address cargo +nightly test -p kv-cache --target
//!   x86_64-unknown-linux-gnu --tests`.
//!
//! This crate has no fallible operation, hence no error type: a zero capacity or an entry too
//! heavy to fit simply stores nothing.

#![deny(missing_docs)]

mod builder;
mod cache;
mod ghost;
mod node;
mod retire;
mod shard;
mod shim;
mod stats;
mod weigher;

pub use builder::{CacheBuilder, DefaultHashBuilder, MAX_ESTIMATED_ITEMS, MAX_SHARDS, Policy};
pub use cache::Cache;
pub use stats::Stats;
pub use weigher::{UnitWeigher, Weigher};

/// Compiles and runs the README's example as a doctest, so it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
