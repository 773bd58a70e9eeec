//! Maintenance over the network as futures: a repair, a hint handoff and a catch-up against
//! `RemoteReplica`s whose peers answer late (or never) run as tasks on a one-worker runtime
//! while another task on that worker keeps making progress, so none of them blocks its
//! worker. The blocking form on the same runtime starves that task completely, which shows
//! the measure bites.
//!
//! A cluster of node1 (in this process) and node2, node3 (each served by a `ReplicaServer`
//! over a `SlowReplica` whose answers the test delays), RF 3.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use kv_cluster::{
    Cluster, ClusterOptions, Consistency, Digest, MemoryBackend, MemoryReplica, RangeCount, Record,
    RecordStream, Replica, Result, Swapped, Version, Write,
};
use kv_net::Identity;
use kv_remote::{RemoteBackend, ReplicaServer};
use kv_ring::{NodeId, TokenRange};

const TIMEOUT: Duration = Duration::from_millis(300);
/// How long a late peer takes over each maintenance request.
const LATE: Duration = Duration::from_millis(250);
/// Past every fence: for writing a served replica behind the coordinator's back.
const ANY_EPOCH: u64 = u64::MAX;

/// A replica whose answers come after a delay the test sets: `data` for client writes,
/// `maintenance` for what maintenance asks (counts, digests, exports, imports, syncs).
#[derive(Debug)]
struct SlowReplica {
    inner: Arc<MemoryReplica>,
    data_ms: AtomicU64,
    maintenance_ms: AtomicU64,
    /// Maintenance requests served.
    maintenance_calls: AtomicU64,
}

impl SlowReplica {
    fn new(id: &str) -> Arc<SlowReplica> {
        Arc::new(SlowReplica {
            inner: Arc::new(MemoryReplica::new(id).unwrap()),
            data_ms: AtomicU64::new(0),
            maintenance_ms: AtomicU64::new(0),
            maintenance_calls: AtomicU64::new(0),
        })
    }

    fn data_wait(&self) {
        std::thread::sleep(Duration::from_millis(self.data_ms.load(Ordering::SeqCst)));
    }

    fn maintenance_wait(&self) {
        self.maintenance_calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(
            self.maintenance_ms.load(Ordering::SeqCst),
        ));
    }
}

impl Replica for SlowReplica {
    fn id(&self) -> &NodeId {
        self.inner.id()
    }
    fn apply(&self, epoch: u64, write: Write<'_>) -> Result<bool> {
        self.data_wait();
        self.inner.apply(epoch, write)
    }
    fn apply_swap(&self, epoch: u64, write: Write<'_>, read_value: bool) -> Result<Swapped> {
        self.data_wait();
        self.inner.apply_swap(epoch, write, read_value)
    }
    fn apply_batch(&self, epoch: u64, writes: &[Write<'_>]) -> Result<usize> {
        self.data_wait();
        self.inner.apply_batch(epoch, writes)
    }
    fn read(&self, epoch: u64, key: &[u8]) -> Result<Option<kv_cluster::Cell>> {
        self.inner.read(epoch, key)
    }
    fn export<'a>(
        &'a self,
        epoch: u64,
        ranges: &[TokenRange],
        batch_size: usize,
    ) -> Result<RecordStream<'a>> {
        self.maintenance_wait();
        self.inner.export(epoch, ranges, batch_size)
    }
    fn import(&self, epoch: u64, batch: &[Record]) -> Result<usize> {
        self.maintenance_wait();
        self.inner.import(epoch, batch)
    }
    fn drop_ranges(&self, epoch: u64, ranges: &[TokenRange]) -> Result<usize> {
        self.inner.drop_ranges(epoch, ranges)
    }
    fn count_in_ranges(&self, ranges: &[TokenRange]) -> Result<RangeCount> {
        self.inner.count_in_ranges(ranges)
    }
    fn held(&self) -> Result<RangeCount> {
        self.maintenance_wait();
        self.inner.held()
    }
    fn fence(&self, epoch: u64) {
        self.inner.fence(epoch);
    }
    fn sync(&self) -> Result<()> {
        self.maintenance_wait();
        self.inner.sync()
    }
    fn digests(&self, epoch: u64, range: TokenRange, leaves: u32) -> Result<Vec<Digest>> {
        self.maintenance_wait();
        self.inner.digests(epoch, range, leaves)
    }
}

