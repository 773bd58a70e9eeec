//! A node host: kv-net, kv-remote's [`ReplicaServer`] and a kv-cluster coordinator (async
//! API) over an in-memory replica, and the clients' line protocol ([`crate::proto`]); in a
//! run with membership changes, its metadata raft ([`crate::raft`]), its follower of the
//! applied metadata, the change driver (acting while its raft leads) and its range streams.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use kv_cluster::{Backend, Clock, Cluster, ClusterOptions, Consistency, MemoryBackend, Replica};
use kv_meta::{ChangeKind, ClusterMeta, Command, Source, Step};
use kv_net::{Identity, PeersOptions, ServerOptions};
use kv_remote::{
    RangeReceiver, RemoteBackend, ReplicaServer, StreamEvent, StreamHeader, StreamRange,
    StreamReport,
};
use kv_ring::NodeId;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::meta::{Meta, topology_of};
use crate::proto::{MAX_LINE, Request};
use crate::raft::RaftDisks;
use crate::{CLIENT_PORT, CLUSTER, INITIAL, NODES, PEER_PORT, Sabotage, change, now, stream};

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

/// A host's clock offset from the simulation's global time, in milliseconds: drawn from
/// the seed at the start, stepped by the fault generator's skew faults (`faults.rs`), kept
/// across the host's restarts (a clock belongs to the machine, not to the process).
pub(crate) type Skew = Arc<AtomicI64>;

/// The simulation's global time plus the host's current offset (§4.3): every wall-clock
/// reading of the host's coordinator (versions, the lease, the observe bound) goes
/// through it, so a stepped offset is a clock that jumps, forward or back.
#[derive(Debug)]
struct SimClock {
    time: GlobalTime,
    skew: Skew,
}

impl Clock for SimClock {
    fn now_millis(&self) -> u64 {
        let now = (EPOCH_MS + self.time.load(Ordering::Relaxed)) as i64;
        now.saturating_add(self.skew.load(Ordering::Relaxed)).max(0) as u64
    }
}

/// What the hosts' clocks made their coordinators do, with the simulated time: a
/// restarted coordinator's wait for its version lease, and a start at the lease because
/// the clock was more than `LEASE_WINDOW + MAX_SKEW` behind it (kv-cluster's
/// `lease_jumps`). The waits also extend the node's impairment for property 5.
pub(crate) type ClockLog = Arc<parking_lot::Mutex<Vec<ClockEvent>>>;

/// One entry of the [`ClockLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClockEvent {
    /// The node waited from one time to another before serving clients.
    LeaseWait(&'static str, Duration, Duration),
    /// The node started its clock at its lease, at this time.
    LeaseJump(&'static str, Duration),
}

/// Each node's kv-net fault switches, by node id, as its latest start registered them: the
/// fault generator cuts a node's connections to its peers through them
/// ([`kv_net::Faults::reset`]).
pub(crate) type Links = Arc<parking_lot::Mutex<std::collections::BTreeMap<String, kv_net::Faults>>>;

/// What a node host is started with.
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    pub(crate) index: usize,
    pub(crate) seed: u64,
    pub(crate) skew: Skew,
    pub(crate) time: GlobalTime,
    pub(crate) clock_log: ClockLog,
    pub(crate) disk: Disk,
    pub(crate) sabotage: Option<Sabotage>,
    /// How many times the host has started (shared across its restarts).
    pub(crate) starts: Arc<AtomicU32>,
    /// Whether it coordinates client requests after a restart (`Crashes::Any`).
    pub(crate) coordinate_after_restart: bool,
    /// What the metadata raft keeps across crashes, in a run with membership changes;
    /// `None`: the node routes by the static ring of its `cluster.json`, as in the first half
    /// of the simulation.
    pub(crate) meta: Option<Arc<RaftDisks>>,
    /// What the streams of a change did (shared by every host; part of the report).
    pub(crate) stream_log: StreamLog,
    /// Each started node's transport faults, for the fault generator's dropped connections.
    pub(crate) links: Links,
}

/// Lines describing each stream's end, with the simulated time.
pub(crate) type StreamLog = Arc<parking_lot::Mutex<Vec<String>>>;

