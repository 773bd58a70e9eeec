//! `MetaNetwork`: openraft's network over a [`MetaTransport`] (membership.md §2.3).
//!
//! kv-meta does not depend on kv-net or kv-remote: the node gives it a transport that sends a
//! body to a peer and returns the answer's body (kv-remote's `MetaClient` in a node process),
//! and serves the bodies it receives with a [`MetaService`](crate::MetaService).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::protocol::{MetaReply, MetaRequest};
use crate::raft::{MetaNode, MetaTypes, MetaWatch};

/// A future that borrows nothing and may move between threads (the same type as kv-net's
/// `BoxFuture<'static, T>`).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A node another node sends meta requests to: its node id (what the transport knows it by),
/// its raft id and its peer address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaPeer {
    /// The raft id.
    pub raft_id: u64,
    /// The node id (`Member`'s key; kv-net's peer name).
    pub id: String,
    /// `host:port` of its peer port.
    pub cluster_addr: String,
}

impl fmt::Display for MetaPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (raft {}) at {}",
            self.id, self.raft_id, self.cluster_addr
        )
    }
}

/// Why a body did not reach its peer, or its answer did not come back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No answer within the timeout (the request may have been served).
    #[error("no answer from {peer} within {timeout:?}")]
    Timeout {
        /// The peer.
        peer: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The peer cannot be reached now (not connected, unknown, connection lost).
    #[error("{peer} is unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The peer answered with an error of the carrying protocol (no metadata service, an
    /// older build, ...).
    #[error("{peer} failed the request: {reason}")]
    Failed {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
}

/// Sends a meta protocol body to a peer and returns its answer's body.
///
/// In a node process this is kv-remote's `MetaClient` over the node's kv-net transport (a
/// few lines in the node: map `kv_remote::Error` to a [`TransportError`]); the peer must be
/// known to the transport (the node adds every member's `cluster_addr` under its id).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use kv_meta::{BoxFuture, MetaPeer, MetaTransport, TransportError};
///
/// /// A transport that reaches nobody.
/// struct Nowhere;
/// impl MetaTransport for Nowhere {
///     fn call(&self, to: &MetaPeer, _: Bytes, _: Duration)
///         -> BoxFuture<Result<Bytes, TransportError>> {
///         let peer = to.id.clone();
///         Box::pin(async move { Err(TransportError::Unreachable { peer, reason: "nowhere".into() }) })
///     }
/// }
/// ```
pub trait MetaTransport: Send + Sync + 'static {
    /// Sends `body` to `to` at once; the future is its answer, or an error after `timeout`.
    fn call(
        &self,
        to: &MetaPeer,
        body: Bytes,
        timeout: Duration,
    ) -> BoxFuture<Result<Bytes, TransportError>>;
}

/// Raft id → node id, for the transport: the members of the applied metadata, and before
/// `Bootstrap` is applied (raft must replicate it first), the seed list given at bootstrap.
#[derive(Debug, Clone)]
pub(crate) struct Directory {
    seeds: Arc<RwLock<BTreeMap<u64, String>>>,
    watch: MetaWatch,
    /// The cluster uuid this node was configured with (0: none; then the applied one).
    uuid: Arc<RwLock<u128>>,
}

impl Directory {
    pub(crate) fn new(watch: MetaWatch) -> Directory {
        Directory {
            seeds: Arc::default(),
            watch,
            uuid: Arc::default(),
        }
    }

    /// Sets the uuid this node belongs to, before anything is applied (a static node computes
    /// it, a joiner learns it from `Join`).
    pub(crate) fn set_uuid(&self, uuid: u128) {
        if let Ok(mut u) = self.uuid.write() {
            *u = uuid;
        }
    }

    /// The cluster uuid this node belongs to: the configured one, else the applied
    /// metadata's; 0 while neither is known (a joiner before `Join`, a test's bare raft).
    pub(crate) fn uuid(&self) -> u128 {
        let configured = self.uuid.read().map(|u| *u).unwrap_or(0);
        if configured != 0 {
            configured
        } else {
            self.watch.borrow().meta.cluster_uuid
        }
    }

    pub(crate) fn seed(&self, raft_id: u64, id: &str) {
        if let Ok(mut seeds) = self.seeds.write() {
            seeds.insert(raft_id, id.to_string());
        }
    }

    /// The node id of raft node `raft_id`.
    pub(crate) fn id_of(&self, raft_id: u64) -> Option<String> {
        let applied = self
            .watch
            .borrow()
            .meta
            .members
            .iter()
            .find(|(_, m)| m.raft_id == raft_id)
            .map(|(id, _)| id.clone());
        applied.or_else(|| self.seeds.read().ok()?.get(&raft_id).cloned())
    }

