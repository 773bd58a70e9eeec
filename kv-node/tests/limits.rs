//! Bad input gets a typed error, never a panic: limits, a locked directory, bad options.

#![allow(clippy::unwrap_used)]

mod common;

use common::small_opts;
use kv_node::{Error, MAX_KEY_LEN, Node, NodeOptions, Version, Write};
use kv_wal::WalOptions;

#[test]
fn keys_and_values_over_the_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), NodeOptions::new().max_value_len(1000)).unwrap();
    assert!(matches!(node.put(b"", b"v"), Err(Error::EmptyKey)));
    assert!(matches!(
        node.apply(b"", None, Version::new(1)),
        Err(Error::EmptyKey)
    ));
    let big_key = vec![b'k'; MAX_KEY_LEN + 1];
    assert!(matches!(
        node.put(&big_key, b"v"),
        Err(Error::KeyTooLarge { len, max }) if len == MAX_KEY_LEN + 1 && max == MAX_KEY_LEN
    ));
    // The largest key is fine.
    node.put(&vec![b'k'; MAX_KEY_LEN], b"v").unwrap();
    assert!(matches!(
        node.put(b"k", &[0; 1001]),
        Err(Error::ValueTooLarge {
            len: 1001,
            max: 1000
        })
    ));
    node.put(b"k", &[0; 1000]).unwrap();
    // A bad write in a batch refuses the whole batch before anything is written.
    let r = node.apply_batch(&[
        Write {
            key: b"ok",
            value: Some(b"1"),
            version: Version::new(5),
            expires: None,
        },
        Write {
            key: b"",
            value: Some(b"1"),
            version: Version::new(5),
            expires: None,
        },
    ]);
    assert!(matches!(r, Err(Error::EmptyKey)));
    assert_eq!(node.get(b"ok").unwrap(), None);
    assert!(Error::EmptyKey.to_string().contains("empty key"));
}

/// A version near `u64::MAX` (garbage from a client or a broken clock) is refused, alone or
/// in a batch, and does not push the node's clock to its end: `put` still works after.
#[test]
fn versions_past_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), NodeOptions::new()).unwrap();
    for version in [Version::LIMIT, Version::new(u64::MAX)] {
        let r = node.apply(b"k", Some(b"v"), version);
        assert!(
            matches!(r, Err(Error::VersionTooLarge { version: v }) if v == version),
            "{r:?}"
        );
        let r = node.apply_batch(&[Write {
            key: b"k",
            value: None,
            version,
            expires: None,
        }]);
        assert!(matches!(r, Err(Error::VersionTooLarge { .. })), "{r:?}");
    }
    assert_eq!(node.get_versioned(b"k").unwrap(), None);
    let below = Version::new(Version::LIMIT.as_u64() - 1);
    assert!(node.apply(b"k", Some(b"far"), below).unwrap());
    // The clock follows the version below the limit and goes on from there.
    let a = node.put(b"k", b"a").unwrap();
    let b = node.put(b"k", b"b").unwrap();
    assert!(below < a && a < b, "{below} {a} {b}");
    assert_eq!(node.get(b"k").unwrap().unwrap().1, b);
}

#[test]
fn values_must_fit_in_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), small_opts()).unwrap(); // 8 KiB segments
    match node.put(b"k", &[0; 8192]) {
        Err(Error::ValueTooLarge { len: 8192, max }) => assert!(max < 8192 && max > 8000),
        other => panic!("{other:?}"),
    }
    // A batch that does not fit in one segment is refused as a whole.
    let v = vec![0u8; 3000];
    let keys: Vec<Vec<u8>> = (0..4).map(|i| vec![b'a' + i]).collect();
    let batch: Vec<Write<'_>> = keys
        .iter()
        .map(|k| Write {
            key: k,
            value: Some(&v),
            version: Version::new(1),
            expires: None,
        })
        .collect();
    assert!(matches!(
        node.apply_batch(&batch),
        Err(Error::BatchTooLarge { .. })
    ));
    assert_eq!(node.stats().live_keys, 0);
    // But an import of the same records is split into batches that fit.
    let records: Vec<kv_node::Record> = batch
        .iter()
        .map(|w| kv_node::Record {
            key: w.key.to_vec().into(),
            value: w.value.map(|v| v.to_vec().into()),
            version: w.version,
            expires: None,
        })
        .collect();
    assert_eq!(node.import(&records).unwrap(), 4);
}

#[test]
fn a_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), small_opts()).unwrap();
    match Node::open(dir.path(), small_opts()) {
        Err(Error::Locked { path }) => assert!(path.starts_with(dir.path())),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(node);
    Node::open(dir.path(), small_opts()).unwrap();
}

#[test]
fn bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for opts in [
        NodeOptions::new().compaction_threshold(0.0),
        NodeOptions::new().max_key_len(0),
        NodeOptions::new().wal(WalOptions::new().segment_size(100)),
    ] {
        let r = Node::open(dir.path(), opts);
        assert!(
            matches!(r, Err(Error::InvalidOptions { .. }) | Err(Error::Wal(_))),
            "{r:?}"
        );
    }
}

#[test]
fn a_corrupt_log_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), small_opts()).unwrap();
    for k in 0..500u32 {
        node.put(&k.to_le_bytes(), &[7; 50]).unwrap();
    }
    drop(node);
    // Flip a byte in the middle of the first (sealed) segment.
    let seg = dir.path().join("wal").join("0000000001.wal");
    let mut b = std::fs::read(&seg).unwrap();
    b[4000] ^= 0xff;
    std::fs::write(&seg, b).unwrap();
    match Node::open(dir.path(), small_opts()) {
        Err(Error::Wal(e)) => assert!(e.to_string().contains("corrupt"), "{e}"),
        other => panic!("expected a corruption error, got {other:?}"),
    }
}
