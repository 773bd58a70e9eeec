//! Deletes and writes that report what they replaced (`delete_existing`, `delete_many`,
//! `take`, `swap`): decided from the replicas' own answers at the moment they apply the
//! write, with stale replicas, racing writes and threads.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::{Arc, Barrier};

use common::faulty::FaultyBackend;
use common::{disk_opts, memory_opts};
use kv_cluster::*;
use kv_ring::NodeId;

/// A second handle on node `id`'s in-memory data, outside the cluster's routing.
fn raw(backend: &MemoryBackend, dir: &Path, id: &str) -> Arc<dyn Replica> {
    backend
        .open(&NodeId::new(id).unwrap(), &dir.join(id))
        .unwrap()
}

fn w<'a>(key: &'a [u8], value: Option<&'a [u8]>, version: Version) -> Write<'a> {
    Write {
        key,
        value,
        version,
        expires: None,
    }
}

#[test]
fn delete_existing_reports_whether_a_value_was_replaced() {
    for opts in [memory_opts(), disk_opts()] {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::open(dir.path(), opts).unwrap();
        cluster.put(b"a", b"1").unwrap();
        cluster.put(b"b", b"2").unwrap();
        cluster.delete(b"b").unwrap();
        assert!(cluster.delete_existing(b"a").unwrap());
        assert!(!cluster.delete_existing(b"a").unwrap(), "already deleted");
        assert!(!cluster.delete_existing(b"b").unwrap(), "a tombstone");
        assert!(!cluster.delete_existing(b"never").unwrap());
        assert_eq!(cluster.get(b"a").unwrap(), None);
        cluster.put(b"c", b"3").unwrap();
        let got = cluster.delete_many(&[&b"c"[..], b"x", b"c"]).unwrap();
        assert_eq!(got, vec![true, false, false]);
    }
}

