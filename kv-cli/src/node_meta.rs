//! A node process's cluster metadata (`docs/membership.md` §2.5, §2.6, §5 step 7): its
//! kv-meta raft in `<data-dir>/meta/`, the static bootstrap from `--peers`, and the follower
//! that turns every applied epoch into a [`Topology`] the coordinator installs.
//!
//! - **Transport.** kv-meta speaks through [`MetaClient`] on the node's existing kv-net
//!   connections ([`RemoteTransport`]) and is answered by the replica server's meta handler.
//! - **Static bootstrap.** Every node opens its ring from `--peers` first (as before: the
//!   tokens a static cluster computes from the list, fenced at that ring's epoch), then the
//!   first listed node proposes [`Command::BootstrapAt`] with exactly that ring and epoch: the
//!   raft's first topology is bit-identical to the opened one, and later epochs rise from
//!   it. The others wait for it to be applied, bounded by `--meta-catch-up-timeout`.
//! - **The cluster's uuid** is the static cluster's id (the name, the ordered members, RF and
//!   vnodes hashed, [`crate::node::cluster_uuid`]): every listed node computes the same one
//!   without coordination, so the bootstrap is idempotent, and a restarted node whose stored
//!   uuid differs (another `--peers` order, other members) is refused with both printed.
//! - **Follower.** A dedicated thread (an install drains the coordinator's operations and
//!   blocks) installs each new epoch's topology, raises the local replica's fence to it, and
//!   keeps the member filter and the transport's peers in step with the applied members.
//! - **Catch-up.** On restart the replayed state (`MetaRaft::open` re-applies up to the saved
//!   committed index) is installed and fenced at once; then a read index from the leader is
//!   applied before clients are served (`-TRYAGAIN metadata catching up` until then).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use kv_cluster::{Cluster, Replica, RingMember, Topology};
use kv_meta::{
    BoxFuture, ClusterMeta, Command, MetaPeer, MetaRaft, MetaSnapshot, MetaTransport, NewMember,
    Step, TransportError,
};
use kv_remote::{MetaClient, RemoteBackend};
use kv_ring::NodeId;

/// kv-remote's [`MetaClient`] as kv-meta's [`MetaTransport`]: meta requests travel on the
/// node's kv-net connections, to the peer named by its node id. A peer the transport does
/// not know yet (a leader a joiner is forwarded to) is added at the address the request
/// names.
pub struct RemoteTransport {
    client: MetaClient,
    backend: Arc<RemoteBackend>,
}

impl RemoteTransport {
    /// Meta requests over `backend`'s transport; a peer it learns of is added there (its
    /// address table too, so the coordinator can open a handle to it later).
    pub fn new(backend: Arc<RemoteBackend>) -> RemoteTransport {
        RemoteTransport {
            client: MetaClient::new(Arc::clone(backend.peers())),
            backend,
        }
    }
}

impl MetaTransport for RemoteTransport {
    fn call(
        &self,
        to: &MetaPeer,
        body: Bytes,
        timeout: Duration,
    ) -> BoxFuture<Result<Bytes, TransportError>> {
        let peer = to.id.clone();
        let known = self
            .backend
            .peers()
            .status()
            .iter()
            .any(|p| p.node_id == to.id);
        if !known
            && let (Ok(addr), Ok(node)) =
                (to.cluster_addr.parse::<SocketAddr>(), NodeId::new(&to.id))
        {
            // Best effort: a failure shows as the call's own (an unknown peer).
            let _ = self.backend.add_peer(node, addr);
        }
        let answer = self.client.call(&to.id, body, timeout);
        Box::pin(async move {
            answer.await.map_err(|e| match e {
                kv_remote::Error::Transport(kv_net::Error::Timeout { .. }) => {
                    TransportError::Timeout { peer, timeout }
                }
                kv_remote::Error::Transport(e) => TransportError::Unreachable {
                    peer,
                    reason: e.to_string(),
                },
                e => TransportError::Failed {
                    peer,
                    reason: e.to_string(),
                },
            })
        })
    }
}

/// One member of the static bootstrap, as `--peers` lists it.
#[derive(Debug, Clone)]
pub struct StaticMember {
    /// The node's id.
    pub id: NodeId,
    /// Its client (RESP) address.
    pub client_addr: SocketAddr,
    /// Its cluster (kv-net) address.
    pub cluster_addr: SocketAddr,
}

