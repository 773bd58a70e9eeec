//! Cache coherence under concurrent writers and readers: a get never returns a version older
//! than one acknowledged before it began, never a value that does not belong to its version,
//! and once writers stop the cache agrees with the index for every key.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kv_node::{Clock, Node, NodeOptions, SystemClock, Version};
use kv_wal::{SyncPolicy, WalOptions};
use rand::{Rng, SeedableRng, rngs::StdRng};

const KEYS: usize = 48;
const WRITES_PER_WRITER: usize = 20_000;

fn key(k: usize) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

/// Every fifth version is a delete.
fn is_delete(v: u64) -> bool {
    v.is_multiple_of(5)
}

fn value(k: usize, v: u64) -> Vec<u8> {
    format!("{k}:{v}").into_bytes()
}

/// Races show up in some runs only (a write lost between its index update and its cache
/// refresh shows in about one round in 75): several rounds per test run.
const ROUNDS: u64 = 4;

#[test]
fn gets_never_go_back_in_time() {
    for round in 0..ROUNDS {
        one_round(round);
    }
}

fn one_round(round: u64) {
    let dir = tempfile::tempdir().unwrap();
    let opts = NodeOptions::new()
        .wal(
            WalOptions::new()
                .segment_size(256 << 10)
                .sync(SyncPolicy::Never),
        )
        .cache_entries(16) // far fewer than the keys: constant eviction and refill
        .maintenance_interval(std::time::Duration::from_millis(5))
        .compaction_threshold(0.3); // background compaction moves records under the readers
    let owned = Node::open(dir.path(), opts).unwrap();
    let next: Vec<AtomicU64> = (0..KEYS).map(|_| AtomicU64::new(0)).collect();
    let acked: Vec<AtomicU64> = (0..KEYS).map(|_| AtomicU64::new(0)).collect();
    let done = AtomicBool::new(false);
    // Versions from the current time, so tombstones are within their grace period: a purged
    // tombstone would rightly let a late, older write in.
    let base = Version::from_parts(SystemClock.now_millis(), 0).as_u64();
    let (node, next, acked, done) = (&owned, &next, &acked, &done);
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(round * 10 + w);
                    for _ in 0..WRITES_PER_WRITER {
                        let k = rng.random_range(0..KEYS);
                        let v = next[k].fetch_add(1, Ordering::SeqCst) + 1;
                        let val = value(k, v);
                        let value = (!is_delete(v)).then_some(&val[..]);
                        node.apply(&key(k), value, Version::new(base + v)).unwrap();
                        acked[k].fetch_max(v, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        // A third reader asks for many keys at once, as a multi-get does.
        s.spawn(move || {
            let mut rng = StdRng::seed_from_u64(round * 10 + 200);
            for _ in 0..200_000 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let ks: Vec<usize> = (0..8).map(|_| rng.random_range(0..KEYS)).collect();
                let floors: Vec<u64> = ks
                    .iter()
                    .map(|&k| acked[k].load(Ordering::SeqCst))
                    .collect();
                let keys: Vec<Vec<u8>> = ks.iter().map(|&k| key(k)).collect();
                let got = node.get_many_versioned(&keys).unwrap();
                for ((&k, floor), got) in ks.iter().zip(floors).zip(got) {
                    match got {
                        Some((val, ver)) => {
                            let v = ver.as_u64() - base;
                            assert!(v >= floor, "get_many, key {k}: version {v} after {floor}");
                            assert_eq!(is_delete(v), val.is_none(), "get_many, key {k}: {v}");
                            if let Some(val) = val {
                                assert_eq!(val, value(k, v), "get_many, key {k}: wrong value");
                            }
                        }
                        // Never written, or a purged delete: as for `get` below.
                        None => {
                            if let Some((_, v)) = node.get_versioned(&key(k)).unwrap() {
                                assert!(v.as_u64() - base >= floor);
                            }
                        }
                    }
                }
            }
        });
        for r in 0..2u64 {
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(round * 10 + 100 + r);
                // Bounded: stops when the writers are done, or after this many reads.
                for _ in 0..2_000_000 {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    let k = rng.random_range(0..KEYS);
                    let floor = acked[k].load(Ordering::SeqCst);
                    // One reader asks as a client does, the other as a cluster coordinator
                    // does (tombstones included); both go through the cache.
                    let got = if r == 0 {
                        node.get(&key(k)).unwrap()
                    } else {
                        match node.get_versioned(&key(k)).unwrap() {
                            Some((Some(val), ver)) => Some((val, ver)),
                            Some((None, ver)) => {
                                let v = ver.as_u64() - base;
                                assert!(v >= floor, "key {k}: tombstone {v} after {floor}");
                                assert!(is_delete(v), "key {k}: version {v} is not a delete");
                                continue;
                            }
                            None => None,
                        }
                    };
                    match got {
                        Some((val, ver)) => {
                            let v = ver.as_u64() - base;
                            assert!(
                                v >= floor,
                                "key {k}: read version {v} after {floor} was acknowledged"
                            );
                            assert!(!is_delete(v), "key {k}: a deleted version {v} was returned");
                            assert_eq!(
                                val,
                                value(k, v),
                                "key {k}: value does not match its version"
                            );
                        }
                        None => {
                            // Never written, deleted, or a purged delete (these versions are
                            // ancient to the clock, so compaction purges their tombstones).
                            if let Some((_, v)) = node.get_versioned(&key(k)).unwrap() {
                                assert!(v.as_u64() - base >= floor);
                            }
                        }
                    }
                }
            });
        }
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
    });
    // Quiescent: what the node serves (from its cache where it has the key) must agree with
    // the log: reopened, with an empty cache, every answer comes from the index.
    let served: Vec<_> = (0..KEYS).map(|k| node.get(&key(k)).unwrap()).collect();
    let s = node.stats();
    assert!(
        s.cache_hits > 0 && s.cache_misses > 0 && s.cache_evictions > 0,
        "{s:?}"
    );
    drop(owned);
    let node = Node::open(dir.path(), NodeOptions::new()).unwrap();
    for (k, next) in next.iter().enumerate() {
        let truth = node.get_versioned(&key(k)).unwrap();
        let got = served[k].clone();
        match truth {
            Some((Some(v), ver)) => assert_eq!(got, Some((v, ver)), "key {k}"),
            Some((None, _)) | None => assert_eq!(got, None, "key {k}"),
        }
        // And the newest acknowledged write is the one kept.
        let top = next.load(Ordering::SeqCst);
        if top > 0 {
            assert_eq!(
                node.get_versioned(&key(k)).unwrap().unwrap().1,
                Version::new(base + top)
            );
        }
    }
}