struct Net {
    _servers: Vec<ReplicaServer>,
    /// node2 and node3, as their servers hold them.
    replicas: Vec<Arc<SlowReplica>>,
    cluster: Arc<Cluster>,
    _dir: tempfile::TempDir,
}

/// The cluster, with remote maintenance requests timing out after `maintenance`.
fn start(maintenance: Duration) -> Net {
    let replicas: Vec<Arc<SlowReplica>> = ["node2", "node3"]
        .iter()
        .map(|id| SlowReplica::new(id))
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
            Arc::new(MemoryBackend::default()),
            peers,
            Identity::new(CLUSTER, "node1"),
            fast_options().liveness_timeout(Duration::from_secs(3)),
            TIMEOUT,
        )
        .unwrap()
        .with_maintenance_timeout(maintenance),
    );
    assert!(backend.wait_connected(LONG));
    let dir = tempfile::tempdir().unwrap();
    let opts = ClusterOptions::new()
        .backend(backend)
        .own_hints("node1".parse().unwrap());
    let cluster = Arc::new(Cluster::open(dir.path(), opts).unwrap());
    Net {
        _servers: servers,
        replicas,
        cluster,
        _dir: dir,
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

/// Writes keys to all three nodes, then a newer record to node2 only (node1 and node3 then
/// need repair).
fn diverge(net: &Net) {
    for i in 0..100 {
        net.cluster.put(&key(i), b"v").unwrap();
    }
    let newer = Version::new(u64::from(u32::MAX) << 20);
    net.replicas[0]
        .inner
        .apply(
            ANY_EPOCH,
            Write {
                key: b"only-on-node2",
                value: Some(b"x"),
                version: newer,
                expires: None,
            },
        )
        .unwrap();
}

fn slow_maintenance(net: &Net, by: Duration) {
    for r in &net.replicas {
        r.maintenance_ms
            .store(by.as_millis() as u64, Ordering::SeqCst);
    }
}

/// Runs `job` as a task on a runtime of one worker beside a task that ticks every
/// millisecond; returns the job's output and the ticks counted while it ran.
fn beside_a_ticker<T: Send + 'static>(
    job: impl std::future::Future<Output = T> + Send + 'static,
) -> (T, u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let t = Arc::clone(&ticks);
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                t.fetch_add(1, Ordering::SeqCst);
            }
        });
        // Let the ticker start before the job does.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Arc::clone(&ticks);
        let out = tokio::spawn(async move {
            let before = t.load(Ordering::SeqCst);
            let out = job.await;
            (out, t.load(Ordering::SeqCst) - before)
        })
        .await
        .unwrap();
        ticker.abort();
        out
    })
}

#[test]
fn a_repair_waiting_on_late_peers_leaves_its_worker_free() {
    let net = start(LONG);
    diverge(&net);
    slow_maintenance(&net, LATE);
    let c = Arc::clone(&net.cluster);
    let started = Instant::now();
    let (summary, ticks) = beside_a_ticker(async move { c.repair_async().await });
    let took = started.elapsed();
    eprintln!("async repair: {took:?}, {ticks} ticks beside it");
    let summary = summary.unwrap();
    assert!(summary.keys_repaired >= 2, "{summary:?}");
    // Several late answers were awaited (counts, digests, exports, imports)...
    assert!(took >= 3 * LATE, "{took:?}");
    // ...while the other task ran on the one worker: at least one tick every 10 ms.
    let floor = took.as_millis() as u64 / 10;
    assert!(ticks >= floor, "{ticks} ticks in {took:?}");
    let fixed = net.replicas[1]
        .inner
        .read(ANY_EPOCH, b"only-on-node2")
        .unwrap();
    assert_eq!(fixed.and_then(|c| c.value).as_deref(), Some(&b"x"[..]));
}

/// The same repair, blocking, on the same runtime: the worker is held for the whole repair
/// and the ticker does not tick once. (What the test above would see of the blocking form.)
#[test]
fn the_blocking_repair_starves_its_worker() {
    let net = start(LONG);
    diverge(&net);
    slow_maintenance(&net, LATE);
    let c = Arc::clone(&net.cluster);
    let started = Instant::now();
    let (summary, ticks) = beside_a_ticker(async move { c.repair() });
    eprintln!(
        "blocking repair: {:?}, {ticks} ticks beside it",
        started.elapsed()
    );
    assert!(summary.unwrap().keys_repaired >= 2);
    assert_eq!(ticks, 0, "the blocking repair let the worker go");
}