/// The `BootstrapAt` of a static cluster: `members` in `--peers` order (raft ids and slots
/// follow it), each with the tokens the opened `cluster` gave it, at the opened ring's epoch.
///
/// # Errors
/// A listed member missing from the opened ring (a `cluster.json` of other members).
pub fn static_bootstrap(
    cluster: &Cluster,
    uuid: u128,
    name: &str,
    vnodes: u32,
    members: &[StaticMember],
) -> anyhow::Result<Command> {
    let ring = cluster.ring();
    let mut listed = Vec::with_capacity(members.len());
    for m in members {
        let tokens = ring.tokens_of(m.id.as_str()).with_context(|| {
            format!(
                "member {} of --peers is not in the ring this node opened",
                m.id
            )
        })?;
        listed.push(NewMember {
            id: m.id.to_string(),
            cluster_addr: m.cluster_addr.to_string(),
            client_addr: m.client_addr.to_string(),
            weight: ring.weight_of(m.id.as_str()).unwrap_or(1.0),
            tokens: tokens.to_vec(),
        });
    }
    Ok(Command::BootstrapAt {
        uuid,
        name: name.to_owned(),
        rf: u32::try_from(cluster.replication_factor()).unwrap_or(u32::MAX),
        vnodes,
        members: listed,
        epoch: cluster.topology_epoch(),
    })
}

fn ring_members(members: &[kv_meta::RingMember]) -> anyhow::Result<Vec<RingMember>> {
    members
        .iter()
        .map(|m| {
            Ok(RingMember {
                id: NodeId::new(&m.id).with_context(|| format!("member id {:?}", m.id))?,
                weight: m.weight,
                tokens: m.tokens.clone(),
            })
        })
        .collect()
}

/// The routing `meta` decides (membership.md §3.1): the ring in force when stable or
/// `Final`; old for reads and new for writes too in `Pending`/`Streaming`; new for reads
/// and old for writes too in `Mid`; back on the old ring while `Aborting`. `None` before
/// the bootstrap.
///
/// # Errors
/// A member id that is not a valid node id (never, for a state built by `apply`).
pub fn topology_of(meta: &ClusterMeta) -> anyhow::Result<Option<Topology>> {
    if !meta.is_bootstrapped() {
        return Ok(None);
    }
    let (read, extra_write, mid) = match &meta.change {
        Some(c) if matches!(c.step, Step::Pending | Step::Streaming) => (
            ring_members(&c.from_members)?,
            Some(ring_members(&c.to_members)?),
            false,
        ),
        Some(c) if c.step == Step::Mid => (
            ring_members(&c.to_members)?,
            Some(ring_members(&c.from_members)?),
            true,
        ),
        Some(c) if c.step == Step::Aborting => (ring_members(&c.from_members)?, None, false),
        _ => (ring_members(&meta.ring_members())?, None, false),
    };
    let mut slots = std::collections::BTreeMap::new();
    for (id, m) in &meta.members {
        slots.insert(NodeId::new(id).context("member id")?, m.slot);
    }
    Ok(Some(Topology {
        epoch: meta.epoch,
        read,
        extra_write,
        mid,
        slots,
    }))
}

/// The members the node serves and talks to: every member of the applied metadata, in any
/// state (a `Registered` joiner is sent its dual writes), read by the server's filters.
/// `None` admits anyone presenting the cluster's id: a joiner before it applied the
/// metadata does not know who the members are, and the leader must reach it.
#[derive(Debug, Clone, Default)]
pub struct Members(Arc<RwLock<Option<BTreeSet<String>>>>);

impl Members {
    /// Members `ids` to begin with (the static list, before the metadata is applied).
    pub fn new(ids: impl IntoIterator<Item = String>) -> Members {
        Members(Arc::new(RwLock::new(Some(ids.into_iter().collect()))))
    }

    /// Anyone, until the applied metadata names the members (a joiner's start).
    pub fn anyone() -> Members {
        Members(Arc::new(RwLock::new(None)))
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &str) -> bool {
        self.0
            .read()
            .map(|m| m.as_ref().is_none_or(|m| m.contains(id)))
            .unwrap_or(false)
    }

    fn set(&self, ids: BTreeSet<String>) {
        if let Ok(mut m) = self.0.write() {
            *m = Some(ids);
        }
    }

