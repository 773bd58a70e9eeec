//! Hinted handoff and read repair in isolation: hints are durable across a restart of the
//! coordinator, land only where they belong, and a read fixes the stale replicas it saw.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::faulty::FaultyBackend;
use kv_cluster::{Cluster, ClusterOptions, Consistency, Error, Health};

fn versions(cluster: &Cluster, key: &[u8]) -> Vec<(String, Option<Vec<u8>>)> {
    cluster
        .placement_of(key)
        .unwrap()
        .held
        .into_iter()
        .map(|(id, v, _)| (id.to_string(), v.map(|b| b.to_vec())))
        .collect()
}

#[test]
fn hints_survive_a_coordinator_restart_and_are_handed_off_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::disk_opts();
    let cluster = Cluster::open(dir.path(), opts.clone()).unwrap();
    cluster.put(b"before", b"1").unwrap();
    cluster.fail_node("node2").unwrap();
    assert!(matches!(cluster.health("node2"), Some(Health::Down { .. })));
    cluster.put(b"k", b"v").unwrap();
    cluster.delete(b"before").unwrap();
    assert_eq!(cluster.stats().unwrap().hints, 2);
    // The process stops with node2 still down; the hints are on the holder's disk.
    drop(cluster);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    assert_eq!(cluster.health("node2"), Some(Health::Up));
    let held = versions(&cluster, b"k");
    assert_eq!(held.len(), 3, "{held:?}");
    assert!(
        versions(&cluster, b"before")
            .iter()
            .all(|(_, v)| v.is_none())
    );
    for n in ["node1", "node2", "node3"] {
        let left = std::fs::read_dir(dir.path().join(n).join("hints"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "{n}");
    }
}

#[test]
fn unavailable_at_once_when_too_few_replicas_are_up() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), common::memory_opts()).unwrap();
    cluster.fail_node("node1").unwrap();
    cluster.crash_node("node3").unwrap();
    for e in [
        cluster.put(b"k", b"v").unwrap_err(),
        cluster.get(b"k").unwrap_err(),
        cluster.delete(b"k").unwrap_err(),
        cluster.put_many(&[(b"k", b"v")]).unwrap_err(),
    ] {
        match e {
            Error::Unavailable {
                needed: 2,
                acknowledged: 1,
                cause: Some(cause),
                ..
            } => assert!(matches!(*cause, Error::NodeDown { .. })),
            other => panic!("{other:?}"),
        }
    }
    // Nothing was written by the refused operations.
    assert_eq!(cluster.get_with(b"k", Consistency::One).unwrap(), None);
    assert!(matches!(
        cluster.fail_node("node1"),
        Err(Error::NodeDown { .. })
    ));
    assert!(matches!(
        cluster.recover_node("node2"),
        Err(Error::NodeNotDown { .. })
    ));
    assert!(matches!(
        cluster.fail_node("node9"),
        Err(Error::UnknownNode { .. })
    ));
}

#[test]
fn a_read_repairs_the_stale_replicas_it_saw_before_returning() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let opts = ClusterOptions::new().backend(backend.clone());
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    cluster.put(b"k", b"old").unwrap();
    // node3 misses the update (a failed replica write: no hint).
    backend.faults.down.lock().push("node3".into());
    cluster.put(b"k", b"new").unwrap();
    cluster.delete(b"gone").unwrap();
    backend.faults.down.lock().clear();
    assert!(versions(&cluster, b"k").contains(&("node3".into(), Some(b"old".to_vec()))));
    // A read of all three sees node3 behind and fixes it before returning.
    assert_eq!(
        cluster.get_with(b"k", Consistency::All).unwrap().as_deref(),
        Some(&b"new"[..])
    );
    assert!(
        versions(&cluster, b"k")
            .iter()
            .all(|(_, v)| v.as_deref() == Some(&b"new"[..]))
    );
    // A tombstone is repaired too: node3 gets it, so nothing can resurrect the key.
    assert_eq!(cluster.get_with(b"gone", Consistency::All).unwrap(), None);
    assert_eq!(versions(&cluster, b"gone").len(), 3);
}

