//! Membership changes and options that cannot work are refused with typed errors.
#![allow(clippy::unwrap_used)]

mod common;

use std::ops::ControlFlow;

use kv_cluster::{ChangeKind, Cluster, Error};

#[test]
fn a_second_change_during_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), common::memory_opts().transfer_batch(10)).unwrap();
    for i in 0..200 {
        cluster.put(&common::key(i), b"v").unwrap();
    }
    let mut refused = None;
    cluster
        .add_node_with_progress("node4", |_| {
            if refused.is_none() {
                refused = Some(cluster.add_node("node5").unwrap_err());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    match refused.unwrap() {
        Error::ChangeInProgress { kind, node } => {
            assert_eq!((kind, node.as_str()), (ChangeKind::Add, "node4"));
        }
        e => panic!("{e}"),
    }
    // Done: the next one goes through.
    cluster.add_node("node5").unwrap();
}

#[test]
fn unknown_duplicate_invalid_and_below_rf() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), common::memory_opts()).unwrap();
    assert!(matches!(
        cluster.add_node("node2"),
        Err(Error::DuplicateNode { .. })
    ));
    assert!(matches!(
        cluster.remove_node("node7"),
        Err(Error::UnknownNode { .. })
    ));
    assert!(matches!(
        cluster.remove_node("node1"),
        Err(Error::BelowReplicationFactor {
            remaining: 2,
            replication_factor: 3
        })
    ));
    assert!(matches!(cluster.add_node("bad id"), Err(Error::Ring(_))));
    assert_eq!(cluster.pending_change(), None);
    assert_eq!(cluster.nodes().len(), 3);
}

#[test]
fn options_and_directories_that_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let too_few = common::memory_opts().initial_nodes(["a", "b"]);
    assert!(matches!(
        Cluster::open(dir.path(), too_few),
        Err(Error::InvalidOptions { .. })
    ));
    let zero = common::memory_opts().replication_factor(0);
    assert!(matches!(
        Cluster::open(dir.path(), zero),
        Err(Error::InvalidOptions { .. })
    ));

    let _open = Cluster::open(dir.path(), common::memory_opts()).unwrap();
    assert!(matches!(
        Cluster::open(dir.path(), common::memory_opts()),
        Err(Error::Locked { .. })
    ));
}

#[test]
fn an_existing_cluster_keeps_its_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::memory_opts().replication_factor(2).vnodes(8);
    let cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
    cluster.put(b"k", b"v").unwrap();
    drop(cluster);
    let cluster = Cluster::open(dir.path(), opts.replication_factor(3)).unwrap();
    assert_eq!(cluster.replication_factor(), 2);
    assert_eq!(cluster.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn a_leftover_directory_of_the_joiner_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), common::disk_opts()).unwrap();
    std::fs::create_dir(dir.path().join("node4")).unwrap();
    assert!(matches!(
        cluster.add_node("node4"),
        Err(Error::StaleNodeDirectory { .. })
    ));
    assert_eq!(cluster.pending_change(), None);
    std::fs::remove_dir(dir.path().join("node4")).unwrap();
    cluster.add_node("node4").unwrap();
    // A node that left can join again: its directory went with it.
    cluster.remove_node("node4").unwrap();
    cluster.add_node("node4").unwrap();
}