    /// A kv-net filter admitting the members other than `me`.
    pub fn filter(&self, me: &str) -> kv_net::PeerFilter {
        let (members, me) = (self.clone(), me.to_owned());
        kv_net::PeerFilter::new(move |id: &str| id != me && members.contains(id))
    }
}

/// What the follower acts on: the coordinator, the local replica, the transport and the
/// member set.
#[derive(Clone)]
pub struct Follower {
    /// The coordinator.
    pub cluster: Arc<Cluster>,
    /// This node's own storage node.
    pub local: Arc<dyn Replica>,
    /// The transport to the other nodes (and the addresses the coordinator opens them at).
    pub backend: Arc<RemoteBackend>,
    /// The member set the server's filters read.
    pub members: Members,
    /// This node's id.
    pub me: NodeId,
}

impl Follower {
    /// Installs `state`'s topology if its epoch is new here, raises the local replica's fence
    /// to it, and brings the member set and the transport's peers in step. Blocks while the
    /// install drains: call it from a thread of its own, never on an async worker.
    ///
    /// # Errors
    /// The coordinator refusing the topology (a lower epoch than installed, a bad ring).
    pub fn apply(&self, state: &MetaSnapshot) -> anyhow::Result<()> {
        let meta = &state.meta;
        let Some(topology) = topology_of(meta)? else {
            return Ok(());
        };
        // Peers first: the install opens a handle for every member of either ring, which
        // needs its address.
        let known: BTreeSet<String> = self
            .backend
            .peers()
            .status()
            .into_iter()
            .map(|p| p.node_id)
            .collect();
        for (id, m) in &meta.members {
            if id == self.me.as_str() || known.contains(id) {
                continue;
            }
            let added = NodeId::new(id).map_err(|e| e.to_string()).and_then(|node| {
                let addr: SocketAddr = m.cluster_addr.parse().map_err(|e| format!("{e}"))?;
                self.backend.add_peer(node, addr).map_err(|e| e.to_string())
            });
            if let Err(e) = added {
                eprintln!(
                    "kvstore: metadata: cannot add peer {id} at {:?}: {e}",
                    m.cluster_addr
                );
            }
        }
        self.members.set(meta.members.keys().cloned().collect());
        let epoch = topology.epoch;
        let installed = self.cluster.topology().map(|t| t.epoch);
        if installed.is_none_or(|e| e < epoch) {
            self.cluster
                .install_topology(topology)
                .with_context(|| format!("install the metadata's topology of epoch {epoch}"))?;
        }
        // Raised after the install: a replica request at the new epoch can then only come
        // from a coordinator that routes by it, this one included.
        self.local.fence(epoch);
        // A member deregistered (or never a member: the static list) is no longer dialed;
        // the install above dropped its handle if it was routed.
        for id in known.iter().filter(|id| !meta.members.contains_key(*id)) {
            let _ = self.backend.peers().remove_peer(id);
        }
        Ok(())
    }

    /// During a change, tells the leader (`Ack`, in the background) that the local fence is
    /// at `state`'s epoch, which [`Follower::apply`] just raised: the change driver's barriers
    /// wait for these. Repeated on each applied state until the acknowledgement is applied.
    ///
    /// At `Final` a loser acknowledges the final epoch only once it dropped the ranges it lost
    /// (a leaver: once it handed its hints over), and while `Aborting` a node that gained
    /// ranges only once it dropped them: the driver ends the change on these acknowledgements,
    /// so they also say "cleaned up" ([`cleanup_due`]). The cleanup runs on a thread of its
    /// own (`cleanup`), so this thread keeps installing epochs meanwhile.
    fn acknowledge(
        &self,
        raft: &MetaRaft,
        runtime: &tokio::runtime::Handle,
        state: &MetaSnapshot,
        cleanup: &Cleanup,
    ) {
        let meta = &state.meta;
        let acked = meta.acks.get(self.me.as_str()).copied().unwrap_or(0);
        if meta.change.is_none() || acked >= meta.epoch {
            return;
        }
        match cleanup_due(meta, self.me.as_str()) {
            Ok(Some(work)) if !cleanup.finished(&work) => {
                cleanup.start(work, self);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                // Never for a change `apply` accepted: say so and hold the acknowledgement
                // (the change waits, `KVSTORE CHANGE` names this node).
                eprintln!("kvstore: change cleanup: {e}");
                return;
            }
        }
        let (raft, node, epoch) = (raft.clone(), self.me.to_string(), meta.epoch);
        runtime.spawn(async move {
            let _ = raft.propose(Command::Ack { node, epoch }).await;
        });
    }