/// The host's future: runs until the simulation crashes the host or ends.
pub(crate) async fn run(cfg: NodeConfig) -> turmoil::Result {
    let id = NODES[cfg.index];
    let me: NodeId = id.parse()?;
    let restarted = cfg.starts.fetch_add(1, Ordering::Relaxed) > 0;
    let coordinates = !restarted || cfg.coordinate_after_restart;
    let handle = tokio::runtime::Handle::current();
    // The static members; a joiner knows them as `--join` would tell it, and every node
    // learns of the others from the metadata (the follower adds them).
    let mut peers = Vec::new();
    for node in &NODES[..INITIAL] {
        peers.push((
            node.parse::<NodeId>()?,
            SocketAddr::new(turmoil::lookup(*node), PEER_PORT),
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
        me.clone(),
        local,
        peers,
        Identity::new(CLUSTER, id),
        options,
        REPLICA_TIMEOUT,
    )?);
    cfg.links
        .lock()
        .insert(id.to_string(), backend.peers().faults().clone());
    let mut opts = ClusterOptions::new()
        .backend(backend.clone())
        .clock(Arc::new(SimClock {
            time: Arc::clone(&cfg.time),
            skew: Arc::clone(&cfg.skew),
        }))
        .coordinator_slot(cfg.index as u8)
        .other_coordinators(true)
        // A renewal thread's timing is not simulated: the write that reaches the lease
        // persists it, at a simulated time the seed decides.
        .renew_lease_in_background(false)
        .drain_on_timer(true)
        .replica_timeout(REAL_GUARD);
    match cfg.sabotage {
        Some(Sabotage::OneReplica) => {
            opts = opts
                .read_consistency(Consistency::One)
                .write_consistency(Consistency::One);
        }
        Some(Sabotage::SkipPendingDualWrite) => {
            opts = opts.sabotage(Some(kv_cluster::testing::Sabotage::SkipPendingDualWrite));
        }
        // The follower's, below.
        Some(Sabotage::DivergentInstall) | None => {}
    }
    let cluster = Arc::new(Cluster::open(&cfg.disk.dir, opts)?);
    if cluster.lease_jumps() > 0 {
        cfg.clock_log.lock().push(ClockEvent::LeaseJump(id, now()));
    }
    // A joiner is in no ring the cluster opened: its own storage is opened here, to serve
    // before any ring routes to it (the install that adds it finds it open).
    let replica = match backend.local_replica() {
        Some(r) => r,
        None => backend.open(&me, &cfg.disk.dir.join(id))?,
    };
    let server = ReplicaServer::start_inline_data(
        Identity::new(CLUSTER, id),
        ServerOptions::new()
            .listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, PEER_PORT)))
            .runtime(handle)
            .sim(),
        Arc::clone(&replica),
    )?;
    let mut node_meta = None;
    if let Some(disks) = &cfg.meta {
        // As a kv-cli node: bootstrapped (or joined) and caught up with the leader, and the
        // applied state installed and fenced, before clients are served.
        let meta = crate::raft::start(cfg.index, &backend, &server, disks).await;
        let follower = Arc::new(Follower {
            id,
            me,
            start: cfg.starts.load(Ordering::Relaxed),
            cluster: Arc::clone(&cluster),
            local: replica,
            backend,
            meta: meta.clone(),
            running: parking_lot::Mutex::default(),
            acking: Arc::default(),
            stream_log: Arc::clone(&cfg.stream_log),
            sabotage: cfg.sabotage,
        });
        let receiver = Arc::new(follower.receiver());
        tokio::spawn(stream::serve(receiver));
        follower.tick().await;
        tokio::spawn(change::drive_steps(meta.clone()));
        // The follower wakes on each state its raft applies, and at least every 200 ms (a
        // stream that failed is started again from a later look).
        let mut watch = meta.raft.watch();
        tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(Duration::from_millis(200), watch.changed()).await;
                follower.tick().await;
            }
        });
        node_meta = Some(meta);
    }
    let _server = server;
    // A restarted coordinator mints no version until its clock has passed the lease its
    // previous run persisted (writes are refused until then): clients are served once it
    // has. The wait is on simulated time, which the global clock follows (a skew fault
    // may step the clock meanwhile: the wait is asked again).
    let waited_from = now();
    loop {
        let wait = cluster.lease_wait();
        if wait.is_zero() {
            break;
        }
        tokio::time::sleep(wait).await;
    }
    if now() > waited_from {
        cfg.clock_log
            .lock()
            .push(ClockEvent::LeaseWait(id, waited_from, now()));
    }
    let listener =
        turmoil::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), CLIENT_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve(
            Arc::clone(&cluster),
            stream,
            coordinates,
            node_meta.clone(),
        ));
    }
}

/// The local replica as a stream's import target (kv-cli's `Import`).
struct Import(Arc<dyn Replica>);

impl kv_remote::ImportTarget for Import {
    fn import_chunk(
        &self,
        epoch: u64,
        records: &[kv_cluster::Record],
    ) -> kv_cluster::Result<usize> {
        self.0.import(epoch, records)
    }

    fn sync_imported(&self) -> kv_cluster::Result<()> {
        self.0.sync()
    }
}

