//! A `kv_cluster::Cluster` whose node1 is in this process and node2 and node3 are served by
//! `ReplicaServer`s, reached through a `RemoteBackend` (RF 3, quorum reads and writes): the
//! client operations (blocking, and as futures on a runtime the transport shares), a server
//! going away, a partition and its healing.
//!
//! The coordinator submits to every replica before it waits: one replica that never answers
//! costs at most one replica timeout per operation.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kv_cluster::{Cluster, ClusterOptions, MemoryBackend, MemoryReplica, Replica};
use kv_net::{Identity, PeersOptions};
use kv_remote::{RemoteBackend, ReplicaServer};
use kv_ring::TokenRange;

const TIMEOUT: Duration = Duration::from_millis(300);
/// Past every fence: for reading and writing a served replica directly, behind the
/// coordinator's back.
const ANY_EPOCH: u64 = u64::MAX;
/// Scheduling and reconnect attempts on a shared 2-core machine.
const MARGIN: Duration = Duration::from_millis(1500);

struct Net {
    servers: Vec<Option<ReplicaServer>>,
    /// node2 and node3, as their servers hold them.
    replicas: Vec<Arc<MemoryReplica>>,
    backend: Arc<RemoteBackend>,
    cluster: Cluster,
    _dir: tempfile::TempDir,
}

fn options() -> PeersOptions {
    fast_options()
}

fn start() -> Net {
    start_with(options())
}

fn start_with(options: PeersOptions) -> Net {
    start_clocked(options, Arc::new(kv_cluster::SystemClock))
}

/// A cluster whose coordinator and replicas all read `clock`.
fn start_clocked(options: PeersOptions, clock: Arc<dyn kv_cluster::Clock>) -> Net {
    let replicas: Vec<Arc<MemoryReplica>> = ["node2", "node3"]
        .iter()
        .map(|id| Arc::new(MemoryReplica::with_clock(id, Arc::clone(&clock)).unwrap()))
        .collect();
    let servers: Vec<ReplicaServer> = ["node2", "node3"]
        .iter()
        .zip(&replicas)
        .map(|(id, r)| serve(id, r.clone()))
        .collect();
    let peers = vec![
        ("node1".parse().unwrap(), "127.0.0.1:1".parse().unwrap()),
        ("node2".parse().unwrap(), servers[0].local_addr()),
        ("node3".parse().unwrap(), servers[1].local_addr()),
    ];
    let backend = Arc::new(
        RemoteBackend::new(
            "node1".parse().unwrap(),
            Arc::new(MemoryBackend::with_clock(Arc::clone(&clock))),
            peers,
            Identity::new(CLUSTER, "node1"),
            options,
            TIMEOUT,
        )
        .unwrap(),
    );
    assert!(backend.wait_connected(LONG));
    let dir = tempfile::tempdir().unwrap();
    let opts = ClusterOptions::new().backend(backend.clone()).clock(clock);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    Net {
        servers: servers.into_iter().map(Some).collect(),
        replicas,
        backend,
        cluster,
        _dir: dir,
    }
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

/// Waits until `check` holds, up to LONG.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + LONG;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {LONG:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_cluster_over_the_network_serves_every_client_operation() {
    let net = start();
    let c = &net.cluster;
    assert!(net.backend.local_replica().is_some());
    for i in 0..100 {
        c.put(&key(i), &value(i)).unwrap();
    }
    // RF 3 on 3 nodes: every key reaches both remote replicas (a quorum write returns after
    // one of them, the other's answer may still be on its way).
    eventually("every key on both remote replicas", || {
        net.replicas.iter().all(|r| r.len() == 100)
    });
    assert_eq!(c.get(&key(7)).unwrap().as_deref(), Some(&value(7)[..]));
    assert_eq!(c.get(b"absent").unwrap(), None);
    c.delete(&key(7)).unwrap();
    assert_eq!(c.get(&key(7)).unwrap(), None);
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (100..150).map(|i| (key(i), value(i))).collect();
    c.put_many(&pairs).unwrap();
    let keys: Vec<Vec<u8>> = (95..155).map(key).collect();
    let got = c.get_many(&keys).unwrap();
    for (i, v) in (95..155).zip(got) {
        let expected = (i < 150).then(|| value(i));
        assert_eq!(v.as_deref(), expected.as_deref(), "key {i}");
    }
    // A scan sees every live key once.
    let mut cursor = 0;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let page = c.scan(cursor, 37).unwrap();
        for r in &page.records {
            assert!(seen.insert(r.key.clone()), "seen twice");
        }
        if page.is_last() {
            break;
        }
        cursor = page.cursor;
    }
    assert_eq!(seen.len(), 149);

    // Repair: node3 misses a write and holds a stale one; one repair round fixes both.
    let newer = kv_cluster::Version::new(u64::from(u32::MAX) << 20);
    net.replicas[0]
        .apply(
            ANY_EPOCH,
            kv_cluster::Write {
                key: b"only-on-node2",
                value: Some(b"x"),
                version: newer,
                expires: None,
            },
        )
        .unwrap();
    let summary = c.repair().unwrap();
    assert!(summary.keys_repaired >= 1, "{summary:?}");
    assert_eq!(
        net.replicas[1]
            .read(ANY_EPOCH, b"only-on-node2")
            .unwrap()
            .map(|c| c.value),
        Some(Some(bytes::Bytes::from("x")))
    );
    let count = |r: &MemoryReplica| r.count_in_ranges(&[TokenRange::FULL]).unwrap();
    assert_eq!(count(&net.replicas[0]), count(&net.replicas[1]));
}

