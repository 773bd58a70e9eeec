//! `MetaRaft`: one node's metadata raft (its log and state machine in `<dir>/meta/`, its
//! `Raft`, its network), the requests any node can make of the leader, and the
//! [`MetaService`] that answers other nodes (membership.md §2.1, §2.4 to §2.6).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{Config, LogId, Raft, SnapshotPolicy};
use tokio::time::Instant;

use crate::command::{Command, MetaResponse};
use crate::error::{Error, MetaError, Result};
use crate::protocol::{MetaReply, MetaRequest, MetaStatus};
use crate::raft::network::{Directory, MetaNetwork, MetaPeer, MetaTransport};
use crate::raft::service::{MetaService, serve, status};
use crate::raft::voters::{self, Liveness, VoterStep};
use crate::raft::{MemLog, MetaLog, MetaMachine, MetaNode, MetaTypes, MetaWatch};

/// How many times a request follows [`MetaError::ForwardToLeader`] before giving up.
pub const MAX_FORWARD_HOPS: u32 = 3;
/// How long a request may take, forwarding included.
pub const FORWARD_WINDOW: Duration = Duration::from_secs(5);
/// How long a request waits before asking again when no leader is known or reachable.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The most voters the raft has (membership.md §0): the first five members of a bootstrap.
pub const MAX_VOTERS: usize = 5;

/// The raft configuration of membership.md §2.1: heartbeat 250 ms, election timeout 1 to 2 s
/// (above the delay a 16 MiB data frame adds on the shared connection), 256 entries per
/// append, snapshot chunks of 4 MiB with a 5 s timeout, a snapshot every 1,000 entries with
/// 1,000 kept behind it for slow followers.
///
/// # Example
///
/// ```
/// let config = kv_meta::meta_config("prod");
/// assert_eq!((config.heartbeat_interval, config.election_timeout_min), (250, 1000));
/// assert!(config.validate().is_ok());
/// ```
pub fn meta_config(cluster_name: &str) -> Config {
    Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: 250,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        max_payload_entries: 256,
        install_snapshot_timeout: 5000,
        snapshot_max_chunk_size: 4 << 20,
        enable_tick: true,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 1000,
        ..Default::default()
    }
}

/// One node's metadata raft: the durable log (`<dir>/meta/log/`, [`MetaLog`]) and state
/// machine (`<dir>/meta/snapshot`, [`MetaMachine`]), the openraft `Raft` over them, and a
/// [`MetaNetwork`] over the node's [`MetaTransport`].
///
/// Any node may [`propose`](MetaRaft::propose) a command or ask for the
/// [`read_index`](MetaRaft::read_index): a node that is not the leader sends the request to the
/// leader it knows of, following [`MetaError::ForwardToLeader`] answers at most
/// [`MAX_FORWARD_HOPS`] times within [`FORWARD_WINDOW`]. Other nodes' requests are served by
/// its [`service`](MetaRaft::service), which the node installs as its replica server's meta
/// handler. Cheap to clone; [`shutdown`](MetaRaft::shutdown) stops it.
///
/// # Example
///
/// One node alone (a single voter commits by itself; a node process passes kv-remote's
/// `MetaClient` as the transport, see [`MetaTransport`]):
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use bytes::Bytes;
/// use kv_meta::{BoxFuture, Command, MetaPeer, MetaRaft, MetaTransport, NewMember};
/// use kv_meta::{TransportError, meta_config};
///
/// struct Nowhere;
/// impl MetaTransport for Nowhere {
///     fn call(&self, to: &MetaPeer, _: Bytes, _: Duration)
///         -> BoxFuture<Result<Bytes, TransportError>> {
///         let peer = to.id.clone();
///         Box::pin(async move { Err(TransportError::Unreachable { peer, reason: "alone".into() }) })
///     }
/// }
///
/// # let dir = tempfile::tempdir()?;
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let raft = MetaRaft::open(dir.path(), 1, "n1", meta_config("demo"), Arc::new(Nowhere)).await?;
/// let n1 = NewMember {
///     id: "n1".into(),
///     cluster_addr: "127.0.0.1:7001".into(),
///     client_addr: "127.0.0.1:6379".into(),
///     weight: 1.0,
///     tokens: vec![1 << 63],
/// };
/// let bootstrap =
///     Command::Bootstrap { uuid: 7, name: "demo".into(), rf: 1, vnodes: 1, members: vec![n1] };
/// raft.bootstrap(&bootstrap, Duration::from_secs(10)).await?;
/// assert_eq!(raft.watch().borrow().meta.epoch, 1);
///
/// let register = Command::Register {
///     id: "n2".into(),
///     cluster_addr: "127.0.0.1:7002".into(),
///     client_addr: "127.0.0.1:6380".into(),
/// };
/// let (log_id, answer) = raft.propose(register).await?;
/// assert!(answer.is_ok());
/// assert!(raft.read_index().await? >= log_id.index);
/// raft.shutdown().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct MetaRaft {
    inner: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) raft_id: u64,
    pub(crate) id: String,
    pub(crate) raft: Raft<MetaTypes>,
    pub(crate) machine: MetaMachine,
    /// The durable log, closed by `shutdown` (`None`: a [`MemLog`] the caller keeps).
    pub(crate) log: Option<MetaLog>,
    pub(crate) transport: Arc<dyn MetaTransport>,
    pub(crate) directory: Directory,
    pub(crate) dir: PathBuf,
    /// Background tasks (the voter reconciler), stopped by `shutdown`.
    pub(crate) tasks: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl fmt::Debug for MetaRaft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaRaft")
            .field("raft_id", &self.inner.raft_id)
            .field("id", &self.inner.id)
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

