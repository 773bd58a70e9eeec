//! Model-based property test: random sequences of apply / put / delete / get / drop_ranges /
//! compact / write_hints / reopen, and of writes with an expiry and steps of a simulated
//! clock, against a `BTreeMap` model of last-writer-wins in which an expired value is a
//! tombstone at its version (`docs/design.md`, *Expiring keys*).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{State, assert_same, dump};
use kv_node::{Clock, Node, NodeOptions, SystemClock, TokenRange, Version};
use kv_wal::{SyncPolicy, WalOptions};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Apply {
        key: u8,
        value: Option<u8>,
        version: u16,
    },
    Put {
        key: u8,
        value: u8,
    },
    /// A write whose value expires `ttl` ms after the clock's current time (0: already).
    ApplyExpiring {
        key: u8,
        value: u8,
        version: u16,
        ttl: u16,
    },
    PutExpiring {
        key: u8,
        value: u8,
        ttl: u16,
    },
    /// The simulated clock moves forward.
    Advance {
        ms: u16,
    },
    Delete {
        key: u8,
    },
    Get {
        key: u8,
    },
    GetMany {
        keys: Vec<u8>,
    },
    DropRange {
        start: u64,
        width: u64,
    },
    Compact,
    WriteHints,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..24u8, proptest::option::weighted(0.8, any::<u8>()), 1..400u16)
            .prop_map(|(key, value, version)| Op::Apply { key, value, version }),
        2 => (0..24u8, any::<u8>()).prop_map(|(key, value)| Op::Put { key, value }),
        3 => (0..24u8, any::<u8>(), 1..400u16, 0..3000u16)
            .prop_map(|(key, value, version, ttl)| Op::ApplyExpiring { key, value, version, ttl }),
        1 => (0..24u8, any::<u8>(), 0..3000u16)
            .prop_map(|(key, value, ttl)| Op::PutExpiring { key, value, ttl }),
        2 => (0..1500u16).prop_map(|ms| Op::Advance { ms }),
        1 => (0..24u8).prop_map(|key| Op::Delete { key }),
        4 => (0..24u8).prop_map(|key| Op::Get { key }),
        2 => proptest::collection::vec(0..24u8, 0..12).prop_map(|keys| Op::GetMany { keys }),
        1 => (any::<u64>(), 0..u64::MAX / 4).prop_map(|(start, width)| Op::DropRange { start, width }),
        1 => Just(Op::Compact),
        1 => Just(Op::WriteHints),
        1 => Just(Op::Reopen),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

/// Values long enough that a few dozen writes seal a segment.
fn value(v: u8) -> Vec<u8> {
    vec![v; 40 + v as usize]
}

/// `scan`: how compaction finds live records (by the index, by reading the log, or its
/// choice), so that each way meets the model.
fn opts(scan: Option<bool>, clock: &Arc<FakeClock>) -> NodeOptions {
    NodeOptions::new()
        .clock(clock.clone())
        .wal(WalOptions::new().segment_size(2048).sync(SyncPolicy::Never))
        .background(false)
        .cache_entries(8)
        .index_partition_bits(4)
        .compaction_scan(scan)
}

/// A clock the test moves.
#[derive(Debug)]
struct FakeClock(AtomicU64);