/// A node's part in a membership change, as kv-cli's follower and change roles play it
/// (`node_meta.rs`, `node_change.rs`), on the host's runtime instead of threads: install
/// each new epoch's topology, raise the local fence to it, acknowledge it during a change,
/// stream the tasks this node is the source of, and import the streams it is the
/// destination of.
struct Follower {
    id: &'static str,
    me: NodeId,
    /// Which start of the host's process this is (property 4's record).
    start: u32,
    cluster: Arc<Cluster>,
    local: Arc<dyn Replica>,
    backend: Arc<RemoteBackend>,
    meta: Meta,
    /// The tasks streaming from here: `(change, task)`.
    running: parking_lot::Mutex<BTreeSet<(u64, u32)>>,
    /// An acknowledgement on its way to the leader (one at a time).
    acking: Arc<AtomicBool>,
    stream_log: StreamLog,
    sabotage: Option<Sabotage>,
}

impl Follower {
    /// One look at the metadata this node applied: record it, apply it, and start the
    /// streams this node owes.
    async fn tick(self: &Arc<Self>) {
        {
            let applied = self.meta.raft.watch();
            let applied = applied.borrow();
            let index = applied.last_log_id.map_or(0, |l| l.index);
            self.meta.record.applied(self.id, index, &applied.meta);
        }
        let raft_id = self.meta.raft.raft_id();
        if self.meta.raft.raft().metrics().borrow().current_leader == Some(raft_id) {
            self.meta.record.set_leader(self.id);
        }
        // Most looks find nothing new: the state is copied only when there is something to
        // do.
        let installed = self.cluster.topology_epoch();
        let idle = self.meta.read(|m| {
            m.epoch == installed
                && m.change.as_ref().is_none_or(|c| {
                    c.step != Step::Streaming
                        && m.acks.get(self.id).copied().unwrap_or(0) >= m.epoch
                })
        });
        if idle {
            return;
        }
        let meta = self.meta.snapshot();
        self.apply(&meta).await;
        if let Some(c) = &meta.change
            && c.step == Step::Streaming
        {
            self.start_streams(&meta, c);
        }
    }

    /// Installs `meta`'s topology if its epoch is new here, raises the local replica's fence
    /// to it, and acknowledges the fence during a change (kv-cli's `Follower::apply` and
    /// `acknowledge`). New members become peers first: the install opens a handle for each.
    async fn apply(&self, meta: &ClusterMeta) {
        let topology = match topology_of(meta) {
            Ok(Some(t)) => t,
            Ok(None) | Err(_) => return,
        };
        let known: BTreeSet<String> = self
            .backend
            .peers()
            .status()
            .into_iter()
            .map(|p| p.node_id)
            .collect();
        for id in meta.members.keys() {
            if id == self.me.as_str() || known.contains(id) {
                continue;
            }
            if let Ok(node) = NodeId::new(id) {
                let addr = SocketAddr::new(turmoil::lookup(id.as_str()), PEER_PORT);
                let _ = self.backend.add_peer(node, addr);
            }
        }
        let mut topology = topology;
        let epoch = topology.epoch;
        let installed = self.cluster.topology().map(|t| t.epoch);
        if installed.is_none_or(|e| e < epoch) {
            if self.sabotage == Some(Sabotage::DivergentInstall)
                && self.id == NODES[1]
                && let Some(extra) = topology.extra_write.as_mut()
            {
                // The test-only divergence: this node routes reads by the other ring of the
                // step (what a node that mis-applied the change would install).
                std::mem::swap(&mut topology.read, extra);
            }
            let record = topology.clone();
            if let Err(e) = self.install(topology).await {
                self.stream_log.lock().push(format!(
                    "{:?} {}: install of epoch {epoch} failed: {e}",
                    now(),
                    self.id
                ));
                return;
            }
            self.meta.record.installed(self.id, self.start, &record);
        }
        // Raised after the install: a replica request at the new epoch then comes only from
        // a coordinator that routes by it.
        self.local.fence(epoch);
        let acked = meta.acks.get(self.id).copied().unwrap_or(0);
        if meta.change.is_some() && acked < epoch && !self.acking.swap(true, Ordering::Relaxed) {
            // On its own task: a proposal waits up to kv-meta's forwarding window when no
            // leader is reachable, and the follower (and a start) must not.
            let (meta, acking) = (self.meta.clone(), Arc::clone(&self.acking));
            let ack = Command::Ack {
                node: self.id.to_string(),
                epoch,
            };
            tokio::spawn(async move {
                let _ = meta.propose(ack).await;
                acking.store(false, Ordering::Relaxed);
            });
        }
    }

    /// Installs `topology` on the coordinator and waits for its drain (every operation
    /// holding the old routing finished), as kv-cli's follower does before it raises the
    /// fence and acknowledges. The drain is looked at on the host's simulated timer
    /// (`ClusterOptions::drain_on_timer`): kv-cluster's default hands it to a thread, which
    /// ends the wait and drops the old routing at a moment the machine decides, so two runs
    /// of a seed would differ.
    async fn install(&self, topology: kv_cluster::Topology) -> kv_cluster::Result<()> {
        self.cluster
            .install_topology_async(topology)
            .await
            .map(|_| ())
    }

