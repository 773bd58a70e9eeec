//! Model-based property test: random sequences of apply / put / delete / get / drop_ranges /
//! compact / write_hints / reopen against a `BTreeMap` model of last-writer-wins.

#![allow(clippy::unwrap_used)]

mod common;

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
fn opts(scan: Option<bool>) -> NodeOptions {
    NodeOptions::new()
        .wal(WalOptions::new().segment_size(2048).sync(SyncPolicy::Never))
        .background(false)
        .cache_entries(8)
        .index_partition_bits(4)
        .compaction_scan(scan)
}

fn lww(model: &mut State, k: Vec<u8>, v: Option<Vec<u8>>, ver: Version) {
    if model.get(&k).is_none_or(|(_, cur)| *cur < ver) {
        model.insert(k, (v, ver));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn node_matches_a_lww_model(
        ops in proptest::collection::vec(op(), 1..120),
        scan in proptest::option::of(any::<bool>()),
    ) {
        // Versions near the current time: tombstones stay within their (default) grace period,
        // so the model never has to guess whether one was purged.
        let base = Version::from_parts(SystemClock.now_millis(), 0).as_u64();
        let dir = tempfile::tempdir().unwrap();
        let mut node = Node::open(dir.path(), opts(scan)).unwrap();
        let mut model = State::new();
        for op in ops {
            match op {
                Op::Apply { key: k, value: v, version } => {
                    let ver = Version::new(base + u64::from(version));
                    let v = v.map(value);
                    let before = model.get(&key(k)).cloned();
                    let changed = node.apply(&key(k), v.as_deref(), ver).unwrap();
                    lww(&mut model, key(k), v, ver);
                    prop_assert_eq!(changed, model.get(&key(k)).cloned() != before);
                }
                Op::Put { key: k, value: v } => {
                    let ver = node.put(&key(k), &value(v)).unwrap();
                    lww(&mut model, key(k), Some(value(v)), ver);
                }
                Op::Delete { key: k } => {
                    let ver = node.delete(&key(k)).unwrap();
                    lww(&mut model, key(k), None, ver);
                }
                Op::Get { key: k } => {
                    let want = model.get(&key(k)).and_then(|(v, ver)| v.clone().map(|v| (v, *ver)));
                    let got = node.get(&key(k)).unwrap().map(|(v, ver)| (v.to_vec(), ver));
                    prop_assert_eq!(got, want);
                }
                Op::GetMany { keys } => {
                    let want: Vec<_> = keys
                        .iter()
                        .map(|&k| model.get(&key(k)).and_then(|(v, ver)| v.clone().map(|v| (v, *ver))))
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
                    let want: Vec<_> = keys.iter().map(|&k| model.get(&key(k)).map(|(_, ver)| *ver)).collect();
                    prop_assert_eq!(node.versions_of(&ks), want);
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
                    node = Node::open(dir.path(), opts(scan)).unwrap();
                }
            }
        }
        assert_same(&dump(&node), &model, "end");
        drop(node);
        let node = Node::open(dir.path(), opts(scan)).unwrap();
        assert_same(&dump(&node), &model, "end, reopened");
        let s = node.stats();
        let live = model.values().filter(|(v, _)| v.is_some()).count() as u64;
        prop_assert_eq!((s.live_keys, s.tombstones), (live, model.len() as u64 - live));
    }
}
