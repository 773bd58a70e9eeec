//! `MetaService`: how a node answers other nodes' meta requests with its raft (membership.md
//! §2.3, §2.4, §2.5): raft's RPCs into the local `Raft`, `Propose`, `Join` and `ReadIndex` on
//! the leader (elsewhere answered with `ForwardToLeader`), `Status`.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};

use crate::command::{Command, MetaResponse};
use crate::error::MetaError;
use crate::protocol::{MetaReply, MetaRequest, MetaStatus};
use crate::raft::MetaNode;
use crate::raft::network::{BoxFuture, Directory, MetaPeer};
use crate::raft::runner::{Shared, unavailable};

/// The peer that openraft's `ForwardToLeader` names, if its node id is known.
fn leader_of(directory: &Directory, f: &ForwardToLeader<u64, MetaNode>) -> Option<MetaPeer> {
    let (id, node) = (f.leader_id?, f.leader_node.as_ref()?);
    directory.peer(id, node)
}

pub(crate) fn status(inner: &Shared) -> MetaStatus {
    let metrics = inner.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let learners = membership.learner_ids().collect();
    MetaStatus {
        raft_id: inner.raft_id,
        leader: metrics.current_leader,
        term: metrics.current_term,
        voters: voters.into_iter().collect(),
        learners,
        applied: metrics.last_applied.map_or(0, |l| l.index),
        epoch: inner.machine.current().meta.epoch,
    }
}

/// Answers one request with the local raft; never forwards (the asker follows
/// [`MetaError::ForwardToLeader`]), so a request costs at most one hop per node it visits.
pub(crate) async fn serve(inner: &Shared, req: MetaRequest) -> MetaReply {
    let raft = &inner.raft;
    let forward = |f: &ForwardToLeader<u64, MetaNode>| {
        MetaReply::Error(MetaError::ForwardToLeader {
            leader: leader_of(&inner.directory, f),
        })
    };
    match req {
        MetaRequest::AppendEntries(r) => match raft.append_entries(r).await {
            Ok(r) => MetaReply::AppendEntries(r),
            Err(e) => MetaReply::Error(unavailable(e)),
        },
        MetaRequest::Vote(r) => match raft.vote(r).await {
            Ok(r) => MetaReply::Vote(r),
            Err(e) => MetaReply::Error(unavailable(e)),
        },
        MetaRequest::InstallSnapshot(r) => match raft.install_snapshot(r).await {
            Ok(r) => MetaReply::InstallSnapshot(Ok(r)),
            Err(RaftError::APIError(e)) => MetaReply::InstallSnapshot(Err(e)),
            Err(e) => MetaReply::Error(unavailable(e)),
        },
        MetaRequest::Propose(cmd) => match raft.client_write(cmd).await {
            Ok(r) => MetaReply::Proposed {
                log_id: r.log_id,
                response: r.data,
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => forward(&f),
            Err(e) => MetaReply::Error(unavailable(e)),
        },
        MetaRequest::ReadIndex => match raft.ensure_linearizable().await {
            Ok(id) => MetaReply::ReadIndex {
                index: id.map_or(0, |l| l.index),
            },
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => forward(&f),
            Err(e) => MetaReply::Error(unavailable(e)),
        },
        MetaRequest::Join {
            id,
            cluster_addr,
            client_addr,
            cluster_name,
        } => join(inner, id, cluster_addr, client_addr, cluster_name).await,
        MetaRequest::Status => MetaReply::Status(status(inner)),
    }
}

/// The leader's side of `Join`: `Register` (unless the node is a member at that address
/// already: a joiner asking again), then `add_learner` without waiting for it to catch up
/// (the joiner watches its own applied state).
async fn join(
    inner: &Shared,
    id: String,
    cluster_addr: String,
    client_addr: String,
    cluster_name: String,
) -> MetaReply {
    let raft = &inner.raft;
    let forward = |f: &ForwardToLeader<u64, MetaNode>| {
        MetaReply::Error(MetaError::ForwardToLeader {
            leader: leader_of(&inner.directory, f),
        })
    };
    let current = inner.machine.current();
    if current.meta.is_bootstrapped() && current.meta.cluster_name != cluster_name {
        return MetaReply::Error(MetaError::WrongCluster {
            expected: current.meta.cluster_name.clone(),
            found: cluster_name,
        });
    }
    let known = current
        .meta
        .members
        .get(&id)
        .is_some_and(|m| m.cluster_addr == cluster_addr);
    if !known {
        let register = Command::Register {
            id: id.clone(),
            cluster_addr: cluster_addr.clone(),
            client_addr,
        };
        match raft.client_write(register).await {
            Ok(r) => {
                if let MetaResponse::Refused(e) = r.data {
                    return MetaReply::Error(e);
                }
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => return forward(&f),
            Err(e) => return MetaReply::Error(unavailable(e)),
        }
    }
    let current = inner.machine.current();
    let Some(member) = current.meta.members.get(&id) else {
        return MetaReply::Error(unavailable(format!("{id} is registered but not applied")));
    };
    let node = MetaNode {
        id: member.raft_id,
        cluster_addr: member.cluster_addr.clone(),
    };
    match raft.add_learner(member.raft_id, node, false).await {
        Ok(_) => MetaReply::Joined {
            cluster_uuid: current.meta.cluster_uuid,
            raft_id: member.raft_id,
            slot: member.slot,
        },
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => forward(&f),
        Err(e) => MetaReply::Error(unavailable(e)),
    }
}

/// Answers other nodes' meta protocol bodies with this node's raft (membership.md §2.3): a
/// body in, a body out, whatever carries them. In a node process:
///
/// ```text
/// let service = meta_raft.service();
/// replica_server.set_meta_handler(Some(Arc::new(move |from: &PeerInfo, body: Bytes| {
///     service.handle(&from.node_id, body)
/// })));
/// ```
///
/// A body of another protocol version is answered with [`MetaError::UnsupportedVersion`], one
/// that does not decode with [`MetaError::BadRequest`]; a request only the leader serves
/// (`Propose`, `Join`, `ReadIndex`), on another node, with [`MetaError::ForwardToLeader`].
#[derive(Clone)]
pub struct MetaService {
    inner: Arc<Shared>,
}

impl fmt::Debug for MetaService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaService")
            .field("raft_id", &self.inner.raft_id)
            .finish_non_exhaustive()
    }
}

