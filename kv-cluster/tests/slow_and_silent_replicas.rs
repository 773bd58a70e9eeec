//! Replicas that answer later, never, or with a transport error (as replicas in other
//! processes do): the coordinator submits to every replica before it waits, returns once
//! `R`/`W` answered, gives up at `replica_timeout`, keeps hints for what timed out, and
//! repairs a deferred replica on read.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::remote::{Behaviour, RemoteBackend};
use kv_cluster::{Cluster, ClusterOptions, Consistency, Error};

/// The deadline the tests give replicas.
const TIMEOUT: Duration = Duration::from_millis(300);

fn open(dir: &std::path::Path) -> (Cluster, Arc<common::remote::Network>) {
    let backend = RemoteBackend::new();
    let net = Arc::clone(&backend.net);
    let opts = ClusterOptions::new()
        .backend(Arc::new(backend))
        .replica_timeout(TIMEOUT);
    (Cluster::open(dir, opts).unwrap(), net)
}

/// The key's replicas, primary first.
fn replicas(cluster: &Cluster, key: &[u8]) -> Vec<String> {
    let p = cluster.placement_of(key).unwrap();
    p.expected.iter().map(|id| id.to_string()).collect()
}

/// Every replica error an `Unavailable` carries.
fn errors(e: &Error) -> Vec<&Error> {
    match e {
        Error::Unavailable { cause, others, .. } => {
            cause.iter().map(|c| c.as_ref()).chain(others).collect()
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn timeouts(e: &Error) -> Vec<String> {
    let mut nodes: Vec<String> = errors(e)
        .into_iter()
        .filter_map(|e| match e {
            Error::Timeout { node, after } => {
                assert_eq!(*after, TIMEOUT);
                Some(node.to_string())
            }
            _ => None,
        })
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn one_black_holed_replica_of_three_slows_nothing_past_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, net) = open(dir.path());
    cluster.put(b"k", b"before").unwrap();
    // The primary: the worst case for a read, whose full read goes to it first.
    let primary = replicas(&cluster, b"k")[0].clone();
    net.set(&primary, Behaviour::BlackHole);

    let start = Instant::now();
    cluster.put(b"k", b"v").unwrap();
    let put = start.elapsed();
    // Two answered at once: the write does not wait for the silent one.
    assert!(put < TIMEOUT, "put took {put:?}");

    let start = Instant::now();
    assert_eq!(cluster.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    let get = start.elapsed();
    assert!(get < 3 * TIMEOUT, "get took {get:?}");

    let start = Instant::now();
    let got = cluster.get_many(&[&b"k"[..], b"absent"]).unwrap();
    assert_eq!(got[0].as_deref(), Some(&b"v"[..]));
    assert_eq!(got[1], None);
    assert!(
        start.elapsed() < 4 * TIMEOUT,
        "get_many took {:?}",
        start.elapsed()
    );

    let start = Instant::now();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..20u8).map(|i| (vec![i], vec![i])).collect();
    cluster.put_many(&pairs).unwrap();
    assert!(
        start.elapsed() < 3 * TIMEOUT,
        "put_many took {:?}",
        start.elapsed()
    );

    let start = Instant::now();
    assert_eq!(
        cluster.swap(b"k", b"w").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert!(start.elapsed() < 3 * TIMEOUT);
}

#[test]
fn two_black_holed_replicas_fail_with_a_timeout_for_each() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, net) = open(dir.path());
    cluster.put(b"k", b"v").unwrap();
    let mut silent = replicas(&cluster, b"k")[..2].to_vec();
    silent.sort();
    for id in &silent {
        net.set(id, Behaviour::BlackHole);
    }

    let start = Instant::now();
    let e = cluster.put(b"k", b"w").unwrap_err();
    let took = start.elapsed();
    assert!(took >= TIMEOUT && took < 3 * TIMEOUT, "put took {took:?}");
    assert_eq!(timeouts(&e), silent, "{e:?}");
    assert!(matches!(
        e,
        Error::Unavailable {
            needed: 2,
            acknowledged: 1,
            ..
        }
    ));

    let start = Instant::now();
    let e = cluster.get(b"k").unwrap_err();
    let took = start.elapsed();
    assert!(took >= TIMEOUT && took < 3 * TIMEOUT, "get took {took:?}");
    assert_eq!(timeouts(&e), silent, "{e:?}");
}

#[test]
fn transport_failures_fail_fast_and_name_each_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, net) = open(dir.path());
    let failing = replicas(&cluster, b"k")[1..].to_vec();
    for id in &failing {
        net.set(id, Behaviour::Fail);
    }
    let start = Instant::now();
    let e = cluster.put(b"k", b"v").unwrap_err();
    // Two failed answers make W unreachable: no wait for the deadline.
    assert!(start.elapsed() < TIMEOUT, "{:?}", start.elapsed());
    let remote = errors(&e)
        .into_iter()
        .filter(|e| matches!(e, Error::Remote { .. }))
        .count();
    assert_eq!(remote, 2, "{e:?}");
    // One failure of three is absorbed by the quorum.
    net.set(&failing[0], Behaviour::After(Duration::ZERO));
    cluster.put(b"k", b"v").unwrap();
    assert_eq!(cluster.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn the_replicas_are_asked_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, net) = open(dir.path());
    for id in ["node1", "node2", "node3"] {
        net.set(id, Behaviour::After(Duration::from_millis(200)));
    }
    // One after the other, three 200 ms answers would take 600 ms.
    let start = Instant::now();
    cluster.put_with(b"k", b"v", Consistency::All).unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(450),
        "{took:?}"
    );

    let start = Instant::now();
    let got = cluster.get_with(b"k", Consistency::All).unwrap();
    assert_eq!(got.as_deref(), Some(&b"v"[..]));
    let took = start.elapsed();
    assert!(took < Duration::from_millis(450), "get took {took:?}");

    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..30u8).map(|i| (vec![i], vec![i])).collect();
    let start = Instant::now();
    cluster.put_many(&pairs).unwrap();
    let took = start.elapsed();
    assert!(took < Duration::from_millis(450), "put_many took {took:?}");
}