#[test]
fn take_and_swap_return_the_replaced_value() {
    for opts in [memory_opts(), disk_opts()] {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::open(dir.path(), opts).unwrap();
        assert_eq!(cluster.swap(b"k", b"one").unwrap(), None);
        assert_eq!(
            cluster.swap(b"k", b"two").unwrap().as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(cluster.take(b"k").unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(cluster.take(b"k").unwrap(), None);
        assert_eq!(cluster.get(b"k").unwrap(), None);
        assert_eq!(
            cluster.swap(b"k", b"three").unwrap(),
            None,
            "over a tombstone"
        );
        assert_eq!(cluster.get(b"k").unwrap().as_deref(), Some(&b"three"[..]));
    }
}

/// node3 missed the delete of `k` and still holds its old value; with node1 down, the
/// quorum that acknowledges the next write is node2 (the tombstone) and node3 (the stale
/// value): the newer answer wins, so the key did not exist.
#[test]
fn a_stale_replica_in_the_quorum_does_not_bring_a_deleted_key_back() {
    let backend = Arc::new(MemoryBackend::default());
    let dir = tempfile::tempdir().unwrap();
    let opts = ClusterOptions::new().backend(backend.clone());
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    // Two versions from the cluster's clock, for writes made behind its back.
    let put = cluster.put(b"clock", b"1").unwrap();
    let delete = cluster.put(b"clock", b"2").unwrap();
    for key in [&b"del"[..], b"take", b"swap"] {
        for id in ["node1", "node2", "node3"] {
            raw(&backend, dir.path(), id)
                .apply(1, w(key, Some(b"old"), put))
                .unwrap();
        }
        for id in ["node1", "node2"] {
            raw(&backend, dir.path(), id)
                .apply(1, w(key, None, delete))
                .unwrap();
        }
    }
    cluster.fail_node("node1").unwrap();
    assert!(!cluster.delete_existing(b"del").unwrap());
    assert_eq!(cluster.take(b"take").unwrap(), None);
    assert_eq!(cluster.swap(b"swap", b"new").unwrap(), None);
}

/// The documented limit: at `W = 1` the write's quorum need not overlap the delete's, and a
/// stale replica answering alone reports the value it still holds.
#[test]
fn at_write_consistency_one_a_stale_replica_alone_reports_its_value() {
    let backend = Arc::new(MemoryBackend::default());
    let dir = tempfile::tempdir().unwrap();
    let opts = ClusterOptions::new()
        .backend(backend.clone())
        .write_consistency(Consistency::One);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let put = cluster.put(b"clock", b"1").unwrap();
    let delete = cluster.put(b"clock", b"2").unwrap();
    for id in ["node1", "node2", "node3"] {
        raw(&backend, dir.path(), id)
            .apply(1, w(b"k", Some(b"old"), put))
            .unwrap();
    }
    for id in ["node1", "node2"] {
        raw(&backend, dir.path(), id)
            .apply(1, w(b"k", None, delete))
            .unwrap();
    }
    cluster.fail_node("node1").unwrap();
    cluster.fail_node("node2").unwrap();
    assert!(cluster.delete_existing(b"k").unwrap());
}

/// A newer write lands on every replica just before this one: this one changes nothing
/// anywhere, so it is written again with a new version, after the newer write, and reports
/// the newer write's value.
#[test]
fn a_write_that_lost_everywhere_is_written_again_after_the_winner() {
    let memory = Arc::new(MemoryBackend::default());
    let backend = Arc::new(FaultyBackend::over(memory.clone()));
    let dir = tempfile::tempdir().unwrap();
    let opts = ClusterOptions::new().backend(backend.clone());
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    cluster.put(b"k", b"first").unwrap();
    let path = dir.path().to_path_buf();
    let racer = Arc::clone(&memory);
    *backend.faults.before_swap.lock() = Some(Box::new(move |write: Write<'_>| {
        let newer = Version::new(write.version.as_u64() + 1);
        for id in ["node1", "node2", "node3"] {
            raw(&racer, &path, id)
                .apply(1, w(write.key, Some(b"winner"), newer))
                .unwrap();
        }
    }));
    assert_eq!(cluster.take(b"k").unwrap().as_deref(), Some(&b"winner"[..]));
    assert_eq!(cluster.get(b"k").unwrap(), None);
}

/// Threads deleting the same live keys at once: each key is reported as existing by
/// exactly one of them (a read then a delete would let several count it).
#[test]
fn concurrent_deletes_count_each_live_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Arc::new(Cluster::open(dir.path(), disk_opts()).unwrap());
    const THREADS: usize = 4;
    const KEYS: usize = 16;
    let keys: Vec<Vec<u8>> = (0..KEYS).map(|i| format!("key{i}").into_bytes()).collect();
    for round in 0..50 {
        let pairs: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (&k[..], &b"v"[..])).collect();
        cluster.put_many(&pairs).unwrap();
        let start = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (cluster, start) = (Arc::clone(&cluster), Arc::clone(&start));
                let mut keys = keys.clone();
                keys.rotate_left(t * KEYS / THREADS); // threads meet on each key at different times
                std::thread::spawn(move || {
                    start.wait();
                    cluster.delete_many(&keys).unwrap()
                })
            })
            .collect();
        let existed: usize = threads
            .into_iter()
            .map(|t| t.join().unwrap().into_iter().filter(|e| *e).count())
            .sum();
        assert_eq!(existed, KEYS, "round {round}");
    }
}

/// Threads swapping their own values into one key: every value written is returned as
/// replaced exactly once, but the one left at the end.
#[test]
fn concurrent_swaps_replace_each_value_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Arc::new(Cluster::open(dir.path(), disk_opts()).unwrap());
    const THREADS: usize = 4;
    const EACH: usize = 200;
    cluster.put(b"k", b"start").unwrap();
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (cluster, start) = (Arc::clone(&cluster), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                (0..EACH)
                    .map(|i| {
                        let mine = format!("t{t}i{i}");
                        let old = cluster.swap(b"k", mine.as_bytes()).unwrap().unwrap();
                        (mine, String::from_utf8(old.to_vec()).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let got: Vec<(String, String)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let last = String::from_utf8(cluster.get(b"k").unwrap().unwrap().to_vec()).unwrap();
    let mut replaced: Vec<&String> = got.iter().map(|(_, old)| old).collect();
    replaced.sort();
    let start = "start".to_string();
    let mut written: Vec<&String> = got
        .iter()
        .map(|(mine, _)| mine)
        .chain([&start])
        .filter(|v| **v != last)
        .collect();
    written.sort();
    assert_eq!(replaced, written);
}