impl MetaService {
    pub(crate) fn new(inner: Arc<Shared>) -> MetaService {
        MetaService { inner }
    }

    /// The answer to `body`, from node `from` (for the log only: raft checks terms, not
    /// senders), who is taken to be a member: [`MetaService::handle_from`] with `true`.
    pub fn handle(&self, from: &str, body: Bytes) -> BoxFuture<Bytes> {
        self.handle_from(from, true, body)
    }

    /// The answer to `body`, from node `from`. A request carrying another cluster's uuid is
    /// refused with [`MetaError::WrongClusterUuid`] (when both this node and the request know
    /// theirs); a node that is not a `member` is answered only `Join` and `Status`
    /// ([`MetaError::NotAMember`] otherwise): a joiner connects before it is a member.
    pub fn handle_from(&self, from: &str, member: bool, body: Bytes) -> BoxFuture<Bytes> {
        let inner = Arc::clone(&self.inner);
        let from = from.to_string();
        Box::pin(async move {
            let reply = match MetaRequest::decode_in(&body) {
                Ok((uuid, req)) => {
                    let ours = inner.directory.uuid();
                    if uuid != 0 && ours != 0 && uuid != ours {
                        MetaReply::Error(MetaError::WrongClusterUuid {
                            expected: ours,
                            found: uuid,
                        })
                    } else if !member
                        && !matches!(req, MetaRequest::Join { .. } | MetaRequest::Status)
                    {
                        MetaReply::Error(MetaError::NotAMember { id: from.clone() })
                    } else {
                        serve(&inner, req).await
                    }
                }
                Err(e) => {
                    tracing::debug!(%from, error = %e, "meta request refused");
                    MetaReply::Error(e)
                }
            };
            reply.encode().unwrap_or_else(|e| {
                // Encoding our own types does not fail; if it ever does, answer with an error
                // the asker can read rather than nothing.
                MetaReply::Error(unavailable(e))
                    .encode()
                    .unwrap_or_default()
            })
        })
    }
}
