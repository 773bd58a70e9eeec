//! The test-only switch `Sabotage::SkipPendingDualWrite` (feature `testing`): in a change's
//! `Pending`/`Streaming` epoch writes reach the old ring's replicas only, while `Mid` still
//! writes both rings. kv-sim's checker is shown to catch it; this pins what it breaks.
//! Run with `cargo test -p kv-cluster --features testing`.

#![cfg(feature = "testing")]
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::remote::{Behaviour, RemoteBackend};
use kv_cluster::testing::Sabotage;
use kv_cluster::{Cluster, ClusterOptions, RingMember, Topology};
use kv_ring::{Ring, token};

const NODES: [&str; 4] = ["n1", "n2", "n3", "n4"];
const RF: usize = 3;

fn replicas(ring: &Ring, key: &[u8]) -> BTreeSet<String> {
    ring.preference_list(token(key), RF)
        .unwrap()
        .iter()
        .map(|id| id.to_string())
        .collect()
}

fn written_to(backend: &RemoteBackend) -> BTreeSet<String> {
    NODES
        .iter()
        .filter(|n| backend.net.writes(n) > 0)
        .map(|n| n.to_string())
        .collect()
}

#[test]
fn pending_writes_skip_the_new_ring_and_mid_writes_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(RemoteBackend::new());
    for n in NODES {
        backend.net.set(n, Behaviour::Now);
    }
    let opts = ClusterOptions::new()
        .backend(backend.clone())
        .initial_nodes(NODES[..3].iter().copied())
        .replication_factor(RF)
        .external_topology(true)
        .sabotage(Some(Sabotage::SkipPendingDualWrite));
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let old = cluster.ring();
    let new = old.add_node("n4").unwrap();
    let step = |epoch: u64, read: &Ring, extra: &Ring, mid: bool| {
        let t = Topology {
            epoch,
            read: RingMember::of_ring(read),
            extra_write: Some(RingMember::of_ring(extra)),
            mid,
            slots: Default::default(),
        };
        assert!(cluster.install_topology(t).unwrap());
    };
    // Keys whose new replica set gains n4.
    let moving: Vec<Vec<u8>> = (0..200u32)
        .map(|i| format!("key{i}").into_bytes())
        .filter(|k| replicas(&new, k).contains("n4"))
        .collect();
    assert!(moving.len() > 20, "{} keys move to n4", moving.len());

    step(11, &old, &new, false); // Pending
    for key in &moving {
        backend.net.reset_counts();
        cluster.put(key, key).unwrap();
        assert_eq!(written_to(&backend), replicas(&old, key), "{key:?}");
    }
    step(12, &new, &old, true); // Mid: the sabotage does not apply
    for key in &moving {
        backend.net.reset_counts();
        cluster.put(key, key).unwrap();
        let both: BTreeSet<String> = replicas(&old, key)
            .union(&replicas(&new, key))
            .cloned()
            .collect();
        assert_eq!(written_to(&backend), both, "{key:?}");
    }
}