    /// Follows `raft`'s applied states on a thread of its own until `stop` is set: each one
    /// goes through [`Follower::apply`]; a failure is logged once and retried with the next
    /// state (or every second).
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn spawn(
        self,
        raft: &MetaRaft,
        runtime: tokio::runtime::Handle,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<JoinHandle<()>> {
        let mut watch = raft.watch();
        let raft = raft.clone();
        std::thread::Builder::new()
            .name("kvstore-meta".into())
            .spawn(move || {
                let mut last_error = String::new();
                let cleanup = Cleanup::default();
                let mut leaving = false;
                while !stop.load(Ordering::Relaxed) {
                    let state = Arc::clone(&watch.borrow_and_update());
                    match self.apply(&state) {
                        Ok(()) => {
                            last_error.clear();
                            self.acknowledge(&raft, &runtime, &state, &cleanup);
                            if !leaving && has_left(&state.meta, self.me.as_str()) {
                                leaving = true;
                                self.hand_over_leadership(&raft, &runtime);
                                leave(self.me.as_str());
                            }
                        }
                        Err(e) => {
                            let text = format!("{e:#}");
                            if text != last_error {
                                eprintln!("kvstore: metadata: {text}");
                                last_error = text;
                            }
                        }
                    }
                    let changed = runtime.block_on(async {
                        tokio::time::timeout(Duration::from_secs(1), watch.changed()).await
                    });
                    if matches!(changed, Ok(Err(_))) {
                        // The raft is gone (shut down): nothing more will come.
                        return;
                    }
                }
            })
            .context("start the metadata follower")
    }
}

/// What a node must do before it acknowledges a change's epoch (membership.md §3.5): drop
/// the ranges it lost at `Final` or gained before an abort, or, as the leaver at `Final`,
/// hand its hints over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupWork {
    /// The change.
    pub change: u64,
    /// The epoch the acknowledgement is for (the final or the abort epoch).
    pub epoch: u64,
    /// The ranges `(start, end]` to drop from the local replica.
    pub drop: Vec<(u64, u64)>,
    /// This node leaves the cluster: it hands its hints over and drops nothing (its data
    /// directory stays for the operator to delete).
    pub leaver: bool,
}

/// The cleanup node `me` owes before it acknowledges `meta`'s epoch, if any: at `Final`, the
/// ranges it lost (a leaver: its hints to hand over); while `Aborting`, the ranges it gained.
///
/// # Errors
/// The change's rings cannot be rebuilt (never for a change `apply` accepted).
pub fn cleanup_due(meta: &ClusterMeta, me: &str) -> anyhow::Result<Option<CleanupWork>> {
    let Some(c) = &meta.change else {
        return Ok(None);
    };
    let in_ring = |members: &[kv_meta::RingMember]| members.iter().any(|m| m.id == me);
    let (epoch, lost) = match c.step {
        Step::Final => (c.step_epochs[2], true),
        // The abort epoch is the current one: nothing else raises it while aborting.
        Step::Aborting => (meta.epoch, false),
        _ => return Ok(None),
    };
    if !in_ring(&c.from_members) && !in_ring(&c.to_members) {
        return Ok(None);
    }
    if lost && c.kind == kv_meta::ChangeKind::Remove && c.node == me {
        return Ok(Some(CleanupWork {
            change: c.id,
            epoch,
            drop: Vec::new(),
            leaver: true,
        }));
    }
    let moved = kv_meta::moved_ranges(c, meta.vnodes, meta.replication_factor, me)
        .context("the ranges this change moves")?;
    let drop = if lost { moved.lost } else { moved.gained };
    Ok((!drop.is_empty()).then_some(CleanupWork {
        change: c.id,
        epoch,
        drop,
        leaver: false,
    }))
}

/// How many ranges one `drop_ranges` call takes: a cleanup of hundreds of ranges is many
/// short calls, between which the node's other work (client writes, streams) gets its turn,
/// rather than one long one.
const DROP_CHUNK: usize = 16;

/// The follower's cleanup: the work it finished last, and whether one runs.
#[derive(Debug, Default, Clone)]
struct Cleanup(Arc<std::sync::Mutex<CleanupRun>>);

#[derive(Debug, Default)]
struct CleanupRun {
    running: bool,
    finished: Option<CleanupWork>,
}

