//! Helpers shared by the integration tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kv_node::{Node, NodeOptions, TokenRange, Version};
use kv_wal::{SyncPolicy, WalOptions};

/// Small segments (so tests seal, hint and compact many), no background thread (tests call
/// `write_hints` and `compact` themselves), tombstones purged as soon as compacted.
pub fn small_opts() -> NodeOptions {
    NodeOptions::new()
        .wal(
            WalOptions::new()
                .segment_size(8 << 10)
                .sync(SyncPolicy::Never),
        )
        .background(false)
        .tombstone_grace(Duration::ZERO)
        .cache_entries(64)
}

/// Everything the node holds, tombstones included: key -> (value or None, version).
pub type State = BTreeMap<Vec<u8>, (Option<Vec<u8>>, Version)>;

pub fn dump(node: &Node) -> State {
    let mut out = State::new();
    for batch in node.export(&[TokenRange::FULL], 1000) {
        for r in batch.unwrap() {
            let prev = out.insert(r.key.to_vec(), (r.value.map(|v| v.to_vec()), r.version));
            assert!(prev.is_none(), "exported twice");
        }
    }
    out
}

/// Only the live keys of a state.
pub fn live(state: &State) -> BTreeMap<Vec<u8>, (Vec<u8>, Version)> {
    state
        .iter()
        .filter_map(|(k, (v, ver))| v.as_ref().map(|v| (k.clone(), (v.clone(), *ver))))
        .collect()
}

/// Checks that `get` agrees with `expected` for every key in it.
pub fn assert_gets(node: &Node, expected: &BTreeMap<Vec<u8>, (Option<Vec<u8>>, Version)>) {
    for (k, (v, ver)) in expected {
        let got = node.get(k).unwrap();
        match v {
            Some(v) => assert_eq!(got, Some((v.clone().into(), *ver)), "key {k:?}"),
            None => assert_eq!(got, None, "key {k:?} should be deleted"),
        }
    }
}

pub fn hint_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hint"))
        .collect();
    v.sort();
    v
}

pub fn value(key: u32, version: u64) -> Vec<u8> {
    format!(
        "value-{key}-{version}-{}",
        "x".repeat((key % 7) as usize * 20)
    )
    .into_bytes()
}

/// Asserts two states are equal, printing only the first few differences.
#[track_caller]
pub fn assert_same(got: &State, want: &State, context: &str) {
    if got == want {
        return;
    }
    let show = |k: &Vec<u8>, s: &State| {
        s.get(k).map(|(v, ver)| {
            format!(
                "{:?}@{}",
                v.as_ref()
                    .map(|v| String::from_utf8_lossy(&v[..v.len().min(16)]).into_owned()),
                ver.as_u64()
            )
        })
    };
    let keys: std::collections::BTreeSet<&Vec<u8>> = got.keys().chain(want.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| got.get(*k) != want.get(*k))
        .take(5)
        .map(|k| {
            format!(
                "{}: got {:?}, want {:?}",
                String::from_utf8_lossy(k),
                show(k, got),
                show(k, want)
            )
        })
        .collect();
    panic!(
        "{context}: {} keys got, {} wanted; first differences:\n{}",
        got.len(),
        want.len(),
        diffs.join("\n")
    );
}