    /// Starts a task for each unfinished stream this node is the source of that is not
    /// running; a failed one is started again on a later tick, from what the destination
    /// reported synced (its ranges' `done_through`), and so is one that finished but whose
    /// progress has not committed 5 s later.
    fn start_streams(self: &Arc<Self>, meta: &ClusterMeta, c: &kv_meta::Change) {
        for t in &c.tasks {
            if t.finished || t.from != Source::Node(self.id.to_string()) {
                continue;
            }
            if !self.running.lock().insert((c.id, t.id)) {
                continue;
            }
            let task = stream::Task {
                header: StreamHeader {
                    change: c.id,
                    task: u64::from(t.id),
                    // Not the raft leader's term yet: every stream of a task is term 1,
                    // and a new one takes over from an older one at the receiver (equal
                    // terms do).
                    term: 1,
                    epoch: meta.epoch,
                },
                destination: t.to.clone(),
                ranges: t
                    .ranges
                    .iter()
                    .zip(&t.done_through)
                    .map(|(&(start, end), &done_through)| StreamRange {
                        range: kv_ring::TokenRange { start, end },
                        done_through,
                    })
                    .collect(),
            };
            let this = Arc::clone(self);
            let key = (c.id, t.id);
            tokio::spawn(async move {
                let outcome = stream::send(&this.local, this.id, &task).await;
                let line = match &outcome {
                    Ok(keys) => format!("{keys} keys"),
                    Err(e) => format!("failed (retried): {e}"),
                };
                this.stream_log.lock().push(format!(
                    "{:?} stream change {} task {} {}->{}: {line}",
                    now(),
                    key.0,
                    key.1,
                    this.id,
                    task.destination
                ));
                // A failed stream starts again a second later; a finished one only if its
                // progress is still not committed 5 s later (the destination proposes each
                // checkpoint through raft: a leader crash can lose them). Restarting it at
                // once would stream it again while its progress is on its way, and every
                // pass commits a progress entry per range.
                let pause = if outcome.is_err() { 1 } else { 5 };
                tokio::time::sleep(Duration::from_secs(pause)).await;
                this.running.lock().remove(&key);
            });
        }
    }

    /// The destination's receiver: imports into the local replica and commits each synced
    /// checkpoint as the task's progress (kv-cli's receiver callback).
    fn receiver(&self) -> RangeReceiver {
        let meta = self.meta.clone();
        RangeReceiver::new(
            Arc::new(Import(Arc::clone(&self.local))),
            move |r: &StreamReport<'_>| {
                let StreamEvent::Checkpoint {
                    range,
                    done_through,
                } = r.event
                else {
                    return;
                };
                let progress = meta.read(|m| {
                    let c = m.change.as_ref().filter(|c| c.id == r.header.change)?;
                    let task = c.tasks.iter().find(|t| u64::from(t.id) == r.header.task)?;
                    let index = task
                        .ranges
                        .iter()
                        .position(|&(s, e)| s == range.start && e == range.end)?;
                    Some(Command::Progress {
                        change: c.id,
                        task: task.id,
                        range: u32::try_from(index).unwrap_or(u32::MAX),
                        done_through,
                        keys: r.keys,
                        bytes: 0,
                    })
                });
                if let Some(progress) = progress {
                    // Committed on a task of the host (the receiver reports inline).
                    let meta = meta.clone();
                    tokio::spawn(async move {
                        let _ = meta.propose(progress).await;
                    });
                }
            },
        )
    }
}

/// Answers one request of a client connection.
/// A node that does not `coordinate` (restarted, under `Crashes::Replicas`) refuses client
/// reads and writes, so that a request already on its way when the node crashed is not
/// coordinated with the restarted clock; it still repairs.
async fn serve(
    cluster: Arc<Cluster>,
    stream: turmoil::net::TcpStream,
    coordinate: bool,
    meta: Option<Meta>,
) {
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
        Some(Request::Change { add, node }) => match &meta {
            Some(meta) => {
                let kind = if add {
                    ChangeKind::Add
                } else {
                    ChangeKind::Remove
                };
                match change::start(meta, kind, &node).await {
                    Ok(epoch) => format!("OK {epoch}"),
                    Err(e) => format!("ERR {e}"),
                }
            }
            None => "ERR no metadata in this run".to_string(),
        },
        None => "ERR bad request".to_string(),
    };
    let mut reply = reply.replace('\n', " ");
    reply.push('\n');
    let _ = wr.write_all(reply.as_bytes()).await;
}
