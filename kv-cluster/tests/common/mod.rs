//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

pub mod faulty;
pub mod remote;

use std::collections::HashMap;
use std::sync::Arc;

use kv_cluster::{Cluster, ClusterOptions, MemoryBackend, NodeOptions, Version};
use parking_lot::Mutex;

/// Options for a cluster of in-memory nodes. Reopening a directory with options cloned from
/// the same value finds the nodes' data again.
pub fn memory_opts() -> ClusterOptions {
    ClusterOptions::new().backend(Arc::new(MemoryBackend::default()))
}

/// A key's last acknowledged write: its version and value (`None`: deleted).
pub type Last = (Version, Option<Vec<u8>>);

/// Options for a cluster of storage nodes on disk (`kv_node::Node`), with small log segments
/// so that a test's nodes do not preallocate much.
pub fn disk_opts() -> ClusterOptions {
    let wal = kv_wal::WalOptions::new().segment_size(4 << 20);
    ClusterOptions::new().node_options(NodeOptions::new().wal(wal))
}

/// Every acknowledged write, newest version per key: what the cluster must return.
#[derive(Default)]
pub struct Model {
    keys: Mutex<HashMap<Vec<u8>, Last>>,
}

impl Model {
    /// Records an acknowledged write (`None`: a delete).
    pub fn acked(&self, key: &[u8], value: Option<&[u8]>, version: Version) {
        let mut keys = self.keys.lock();
        let e = keys.entry(key.to_vec()).or_insert((Version::ZERO, None));
        if version > e.0 {
            *e = (version, value.map(<[u8]>::to_vec));
        }
    }

    /// Expects `key` to hold `value` at whatever version (for a model rebuilt outside the
    /// process that wrote).
    pub fn expect(&self, key: &[u8], value: Option<&[u8]>) {
        let value = value.map(<[u8]>::to_vec);
        self.keys
            .lock()
            .insert(key.to_vec(), (Version::ZERO, value));
    }

    pub fn len(&self) -> usize {
        self.keys.lock().len()
    }

    pub fn snapshot(&self) -> HashMap<Vec<u8>, Last> {
        self.keys.lock().clone()
    }
}

/// Checks that every key reads its last acknowledged value, and is held (value or tombstone)
/// by exactly the nodes its preference list names, all at the same version. A model version
/// of `Version::ZERO` means "any version" (a model rebuilt outside the process that wrote).
pub fn check(cluster: &Cluster, model: &Model) {
    assert_eq!(cluster.pending_change(), None);
    let rf = cluster.replication_factor();
    let mut live = 0u64;
    for (key, (version, value)) in model.snapshot() {
        let got = cluster.get_versioned(&key).unwrap();
        match &value {
            Some(v) => {
                live += 1;
                let (got, got_version) = got.unwrap_or_else(|| panic!("{key:?} lost"));
                assert_eq!(&got[..], &v[..], "{key:?}");
                if version != Version::ZERO {
                    assert_eq!(got_version, version, "{key:?}");
                }
            }
            None => assert_eq!(got, None, "{key:?} resurrected"),
        }
        let p = cluster.placement_of(&key).unwrap();
        let mut expected = p.expected.clone();
        expected.sort();
        let holders: Vec<_> = p.held.iter().map(|(id, _, _)| id.clone()).collect();
        assert_eq!(holders, expected, "{key:?} is on the wrong nodes");
        assert_eq!(expected.len(), rf);
        let newest = p.held.iter().map(|(_, _, v)| *v).max().unwrap();
        if version != Version::ZERO {
            assert_eq!(newest, version, "{key:?}");
        }
        for (id, _, v) in &p.held {
            assert_eq!(*v, newest, "{key:?} is stale on {id}");
        }
    }
    let stats = cluster.stats().unwrap();
    assert_eq!(stats.total_keys, live);
    let replicas: u64 = stats.nodes.iter().map(|n| n.replica_keys).sum();
    assert_eq!(replicas, live * rf as u64);
}

/// `n` distinct keys.
pub fn key(i: u64) -> Vec<u8> {
    format!("key:{i:08}").into_bytes()
}

/// Reads every replica of every model key directly (no quorum read, so no read repair hides
/// a stale copy) and returns the copies, `(key, node)`, that do not hold the key's last
/// acknowledged version (missing, older, or a different value). A model version of
/// `Version::ZERO` accepts any version holding the model's value.
pub fn stale_replicas(cluster: &Cluster, model: &Model) -> Vec<(Vec<u8>, String)> {
    let mut stale = Vec::new();
    for (key, (version, value)) in model.snapshot() {
        let p = cluster.placement_of(&key).unwrap();
        for id in &p.expected {
            let held = p.held.iter().find(|(h, _, _)| h == id);
            let fresh = held.is_some_and(|(_, v, ver)| {
                v.as_deref() == value.as_deref() && (version == Version::ZERO || *ver == version)
            });
            if !fresh {
                stale.push((key.clone(), id.to_string()));
            }
        }
    }
    stale.sort();
    stale
}

/// Asserts that [`stale_replicas`] finds none, naming a few if it does.
pub fn assert_every_replica_fresh(cluster: &Cluster, model: &Model) {
    let stale = stale_replicas(cluster, model);
    assert!(
        stale.is_empty(),
        "{} stale replica copies, e.g. {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
}
