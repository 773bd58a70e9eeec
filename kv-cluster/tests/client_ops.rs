//! Client operations: batches, consistency levels against failing replicas, key errors.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::faulty::FaultyBackend;
use kv_cluster::{Cluster, Consistency, Error};
use kv_ring::token;

#[test]
fn batches_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), common::memory_opts()).unwrap();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..500)
        .map(|i| (common::key(i), format!("v{i}").into_bytes()))
        .collect();
    let versions = cluster.put_many(&pairs).unwrap();
    assert!(versions.windows(2).all(|w| w[0] < w[1]));
    cluster.delete(&common::key(7)).unwrap();
    let keys: Vec<Vec<u8>> = (0..501).map(common::key).collect();
    let got = cluster.get_many(&keys).unwrap();
    for (i, v) in got.iter().enumerate() {
        match i {
            7 | 500 => assert_eq!(v, &None),
            _ => assert_eq!(v.as_deref(), Some(format!("v{i}").as_bytes())),
        }
    }
    assert_eq!(cluster.stats().unwrap().total_keys, 499);
}

#[test]
fn a_later_delete_wins_over_an_earlier_put() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), common::memory_opts()).unwrap();
    let put = cluster.put(b"k", b"v").unwrap();
    let del = cluster.delete(b"k").unwrap();
    assert!(del > put);
    assert_eq!(cluster.get(b"k").unwrap(), None);
    let p = cluster.placement_of(b"k").unwrap();
    assert!(p.held.iter().all(|(_, v, ver)| v.is_none() && *ver == del));
}

/// One of a key's three replicas fails: quorum writes and reads go on, `all` fails.
#[test]
fn consistency_levels_with_one_replica_down() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let opts = common::memory_opts().backend(backend.clone());
    let cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
    cluster.put(b"k", b"before").unwrap();
    let primary = cluster.ring().preference_list(token(b"k"), 3).unwrap()[0].to_string();
    backend.faults.down.lock().push(primary);

    cluster.put(b"k", b"during").unwrap();
    assert_eq!(cluster.get(b"k").unwrap().as_deref(), Some(&b"during"[..]));
    cluster.put_many(&[(b"k", b"batch")]).unwrap();
    drop(cluster);

    let all = opts.consistency(Consistency::All);
    let cluster = Cluster::open(dir.path(), all).unwrap();
    assert!(matches!(
        cluster.put(b"k", b"x"),
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(cluster.get(b"k"), Err(Error::Unavailable { .. })));
    assert!(matches!(
        cluster.put_many(&[(b"k", b"x")]),
        Err(Error::Unavailable { .. })
    ));
}

#[test]
fn two_replicas_down_fail_quorum_but_not_one() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let opts = common::memory_opts().backend(backend.clone());
    let cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
    backend
        .faults
        .down
        .lock()
        .extend(["node1".into(), "node2".into()]);
    assert!(matches!(
        cluster.put(b"k", b"v"),
        Err(Error::Unavailable {
            needed: 2,
            acknowledged: 1,
            cause: Some(_),
            ..
        })
    ));
    drop(cluster);
    let one = opts.consistency(Consistency::One);
    let cluster = Cluster::open(dir.path(), one).unwrap();
    cluster.put(b"k", b"v").unwrap();
    assert_eq!(cluster.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn invalid_keys_are_the_nodes_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), common::disk_opts()).unwrap();
    let err = cluster.put(b"", b"v").unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Node {
                source: kv_node::Error::EmptyKey,
                ..
            }
        ),
        "{err}"
    );
    let huge = vec![0u8; 70 * 1024];
    assert!(matches!(
        cluster.put(&huge, b"v"),
        Err(Error::Node {
            source: kv_node::Error::KeyTooLarge { .. },
            ..
        })
    ));
}