/// A repair whose peer never answers fails with the transport's timeout, as the blocking
/// form does, without holding the worker meanwhile.
#[test]
fn a_repair_against_a_peer_that_never_answers_times_out_on_its_own() {
    let maintenance = Duration::from_millis(600);
    let net = start(maintenance);
    diverge(&net);
    // Far longer than the maintenance timeout: the answer never comes in time.
    slow_maintenance(&net, Duration::from_secs(30));
    let c = Arc::clone(&net.cluster);
    let started = Instant::now();
    let (result, ticks) = beside_a_ticker(async move { c.repair_async().await });
    let took = started.elapsed();
    let err = result.unwrap_err();
    assert!(
        matches!(err, kv_cluster::Error::Timeout { .. }),
        "{}",
        err.chain()
    );
    assert!(took >= maintenance && took < 5 * maintenance, "{took:?}");
    assert!(
        ticks >= took.as_millis() as u64 / 10,
        "{ticks} ticks in {took:?}"
    );
    // The next maintenance runs: the gate was released with the failed repair.
    slow_maintenance(&net, Duration::ZERO);
    assert!(net.cluster.repair().unwrap().keys_repaired >= 2);
}

#[test]
fn a_hint_handoff_to_a_late_peer_leaves_its_worker_free() {
    let net = start(LONG);
    // node3 answers writes after the data timeout: a write at `All` keeps a hint for it.
    net.replicas[1].data_ms.store(600, Ordering::SeqCst);
    for i in 0..20 {
        let _ = net.cluster.put_with(&key(i), b"hinted", Consistency::All);
    }
    assert_eq!(net.cluster.hints_pending_for("node3"), 20);
    net.replicas[1].data_ms.store(0, Ordering::SeqCst);
    slow_maintenance(&net, LATE);
    let calls = net.replicas[1].maintenance_calls.load(Ordering::SeqCst);
    let c = Arc::clone(&net.cluster);
    let started = Instant::now();
    let (applied, ticks) = beside_a_ticker(async move { c.hand_off_hints_async().await });
    let took = started.elapsed();
    eprintln!("async hint handoff: {took:?}, {ticks} ticks beside it");
    applied.unwrap();
    assert_eq!(net.cluster.hints_pending_for("node3"), 0);
    // An import and a sync, each answered late.
    assert!(net.replicas[1].maintenance_calls.load(Ordering::SeqCst) >= calls + 2);
    assert!(took >= 2 * LATE, "{took:?}");
    assert!(
        ticks >= took.as_millis() as u64 / 10,
        "{ticks} ticks in {took:?}"
    );
    for i in 0..20 {
        let cell = net.replicas[1].inner.read(ANY_EPOCH, &key(i)).unwrap();
        assert_eq!(cell.and_then(|c| c.value).as_deref(), Some(&b"hinted"[..]));
    }
}

/// A catch-up (hints, then repair) of a late peer on a current-thread runtime: the runtime's
/// only thread is the test's, and another task on it keeps running.
#[test]
fn a_catch_up_runs_on_a_current_thread_runtime() {
    let net = start(LONG);
    diverge(&net);
    slow_maintenance(&net, LATE);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&net.cluster);
    let t = Arc::clone(&ticks);
    let summary = rt.block_on(async move {
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                t.fetch_add(1, Ordering::SeqCst);
            }
        });
        let summary = tokio::spawn(async move { c.catch_up_async("node3").await })
            .await
            .unwrap();
        ticker.abort();
        summary
    });
    let summary = summary.unwrap();
    assert!(summary.repair.keys_repaired >= 2, "{summary:?}");
    let status = net.cluster.catch_up_status("node3");
    assert_eq!(status.running, None);
    let last = status.last.unwrap();
    assert_eq!(last.error, None);
    assert!(last.elapsed >= 3 * LATE, "{last:?}");
    // The ticker ran throughout (the blocking form gives it no tick at all).
    let ticks = ticks.load(Ordering::SeqCst);
    assert!(
        ticks >= last.elapsed.as_millis() as u64 / 10,
        "{ticks} in {last:?}"
    );
}
