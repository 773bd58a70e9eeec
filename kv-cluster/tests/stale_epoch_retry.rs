//! A coordinator on an external topology whose replicas were fenced at a newer epoch
//! (`docs/membership.md` §3.3): the operation is refused, waits for the newer topology, and
//! is retried once on it with the same version; a topology that never comes, or a replica
//! fenced beyond it, ends in `Error::StaleCoordinator` within the replica timeout. The
//! in-process cluster keeps its behaviour: a stale refusal is an ordinary replica failure.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::remote::{Behaviour, RemoteBackend};
use kv_cluster::{Cluster, ClusterOptions, Error, RingMember, Topology, Version};

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const TIMEOUT: Duration = Duration::from_millis(600);
/// How long after the refusal the test's "metadata" installs the newer topology.
const INSTALL_AFTER: Duration = Duration::from_millis(100);

struct Setup {
    cluster: Arc<Cluster>,
    backend: Arc<RemoteBackend>,
    members: Vec<RingMember>,
    _dir: tempfile::TempDir,
}

/// Three nodes, rf 3, on an external topology at epoch 10; every node answers as
/// `behaviour` says.
fn setup(behaviour: Behaviour) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(RemoteBackend::new());
    for n in NODES {
        backend.net.set(n, behaviour);
    }
    let opts = ClusterOptions::new()
        .backend(backend.clone())
        .initial_nodes(NODES)
        .replica_timeout(TIMEOUT)
        .external_topology(true);
    let cluster = Arc::new(Cluster::open(dir.path(), opts).unwrap());
    let members = RingMember::of_ring(&cluster.ring());
    assert!(
        cluster
            .install_topology(Topology::stable(10, members.clone()))
            .unwrap()
    );
    Setup {
        cluster,
        backend,
        members,
        _dir: dir,
    }
}

impl Setup {
    /// Every replica fenced at `epoch`, as the metadata's barrier does before a step.
    fn fence_all(&self, epoch: u64) {
        for n in NODES {
            self.backend.net.fence(n, epoch);
        }
    }

    /// Installs the topology of `epoch` (the same ring) from another thread after `after`.
    fn install_later(&self, epoch: u64, after: Duration) -> thread::JoinHandle<()> {
        let cluster = Arc::clone(&self.cluster);
        let t = Topology::stable(epoch, self.members.clone());
        thread::spawn(move || {
            thread::sleep(after);
            assert!(cluster.install_topology(t).unwrap());
        })
    }

    /// The version each replica's storage holds for `key`.
    fn held(&self, key: &[u8]) -> Vec<Option<Version>> {
        NODES
            .iter()
            .map(|n| {
                let s = self.backend.net.storage(n);
                s.read(u64::MAX, key).unwrap().map(|c| c.version)
            })
            .collect()
    }

