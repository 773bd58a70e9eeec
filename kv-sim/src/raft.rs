//! Each node host's metadata raft: kv-meta's real `MetaRaft` over the node's kv-net (on
//! turmoil), its log a [`MemLog`] kept outside the host so that a crash keeps it
//! (membership.md §4.1, §4.2).
//!
//! The static members are raft ids 1–3, the voters of the `BootstrapAt` of the ring they
//! open (node1 initializes raft and proposes it; the others wait for it, as kv-cli's static
//! bootstrap does). The joiner asks node1 to `Join` (forwarded to the leader: it registers
//! the node and adds it as a raft learner) and opens its raft with the id it got, as a node
//! process started with `--join` does. Each start builds a fresh state machine that openraft
//! fills by replaying the kept log up to its committed id; a node then catches up (the
//! leader's committed index applied) before it serves clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_meta::{
    BoxFuture, Command, JoinRequest, MemLog, MetaMachine, MetaPeer, MetaRaft, MetaTransport,
    TransportError,
};
use kv_remote::{MetaClient, RemoteBackend, ReplicaServer};
use kv_ring::NodeId;
use openraft::SnapshotPolicy;
use parking_lot::Mutex;

use crate::meta::{Meta, Record};
use crate::{CLIENT_PORT, CLUSTER, NODES, PEER_PORT};

/// The cluster's name (the joiner's `Join` names it).
const CLUSTER_NAME: &str = "sim";
/// How long one bootstrap or catch-up attempt waits before trying again.
const ATTEMPT: Duration = Duration::from_secs(5);

/// What outlives the node processes: each node's raft log, the joiner's registration (its
/// `meta/joined` file), the bootstrap every static member runs, and the run's [`Record`].
pub(crate) struct RaftDisks {
    logs: [MemLog; NODES.len()],
    joined: Mutex<Option<kv_meta::Joined>>,
    bootstrap: Command,
    pub(crate) record: Arc<Record>,
}

impl RaftDisks {
    /// Empty logs for every node host, the static members to bootstrap with `bootstrap`.
    pub(crate) fn new(bootstrap: Command) -> RaftDisks {
        RaftDisks {
            logs: Default::default(),
            joined: Mutex::new(None),
            bootstrap,
            record: Arc::default(),
        }
    }
}

impl std::fmt::Debug for RaftDisks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftDisks").finish_non_exhaustive()
    }
}

/// kv-meta's raft configuration (membership.md §2.1), with no snapshots: a run commits a few
/// thousand entries, and a restarted node's fresh state machine is rebuilt from the whole
/// kept log (with a snapshot policy the log would be purged behind a snapshot that, in
/// memory, a crash loses).
fn config() -> openraft::Config {
    openraft::Config {
        snapshot_policy: SnapshotPolicy::Never,
        ..kv_meta::meta_config(CLUSTER_NAME)
    }
}

/// kv-remote's `MetaClient` as kv-meta's transport, as kv-cli's `RemoteTransport`: a peer
/// the node's kv-net does not know yet (the joiner, a leader a joiner is sent to) is added
/// at the host the request names, resolved by turmoil.
struct SimTransport {
    client: MetaClient,
    backend: Arc<RemoteBackend>,
}