impl Cleanup {
    fn finished(&self, work: &CleanupWork) -> bool {
        self.0
            .lock()
            .map(|r| r.finished.as_ref() == Some(work))
            .unwrap_or(false)
    }

    /// Runs `work` on a thread of its own unless one runs; a failure is logged and the work
    /// is tried again on a later state (dropping is idempotent).
    fn start(&self, work: CleanupWork, follower: &Follower) {
        let Ok(mut run) = self.0.lock() else { return };
        if run.running {
            return;
        }
        run.running = true;
        drop(run);
        let (me, state) = (follower.clone(), self.clone());
        let spawned = std::thread::Builder::new()
            .name("kvstore-cleanup".into())
            .spawn(move || {
                let started = Instant::now();
                let outcome = me.clean(&work);
                match &outcome {
                    Ok(what) => eprintln!(
                        "kvstore: change {} cleanup done in {:?}: {what}",
                        work.change,
                        started.elapsed()
                    ),
                    Err(e) => eprintln!(
                        "kvstore: change {} cleanup failed (tried again): {e:#}",
                        work.change
                    ),
                }
                if let Ok(mut run) = state.0.lock() {
                    run.running = false;
                    if outcome.is_ok() {
                        run.finished = Some(work);
                    }
                }
            });
        if spawned.is_err()
            && let Ok(mut run) = self.0.lock()
        {
            run.running = false;
        }
    }
}

impl Follower {
    /// Does `work`: drops its ranges from the local replica in chunks of [`DROP_CHUNK`], or,
    /// for a leaver, hands the hints it holds over to their targets. Returns what it did.
    fn clean(&self, work: &CleanupWork) -> anyhow::Result<String> {
        if work.leaver {
            // Hints go to their targets, which replicate their keys in the new ring; a
            // target that is down keeps its hints here (the data directory is kept).
            // A failure does not hold the change: a strict write was acknowledged by `W`
            // replicas besides its hint, and the hints not handed over stay on disk here.
            return Ok(match self.cluster.hand_off_hints() {
                Ok(handed) => {
                    format!("{handed} hinted write(s) handed over; this node left the ring")
                }
                Err(e) => format!(
                    "hints not handed over ({e}): they stay in this node's data directory; \
                     this node left the ring"
                ),
            });
        }
        let mut dropped = 0usize;
        for chunk in work.drop.chunks(DROP_CHUNK) {
            let ranges: Vec<kv_ring::TokenRange> = chunk
                .iter()
                .map(|&(start, end)| kv_ring::TokenRange { start, end })
                .collect();
            dropped += self
                .local
                .drop_ranges(work.epoch, &ranges)
                .context("drop the moved ranges")?;
        }
        self.local.sync().context("sync after dropping ranges")?;
        Ok(format!(
            "{dropped} key(s) dropped in {} moved range(s)",
            work.drop.len()
        ))
    }
}

