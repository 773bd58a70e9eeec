//! Sloppy quorum, opt in: with two of a key's three replicas down, a strict quorum write
//! fails `Unavailable` while a sloppy one succeeds on a replica plus a hint on a live
//! stand-in, and once the replicas recover and the hints are handed off, every replica holds
//! the value. Strict stays the default.
#![allow(clippy::unwrap_used)]

mod common;

use kv_cluster::{Cluster, Consistency, Error, Version};
use kv_ring::NodeId;

/// Nodes `n1..=n{count}`.
fn nodes(count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("n{i}")).collect()
}

/// The key's replicas, primary first.
fn replicas(cluster: &Cluster, key: &[u8]) -> Vec<NodeId> {
    cluster.placement_of(key).unwrap().expected
}

/// Asserts that exactly the key's replicas hold it, each at `version` with `value`.
fn on_every_replica(cluster: &Cluster, key: &[u8], value: Option<&[u8]>, version: Version) {
    let p = cluster.placement_of(key).unwrap();
    let mut expected = p.expected.clone();
    expected.sort();
    let holders: Vec<NodeId> = p.held.iter().map(|(id, _, _)| id.clone()).collect();
    assert_eq!(holders, expected, "{key:?}");
    for (id, v, ver) in &p.held {
        assert_eq!((v.as_deref(), *ver), (value, version), "{key:?} on {id}");
    }
}