    /// The peer of raft node `node`.
    pub(crate) fn peer(&self, raft_id: u64, node: &MetaNode) -> Option<MetaPeer> {
        Some(MetaPeer {
            raft_id,
            id: self.id_of(raft_id)?,
            cluster_addr: node.cluster_addr.clone(),
        })
    }
}

/// openraft's network factory: one [`MetaConnection`] per target, all over one
/// [`MetaTransport`].
#[derive(Clone)]
pub struct MetaNetwork {
    me: u64,
    transport: Arc<dyn MetaTransport>,
    directory: Directory,
}

impl fmt::Debug for MetaNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaNetwork").finish_non_exhaustive()
    }
}

impl MetaNetwork {
    pub(crate) fn new(
        me: u64,
        transport: Arc<dyn MetaTransport>,
        directory: Directory,
    ) -> MetaNetwork {
        MetaNetwork {
            me,
            transport,
            directory,
        }
    }
}

impl RaftNetworkFactory<MetaTypes> for MetaNetwork {
    type Network = MetaConnection;

    async fn new_client(&mut self, target: u64, node: &MetaNode) -> MetaConnection {
        MetaConnection {
            me: self.me,
            target,
            node: node.clone(),
            transport: Arc::clone(&self.transport),
            directory: self.directory.clone(),
        }
    }
}

/// openraft's connection to one target raft node: each RPC is one [`MetaRequest`] sent with
/// the transport, its [`MetaReply`] decoded.
pub struct MetaConnection {
    me: u64,
    target: u64,
    node: MetaNode,
    transport: Arc<dyn MetaTransport>,
    directory: Directory,
}

impl fmt::Debug for MetaConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaConnection")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

type RpcError<E = openraft::error::Infallible> = RPCError<u64, MetaNode, E>;

fn unreachable<E: std::error::Error>(reason: impl fmt::Display) -> RpcError<E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(reason.to_string())))
}

impl MetaConnection {
    /// Sends `req` and decodes the answer; errors map onto openraft's: a timeout is
    /// `Timeout`, an unknown or unreachable peer `Unreachable` (openraft backs off), a bad
    /// answer `Network`, a raft that cannot serve `Unreachable`.
    async fn send<E: std::error::Error>(
        &self,
        action: RPCTypes,
        req: MetaRequest,
        option: &RPCOption,
    ) -> Result<MetaReply, RpcError<E>> {
        let Some(peer) = self.directory.peer(self.target, &self.node) else {
            return Err(unreachable(format!(
                "raft node {} has no known node id",
                self.target
            )));
        };
        let body = req
            .encode_in(self.directory.uuid())
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let timeout = option.hard_ttl();
        match self.transport.call(&peer, body, timeout).await {
            Ok(answer) => match MetaReply::decode(&answer) {
                Ok(MetaReply::Error(e)) => Err(unreachable(e)),
                Ok(reply) => Ok(reply),
                Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
            },
            Err(TransportError::Timeout { .. }) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.me,
                target: self.target,
                timeout,
            })),
            Err(e) => Err(unreachable(e)),
        }
    }
}

fn unexpected<E: std::error::Error>(reply: &MetaReply, wanted: &str) -> RpcError<E> {
    let e = MetaError::BadRequest {
        reason: format!("expected a {wanted} answer, got {reply:?}"),
    };
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<MetaTypes> for MetaConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MetaTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcError<RaftError<u64>>> {
        let reply = self
            .send(
                RPCTypes::AppendEntries,
                MetaRequest::AppendEntries(rpc),
                &option,
            )
            .await?;
        match reply {
            MetaReply::AppendEntries(r) => Ok(r),
            other => Err(unexpected(&other, "AppendEntries")),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<MetaTypes>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcError<RaftError<u64, InstallSnapshotError>>> {
        let reply = self
            .send(
                RPCTypes::InstallSnapshot,
                MetaRequest::InstallSnapshot(rpc),
                &option,
            )
            .await?;
        match reply {
            MetaReply::InstallSnapshot(Ok(r)) => Ok(r),
            MetaReply::InstallSnapshot(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(
                self.target,
                RaftError::APIError(e),
            ))),
            other => Err(unexpected(&other, "InstallSnapshot")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcError<RaftError<u64>>> {
        let reply = self
            .send(RPCTypes::Vote, MetaRequest::Vote(rpc), &option)
            .await?;
        match reply {
            MetaReply::Vote(r) => Ok(r),
            other => Err(unexpected(&other, "Vote")),
        }
    }
}