pub(crate) fn unavailable(e: impl fmt::Display) -> MetaError {
    MetaError::Unavailable {
        reason: e.to_string(),
    }
}

impl MetaRaft {
    /// Opens node `id`'s metadata in `<dir>/meta/` (creating it), replays the snapshot and the
    /// log up to the saved committed id (so the applied state is back before this returns),
    /// and starts raft as raft node `raft_id` with `config` (usually [`meta_config`]). A new
    /// directory's raft is uninitialized: see [`bootstrap`](MetaRaft::bootstrap) and
    /// [`join`](MetaRaft::join).
    ///
    /// # Errors
    /// The errors of [`MetaLog::open`] and [`MetaMachine::open`] (a damaged or locked log, a
    /// corrupt snapshot); [`Error::Raft`] for an invalid `config` or a raft that fails to start.
    pub async fn open(
        dir: &Path,
        raft_id: u64,
        id: &str,
        config: Config,
        transport: Arc<dyn MetaTransport>,
    ) -> Result<MetaRaft> {
        let meta_dir = dir.join("meta");
        let machine = MetaMachine::open(&meta_dir)?;
        let log = MetaLog::open(&meta_dir.join("log")).await?;
        let config = validated(config)?;
        let directory = Directory::new(machine.watch());
        let network = MetaNetwork::new(raft_id, Arc::clone(&transport), directory.clone());
        let raft = Raft::new(raft_id, config, network, log.clone(), machine.clone())
            .await
            .map_err(|e| Error::Raft {
                reason: e.to_string(),
            })?;
        Ok(MetaRaft::assemble(
            raft_id,
            id,
            raft,
            machine,
            Some(log),
            transport,
            directory,
            meta_dir,
        ))
    }

