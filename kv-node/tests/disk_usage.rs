//! A young node takes little disk: its log's segments start small and grow (see kv-wal's
//! *Segment sizes*), and the largest value still fits in a young log.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use kv_node::{DEFAULT_MAX_VALUE_LEN, Node, NodeOptions};

/// Bytes allocated on disk under `dir` (blocks, not lengths: segments are preallocated).
fn allocated(dir: &Path) -> u64 {
    let mut sum = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        sum += m.blocks() * 512;
        if m.is_dir() {
            sum += allocated(&e.path());
        }
    }
    sum
}

#[test]
fn a_fresh_node_with_a_few_keys_takes_a_few_megabytes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), NodeOptions::new()).unwrap();
    for k in ["user:1", "user:2", "user:3"] {
        node.put(k.as_bytes(), b"some value").unwrap();
    }
    node.close().unwrap();
    let node = Node::open(dir.path(), NodeOptions::new()).unwrap();
    assert_eq!(node.stats().live_keys, 3);
    drop(node);
    let used = allocated(dir.path());
    assert!(used < 3 << 20, "{used} bytes allocated");
}

#[test]
fn the_largest_value_fits_in_a_young_node() {
    let dir = tempfile::tempdir().unwrap();
    let opts = NodeOptions::new().background(false);
    let node = Node::open(dir.path(), opts.clone()).unwrap();
    node.put(b"small", b"v").unwrap();
    let big = vec![0xab; DEFAULT_MAX_VALUE_LEN];
    node.put(b"big", &big).unwrap();
    node.put(b"after", b"v").unwrap();
    assert_eq!(node.get(b"big").unwrap().unwrap().0, &big[..]);
    node.close().unwrap();
    let node = Node::open(dir.path(), opts).unwrap();
    assert_eq!(node.get(b"big").unwrap().unwrap().0, &big[..]);
    assert_eq!(node.get(b"small").unwrap().unwrap().0, &b"v"[..]);
    assert_eq!(node.get(b"after").unwrap().unwrap().0, &b"v"[..]);
}