impl MetaTransport for SimTransport {
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
        let host = to.cluster_addr.split(':').next().unwrap_or_default();
        if !known
            && NODES.contains(&host)
            && let Ok(node) = NodeId::new(&to.id)
        {
            // Best effort: a failure shows as the call's own (an unknown peer).
            let _ = self
                .backend
                .add_peer(node, SocketAddr::new(turmoil::lookup(host), PEER_PORT));
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

/// Starts node `index`'s metadata raft on the host's runtime and serves other nodes' meta
/// requests on `server`; returns once the node has caught up with the leader (as a node
/// process does before it serves clients). A static member bootstraps; the joiner joins
/// first (once per run: a restart reuses its raft id, as `meta/joined` does).
pub(crate) async fn start(
    index: usize,
    backend: &Arc<RemoteBackend>,
    server: &ReplicaServer,
    disks: &Arc<RaftDisks>,
) -> Meta {
    let id = NODES[index];
    let transport = Arc::new(SimTransport {
        client: MetaClient::new(Arc::clone(backend.peers())),
        backend: Arc::clone(backend),
    });
    let statics = disks
        .bootstrap
        .bootstrap_members()
        .map(|m| m.len())
        .unwrap_or_default();
    let (raft_id, uuid) = if index < statics {
        (index as u64 + 1, CLUSTER)
    } else {
        let joined = join(id, transport.as_ref(), disks).await;
        (joined.raft_id, joined.cluster_uuid)
    };
    let raft = loop {
        let opened = MetaRaft::open_in_memory(
            disks.logs[index].clone(),
            MetaMachine::in_memory(),
            raft_id,
            id,
            config(),
            transport.clone(),
        )
        .await;
        match opened {
            Ok(raft) => break raft,
            // Not expected (the configuration is valid): logged, and tried again.
            Err(e) => {
                disks
                    .record
                    .note(format!("{:?} {id}: raft did not open: {e}", crate::now()));
                tokio::time::sleep(ATTEMPT).await;
            }
        }
    };
    raft.set_cluster_uuid(uuid);
    let service = raft.service();
    let watch = raft.watch();
    let static_ids: Vec<String> = disks
        .bootstrap
        .bootstrap_members()
        .map(|m| m.iter().map(|m| m.id.clone()).collect())
        .unwrap_or_default();
    // A member (any state, or a static one before the bootstrap is applied) is answered
    // everything; the joiner, before it is registered, only `Join` and `Status`.
    server.set_meta_handler(Some(Arc::new(
        move |from: &kv_net::PeerInfo, body: Bytes| {
            let member = static_ids.contains(&from.node_id)
                || watch.borrow().meta.members.contains_key(&from.node_id);
            service.handle_from(&from.node_id, member, body)
        },
    )));
    if index < statics {
        while raft.bootstrap(&disks.bootstrap, ATTEMPT).await.is_err() {}
    }
    // Caught up: the leader's committed index is applied here.
    loop {
        let attempt = async {
            let index = raft.read_index().await?;
            raft.wait_applied(index, ATTEMPT).await
        };
        let outcome = attempt.await;
        if std::env::var_os("SIM_META_DEBUG").is_some() {
            let m = raft.raft().metrics().borrow().clone();
            eprintln!(
                "{:?} {id} catch-up: {outcome:?} (leader {:?}, term {}, state {:?})",
                crate::now(),
                m.current_leader,
                m.current_term,
                m.state
            );
        }
        if outcome.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Meta {
        raft,
        record: Arc::clone(&disks.record),
    }
}

/// The joiner's registration: kept from an earlier start, or asked of node1 (forwarded to
/// the leader) until the cluster answers.
async fn join(id: &str, transport: &dyn MetaTransport, disks: &RaftDisks) -> kv_meta::Joined {
    if let Some(joined) = *disks.joined.lock() {
        return joined;
    }
    let seed = MetaPeer {
        raft_id: 0,
        id: NODES[0].to_string(),
        cluster_addr: format!("{}:{PEER_PORT}", NODES[0]),
    };
    let request = JoinRequest {
        id: id.to_string(),
        cluster_addr: format!("{id}:{PEER_PORT}"),
        client_addr: format!("{id}:{CLIENT_PORT}"),
        cluster_name: CLUSTER_NAME.to_string(),
    };
    loop {
        match MetaRaft::join(transport, &seed, &request).await {
            Ok(joined) => {
                *disks.joined.lock() = Some(joined);
                return joined;
            }
            Err(e) => {
                if !matches!(e, kv_meta::MetaError::Unavailable { .. }) {
                    disks
                        .record
                        .note(format!("{:?} {id}: join refused: {e}", crate::now()));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