#[test]
fn a_write_that_timed_out_leaves_a_hint_delivered_when_the_replica_answers_again() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, net) = open(dir.path());
    let silent = replicas(&cluster, b"k")[2].clone();
    net.set(&silent, Behaviour::BlackHole);
    // W = all: the write waits for the silent replica until the deadline, then keeps a hint
    // for it (and fails: hints do not count under a strict quorum).
    let e = cluster.put_with(b"k", b"v", Consistency::All).unwrap_err();
    assert_eq!(timeouts(&e), vec![silent.clone()]);
    // A quorum write returns before the deadline: nothing to hint, the answer is abandoned.
    cluster.put(b"other", b"x").unwrap();

    net.set(&silent, Behaviour::After(Duration::ZERO));
    assert_eq!(cluster.stats().unwrap().hints, 1);
    let held = |key: &[u8]| -> Vec<String> {
        let p = cluster.placement_of(key).unwrap();
        p.held.iter().map(|(id, _, _)| id.to_string()).collect()
    };
    assert!(
        !held(b"k").contains(&silent),
        "the lost request was never applied"
    );

    let summary = cluster.catch_up(&silent).unwrap();
    assert_eq!(summary.hints_applied, 1);
    assert!(held(b"k").contains(&silent));
    assert_eq!(cluster.stats().unwrap().hints, 0);
}