    /// Starts raft node `raft_id` over a log kept in memory by the caller and a state machine
    /// in memory, nothing on disk: the simulation's form (membership.md §4.2), where `log`
    /// lives outside the simulated process so that a crash keeps it, as a process crash
    /// keeps a file. Give it a fresh [`MetaMachine::in_memory`] at each start: openraft
    /// re-applies `log` up to its saved committed id before this returns, as a restart
    /// replays the durable log (with no snapshot to start from, so `config` should not
    /// purge the log: a `snapshot_policy` of `Never`, or far more entries than a run makes).
    /// [`dir`](MetaRaft::dir) is empty; [`shutdown`](MetaRaft::shutdown) stops raft only.
    ///
    /// # Errors
    /// [`Error::Raft`] for an invalid `config` or a raft that fails to start.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use bytes::Bytes;
    /// use kv_meta::{BoxFuture, Command, MemLog, MetaMachine, MetaPeer, MetaRaft, MetaTransport};
    /// use kv_meta::{NewMember, TransportError, meta_config};
    ///
    /// struct Nowhere;
    /// impl MetaTransport for Nowhere {
    ///     fn call(&self, to: &MetaPeer, _: Bytes, _: Duration)
    ///         -> BoxFuture<Result<Bytes, TransportError>> {
    ///         let peer = to.id.clone();
    ///         Box::pin(async move { Err(TransportError::Unreachable { peer, reason: "alone".into() }) })
    ///     }
    /// }
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let log = MemLog::new();
    /// let config = meta_config("demo");
    /// let raft = MetaRaft::open_in_memory(
    ///     log.clone(), MetaMachine::in_memory(), 1, "n1", config.clone(), Arc::new(Nowhere),
    /// ).await?;
    /// let n1 = NewMember {
    ///     id: "n1".into(),
    ///     cluster_addr: "n1:7000".into(),
    ///     client_addr: "n1:7100".into(),
    ///     weight: 1.0,
    ///     tokens: vec![1 << 63],
    /// };
    /// let bootstrap =
    ///     Command::Bootstrap { uuid: 7, name: "demo".into(), rf: 1, vnodes: 1, members: vec![n1] };
    /// raft.bootstrap(&bootstrap, Duration::from_secs(10)).await?;
    /// raft.shutdown().await?;
    /// // A "restart" over the same log applies the bootstrap again before it returns.
    /// let again = MetaRaft::open_in_memory(
    ///     log, MetaMachine::in_memory(), 1, "n1", config, Arc::new(Nowhere),
    /// ).await?;
    /// assert_eq!(again.watch().borrow().meta.epoch, 1);
    /// # again.shutdown().await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn open_in_memory(
        log: MemLog,
        machine: MetaMachine,
        raft_id: u64,
        id: &str,
        config: Config,
        transport: Arc<dyn MetaTransport>,
    ) -> Result<MetaRaft> {
        let config = validated(config)?;
        let directory = Directory::new(machine.watch());
        let network = MetaNetwork::new(raft_id, Arc::clone(&transport), directory.clone());
        let raft = Raft::new(raft_id, config, network, log, machine.clone())
            .await
            .map_err(|e| Error::Raft {
                reason: e.to_string(),
            })?;
        Ok(MetaRaft::assemble(
            raft_id,
            id,
            raft,
            machine,
            None,
            transport,
            directory,
            PathBuf::new(),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        raft_id: u64,
        id: &str,
        raft: Raft<MetaTypes>,
        machine: MetaMachine,
        log: Option<MetaLog>,
        transport: Arc<dyn MetaTransport>,
        directory: Directory,
        dir: PathBuf,
    ) -> MetaRaft {
        MetaRaft {
            inner: Arc::new(Shared {
                raft_id,
                id: id.to_string(),
                raft,
                machine,
                log,
                transport,
                directory,
                dir,
                tasks: std::sync::Mutex::default(),
            }),
        }
    }

    /// Asks `seed` (any member; the request is forwarded to the leader) to register the
    /// `joiner` and add it as a raft learner, and returns the raft id, slot and cluster uuid it got;
    /// then [`open`](MetaRaft::open) the node with that raft id: it receives the log or a
    /// snapshot. Asking again after a success answers the same (the node is a member).
    ///
    /// # Errors
    /// [`MetaError::WrongCluster`], the state machine's refusal of `Register` (an address in
    /// use, no free slot...), [`MetaError::Unavailable`] if no leader answered in time.
    pub async fn join(
        transport: &dyn MetaTransport,
        seed: &MetaPeer,
        joiner: &JoinRequest,
    ) -> std::result::Result<Joined, MetaError> {
        let req = MetaRequest::Join {
            id: joiner.id.clone(),
            cluster_addr: joiner.cluster_addr.clone(),
            client_addr: joiner.client_addr.clone(),
            cluster_name: joiner.cluster_name.clone(),
        };
        let deadline = Instant::now() + FORWARD_WINDOW;
        let mut target = seed.clone();
        let mut hops = 0;
        loop {
            match call(transport, 0, &target, &req, deadline).await {
                Ok(MetaReply::Joined {
                    cluster_uuid,
                    raft_id,
                    slot,
                }) => {
                    return Ok(Joined {
                        cluster_uuid,
                        raft_id,
                        slot,
                    });
                }
                Ok(MetaReply::Error(MetaError::ForwardToLeader {
                    leader: Some(leader),
                })) => {
                    hops += 1;
                    if hops > MAX_FORWARD_HOPS {
                        return Err(too_many_hops());
                    }
                    target = leader;
                    continue;
                }
                // Not connected yet, no leader known, or the leader did not answer: ask the
                // seed again after a pause.
                Ok(MetaReply::Error(MetaError::ForwardToLeader { leader: None }))
                | Ok(MetaReply::Error(MetaError::Unavailable { .. }))
                | Err(MetaError::Unavailable { .. }) => target = seed.clone(),
                Ok(MetaReply::Error(e)) | Err(e) => return Err(e),
                Ok(other) => return Err(unexpected(&other)),
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(unavailable(
                    "no metadata leader answered Join within the deadline",
                ));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Bootstraps the cluster `cmd` describes (a [`Command::Bootstrap`] or
    /// [`Command::BootstrapAt`]; its members get raft
    /// ids 1, 2, ... in list order, the first [`MAX_VOTERS`] are the voters) and returns once
    /// this node has applied it. Every listed node calls it with the same command; the first
    /// in the list initializes raft and proposes `cmd`, the others wait for it to arrive. On a
    /// restart it returns at once (the state is bootstrapped) or finishes what was left.
    ///
    /// # Errors
    /// [`MetaError::InvalidBootstrap`] if `cmd` is not a `Bootstrap` or does not list this
    /// node at this raft id; the state machine's refusal; [`MetaError::Unavailable`] if it is
    /// not applied within `timeout`.
    pub async fn bootstrap(
        &self,
        cmd: &Command,
        timeout: Duration,
    ) -> std::result::Result<(), MetaError> {
        let Some(members) = cmd.bootstrap_members() else {
            return Err(MetaError::InvalidBootstrap {
                reason: "not a Bootstrap command".into(),
            });
        };
        let me = members.iter().position(|m| m.id == self.inner.id);
        if me.map(|i| i as u64 + 1) != Some(self.inner.raft_id) {
            return Err(MetaError::InvalidBootstrap {
                reason: format!(
                    "node {} (raft {}) is not at that place in the member list",
                    self.inner.id, self.inner.raft_id
                ),
            });
        }
        for (i, m) in members.iter().enumerate() {
            self.inner.directory.seed(i as u64 + 1, &m.id);
        }
        let deadline = Instant::now() + timeout;
        if self.inner.raft_id == 1 && !self.inner.machine.current().meta.is_bootstrapped() {
            let voters: BTreeMap<u64, MetaNode> = members
                .iter()
                .take(MAX_VOTERS)
                .enumerate()
                .map(|(i, m)| {
                    let id = i as u64 + 1;
                    let node = MetaNode {
                        id,
                        cluster_addr: m.cluster_addr.clone(),
                    };
                    (id, node)
                })
                .collect();
            match self.inner.raft.initialize(voters).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(unavailable(e)),
            }
            // A restart may find `cmd` committed meanwhile: the refusal says so.
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.propose_until(cmd.clone(), deadline)).await {
                Ok(Ok((_, MetaResponse::Ok { .. })))
                | Ok(Ok((_, MetaResponse::Refused(MetaError::AlreadyBootstrapped { .. })))) => {}
                Ok(Ok((_, MetaResponse::Refused(e)))) => return Err(e),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(unavailable("bootstrap timed out")),
            }
        }
        let mut watch = self.watch();
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, watch.wait_for(|s| s.meta.is_bootstrapped())).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(unavailable("the bootstrap was not applied in time")),
        }
    }

    /// Commits `cmd` through the leader (this node, or the one it knows of, following
    /// [`MetaError::ForwardToLeader`] at most [`MAX_FORWARD_HOPS`] times within
    /// [`FORWARD_WINDOW`]) and returns its log id and the state machine's answer (a refusal is
    /// an answer).
    ///
    /// # Errors
    /// [`MetaError::Unavailable`] if no leader committed it in time (it may still commit: a
    /// command is validated when applied, so proposing it again is safe).
    pub async fn propose(
        &self,
        cmd: Command,
    ) -> std::result::Result<(LogId<u64>, MetaResponse), MetaError> {
        self.propose_until(cmd, Instant::now() + FORWARD_WINDOW)
            .await
    }

    async fn propose_until(
        &self,
        cmd: Command,
        deadline: Instant,
    ) -> std::result::Result<(LogId<u64>, MetaResponse), MetaError> {
        match self.ask_leader(MetaRequest::Propose(cmd), deadline).await? {
            MetaReply::Proposed { log_id, response } => Ok((log_id, response)),
            other => Err(unexpected(&other)),
        }
    }

    /// The leader's committed log index, confirmed with a quorum (membership.md §2.6 step
    /// 2): once this node has applied it, it has seen every command committed before the call.
    ///
    /// # Errors
    /// [`MetaError::Unavailable`] if no leader answered within [`FORWARD_WINDOW`].
    pub async fn read_index(&self) -> std::result::Result<u64, MetaError> {
        let deadline = Instant::now() + FORWARD_WINDOW;
        match self.ask_leader(MetaRequest::ReadIndex, deadline).await? {
            MetaReply::ReadIndex { index } => Ok(index),
            other => Err(unexpected(&other)),
        }
    }

    /// Waits until this node has applied log index `index`.
    ///
    /// # Errors
    /// [`MetaError::Unavailable`] if it has not within `timeout`.
    pub async fn wait_applied(
        &self,
        index: u64,
        timeout: Duration,
    ) -> std::result::Result<(), MetaError> {
        let mut watch = self.watch();
        let reached =
            |s: &Arc<crate::MetaSnapshot>| s.last_log_id.is_some_and(|l| l.index >= index);
        match tokio::time::timeout(timeout, watch.wait_for(reached)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(unavailable(format!(
                "log index {index} not applied within {timeout:?}"
            ))),
        }
    }

    /// Sends `req` to the leader: served locally first, then wherever
    /// [`MetaError::ForwardToLeader`] points. An unknown leader (an election) or an
    /// unreachable one is asked again locally after a short pause, within the deadline.
    async fn ask_leader(
        &self,
        req: MetaRequest,
        deadline: Instant,
    ) -> std::result::Result<MetaReply, MetaError> {
        let mut hops = 0;
        let mut target: Option<MetaPeer> = None;
        loop {
            let reply = match &target {
                Some(peer) if peer.raft_id != self.inner.raft_id => {
                    call(
                        self.inner.transport.as_ref(),
                        self.inner.directory.uuid(),
                        peer,
                        &req,
                        deadline,
                    )
                    .await
                }
                _ => Ok(serve(&self.inner, req.clone()).await),
            };
            match reply {
                Ok(MetaReply::Error(MetaError::ForwardToLeader {
                    leader: Some(leader),
                })) => {
                    hops += 1;
                    if hops > MAX_FORWARD_HOPS {
                        return Err(too_many_hops());
                    }
                    target = Some(leader);
                    continue;
                }
                // No leader known, or the one known did not answer: ask again here once the
                // election has had a moment.
                Ok(MetaReply::Error(MetaError::ForwardToLeader { leader: None }))
                | Ok(MetaReply::Error(MetaError::Unavailable { .. }))
                | Err(_) => target = None,
                Ok(reply) => return Ok(reply),
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(unavailable(format!(
                    "no metadata leader answered {} within the deadline",
                    req.name()
                )));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// One step of the voter reconciler (membership.md §1.6), if this node is the leader:
    /// plans it ([`VoterStep`]: a ring member becomes a learner, or the voters gain or lose
    /// one) towards [`voter_target`](crate::voter_target) voters of the ring's `Normal` members (at most `cap`),
    /// choosing members `is_up` says are up, oldest raft id first, and commits it. Returns
    /// what it did (`None`: not the leader, nothing to do, or a membership change pending).
    ///
    /// # Errors
    /// [`MetaError::Unavailable`] if raft refused or did not commit the change within
    /// [`FORWARD_WINDOW`] (the next step plans again from what is committed).
    pub async fn reconcile_voters(
        &self,
        cap: usize,
        is_up: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> std::result::Result<Option<VoterStep>, MetaError> {
        let raft = &self.inner.raft;
        let metrics = raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.inner.raft_id) {
            return Ok(None);
        }
        let meta = self.inner.machine.current();
        let membership = metrics.membership_config.membership();
        let Some(step) = voters::plan(&meta.meta, membership, self.inner.raft_id, is_up, cap)
        else {
            return Ok(None);
        };
        tracing::info!(?step, "voter reconciler");
        let change = async {
            match &step {
                VoterStep::AddLearner(id, node) => raft.add_learner(*id, node.clone(), false).await,
                VoterStep::SetVoters(set) => raft.change_membership(set.clone(), true).await,
            }
        };
        match tokio::time::timeout(FORWARD_WINDOW, change).await {
            Ok(Ok(_)) => Ok(Some(step)),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(unavailable("the voter change did not commit in time")),
        }
    }

    /// The last log index raft node `raft_id` is known to hold, from this node's replication
    /// metrics: `None` unless this node leads and replicates to it (a leaver is safe to
    /// deregister once it holds the entry that made it `Left`).
    pub fn matched_index(&self, raft_id: u64) -> Option<u64> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        metrics
            .replication
            .as_ref()?
            .get(&raft_id)
            .copied()
            .flatten()
            .map(|log_id| log_id.index)
    }

    /// One step of taking raft node `raft_id` (a member that left the ring) out of the raft,
    /// if this node leads: while it is a voter, first a
    /// [`reconcile_voters`](MetaRaft::reconcile_voters) step (it counts a member that is not
    /// `Normal` as down, so a replacement voter is added before it goes), then it is demoted
    /// to a learner; a learner is then removed. The leader may retire itself: openraft keeps a
    /// leader that is only a learner leading, and steps it down once it is no raft node. Returns `true` once it is no raft node (or
    /// never was), `false` while steps remain (call again) or this node cannot act.
    ///
    /// # Errors
    /// [`MetaError::Unavailable`] if raft refused or did not commit a step within
    /// [`FORWARD_WINDOW`].
    pub async fn retire(
        &self,
        raft_id: u64,
        cap: usize,
        is_up: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> std::result::Result<bool, MetaError> {
        let raft = &self.inner.raft;
        let metrics = raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.inner.raft_id) {
            return Ok(false);
        }
        let membership = metrics.membership_config.membership().clone();
        if membership.get_joint_config().len() > 1 {
            return Ok(false);
        }
        let one = std::collections::BTreeSet::from([raft_id]);
        let change = if membership.voter_ids().any(|v| v == raft_id) {
            if self.reconcile_voters(cap, is_up).await?.is_some() {
                return Ok(false);
            }
            openraft::ChangeMembers::RemoveVoters(one)
        } else if membership.get_node(&raft_id).is_some() {
            openraft::ChangeMembers::RemoveNodes(one)
        } else {
            return Ok(true);
        };
        tracing::info!(raft_id, ?change, "retiring a raft node");
        match tokio::time::timeout(FORWARD_WINDOW, raft.change_membership(change, true)).await {
            Ok(Ok(_)) => Ok(false),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(unavailable("the membership change did not commit in time")),
        }
    }

    /// Runs [`reconcile_voters`](MetaRaft::reconcile_voters) every `interval` until
    /// [`shutdown`](MetaRaft::shutdown), on the current tokio runtime; each node runs one, and
    /// only the leader's acts.
    pub fn spawn_voter_reconciler(&self, cap: usize, liveness: Liveness, interval: Duration) {
        let me = self.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if let Err(e) = me.reconcile_voters(cap, liveness.as_ref()).await {
                    tracing::warn!(error = %e, "voter reconciler");
                }
            }
        });
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            tasks.push(task.abort_handle());
        }
    }

    /// Sets the cluster uuid this node belongs to (a static node computes it from its
    /// `--peers`; a joiner learns it from [`MetaRaft::join`] and stores it): every request it
    /// sends carries it, and a request carrying another is refused with
    /// [`MetaError::WrongClusterUuid`]. Until it is set, the applied metadata's uuid counts.
    pub fn set_cluster_uuid(&self, uuid: u128) {
        self.inner.directory.set_uuid(uuid);
    }

    /// The cluster uuid this node belongs to: as set, else the applied metadata's (0: not
    /// known yet).
    pub fn cluster_uuid(&self) -> u128 {
        self.inner.directory.uuid()
    }

    /// A receiver of every state this node applies (membership.md §2.2).
    pub fn watch(&self) -> MetaWatch {
        self.inner.machine.watch()
    }

    /// The service answering other nodes' meta requests: install it as the node's meta
    /// handler (kv-remote's `ReplicaServer::set_meta_handler`).
    pub fn service(&self) -> MetaService {
        MetaService::new(Arc::clone(&self.inner))
    }

    /// This node's view of the raft and the metadata.
    pub fn status(&self) -> MetaStatus {
        status(&self.inner)
    }

    /// `peer`'s view of the raft and the metadata (`KVSTORE CHANGE` asks the leader's).
    ///
    /// # Errors
    /// [`MetaError::Unavailable`] if `peer` does not answer within [`FORWARD_WINDOW`].
    pub async fn status_of(&self, peer: &MetaPeer) -> std::result::Result<MetaStatus, MetaError> {
        if peer.raft_id == self.inner.raft_id {
            return Ok(self.status());
        }
        let deadline = Instant::now() + FORWARD_WINDOW;
        match call(
            self.inner.transport.as_ref(),
            self.inner.directory.uuid(),
            peer,
            &MetaRequest::Status,
            deadline,
        )
        .await?
        {
            MetaReply::Status(s) => Ok(s),
            MetaReply::Error(e) => Err(e),
            other => Err(unexpected(&other)),
        }
    }

    /// The openraft `Raft` (metrics, membership changes, triggers).
    pub fn raft(&self) -> &Raft<MetaTypes> {
        &self.inner.raft
    }

    /// This node's raft id.
    pub fn raft_id(&self) -> u64 {
        self.inner.raft_id
    }

    /// `<dir>/meta`.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Stops raft and closes the log (the directory can be opened again when this returns).
    /// Clones, and the [`MetaService`], answer [`MetaError::Unavailable`] from then on.
    ///
    /// # Errors
    /// [`Error::Raft`] if raft's task failed; the log's error if its final flush failed.
    pub async fn shutdown(&self) -> Result<()> {
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            tasks.drain(..).for_each(|t| t.abort());
        }
        self.inner.raft.shutdown().await.map_err(|e| Error::Raft {
            reason: e.to_string(),
        })?;
        match &self.inner.log {
            Some(log) => log.clone().close().await,
            None => Ok(()),
        }
    }
}