impl Follower {
    /// Before a leaver that leads the metadata raft exits, it deregisters itself (it holds
    /// the entry that made it `Left`: it applied it) and takes itself out of the raft (a
    /// replacement voter first, [`MetaRaft::retire`]), so the others elect a leader among
    /// themselves with nothing left to clean up, instead of the next leader waiting
    /// `LEFT_GRACE` for a leaver that went without a word. Bounded by [`HANDOVER_LIMIT`]:
    /// what is not done by then is left to the next leader.
    fn hand_over_leadership(&self, raft: &MetaRaft, runtime: &tokio::runtime::Handle) {
        let status = raft.status();
        let me = status.raft_id;
        if status.leader != Some(me) {
            return;
        }
        eprintln!(
            "kvstore: {} left the cluster and leads the metadata: it deregisters itself and \
             leaves the raft before it stops",
            self.me
        );
        let deregister = Command::Deregister {
            id: self.me.to_string(),
        };
        if let Err(e) = runtime.block_on(raft.propose(deregister)) {
            eprintln!("kvstore: deregistering itself: {e} (left to the next leader)");
            return;
        }
        let deadline = std::time::Instant::now() + HANDOVER_LIMIT;
        let peers = Arc::clone(self.backend.peers());
        let is_up = move |node: &str| peers.status().iter().any(|p| p.node_id == node && p.alive);
        while std::time::Instant::now() < deadline {
            match runtime.block_on(raft.retire(me, kv_meta::MAX_VOTERS, &is_up)) {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => eprintln!("kvstore: leaving the metadata raft: {e}"),
            }
            if raft.status().leader != Some(me) {
                // No longer leading: the raft elects a leader among the others.
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("kvstore: leaving the metadata raft: not done within {HANDOVER_LIMIT:?}");
    }
}

/// How long a leaving leader tries to hand the metadata lead over before it exits anyway.
const HANDOVER_LIMIT: Duration = Duration::from_secs(15);

/// Whether `me` is a member that left the ring (`Left`, waiting for `Deregister`).
pub fn has_left(meta: &ClusterMeta, me: &str) -> bool {
    meta.members
        .get(me)
        .is_some_and(|m| m.state == kv_meta::MemberState::Left)
}

/// A node that left the cluster shuts down as on SIGTERM (membership.md §3.5): it finishes
/// the commands in flight, flushes its storage and exits 0; its data directory stays.
fn leave(me: &str) {
    eprintln!(
        "kvstore: {me} left the cluster: shutting down (its data directory is kept; delete it \
         once no longer needed)"
    );
    // SAFETY: `kill` on this process's own pid with a signal the server installed a handler
    // for (serve.rs `Signals`) has no memory effects; it only queues the signal.
    let sent = unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    if sent != 0 {
        eprintln!(
            "kvstore: {me} could not signal itself to stop: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Asks `seed` to register this node and add it as a raft learner ([`MetaRaft::join`],
/// forwarded to the leader), asking again while no leader answers (a line logged each time
/// `timeout` passes). Another cluster's name, or a refusal of the registration (an address
/// or id in use, no free slot), is final.
///
/// # Errors
/// The refusals above.
pub async fn join(
    transport: &dyn MetaTransport,
    seed: &crate::node::Peer,
    joiner: &kv_meta::JoinRequest,
    timeout: Duration,
) -> anyhow::Result<kv_meta::Joined> {
    let peer = MetaPeer {
        raft_id: 0,
        id: seed.id.to_string(),
        cluster_addr: seed.cluster_addr()?.to_string(),
    };
    let started = Instant::now();
    let mut logged = started;
    loop {
        match MetaRaft::join(transport, &peer, joiner).await {
            Ok(joined) => return Ok(joined),
            Err(e @ kv_meta::MetaError::WrongCluster { .. }) => {
                bail!("--join {}: {e}", seed.id)
            }
            Err(kv_meta::MetaError::Unavailable { reason }) => {
                if logged.elapsed() >= timeout {
                    eprintln!(
                        "kvstore: not joined after {:?}: {reason} (still trying through {})",
                        started.elapsed(),
                        seed.id
                    );
                    logged = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => bail!("--join {}: the cluster refused this node: {e}", seed.id),
        }
    }
}

/// Logs the metadata requests refused for carrying another cluster's uuid: one line per
/// peer and uuid, naming the likely cause (the service itself answers the refusal).
#[derive(Debug, Clone, Default)]
pub struct UuidRefusals(Arc<std::sync::Mutex<BTreeSet<(String, u128)>>>);

impl UuidRefusals {
    /// Logs `body` from `from` if it names a cluster uuid other than `ours` (both known), the
    /// first time this peer sends that uuid.
    pub fn check(&self, from: &str, ours: u128, body: &[u8]) {
        let Some(theirs) = kv_meta::request_cluster_uuid(body) else {
            return;
        };
        if theirs == 0 || ours == 0 || theirs == ours {
            return;
        }
        let new = self
            .0
            .lock()
            .map(|mut seen| seen.insert((from.to_owned(), theirs)))
            .unwrap_or(false);
        if new {
            eprintln!(
                "kvstore: refused the metadata requests of {from}: it belongs to cluster \
                 {theirs:032x}, this node to cluster {ours:032x}: every node needs the same \
                 --peers list in the same order (and the same --cluster-name, --replication, \
                 --vnodes)"
            );
        }
    }
}

/// Refuses a restart whose `--peers` (or name, RF, vnodes) make another cluster than the one
/// this node's metadata belongs to, printing both.
///
/// # Errors
/// The stored uuid differs from `expected`.
pub fn check_uuid(meta: &ClusterMeta, expected: u128) -> anyhow::Result<()> {
    if meta.is_bootstrapped() && meta.cluster_uuid != expected {
        let listed: Vec<String> = meta.ring_members().iter().map(|m| m.id.clone()).collect();
        bail!(
            "this node's metadata belongs to the cluster {:032x} ({:?}, members {}), but \
             --cluster-name, --peers, --replication and --vnodes describe the cluster \
             {expected:032x}: every node needs the same members in the same order as when the \
             cluster was bootstrapped",
            meta.cluster_uuid,
            meta.cluster_name,
            listed.join(",")
        );
    }
    Ok(())
}

/// Waits until this node has applied everything the leader had committed when asked
/// (membership.md §2.6 step 2), asking again until it succeeds (no leader yet, or none
/// reachable); one log line each time `timeout` passes without it. Returns how long it took.
pub async fn catch_up(raft: &MetaRaft, timeout: Duration) -> Duration {
    let started = Instant::now();
    let mut deadline = started + timeout;
    loop {
        let attempt = async {
            let index = raft.read_index().await?;
            raft.wait_applied(index, timeout).await
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, attempt).await {
            Ok(Ok(())) => return started.elapsed(),
            Ok(Err(_)) if Instant::now() < deadline => {
                // No leader yet (an election takes a second or two): ask again shortly.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer".to_owned(),
                };
                eprintln!(
                    "kvstore: metadata not caught up within {timeout:?} ({why}); clients get \
                     TRYAGAIN and this node keeps serving its replica at or above its fence \
                     (epoch {}) while it tries again",
                    raft.watch().borrow().meta.epoch
                );
                deadline = Instant::now() + timeout;
            }
        }
    }
}

/// Raises the metadata epoch by two without moving any data, for tests and drills
/// (`KVSTORE META BUMP`, only with `--enable-debug-faults`): registers a phantom node,
/// starts adding it (epoch + 1: writes also go to the phantom's ranges' new replica sets),
/// aborts at once (epoch + 2: back on the old ring), finishes the abort and deregisters the
/// phantom. Every node installs both epochs and raises its fence to them, as it would for a
/// real change. Returns the epoch reached.
///
/// # Errors
/// A proposal not committed or refused (a change in progress, no leader).
pub async fn debug_bump(raft: &MetaRaft) -> Result<u64, String> {
    let state = raft.watch().borrow().clone();
    let meta = &state.meta;
    let phantom = format!("bump{}", meta.next_raft_id);
    let mut to_members = meta.ring_members();
    // Midpoints of a few of the ring's gaps: tokens no member holds.
    let mut taken: Vec<u64> = to_members.iter().flat_map(|m| m.tokens.clone()).collect();
    taken.sort_unstable();
    let step = (taken.len() / 8).max(1);
    let tokens: Vec<u64> = taken
        .windows(2)
        .step_by(step)
        .filter(|w| w[1] - w[0] > 1)
        .map(|w| w[0] + (w[1] - w[0]) / 2)
        .collect();
    to_members.push(kv_meta::RingMember {
        id: phantom.clone(),
        weight: 1.0,
        tokens,
    });
    // An address nobody listens on: the phantom is never reached.
    let addr = format!("127.0.0.1:{}", 1 + meta.next_raft_id % 1000);
    let propose = |cmd: Command| async move {
        match raft.propose(cmd).await {
            Ok((log_id, kv_meta::MetaResponse::Ok { epoch })) => Ok((log_id.index, epoch)),
            Ok((_, kv_meta::MetaResponse::Refused(e))) => Err(format!("refused: {e}")),
            Err(e) => Err(e.to_string()),
        }
    };
    propose(Command::Register {
        id: phantom.clone(),
        cluster_addr: addr.clone(),
        client_addr: format!("{addr}0"),
    })
    .await?;
    let (change, _) = propose(Command::StartChange {
        kind: kv_meta::ChangeKind::Add,
        node: phantom.clone(),
        to_members,
        tasks: Vec::new(),
        started_ms: 0,
    })
    .await?;
    propose(Command::Abort { change }).await?;
    let (_, epoch) = propose(Command::FinishAbort { change }).await?;
    propose(Command::Deregister { id: phantom }).await?;
    Ok(epoch)
}

/// The `KVSTORE META` lines of `raft`'s view: leader, term, voters, learners, applied index,
/// epoch, members and their states.
pub fn report(raft: &MetaRaft) -> Vec<String> {
    let status = raft.status();
    let state = raft.watch().borrow().clone();
    let meta = &state.meta;
    let name_of = |raft_id: u64| {
        meta.members
            .iter()
            .find(|(_, m)| m.raft_id == raft_id)
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| format!("raft{raft_id}"))
    };
    let names = |ids: &[u64]| {
        ids.iter()
            .map(|&i| name_of(i))
            .collect::<Vec<_>>()
            .join(",")
    };
    let members = meta
        .members
        .iter()
        .map(|(id, m)| format!("{id}={}", m.state))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        format!("leader:{}", status.leader.map(name_of).unwrap_or_default()),
        format!("term:{}", status.term),
        format!("voters:{}", names(&status.voters)),
        format!("learners:{}", names(&status.learners)),
        format!("applied_index:{}", status.applied),
        format!("epoch:{}", status.epoch),
        format!("members:{members}"),
        format!("cluster_uuid:{:032x}", meta.cluster_uuid),
        format!("self:{}", name_of(status.raft_id)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_meta::{ChangeKind, MetaResponse};

    fn bootstrapped() -> ClusterMeta {
        let members = (1..=3u64)
            .map(|i| NewMember {
                id: format!("n{i}"),
                cluster_addr: format!("127.0.0.1:1700{i}"),
                client_addr: format!("127.0.0.1:700{i}"),
                weight: 1.0,
                tokens: vec![i * 1000, i * 1000 + 500],
            })
            .collect();
        let cmd = Command::BootstrapAt {
            uuid: 9,
            name: "t".into(),
            rf: 3,
            vnodes: 2,
            members,
            epoch: 3,
        };
        let mut meta = ClusterMeta::default();
        assert_eq!(meta.apply(1, &cmd), MetaResponse::Ok { epoch: 3 });
        meta
    }

    #[test]
    fn a_stable_state_is_its_ring_at_its_epoch_with_slots() {
        assert!(topology_of(&ClusterMeta::default()).unwrap().is_none());
        let meta = bootstrapped();
        let t = topology_of(&meta).unwrap().unwrap();
        assert_eq!(t.epoch, 3);
        assert_eq!(t.extra_write, None);
        let ids: Vec<&str> = t.read.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["n1", "n2", "n3"]);
        assert_eq!(t.read[1].tokens, vec![2000, 2500]);
        assert_eq!(t.slots[&NodeId::new("n3").unwrap()], 2);
    }

    #[test]
    fn a_pending_change_writes_both_rings_and_mid_reads_the_new_one() {
        let mut meta = bootstrapped();
        let register = Command::Register {
            id: "n4".into(),
            cluster_addr: "127.0.0.1:17004".into(),
            client_addr: "127.0.0.1:7004".into(),
        };
        assert!(meta.apply(2, &register).is_ok());
        let mut to = meta.ring_members();
        to.push(kv_meta::RingMember {
            id: "n4".into(),
            weight: 1.0,
            tokens: vec![4000, 4500],
        });
        let start = Command::StartChange {
            kind: ChangeKind::Add,
            node: "n4".into(),
            to_members: to,
            tasks: Vec::new(),
            started_ms: 0,
        };
        assert!(meta.apply(3, &start).is_ok(), "{:?}", meta.apply(3, &start));
        let t = topology_of(&meta).unwrap().unwrap();
        assert_eq!((t.epoch, t.read.len(), t.mid), (4, 3, false));
        assert_eq!(t.extra_write.as_ref().map(Vec::len), Some(4));
        // Tasks-free plans reach Mid at once.
        assert!(
            meta.apply(4, &Command::BeginStreaming { change: 3 })
                .is_ok()
        );
        assert!(meta.apply(5, &Command::EnterMid { change: 3 }).is_ok());
        let t = topology_of(&meta).unwrap().unwrap();
        assert_eq!((t.epoch, t.read.len(), t.mid), (5, 4, true));
        assert_eq!(t.extra_write.as_ref().map(Vec::len), Some(3));
    }

    #[test]
    fn another_clusters_metadata_is_refused_with_both_uuids() {
        let meta = bootstrapped();
        check_uuid(&meta, 9).unwrap();
        check_uuid(&ClusterMeta::default(), 1).unwrap();
        let e = format!("{:#}", check_uuid(&meta, 10).unwrap_err());
        assert!(e.contains(&format!("{:032x}", 9)), "{e}");
        assert!(e.contains(&format!("{:032x}", 10)), "{e}");
        assert!(e.contains("n1,n2,n3") && e.contains("same order"), "{e}");
    }
}
