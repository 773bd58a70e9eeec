//! Model checks of the insert/publish/remove/reclaim protocol with loom: the interleavings (up
//! to three preemptions) of two threads on a cache of capacity 1 or 2 (one shard), with values
//! that count their own drops, so a use-after-free shows up as a corrupt value, a double free as
//! a negative count, and a leak as a positive one.
//!
//! Leaks are checked when the next execution starts and after the model: under loom, the
//! default collector's deferred garbage is reliably freed only when an execution ends (loom
//! drops its statics then), not by flushing inside the execution.
//!
//! Run (also in `.ci/run`):
//! `RUSTFLAGS="--cfg crossbeam_loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom
//!  cargo test -p kv-cache --release --test loom`

#![cfg(crossbeam_loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use foldhash::fast::FixedState;
use kv_cache::{Cache, CacheBuilder, Policy, UnitWeigher};
use loom::thread;

/// A value that knows its key and counts live instances in `live`.
struct Counted {
    key: u8,
    check: u64,
    live: &'static AtomicIsize,
}

impl Counted {
    fn new(key: u8, live: &'static AtomicIsize) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Counted {
            key,
            check: checksum(key),
            live,
        }
    }

    fn verify(&self, key: u8) {
        assert_eq!(
            (self.key, self.check),
            (key, checksum(key)),
            "corrupt or misplaced value"
        );
    }
}

fn checksum(key: u8) -> u64 {
    u64::from(key).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        Counted::new(self.key, self.live)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let before = self.live.fetch_sub(1, Ordering::SeqCst);
        assert!(before > 0, "a value was dropped twice");
    }
}

type TestCache = Cache<u8, Counted, UnitWeigher, FixedState>;

/// One shard and a fixed hasher: loom needs a deterministic model.
fn cache(capacity: u64, policy: Policy) -> Arc<TestCache> {
    Arc::new(
        CacheBuilder::new(capacity)
            .shards(1)
            .policy(policy)
            .hasher(FixedState::with_seed(1))
            .build(),
    )
}

/// Moves this thread's deferred garbage to the global queue before the thread ends, so the
/// model also covers reclamation racing with the other thread's reads.
fn hand_over_garbage() {
    crossbeam_epoch::pin().flush();
}

/// Runs `model` under loom, checking that each execution (and the last) freed every value.
fn check(live: &'static AtomicIsize, model: impl Fn() + Sync + Send + 'static) {
    loom::model(move || {
        assert_eq!(
            live.load(Ordering::SeqCst),
            0,
            "the previous execution leaked values"
        );
        model();
    });
    assert_eq!(
        live.load(Ordering::SeqCst),
        0,
        "the last execution leaked values"
    );
}

/// A writer inserts (evicting, at capacity 1) while the other thread reads, inserts and
/// removes: readers see only intact values of their key; everything is freed once.
#[test]
fn insert_evict_and_remove_race_with_reads() {
    static LIVE: AtomicIsize = AtomicIsize::new(0);
    check(&LIVE, || {
        let live = &LIVE;
        let cache = cache(1, Policy::Clock);
        let writer = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || {
                cache.insert(1, Counted::new(1, live));
                if let Some(value) = cache.get(&2) {
                    value.verify(2);
                }
                hand_over_garbage();
            })
        };
        cache.insert(2, Counted::new(2, live));
        if let Some(value) = cache.get(&1) {
            value.verify(1);
        }
        if let Some(value) = cache.remove(&2) {
            value.verify(2);
        }
        writer.join().expect("writer panicked");
        assert!(cache.len() <= 1);
    });
}

/// A replacement races with a reader: it sees nothing, the old value or the new one.
#[test]
fn replacement_races_with_a_read() {
    static LIVE: AtomicIsize = AtomicIsize::new(0);
    check(&LIVE, || {
        let live = &LIVE;
        let cache = cache(2, Policy::S3Fifo);
        cache.insert(1, Counted::new(1, live));
        let writer = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || {
                cache.insert(1, Counted::new(1, live));
                cache.insert(2, Counted::new(2, live));
                hand_over_garbage();
            })
        };
        let seen = cache.get(&1).expect("key 1 is always present");
        seen.verify(1);
        drop(seen);
        writer.join().expect("writer panicked");
        assert_eq!(cache.len(), 2);
    });
}

/// `clear` races with a read and an insert.
#[test]
fn clear_races_with_a_read() {
    static LIVE: AtomicIsize = AtomicIsize::new(0);
    check(&LIVE, || {
        let live = &LIVE;
        let cache = cache(2, Policy::Clock);
        cache.insert(1, Counted::new(1, live));
        let clearer = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || {
                cache.clear();
                hand_over_garbage();
            })
        };
        if let Some(value) = cache.get(&1) {
            value.verify(1);
        }
        cache.insert(2, Counted::new(2, live));
        clearer.join().expect("clearer panicked");
        assert!(cache.len() <= 1);
    });
}