fn hint_dirs(dir: &std::path::Path, nodes: &[String]) -> usize {
    nodes
        .iter()
        .map(|n| {
            std::fs::read_dir(dir.join(n).join("hints"))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn sloppy_quorum_write_succeeds_where_strict_fails_and_reaches_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let names = nodes(4);
    let opts = common::disk_opts().initial_nodes(names.clone());
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let key = b"sloppy:1";
    let r = replicas(&cluster, key);
    cluster.crash_node(r[0].as_str()).unwrap();
    cluster.fail_node(r[1].as_str()).unwrap();

    // Strict (the default, and explicitly): only one replica is up.
    for outcome in [
        cluster.put(key, b"strict"),
        cluster.put_with(key, b"strict", Consistency::Quorum),
        cluster.delete(key),
    ] {
        match outcome {
            Err(Error::Unavailable {
                needed: 2,
                acknowledged: 1,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
    // Sloppy: the live replica plus a hint on the fourth node, the next one on the ring.
    let v = cluster
        .put_sloppy(key, b"sloppy", Consistency::Quorum)
        .unwrap();
    let stand_in = names
        .iter()
        .find(|n| !r.iter().any(|x| x.as_str() == n.as_str()))
        .unwrap();
    assert!(dir.path().join(stand_in).join("hints").exists());
    // The stand-in holds a hint, not the key: reads see only the live replica.
    let held: Vec<_> = cluster.placement_of(key).unwrap().held;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].0, r[2]);
    assert!(matches!(cluster.get(key), Err(Error::Unavailable { .. })));
    assert_eq!(
        cluster.get_with(key, Consistency::One).unwrap().as_deref(),
        Some(&b"sloppy"[..])
    );

    cluster.recover_node(r[0].as_str()).unwrap();
    cluster.recover_node(r[1].as_str()).unwrap();
    on_every_replica(&cluster, key, Some(b"sloppy"), v);
    assert_eq!(hint_dirs(dir.path(), &names), 0);
    assert_eq!(cluster.get(key).unwrap().as_deref(), Some(&b"sloppy"[..]));
}

#[test]
fn a_sloppy_delete_is_handed_off_as_a_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::memory_opts().initial_nodes(nodes(4));
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let key = b"sloppy:gone";
    cluster.put(key, b"v").unwrap();
    let r = replicas(&cluster, key);
    cluster.fail_node(r[1].as_str()).unwrap();
    cluster.fail_node(r[2].as_str()).unwrap();
    assert!(matches!(
        cluster.delete(key),
        Err(Error::Unavailable { .. })
    ));
    let v = cluster.delete_sloppy(key, Consistency::Quorum).unwrap();
    cluster.recover_node(r[2].as_str()).unwrap();
    cluster.recover_node(r[1].as_str()).unwrap();
    on_every_replica(&cluster, key, None, v);
    assert_eq!(cluster.get(key).unwrap(), None);
}

#[test]
fn each_down_replica_needs_its_own_live_stand_in() {
    // Three nodes, three replicas: no node beyond the replicas, so nothing to stand in.
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), common::memory_opts()).unwrap();
    cluster.fail_node("node1").unwrap();
    cluster.fail_node("node2").unwrap();
    assert!(matches!(
        cluster.put_sloppy(b"k", b"v", Consistency::Quorum),
        Err(Error::Unavailable {
            needed: 2,
            acknowledged: 1,
            ..
        })
    ));
    // One is enough for `One`, strict or sloppy.
    cluster.put_sloppy(b"k", b"v", Consistency::One).unwrap();

    // Five nodes: two beyond the replicas, so even `All` can be met with two replicas down,
    // and not with a third node (a stand-in) down as well.
    let dir = tempfile::tempdir().unwrap();
    let names = nodes(5);
    let cluster = Cluster::open(
        dir.path(),
        common::memory_opts().initial_nodes(names.clone()),
    )
    .unwrap();
    let key = b"sloppy:all";
    let r = replicas(&cluster, key);
    cluster.fail_node(r[0].as_str()).unwrap();
    cluster.fail_node(r[2].as_str()).unwrap();
    let v = cluster.put_sloppy(key, b"all", Consistency::All).unwrap();
    let others: Vec<&String> = names
        .iter()
        .filter(|n| !r.iter().any(|x| x.as_str() == n.as_str()))
        .collect();
    cluster.fail_node(others[0]).unwrap();
    assert!(matches!(
        cluster.put_sloppy(key, b"later", Consistency::All),
        Err(Error::Unavailable { .. })
    ));
    cluster.recover_node(others[0]).unwrap();
    cluster.recover_node(r[0].as_str()).unwrap();
    cluster.recover_node(r[2].as_str()).unwrap();
    on_every_replica(&cluster, key, Some(b"all"), v);
}

#[test]
fn the_cluster_option_makes_every_write_sloppy_including_batches() {
    let dir = tempfile::tempdir().unwrap();
    let names = nodes(4);
    let opts = common::memory_opts()
        .initial_nodes(names.clone())
        .sloppy_quorum(true);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    // Two nodes down out of four: every key has at least one replica up and, when it has
    // two down, the remaining node beyond them up (the four nodes are its three replicas
    // and one more).
    cluster.fail_node("n1").unwrap();
    cluster.fail_node("n2").unwrap();
    let model = common::Model::default();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..200)
        .map(|i| (common::key(i), format!("v{i}").into_bytes()))
        .collect();
    let versions = cluster.put_many(&pairs).unwrap();
    for ((k, v), ver) in pairs.iter().zip(versions) {
        model.acked(k, Some(v), ver);
    }
    for i in 200..300 {
        let k = common::key(i);
        let v = cluster.put(&k, b"single").unwrap();
        model.acked(&k, Some(b"single"), v);
    }
    cluster.recover_node("n1").unwrap();
    cluster.recover_node("n2").unwrap();
    common::check(&cluster, &model);
}

#[test]
fn an_acknowledged_sloppy_write_survives_a_coordinator_restart() {
    let dir = tempfile::tempdir().unwrap();
    let names = nodes(4);
    let opts = common::disk_opts().initial_nodes(names.clone());
    let cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
    let key = b"sloppy:restart";
    let r = replicas(&cluster, key);
    cluster.crash_node(r[0].as_str()).unwrap();
    cluster.crash_node(r[1].as_str()).unwrap();
    let v = cluster
        .put_sloppy(key, b"kept", Consistency::Quorum)
        .unwrap();
    cluster.sync().unwrap();
    // The process stops with both replicas down; the reopened cluster hands the hint off.
    drop(cluster);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    on_every_replica(&cluster, key, Some(b"kept"), v);
    assert_eq!(hint_dirs(dir.path(), &names), 0);
}
