//! Anti-entropy cost: identical replicas of 100,000 keys exchange only tree hashes, and a
//! single divergent key (a write, then a delete, that one replica missed) is found and fixed.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::faulty::FaultyBackend;
use kv_cluster::{Cluster, ClusterOptions, KvNodeBackend, NodeOptions, RepairSummary};

const KEYS: u64 = 100_000;

fn repair(cluster: &Cluster) -> RepairSummary {
    let s = cluster.repair().unwrap();
    eprintln!("{s:?}");
    s
}

#[test]
fn identical_replicas_exchange_only_hashes_and_one_divergent_key_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let wal = kv_wal::WalOptions::new().segment_size(16 << 20);
    let backend = Arc::new(FaultyBackend::over(Arc::new(KvNodeBackend::new(
        NodeOptions::new().wal(wal),
    ))));
    let opts = ClusterOptions::new().backend(backend.clone());
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let pairs: Vec<_> = (0..KEYS)
        .map(|i| (common::key(i), b"value".to_vec()))
        .collect();
    for chunk in pairs.chunks(5_000) {
        cluster.put_many(chunk).unwrap();
    }

    // Identical: one tree per replica set; only the roots are compared.
    let s = repair(&cluster);
    assert_eq!(
        (s.keys_repaired, s.leaves_differing, s.records_streamed),
        (0, 0, 0)
    );
    assert_eq!(s.hash_bytes, s.ranges_compared * 2 * 2 * 16);

    // node3 misses one write (a failed replica write, not a known-down node: no hint).
    let key = common::key(KEYS / 2);
    backend.faults.down.lock().push("node3".into());
    let version = cluster.put(&key, b"changed").unwrap();
    backend.faults.down.lock().clear();
    let s = repair(&cluster);
    assert_eq!((s.keys_repaired, s.leaves_differing), (1, 1));
    // The differing leaf is streamed from each replica: a few dozen records, not 100,000.
    assert!(s.records_streamed < 3 * 200, "{s:?}");
    // Root, then both children down the tree to one leaf, from two sides, for one of the
    // two comparisons; the other comparison agrees at the root.
    assert!(s.hash_bytes < 2 * 16 * (1 + 2 * 16) + 2 * 16, "{s:?}");
    let p = cluster.placement_of(&key).unwrap();
    assert!(
        p.held
            .iter()
            .all(|(_, v, ver)| v.as_deref() == Some(&b"changed"[..]) && *ver == version)
    );

    // node1 misses a delete: repair spreads the tombstone, the key stays deleted.
    backend.faults.down.lock().push("node1".into());
    cluster.delete(&key).unwrap();
    backend.faults.down.lock().clear();
    let s = repair(&cluster);
    assert_eq!(s.keys_repaired, 1);
    let p = cluster.placement_of(&key).unwrap();
    assert_eq!(p.held.len(), 3);
    assert!(
        p.held.iter().all(|(_, v, _)| v.is_none()),
        "resurrected: {p:?}"
    );
    assert_eq!(cluster.get(&key).unwrap(), None);
    assert_eq!(repair(&cluster).keys_repaired, 0);
}