#[test]
fn read_repair_reaches_a_deferred_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, net) = open(dir.path());
    let stale = replicas(&cluster, b"k")[1].clone();
    net.set(&stale, Behaviour::Fail);
    cluster.put(b"k", b"v").unwrap(); // a hint for it, not handed off: no catch-up
    net.set(&stale, Behaviour::After(Duration::from_millis(20)));
    let holds = |cluster: &Cluster| {
        let p = cluster.placement_of(b"k").unwrap();
        p.held.iter().any(|(id, _, _)| id.as_str() == stale)
    };
    assert!(!holds(&cluster));

    let got = cluster.get_with(b"k", Consistency::All).unwrap();
    assert_eq!(got.as_deref(), Some(&b"v"[..]));
    // The repair is submitted and not waited for: it lands shortly after.
    let start = Instant::now();
    while !holds(&cluster) {
        assert!(start.elapsed() < Duration::from_secs(5), "never repaired");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn catch_up_of_a_peer_that_was_down_makes_every_replica_equal() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, net) = open(dir.path());
    net.set("node2", Behaviour::Down);
    assert!(matches!(
        cluster.catch_up("node2"),
        Err(Error::NodeDown { .. })
    ));
    let keys: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_be_bytes().to_vec()).collect();
    for k in &keys {
        cluster.put(k, b"while down").unwrap();
    }
    let hints = cluster.stats().unwrap().hints;
    assert!(hints > 0);

    net.set("node2", Behaviour::After(Duration::ZERO));
    let summary = cluster.catch_up("node2").unwrap();
    assert_eq!(summary.hints_applied, hints);
    assert_eq!(summary.repair.keys_repaired, 0, "{summary:?}");
    for k in &keys {
        let p = cluster.placement_of(k).unwrap();
        assert_eq!(p.held.len(), 3, "{p:?}");
        assert!(
            p.held
                .iter()
                .all(|(_, v, _)| v.as_deref() == Some(&b"while down"[..]))
        );
    }
    assert!(matches!(
        cluster.catch_up("nobody"),
        Err(Error::UnknownNode { .. })
    ));
}

#[test]
fn under_a_sloppy_quorum_a_timed_out_replica_is_stood_in_for() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RemoteBackend::new();
    let net = Arc::clone(&backend.net);
    let opts = ClusterOptions::new()
        .backend(Arc::new(backend))
        .replica_timeout(TIMEOUT)
        .initial_nodes(["n1", "n2", "n3", "n4"])
        .sloppy_quorum(true);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let silent = replicas(&cluster, b"k")[0].clone();
    net.set(&silent, Behaviour::BlackHole);
    // W = all: the silent replica's hint, kept by the fourth node, counts for it.
    let start = Instant::now();
    cluster.put_with(b"k", b"v", Consistency::All).unwrap();
    let took = start.elapsed();
    assert!(took >= TIMEOUT && took < 3 * TIMEOUT, "{took:?}");

    net.set(&silent, Behaviour::After(Duration::ZERO));
    assert_eq!(cluster.stats().unwrap().hints, 1);
    assert_eq!(cluster.catch_up(&silent).unwrap().hints_applied, 1);
    assert_eq!(cluster.placement_of(b"k").unwrap().held.len(), 3);
}

/// During a membership change a write needs `W` of both rings: a silent joiner is one of the
/// new ring's replicas, and the write still returns once the others of both rings answered.
#[test]
fn a_silent_joiner_during_a_pending_change_does_not_stall_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, net) = open(dir.path());
    for i in 0..50u32 {
        cluster.put(&i.to_be_bytes(), b"before").unwrap();
    }
    net.set("node4", Behaviour::BlackHole);
    // Streaming into the silent joiner fails: the change stays pending.
    assert!(cluster.add_node("node4").is_err());
    assert!(cluster.pending_change().is_some());

    let start = Instant::now();
    for i in 0..50u32 {
        cluster.put(&i.to_be_bytes(), b"during").unwrap();
    }
    // With quorum writes, no key needs the joiner: nothing waits for the deadline.
    assert!(start.elapsed() < TIMEOUT, "{:?}", start.elapsed());

    net.set("node4", Behaviour::After(Duration::ZERO));
    cluster
        .resume_change(|_| std::ops::ControlFlow::Continue(()))
        .unwrap();
    assert!(cluster.pending_change().is_none());
    for i in 0..50u32 {
        let p = cluster.placement_of(&i.to_be_bytes()).unwrap();
        let held: Vec<_> = p.held.iter().map(|(id, _, _)| id.clone()).collect();
        assert_eq!(held.len(), 3, "{p:?}");
        assert!(p.expected.iter().all(|id| held.contains(id)), "{p:?}");
        assert!(
            p.held
                .iter()
                .all(|(_, v, _)| v.as_deref() == Some(&b"during"[..]))
        );
    }
}