/// A clock the test moves by hand.
struct Manual(std::sync::atomic::AtomicU64);

impl kv_cluster::Clock for Manual {
    fn now_millis(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Expiring keys over the network (protocol 2): the expiry reaches the remote replicas with
/// the write, comes back with reads, travels in read repair and anti-entropy, and an expired
/// key reads as absent through the coordinator; `EXPIRE`/`PERSIST` work across processes.
#[test]
fn expiring_keys_travel_over_the_network() {
    use std::sync::atomic::Ordering::SeqCst;
    const T0: u64 = 1_800_000_000_000;
    let clock = Arc::new(Manual(std::sync::atomic::AtomicU64::new(T0)));
    let net = start_clocked(options(), clock.clone());
    let c = &net.cluster;
    c.put_expiring(b"session", b"active", Some(T0 + 1_000))
        .unwrap();
    eventually("the expiring write on both remote replicas", || {
        net.replicas.iter().all(|r| {
            r.read(ANY_EPOCH, b"session")
                .unwrap()
                .is_some_and(|cell| cell.expires == Some(T0 + 1_000))
        })
    });
    let e = c.get_entry(b"session").unwrap().unwrap();
    assert_eq!(e.expires, Some(T0 + 1_000));
    // Only expiry changes: EXPIRE, then PERSIST, each reaching the remote replicas.
    assert!(
        c.expire(
            b"session",
            kv_cluster::Expiry::AtMillis((T0 + 2_000) as i64),
            kv_cluster::ExpireIf::Always
        )
        .unwrap()
    );
    assert_eq!(
        c.get_entry(b"session").unwrap().unwrap().expires,
        Some(T0 + 2_000)
    );
    assert!(c.persist_key(b"session").unwrap());
    assert_eq!(c.get_entry(b"session").unwrap().unwrap().expires, None);
    // node3 misses an expiring write node1 and node2 have (it holds an older value); once expired,
    // reads answer absent and repair carries the write with its expiry to node3.
    c.put(b"token", b"old").unwrap();
    eventually("token on node3", || {
        net.replicas[1].read(ANY_EPOCH, b"token").unwrap().is_some()
    });
    let newer = kv_cluster::Version::from_parts(T0 + 10, 0);
    let w = kv_cluster::Write {
        key: b"token",
        value: Some(b"new"),
        version: newer,
        expires: Some(T0 + 500),
    };
    // On two of the three (node1, local, and node2): a quorum has it.
    net.replicas[0].apply(ANY_EPOCH, w).unwrap();
    let local = net.backend.local_replica().unwrap();
    local.apply(ANY_EPOCH, w).unwrap();
    clock.0.store(T0 + 3_000, SeqCst);
    assert_eq!(c.get(b"session").unwrap().as_deref(), Some(&b"active"[..]));
    assert_eq!(c.get(b"token").unwrap(), None);
    c.repair().unwrap();
    let on3 = net.replicas[1].read(ANY_EPOCH, b"token").unwrap().unwrap();
    assert_eq!(on3.version, newer, "node3 took the expiring write");
    assert!(!on3.is_live_at(T0 + 3_000));
    assert_eq!(c.get(b"token").unwrap(), None);
}

/// The futures of the client operations, run as a task on a runtime of one worker thread that
/// the transport runs on too: anything in them that blocked the thread on the network would
/// stall the transport with it, and every operation would time out.
#[test]
fn the_async_operations_wait_on_a_one_thread_runtime_without_blocking_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let net = Arc::new(start_with(options().runtime(rt.handle().clone())));
    let task = Arc::clone(&net);
    let run = rt.spawn(async move {
        let c = &task.cluster;
        for i in 0..50 {
            c.put_async(&key(i), &value(i)).await.unwrap();
        }
        for i in 0..50 {
            let got = c.get_async(&key(i)).await.unwrap();
            assert_eq!(got.as_deref(), Some(&value(i)[..]));
        }
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (50..80).map(|i| (key(i), value(i))).collect();
        c.put_many_async(&pairs).await.unwrap();
        let keys: Vec<Vec<u8>> = (0..80).map(key).chain([b"absent".to_vec()]).collect();
        let got = c.get_many_async(&keys).await.unwrap();
        for (i, v) in got.iter().take(80).enumerate() {
            assert_eq!(v.as_deref(), Some(&value(i as u32)[..]), "key {i}");
        }
        assert_eq!(got[80], None);
        // node3 black-holed (a hang, not a refusal): quorum still answers, each operation
        // within the replica timeout, never stalled.
        task.backend.peers().faults().partition("node3");
        let bound = TIMEOUT + MARGIN;
        for i in 80..90 {
            let t = Instant::now();
            c.put_async(&key(i), &value(i)).await.unwrap();
            let got = c.get_async(&key(i)).await.unwrap();
            assert_eq!(got.as_deref(), Some(&value(i)[..]));
            assert!(t.elapsed() < bound * 2, "took {:?}", t.elapsed());
        }
        task.backend.peers().faults().heal("node3");
    });
    rt.block_on(run).unwrap();
    // Every write reached node2 (node3 missed the black-holed ones: hints keep them).
    eventually("every key on node2", || net.replicas[0].len() == 90);
}

#[test]
fn with_one_server_gone_quorum_operations_succeed_within_the_timeout() {
    let mut net = start();
    net.cluster.put(b"before", b"1").unwrap();
    net.servers[1] = None; // node3 goes away: its port refuses connections.
    let bound = TIMEOUT + MARGIN;
    let mut slowest = Duration::ZERO;
    for i in 0..30 {
        let t = Instant::now();
        net.cluster.put(&key(i), &value(i)).unwrap();
        assert_eq!(
            net.cluster.get(&key(i)).unwrap().as_deref(),
            Some(&value(i)[..])
        );
        slowest = slowest.max(t.elapsed());
        assert!(
            t.elapsed() < bound * 2,
            "put and get took {:?}",
            t.elapsed()
        );
    }
    assert_eq!(
        net.cluster.get(b"before").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    eprintln!("slowest put+get with node3 gone: {slowest:?}");
    // Heartbeats tell the coordinator node3 is down.
    let node3 = net
        .backend
        .peers()
        .status()
        .into_iter()
        .find(|s| s.node_id == "node3")
        .unwrap();
    assert!(!node3.connected);
    eventually("node3 is not alive", || {
        !net.backend.peers().is_alive("node3")
    });
}

#[test]
fn a_partition_and_its_healing_lose_no_acknowledged_write() {
    let net = start();
    let faults = net.backend.peers().faults();
    // Writes before, during and after a partition of node3; each acknowledged one is kept.
    let mut acked = Vec::new();
    for i in 0..20 {
        net.cluster.put(&key(i), &value(i)).unwrap();
        acked.push(i);
    }
    faults.partition("node3");
    let bound = TIMEOUT + MARGIN;
    for i in 20..40 {
        let t = Instant::now();
        if net.cluster.put(&key(i), &value(i)).is_ok() {
            acked.push(i);
        }
        assert!(
            t.elapsed() < bound,
            "a put took {:?} during the partition",
            t.elapsed()
        );
        // Overwrites too: the newest acknowledged value must win.
        if i % 10 == 0 && net.cluster.put(&key(i - 20), b"newer").is_ok() {
            acked.push(i - 20 + 10_000);
        }
    }
    assert!(
        acked.len() >= 40,
        "W=2 of node1 and node2 acknowledges every write: {}",
        acked.len()
    );
    faults.heal("node3");
    eventually("node3 is alive again", || {
        net.backend.peers().is_alive("node3")
    });
    for i in 40..50 {
        net.cluster.put(&key(i), &value(i)).unwrap();
    }
    net.cluster.repair().unwrap();
    let overwritten: Vec<u32> = acked
        .iter()
        .filter(|&&i| i >= 10_000)
        .map(|i| i - 10_000)
        .collect();
    for i in 0..50 {
        let expected = if overwritten.contains(&i) {
            b"newer".to_vec()
        } else {
            value(i)
        };
        assert_eq!(
            net.cluster.get(&key(i)).unwrap().as_deref(),
            Some(&expected[..]),
            "key {i}"
        );
        // After the repair node3 holds it too.
        let on3 = net.replicas[1]
            .read(ANY_EPOCH, &key(i))
            .unwrap()
            .and_then(|c| c.value);
        assert_eq!(on3.as_deref(), Some(&expected[..]), "key {i} on node3");
    }
}

/// Each remote node reports its count of keys with an expiry (`Request::ExpiringKeys`), so
/// the coordinator's count is complete; a node that is gone is left out, and says so.
#[test]
fn remote_nodes_report_their_keys_with_an_expiry() {
    let mut net = start();
    let later = Some(net.cluster.now_millis() + 600_000);
    for i in 0..10 {
        net.cluster.put_expiring(&key(i), &value(i), later).unwrap();
    }
    net.cluster.put(b"plain", b"v").unwrap();
    eventually("every replica holds the 10 keys with an expiry", || {
        let c = net.cluster.expiring_key_count();
        c.complete() && c.records == 30
    });
    assert_eq!(net.cluster.expiring_key_count().keys, 10);
    net.servers[1] = None; // node3 goes away
    let c = net.cluster.expiring_key_count();
    assert!(!c.complete());
    assert_eq!((c.counted, c.nodes, c.records), (2, 3, 20));
}