/// A cluster of storage nodes (small log segments) behind a fault injector.
fn on_storage_nodes(dir: &std::path::Path) -> (Cluster, Arc<FaultyBackend>) {
    let wal = kv_wal::WalOptions::new().segment_size(4 << 20);
    let nodes = kv_cluster::KvNodeBackend::new(kv_cluster::NodeOptions::new().wal(wal));
    let backend = Arc::new(FaultyBackend::over(Arc::new(nodes)));
    let cluster = Cluster::open(dir, ClusterOptions::new().backend(backend.clone())).unwrap();
    (cluster, backend)
}

/// Quorum reads read the first replica in full and the others only for their version (a
/// digest read). On storage nodes, with the *first* replica stale: the newer version seen
/// in a digest makes the coordinator read that replica in full, return its value, and repair
/// the first one; for a delete too.
#[test]
fn a_digest_read_that_sees_a_newer_version_fetches_it_and_repairs() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, backend) = on_storage_nodes(dir.path());
    for (key, newer) in [(&b"k"[..], Some(&b"new"[..])), (&b"gone"[..], None)] {
        cluster.put(key, b"old").unwrap();
        let first = cluster.placement_of(key).unwrap().expected[0].to_string();
        backend.faults.down.lock().push(first.clone());
        match newer {
            Some(v) => drop(cluster.put(key, v).unwrap()),
            None => drop(cluster.delete(key).unwrap()),
        }
        backend.faults.down.lock().clear();
        let stale = versions(&cluster, key);
        assert!(
            stale.contains(&(first.clone(), Some(b"old".to_vec()))),
            "{stale:?}"
        );
        assert_eq!(cluster.get(key).unwrap().as_deref(), newer);
        let after = versions(&cluster, key);
        assert!(
            after.iter().all(|(_, v)| v.as_deref() == newer),
            "{key:?}: {after:?}"
        );
    }
}

/// `get_many` asks each replica once for all its keys, then checks each key as `get` does.
/// On storage nodes, with a stale replica in every position of the preference lists (first,
/// second, third) and deletes among the updates: every key reads its newest value; each key's
/// two replicas a quorum read asks hold the newest afterwards (the first repaired through a
/// full read of the newer one, the second from the batch); with one node failing every
/// request, the batch still answers from the others.
#[test]
fn get_many_answers_and_repairs_as_get_does() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, backend) = on_storage_nodes(dir.path());
    let key = |i: usize| format!("key-{i}").into_bytes();
    let mut expected: Vec<Option<Vec<u8>>> = Vec::new();
    for i in 0..300 {
        cluster.put(&key(i), b"old").unwrap();
        expected.push(Some(b"old".to_vec()));
    }
    // Key i misses its update on the replica at position i % 3 (i % 4 == 0: no update).
    for (i, want) in expected.iter_mut().enumerate() {
        if i % 4 == 0 {
            continue;
        }
        let stale = cluster.placement_of(&key(i)).unwrap().expected[i % 3].to_string();
        backend.faults.down.lock().push(stale);
        if i % 5 == 0 {
            cluster.delete(&key(i)).unwrap();
            *want = None;
        } else {
            let v = format!("new-{i}").into_bytes();
            cluster.put(&key(i), &v).unwrap();
            *want = Some(v);
        }
        backend.faults.down.lock().clear();
    }
    let mut keys: Vec<Vec<u8>> = (0..300).map(key).collect();
    keys.push(b"never-written".to_vec());
    let got = cluster.get_many(&keys).unwrap();
    assert_eq!(got.len(), 301);
    for (i, v) in got.iter().take(300).enumerate() {
        assert_eq!(v.as_deref(), expected[i].as_deref(), "key {i}");
    }
    assert_eq!(got[300], None);
    for (i, want) in expected.iter().enumerate() {
        let p = cluster.placement_of(&key(i)).unwrap();
        for asked in &p.expected[..2] {
            let held = p.held.iter().find(|(id, _, _)| id == asked).unwrap();
            assert_eq!(held.1.as_deref(), want.as_deref(), "key {i} on {asked}");
        }
    }
    // One node fails every call: the batch still answers every key from the other two.
    backend.faults.down.lock().push("node2".into());
    let got = cluster.get_many(&keys).unwrap();
    for (i, v) in got.iter().take(300).enumerate() {
        assert_eq!(
            v.as_deref(),
            expected[i].as_deref(),
            "key {i}, node2 failing"
        );
    }
}