impl Clock for FakeClock {
    fn now_millis(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// key -> (value or tombstone, version, expiry).
type Model = BTreeMap<Vec<u8>, (Option<Vec<u8>>, Version, Option<u64>)>;

fn lww(model: &mut Model, k: Vec<u8>, v: Option<Vec<u8>>, ver: Version, expires: Option<u64>) {
    if model.get(&k).is_none_or(|(_, cur, _)| *cur < ver) {
        let expires = if v.is_some() { expires } else { None };
        model.insert(k, (v, ver, expires));
    }
}

/// What the node must answer at `now`: an expired value is a tombstone at its version.
fn view(model: &Model, now: u64) -> State {
    model
        .iter()
        .map(|(k, (v, ver, e))| {
            let v = if kv_node::is_expired(*e, now) {
                None
            } else {
                v.clone()
            };
            (k.clone(), (v, *ver))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn node_matches_a_lww_model(
        ops in proptest::collection::vec(op(), 1..120),
        scan in proptest::option::of(any::<bool>()),
    ) {
        // Versions near the current time, and a clock that moves by seconds at most:
        // tombstones stay within their (default) grace period, so the model never has to
        // guess whether one was purged.
        let clock = Arc::new(FakeClock(AtomicU64::new(SystemClock.now_millis())));
        let base = Version::from_parts(clock.now_millis(), 0).as_u64();
        let dir = tempfile::tempdir().unwrap();
        let mut node = Node::open(dir.path(), opts(scan, &clock)).unwrap();
        let mut model = Model::new();
        for op in ops {
            let now = clock.now_millis();
            let model_now = view(&model, now);
            match op {
                Op::Apply { key: k, value: v, version } => {
                    let ver = Version::new(base + u64::from(version));
                    let v = v.map(value);
                    let before = model.get(&key(k)).cloned();
                    let changed = node.apply(&key(k), v.as_deref(), ver).unwrap();
                    lww(&mut model, key(k), v, ver, None);
                    prop_assert_eq!(changed, model.get(&key(k)).cloned() != before);
                }
                Op::ApplyExpiring { key: k, value: v, version, ttl } => {
                    let ver = Version::new(base + u64::from(version));
                    let expires = Some(now + u64::from(ttl));
                    let before = model.get(&key(k)).cloned();
                    let changed = node
                        .apply_expiring(&key(k), Some(&value(v)), ver, expires)
                        .unwrap();
                    lww(&mut model, key(k), Some(value(v)), ver, expires);
                    prop_assert_eq!(changed, model.get(&key(k)).cloned() != before);
                }
                Op::Put { key: k, value: v } => {
                    let ver = node.put(&key(k), &value(v)).unwrap();
                    lww(&mut model, key(k), Some(value(v)), ver, None);
                }
                Op::PutExpiring { key: k, value: v, ttl } => {
                    let expires = Some(now + u64::from(ttl));
                    let ver = node.put_expiring(&key(k), &value(v), expires).unwrap();
                    lww(&mut model, key(k), Some(value(v)), ver, expires);
                }
                Op::Advance { ms } => {
                    clock.0.fetch_add(u64::from(ms), Ordering::Relaxed);
                }
                Op::Delete { key: k } => {
                    let ver = node.delete(&key(k)).unwrap();
                    lww(&mut model, key(k), None, ver, None);
                }
                Op::Get { key: k } => {
                    let want = model_now.get(&key(k)).and_then(|(v, ver)| v.clone().map(|v| (v, *ver)));
                    let got = node.get(&key(k)).unwrap().map(|(v, ver)| (v.to_vec(), ver));
                    prop_assert_eq!(got, want);
                }
                Op::GetMany { keys } => {
                    let want: Vec<_> = keys
                        .iter()
                        .map(|&k| model_now.get(&key(k)).and_then(|(v, ver)| v.clone().map(|v| (v, *ver))))
                        .collect();
                    let ks: Vec<Vec<u8>> = keys.iter().map(|&k| key(k)).collect();
                    let got: Vec<_> = node
                        .get_many(&ks)
                        .unwrap()
                        .into_iter()
                        .map(|g| g.map(|(v, ver)| (v.to_vec(), ver)))
                        .collect();
                    prop_assert_eq!(got, want);
                    // Versions include tombstones'.
                    let want: Vec<_> = keys.iter().map(|&k| model.get(&key(k)).map(|(_, ver, _)| *ver)).collect();
                    prop_assert_eq!(node.versions_of(&ks), want);
                    // An expired value as the tombstone at its version.
                    let want: Vec<_> = keys.iter().map(|&k| model_now.get(&key(k)).cloned()).collect();
                    let got: Vec<_> = node
                        .get_many_versioned(&ks)
                        .unwrap()
                        .into_iter()
                        .map(|g| g.map(|(v, ver)| (v.map(|v| v.to_vec()), ver)))
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::DropRange { start, width } => {
                    let r = TokenRange::new(start, start.wrapping_add(width.max(1)));
                    let n = node.drop_ranges(&[r]).unwrap();
                    let before = model.len();
                    model.retain(|k, _| !r.contains(kv_ring::token(k)));
                    prop_assert_eq!(n, before - model.len());
                }
                Op::Compact => {
                    node.compact().unwrap();
                }
                Op::WriteHints => {
                    node.write_hints().unwrap();
                }
                Op::Reopen => {
                    drop(node);
                    node = Node::open(dir.path(), opts(scan, &clock)).unwrap();
                }
            }
        }
        let now = clock.now_millis();
        assert_same(&dump(&node), &view(&model, now), "end");
        drop(node);
        let node = Node::open(dir.path(), opts(scan, &clock)).unwrap();
        assert_same(&dump(&node), &view(&model, now), "end, reopened");
        // An expired value counts as live until compaction turns it into a tombstone.
        let s = node.stats();
        let live = model.values().filter(|(v, _, _)| v.is_some()).count() as u64;
        let unexpired = view(&model, now).values().filter(|(v, _)| v.is_some()).count() as u64;
        prop_assert_eq!(s.live_keys + s.tombstones, model.len() as u64);
        prop_assert!((unexpired..=live).contains(&s.live_keys), "{:?}", s);
        let expiring = model.values().filter(|(_, _, e)| e.is_some()).count() as u64;
        prop_assert!(s.expiring_keys <= expiring, "{:?}", s);
    }
}
