//! A hint outlives its target's claim on the key: when the target no longer replicates the
//! key by the time the hint is handed off (a membership change moved the range while the
//! target was down), the hinted write goes to the key's replicas now instead of being
//! dropped (a sloppy write may have counted it).
#![allow(clippy::unwrap_used)]

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use common::faulty::FaultyBackend;
use kv_cluster::{Cluster, Consistency};
use kv_ring::token;

/// A sloppy write taken by one replica (a) and a hint for another (b, down), the third (c)
/// failing it; then a join takes the key's range from b while b is down (the copy comes from
/// the survivors; the cleanup waits for b). When b recovers, its hint is for a key it no
/// longer replicates: the write goes to the key's replicas now (c gets it), not nowhere.
#[test]
fn a_hint_whose_target_lost_the_key_reaches_the_keys_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let opts = common::memory_opts()
        .backend(backend.clone())
        .vnodes(16)
        .initial_nodes(["n1", "n2", "n3", "n4", "n5"]);
    let cluster = Cluster::open(dir.path(), opts).unwrap();

    // A key whose replicas {a, b, c} lose b when n6 joins.
    let r0 = cluster.ring();
    let r1 = r0.add_node("n6").unwrap();
    let list = |ring: &kv_ring::Ring, t| ring.preference_list(t, 3).unwrap().to_vec();
    let (key, b, c) = (0..100_000u64)
        .find_map(|i| {
            let k = common::key(i);
            let t = token(&k);
            let (l0, l1) = (list(&r0, t), list(&r1, t));
            let b = l0.iter().find(|n| !l1.contains(n))?.clone();
            let c = l0.iter().rfind(|n| **n != b)?.clone();
            Some((k, b, c))
        })
        .unwrap();

    cluster.fail_node(b.as_str()).unwrap();
    backend.faults.down.lock().push(c.to_string());
    let version = cluster
        .put_sloppy(&key, b"hinted", Consistency::Quorum)
        .unwrap();
    backend.faults.down.lock().clear();

    // n6 takes the range from b (down): committed, the cleanup waits for b.
    assert!(cluster.add_node("n6").is_err());
    assert_eq!(cluster.ring().len(), 6);
    let recovered = cluster.recover_node(b.as_str()).unwrap();
    let held: Vec<String> = cluster
        .placement_of(&key)
        .unwrap()
        .held
        .iter()
        .filter(|(_, _, v)| *v == version)
        .map(|(id, _, _)| id.to_string())
        .collect();
    assert!(
        held.contains(&c.to_string()),
        "b's hint was dropped: {held:?}"
    );
    assert!(recovered.hints_applied > 0, "{recovered:?}");

    cluster
        .resume_change(|_| ControlFlow::Continue(()))
        .unwrap()
        .unwrap();
    let model = common::Model::default();
    model.acked(&key, Some(b"hinted"), version);
    common::assert_every_replica_fresh(&cluster, &model);
    assert_eq!(cluster.stats().unwrap().hints, 0);
}
