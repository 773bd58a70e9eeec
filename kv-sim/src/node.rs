//! A node host: kv-net, kv-remote's [`ReplicaServer`] and a kv-cluster coordinator (async
//! API) over an in-memory replica, and the clients' line protocol ([`crate::proto`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use kv_cluster::{Backend, Clock, Cluster, ClusterOptions, Consistency, MemoryBackend};
use kv_net::{Identity, PeersOptions, ServerOptions};
use kv_remote::{RemoteBackend, ReplicaServer};
use kv_ring::NodeId;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::proto::{MAX_LINE, Request};
use crate::{CLIENT_PORT, CLUSTER, NODES, PEER_PORT, Sabotage};

/// How long a coordinator waits for a remote replica, on simulated time (kv-net's deadline).
const REPLICA_TIMEOUT: Duration = Duration::from_secs(1);
/// The coordinator's own wait for a replica. kv-cluster's collector counts it on the real
/// clock (`std::time::Instant`), so it is set far past [`REPLICA_TIMEOUT`]: a remote replica
/// always answers or fails first, on simulated time.
const REAL_GUARD: Duration = Duration::from_secs(600);

/// The node's "disk": its in-memory data and its directory (`cluster.json`), made by the
/// run and kept across crashes of the host (a process crash keeps the page cache).
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    pub(crate) backend: Arc<MemoryBackend>,
    pub(crate) dir: PathBuf,
}

/// The simulation's global time (milliseconds since its start), published by the driver
/// before every step. turmoil's own per-host clock stops while a host is crashed, so a
/// bounced host's `turmoil::since_epoch` lags by its downtime: a clock stepped back that
/// far would make its writes lose to older ones, a harness artefact, not a fault drawn.
pub(crate) type GlobalTime = Arc<AtomicU64>;

/// A fixed Unix time the simulation starts at (2026-01-01), so versions look like real ones.
const EPOCH_MS: u64 = 1_767_225_600_000;

/// The simulation's global time plus the host's fixed skew.
#[derive(Debug)]
struct SimClock {
    time: GlobalTime,
    skew_ms: i64,
}

impl Clock for SimClock {
    fn now_millis(&self) -> u64 {
        let now = (EPOCH_MS + self.time.load(Ordering::Relaxed)) as i64;
        now.saturating_add(self.skew_ms).max(0) as u64
    }
}

/// What a node host is started with.
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    pub(crate) index: usize,
    pub(crate) seed: u64,
    pub(crate) skew_ms: i64,
    pub(crate) time: GlobalTime,
    pub(crate) disk: Disk,
    pub(crate) sabotage: Option<Sabotage>,
    /// How many times the host has started (shared across its restarts).
    pub(crate) starts: Arc<AtomicU32>,
    /// Whether it coordinates client requests after a restart (`Crashes::Any`).
    pub(crate) coordinate_after_restart: bool,
}

/// The host's future: runs until the simulation crashes the host or ends.
pub(crate) async fn run(cfg: NodeConfig) -> turmoil::Result {
    let id = NODES[cfg.index];
    let restarted = cfg.starts.fetch_add(1, Ordering::Relaxed) > 0;
    let coordinates = !restarted || cfg.coordinate_after_restart;
    let handle = tokio::runtime::Handle::current();
    let mut peers = Vec::new();
    for node in NODES {
        peers.push((
            node.parse::<NodeId>()?,
            SocketAddr::new(turmoil::lookup(node), PEER_PORT),
        ));
    }
    let options = PeersOptions::new()
        .runtime(handle.clone())
        .seed(cfg.seed)
        .connect_timeout(Duration::from_millis(500))
        .liveness_timeout(Duration::from_secs(3))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(1))
        .sim();
    let local: Arc<dyn Backend> = cfg.disk.backend.clone();
    let backend = Arc::new(RemoteBackend::new(
        id.parse()?,
        local,
        peers,
        Identity::new(CLUSTER, id),
        options,
        REPLICA_TIMEOUT,
    )?);
    let mut opts = ClusterOptions::new()
        .backend(backend.clone())
        .clock(Arc::new(SimClock {
            time: Arc::clone(&cfg.time),
            skew_ms: cfg.skew_ms,
        }))
        .coordinator_slot(cfg.index as u8)
        .other_coordinators(true)
        .replica_timeout(REAL_GUARD);
    if cfg.sabotage == Some(Sabotage::OneReplica) {
        opts = opts
            .read_consistency(Consistency::One)
            .write_consistency(Consistency::One);
    }
    let cluster = Arc::new(Cluster::open(&cfg.disk.dir, opts)?);
    let replica = backend
        .local_replica()
        .ok_or("the local replica was not opened")?;
    let _server = ReplicaServer::start_inline_data(
        Identity::new(CLUSTER, id),
        ServerOptions::new()
            .listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, PEER_PORT)))
            .runtime(handle)
            .sim(),
        replica,
    )?;
    // A restarted coordinator mints no version until its clock has passed the lease its
    // previous run persisted (writes are refused until then): clients are served once it
    // has. The wait is on simulated time, which the global clock follows.
    loop {
        let wait = cluster.lease_wait();
        if wait.is_zero() {
            break;
        }
        tokio::time::sleep(wait).await;
    }
    let listener =
        turmoil::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), CLIENT_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve(Arc::clone(&cluster), stream, coordinates));
    }
}

/// Answers one request of a client connection.
/// A node that does not `coordinate` (restarted, under `Crashes::Replicas`) refuses client
/// reads and writes, so that a request already on its way when the node crashed is not
/// coordinated with the restarted clock; it still repairs.
async fn serve(cluster: Arc<Cluster>, stream: turmoil::net::TcpStream, coordinate: bool) {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    let mut rd = BufReader::new(rd.take(MAX_LINE as u64));
    if rd.read_line(&mut line).await.is_err() {
        return;
    }
    let reply = match Request::parse(&line) {
        Some(Request::Set { .. } | Request::Get { .. }) if !coordinate => {
            "ERR restarted: not coordinating".to_string()
        }
        Some(Request::Set { key, value }) => match cluster.put_async(&key, &value).await {
            Ok(version) => format!("OK {}", version.as_u64()),
            Err(e) => format!("ERR {e}"),
        },
        Some(Request::Get { key }) => match cluster.get_async(&key).await {
            Ok(Some(v)) => format!("VAL {}", String::from_utf8_lossy(&v)),
            Ok(None) => "NIL".to_string(),
            Err(e) => format!("ERR {e}"),
        },
        Some(Request::Repair) => {
            let handed = cluster.hand_off_hints_async().await;
            match cluster.repair_async().await {
                Ok(s) => format!(
                    "REPAIRED hints={handed:?} compared={} skipped={} fixed={}",
                    s.ranges_compared, s.ranges_skipped, s.records_streamed
                ),
                Err(e) => format!("ERR {e}"),
            }
        }
        None => "ERR bad request".to_string(),
    };
    let mut reply = reply.replace('\n', " ");
    reply.push('\n');
    let _ = wr.write_all(reply.as_bytes()).await;
}