/// Who asks to join, in [`MetaRaft::join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The joiner's node id.
    pub id: String,
    /// `host:port` of its peer port.
    pub cluster_addr: String,
    /// `host:port` of its RESP port.
    pub client_addr: String,
    /// The name of the cluster it means to join.
    pub cluster_name: String,
}

/// What a successful [`MetaRaft::join`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The cluster's uuid.
    pub cluster_uuid: u128,
    /// The joiner's raft id: open its [`MetaRaft`] with it.
    pub raft_id: u64,
    /// The joiner's coordinator slot.
    pub slot: u8,
}

/// The file in `<data-dir>/meta/` where a joiner keeps what [`MetaRaft::join`] answered, so a
/// restart opens the same raft id in the same cluster without asking again.
pub const JOINED_FILE: &str = "joined";

/// Version byte of [`JOINED_FILE`].
const JOINED_VERSION: u8 = 1;

/// `[version 1][raft_id u64 LE][slot u8][cluster_uuid u128 LE]`.
const JOINED_LEN: usize = 1 + 8 + 1 + 16;

impl Joined {
    /// Writes this registration to `<data_dir>/meta/joined`, atomically and durably (a
    /// temporary file, `fsync`, rename, `fsync` of the directory).
    ///
    /// # Errors
    /// [`Error::Io`] creating the directory or writing the file.
    ///
    /// # Example
    /// ```
    /// use kv_meta::Joined;
    /// let dir = tempfile::tempdir()?;
    /// assert_eq!(Joined::load(dir.path())?, None);
    /// let joined = Joined { cluster_uuid: 0xabc, raft_id: 4, slot: 3 };
    /// joined.save(dir.path())?;
    /// assert_eq!(Joined::load(dir.path())?, Some(joined));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        let meta = data_dir.join("meta");
        std::fs::create_dir_all(&meta).map_err(|source| Error::Io {
            op: "create",
            path: meta.clone(),
            source,
        })?;
        let mut bytes = Vec::with_capacity(JOINED_LEN);
        bytes.push(JOINED_VERSION);
        bytes.extend_from_slice(&self.raft_id.to_le_bytes());
        bytes.push(self.slot);
        bytes.extend_from_slice(&self.cluster_uuid.to_le_bytes());
        kv_wal::durable::write_file_atomic(&meta.join(JOINED_FILE), &bytes)?;
        Ok(())
    }

    /// Reads `<data_dir>/meta/joined`: `None` if there is none (a node that never joined).
    ///
    /// # Errors
    /// [`Error::Io`] reading it; [`Error::JoinedCorrupt`] for a file of another length or
    /// version (it is never written partly: the write is atomic).
    pub fn load(data_dir: &Path) -> Result<Option<Joined>> {
        let path = data_dir.join("meta").join(JOINED_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    op: "read",
                    path,
                    source,
                });
            }
        };
        let corrupt = |reason: String| Error::JoinedCorrupt {
            path: path.clone(),
            reason,
        };
        if bytes.len() != JOINED_LEN {
            return Err(corrupt(format!(
                "{} bytes, expected {JOINED_LEN}",
                bytes.len()
            )));
        }
        if bytes[0] != JOINED_VERSION {
            return Err(corrupt(format!("version {}", bytes[0])));
        }
        let mut raft_id = [0u8; 8];
        raft_id.copy_from_slice(&bytes[1..9]);
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&bytes[10..26]);
        Ok(Some(Joined {
            raft_id: u64::from_le_bytes(raft_id),
            slot: bytes[9],
            cluster_uuid: u128::from_le_bytes(uuid),
        }))
    }
}

/// `config` validated, shared as openraft takes it.
fn validated(config: Config) -> Result<Arc<Config>> {
    Ok(Arc::new(config.validate().map_err(|e| Error::Raft {
        reason: e.to_string(),
    })?))
}

fn too_many_hops() -> MetaError {
    unavailable(format!(
        "forwarded {MAX_FORWARD_HOPS} times without reaching the leader"
    ))
}

pub(crate) fn unexpected(reply: &MetaReply) -> MetaError {
    MetaError::BadRequest {
        reason: format!("unexpected answer {reply:?}"),
    }
}

/// Sends `req` to `peer` with the time left until `deadline`, and decodes the answer.
async fn call(
    transport: &dyn MetaTransport,
    uuid: u128,
    peer: &MetaPeer,
    req: &MetaRequest,
    deadline: Instant,
) -> std::result::Result<MetaReply, MetaError> {
    let body = req.encode_in(uuid).map_err(unavailable)?;
    let timeout = deadline.saturating_duration_since(Instant::now());
    let answer = transport
        .call(peer, body, timeout)
        .await
        .map_err(unavailable)?;
    MetaReply::decode(&answer)
}