/// A coordinator with a replica in its own process reads that one in full and asks the
/// remote ones only for digests, whichever replica the ring lists first (as Cassandra's
/// coordinator reads itself first): one full read crosses the network for none of the keys.
#[test]
fn the_full_read_goes_to_the_local_replica_and_only_digests_cross_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, net) = open(dir.path());
    for node in ["node1", "node2", "node3"] {
        net.set(node, Behaviour::Now);
    }
    net.set_remote("node2");
    net.set_remote("node3");
    let keys: Vec<Vec<u8>> = (0..60).map(|i| format!("key-{i}").into_bytes()).collect();
    for k in &keys {
        cluster.put(k, b"v").unwrap();
    }
    // Some keys list a remote node first: those would read it in full without the rule.
    assert!(
        keys.iter().any(|k| replicas(&cluster, k)[0] != "node1"),
        "every key's primary is node1: the test shows nothing"
    );
    for k in &keys {
        assert_eq!(cluster.get(k).unwrap().as_deref(), Some(&b"v"[..]));
    }
    let got = cluster.get_many(&keys).unwrap();
    assert!(got.iter().all(|v| v.as_deref() == Some(&b"v"[..])));
    assert_eq!(net.full_reads("node1"), 2 * keys.len());
    assert_eq!(net.full_reads("node2") + net.full_reads("node3"), 0);
}

/// A node process keeps every hint it writes itself (`ClusterOptions::own_hints`): a
/// returned target gets them although another node, which would otherwise have been named
/// the holder of some, is down at that moment.
#[test]
fn hints_held_by_the_coordinator_reach_a_returned_target_while_another_node_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RemoteBackend::new();
    let net = Arc::clone(&backend.net);
    let opts = ClusterOptions::new()
        .backend(Arc::new(backend))
        .replica_timeout(TIMEOUT)
        .write_consistency(Consistency::One)
        .own_hints("node1".parse().unwrap());
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    for node in ["node1", "node2", "node3"] {
        net.set(node, Behaviour::Now);
    }
    net.set("node3", Behaviour::Down);
    let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("key-{i}").into_bytes()).collect();
    for k in &keys {
        cluster.put(k, b"v").unwrap();
    }
    // Without own_hints, node2 would hold the hints of the keys it precedes node1 for.
    assert!(
        keys.iter().any(|k| {
            let r = replicas(&cluster, k);
            r.iter().position(|n| n == "node2") < r.iter().position(|n| n == "node1")
        }),
        "no key lists node2 before node1: the test shows nothing"
    );
    assert_eq!(cluster.hints_pending_for("node3"), keys.len() as u64);
    net.set("node2", Behaviour::Down);
    net.set("node3", Behaviour::Now);
    // The repair that follows the handoff cannot reach node2; the handoff is what counts.
    let _ = cluster.catch_up("node3");
    assert_eq!(cluster.hints_pending_for("node3"), 0);
    net.set("node2", Behaviour::Now);
    for k in &keys {
        let held = cluster.placement_of(k).unwrap().held;
        assert!(
            held.iter()
                .any(|(n, v, _)| n.as_str() == "node3" && v.as_deref() == Some(&b"v"[..])),
            "{held:?}"
        );
    }
}

#[test]
fn own_hints_and_a_sloppy_quorum_are_refused_together() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ClusterOptions::new()
        .backend(Arc::new(RemoteBackend::new()))
        .sloppy_quorum(true)
        .own_hints("node1".parse().unwrap());
    let err = Cluster::open(dir.path(), opts).unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err}");
}