    /// `held(key)` once every replica holds `version` (an answer past `W` is abandoned by
    /// the coordinator but still applied: across the network it lands a little later), or
    /// as it is after two seconds.
    fn held_by_all(&self, key: &[u8], version: Version) -> Vec<Option<Version>> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let held = self.held(key);
            if held.iter().all(|v| *v == Some(version)) || Instant::now() > deadline {
                return held;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

fn stale_write_then_read(behaviour: Behaviour) {
    let s = setup(behaviour);
    s.cluster.put(b"k", b"v1").unwrap();
    assert_eq!(s.cluster.stale_retries(), 0);

    // The metadata moves to epoch 11; this coordinator has not installed it yet.
    s.fence_all(11);
    s.backend.net.reset_counts();
    let install = s.install_later(11, INSTALL_AFTER);
    let start = Instant::now();
    let version = s.cluster.put(b"k", b"v2").unwrap();
    let took = start.elapsed();
    install.join().unwrap();
    assert!(took >= INSTALL_AFTER, "it waited for the install: {took:?}");
    assert_eq!(s.cluster.stale_retries(), 1);
    assert_eq!(s.cluster.topology_epoch(), 11);
    // Exactly two attempts reached each replica: the refused one and the retry.
    for n in NODES {
        assert_eq!(s.backend.net.writes(n), 2, "{n}");
    }
    // The value is there with the version the client was given, on every replica.
    let got = s.cluster.get_versioned(b"k").unwrap();
    assert_eq!(got, Some((bytes::Bytes::from_static(b"v2"), version)));
    assert_eq!(s.held_by_all(b"k", version), vec![Some(version); 3]);

    // A read, likewise: refused at 11, retried at 12.
    s.fence_all(12);
    let install = s.install_later(12, INSTALL_AFTER);
    let start = Instant::now();
    let got = s.cluster.get_versioned(b"k").unwrap();
    assert!(start.elapsed() >= INSTALL_AFTER);
    install.join().unwrap();
    assert_eq!(got, Some((bytes::Bytes::from_static(b"v2"), version)));
    assert_eq!(s.cluster.stale_retries(), 2);
}

/// Replicas in this process: every answer comes inside `start_*`.
#[test]
fn a_stale_write_and_read_are_retried_once_at_the_new_epoch_in_process() {
    stale_write_then_read(Behaviour::Now);
}

/// Replicas across a "network": answers come from other threads, the coordinator waits on
/// its collector and then on the epoch.
#[test]
fn a_stale_write_and_read_are_retried_once_at_the_new_epoch_across_the_network() {
    stale_write_then_read(Behaviour::After(Duration::from_millis(1)));
}

#[test]
fn batches_are_retried_whole_with_the_same_versions() {
    let s = setup(Behaviour::After(Duration::ZERO));
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..50u32)
        .map(|i| (format!("key{i}").into_bytes(), format!("v{i}").into_bytes()))
        .collect();
    s.fence_all(11);
    let install = s.install_later(11, INSTALL_AFTER);
    let versions = s.cluster.put_many(&pairs).unwrap();
    install.join().unwrap();
    assert_eq!(s.cluster.stale_retries(), 1);
    for ((k, _), v) in pairs.iter().zip(&versions) {
        assert_eq!(s.held_by_all(k, *v), vec![Some(*v); 3], "{k:?}");
    }

    s.fence_all(12);
    let install = s.install_later(12, INSTALL_AFTER);
    let keys: Vec<&[u8]> = pairs.iter().map(|(k, _)| k.as_slice()).collect();
    let got = s.cluster.get_many(&keys).unwrap();
    install.join().unwrap();
    assert_eq!(s.cluster.stale_retries(), 2);
    for ((_, v), g) in pairs.iter().zip(got) {
        assert_eq!(g.as_deref(), Some(v.as_slice()));
    }
}

/// The install is withheld: the coordinator gives up after its replica timeout, naming the
/// replica and both epochs, and nothing was acknowledged.
#[test]
fn a_coordinator_that_never_learns_the_epoch_fails_within_the_timeout() {
    for behaviour in [Behaviour::Now, Behaviour::After(Duration::from_millis(1))] {
        let s = setup(behaviour);
        s.fence_all(11);
        let start = Instant::now();
        let e = s.cluster.put(b"k", b"v").unwrap_err();
        let took = start.elapsed();
        match &e {
            Error::StaleCoordinator {
                node,
                current: 11,
                installed: 10,
                waited,
            } => {
                assert!(NODES.contains(&node.as_str()), "{node}");
                assert!(*waited >= TIMEOUT, "{waited:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(took >= TIMEOUT && took < TIMEOUT * 5, "{took:?}");
        assert!(e.to_string().contains("is at epoch 11"), "{e}");
        assert_eq!(s.held(b"k"), vec![None; 3], "refused everywhere");
        let e = s.cluster.get(b"k").unwrap_err();
        assert!(
            matches!(e, Error::StaleCoordinator { current: 11, .. }),
            "{e:?}"
        );
        assert_eq!(s.cluster.stale_retries(), 0);
    }
}

/// The replicas move on past the topology the coordinator waits for: it installs epoch 11
/// as refused, retries once, is refused again at 12, and gives up (no second retry).
#[test]
fn a_retry_refused_again_is_not_retried_twice() {
    let s = setup(Behaviour::Now);
    s.fence_all(11);
    let cluster = Arc::clone(&s.cluster);
    let net = Arc::clone(&s.backend.net);
    let eleven = Topology::stable(11, s.members.clone());
    let install = thread::spawn(move || {
        thread::sleep(INSTALL_AFTER);
        for n in NODES {
            net.fence(n, 12);
        }
        assert!(cluster.install_topology(eleven).unwrap());
    });
    s.backend.net.reset_counts();
    let e = s.cluster.put(b"k", b"v").unwrap_err();
    install.join().unwrap();
    assert!(
        matches!(
            e,
            Error::StaleCoordinator {
                current: 12,
                installed: 11,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(s.cluster.stale_retries(), 1);
    for n in NODES {
        assert_eq!(s.backend.net.writes(n), 2, "{n}");
    }
}

/// A topology newer than the coordinator's but older than the replica's does not end the
/// wait: it runs to the timeout, and nothing is retried at an epoch known to be refused.
#[test]
fn an_install_short_of_the_replicas_epoch_keeps_waiting() {
    let s = setup(Behaviour::Now);
    s.fence_all(12);
    let install = s.install_later(11, INSTALL_AFTER);
    s.backend.net.reset_counts();
    let start = Instant::now();
    let e = s.cluster.put(b"k", b"v").unwrap_err();
    assert!(start.elapsed() >= TIMEOUT);
    install.join().unwrap();
    assert!(
        matches!(
            e,
            Error::StaleCoordinator {
                current: 12,
                installed: 11,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(s.cluster.stale_retries(), 0);
    for n in NODES {
        assert_eq!(s.backend.net.writes(n), 1, "{n}");
    }
}

/// The replicas are two steps ahead and the coordinator installs the steps one at a time,
/// each after the one before drained (as a node's follower does): the waiting operation
/// holds no routing, so the step in between drains at once, the replicas' epoch follows,
/// and the write is retried on it. Holding its snapshot through the wait, the operation
/// kept that drain (and so the next install) waiting until its own deadline, and failed.
#[test]
fn a_waiting_operation_does_not_hold_the_drain_of_an_install_in_between() {
    for behaviour in [Behaviour::Now, Behaviour::After(Duration::from_millis(1))] {
        let s = setup(behaviour);
        s.fence_all(12);
        let follower = {
            let cluster = Arc::clone(&s.cluster);
            let members = s.members.clone();
            thread::spawn(move || {
                thread::sleep(INSTALL_AFTER);
                let start = Instant::now();
                assert!(
                    cluster
                        .install_topology(Topology::stable(11, members.clone()))
                        .unwrap()
                );
                let drained_in = start.elapsed();
                assert!(
                    cluster
                        .install_topology(Topology::stable(12, members))
                        .unwrap()
                );
                drained_in
            })
        };
        let version = s.cluster.put(b"k", b"v").unwrap();
        let drained_in = follower.join().unwrap();
        assert!(drained_in < TIMEOUT / 2, "{behaviour:?}: {drained_in:?}");
        assert_eq!(s.cluster.stale_retries(), 1, "{behaviour:?}");
        assert_eq!(s.cluster.topology_epoch(), 12);
        assert_eq!(s.held_by_all(b"k", version), vec![Some(version); 3]);
    }
}

/// One replica behind the others is enough to redo the write on the newer routing: the
/// round ends early even though `W` others acknowledged.
#[test]
fn one_stale_replica_ends_the_round() {
    let s = setup(Behaviour::Now);
    s.backend.net.fence("n2", 11);
    let install = s.install_later(11, INSTALL_AFTER);
    let version = s.cluster.put(b"k", b"v").unwrap();
    install.join().unwrap();
    assert_eq!(s.cluster.stale_retries(), 1);
    assert_eq!(s.held(b"k"), vec![Some(version); 3]);
}

/// A write that reports what it replaced (`take`, `DEL`'s count) keeps the reports of its
/// first attempt: the replicas that applied it then answer the retry with "kept", and the
/// one that was stale (and had missed the value) has nothing to report.
#[test]
fn a_retried_reporting_write_keeps_what_its_first_attempt_replaced() {
    let s = setup(Behaviour::Now);
    s.backend.net.set("n2", Behaviour::Fail);
    s.cluster.put(b"k", b"v").unwrap();
    s.backend.net.set("n2", Behaviour::Now);
    assert_eq!(s.held(b"k")[1], None, "n2 missed it");
    s.backend.net.fence("n2", 11);
    let install = s.install_later(11, INSTALL_AFTER);
    let taken = s.cluster.take(b"k").unwrap();
    install.join().unwrap();
    assert_eq!(s.cluster.stale_retries(), 1);
    assert_eq!(taken.as_deref(), Some(&b"v"[..]));
    assert_eq!(s.cluster.get(b"k").unwrap(), None);
}

/// On an async runtime's only worker thread, the wait for the newer topology does not block
/// the thread: another task keeps running meanwhile, and the deadline of a withheld install
/// is reported on time though nothing but the timer wakes the waiting task.
#[test]
fn the_wait_does_not_block_a_runtime_worker() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let s = setup(Behaviour::Now);
    s.fence_all(11);
    let install = s.install_later(11, INSTALL_AFTER);
    let ticks = std::sync::atomic::AtomicU32::new(0);
    let ticker = async {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let put = rt.block_on(async {
        tokio::select! {
            put = s.cluster.put_async(b"k", b"v") => put,
            _ = ticker => unreachable!("the ticker never ends"),
        }
    });
    install.join().unwrap();
    let version = put.unwrap();
    let ticked = ticks.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        ticked >= 5,
        "the worker ran the other task while waiting: {ticked} ticks"
    );
    assert_eq!(s.cluster.stale_retries(), 1);
    assert_eq!(s.held(b"k"), vec![Some(version); 3]);

    // Withheld: only the timer wakes the task, at the deadline.
    s.fence_all(12);
    let start = Instant::now();
    let got = rt.block_on(s.cluster.get_async(b"k"));
    let took = start.elapsed();
    assert!(
        matches!(got, Err(Error::StaleCoordinator { current: 12, .. })),
        "{got:?}"
    );
    assert!(took >= TIMEOUT && took < TIMEOUT * 5, "{took:?}");
}

/// The in-process cluster (no external topology) is unchanged: a fenced replica is a
/// failed replica, nothing waits, nothing is retried.
#[test]
fn in_process_a_stale_refusal_is_an_ordinary_failure() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(RemoteBackend::new());
    for n in NODES {
        backend.net.set(n, Behaviour::Now);
    }
    let opts = ClusterOptions::new()
        .backend(backend.clone())
        .initial_nodes(NODES)
        .replica_timeout(TIMEOUT);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    assert!(!cluster.has_external_topology());
    for n in NODES {
        backend.net.fence(n, 99);
    }
    let start = Instant::now();
    let e = cluster.put(b"k", b"v").unwrap_err();
    assert!(start.elapsed() < TIMEOUT, "no wait");
    match e {
        Error::Unavailable {
            cause: Some(cause), ..
        } => assert!(matches!(*cause, Error::StaleEpoch { current: 99, .. })),
        other => panic!("{other:?}"),
    }
    assert_eq!(cluster.stale_retries(), 0);
}
