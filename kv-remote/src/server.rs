//! The serving side: [`ReplicaServer`] answers the replica protocol for one node's replica.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use kv_cluster::Replica;
use kv_net::{
    BoxFuture, Handler, Identity, PeerFilter, PeerInfo, Server, ServerOptions, ServerStats,
    StreamHandler, StreamSink,
};
use kv_node::Write;
use parking_lot::RwLock;

use crate::convert::{
    compaction_to_wire, ranges_from_wire, swap_to_wire, time_to_wire, versioned_to_wire,
};
use crate::error::{Error, Result};
use crate::export::Exports;
use crate::meta::{MetaHandler, NO_META_SERVICE};
use crate::protocol::{Envelope, LeafDigest, PROTOCOL_VERSION, RemoteError, Request, Response};
use crate::range_stream::StreamError;
use crate::receiver::RangeReceiver;

/// What a node answers a request other than [`Request::Meta`] from a node its member filter
/// refuses ([`ReplicaServer::set_member_filter`]), as [`RemoteError::Failed`]'s message.
pub const NOT_A_MEMBER: &str = "not a member";

/// Most leaves a [`Request::Digests`] may ask for (as
/// [`Replica::digests`](kv_cluster::Replica::digests)'s default clamps to).
pub const MAX_LEAVES: u32 = 1 << 16;

/// Serves a node's [`Replica`] to the coordinators of the cluster over kv-net: each request of
/// the replica protocol ([`Request`]) is one call on the replica, answered with a
/// [`Response`]; a replica's error travels as a [`RemoteError`] that the caller turns back
/// into the same [`kv_cluster::Error`].
///
/// Reads answered from the node's in-memory index ([`Request::ReadVersion`],
/// [`Request::ReadVersions`], [`Request::Held`], [`Request::Fence`], [`Request::LastFlush`],
/// [`Request::ExpiringKeys`]) run inline on the connection's task (two thread hops fewer; a
/// `kv_node`-backed replica answers them without touching a disk); everything else runs on
/// the server's blocking pool. A request that does not decode, names an unknown operation or
/// carries another protocol version is answered with [`RemoteError::BadRequest`] or
/// [`RemoteError::UnsupportedVersion`], and the server goes on serving.
///
/// [`Request::Meta`] bodies go to the node's [`MetaHandler`]
/// ([`ReplicaServer::set_meta_handler`]), whose future runs as a task on the server's runtime
/// (kv-net's async handler path); without one they are refused with
/// [`RemoteError::Failed`] naming [`NO_META_SERVICE`].
///
/// Dropping it closes the listener and every connection, and ends its export sessions.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use kv_cluster::{MemoryReplica, Replica, Version, Write};
/// use kv_net::{Identity, Peers, PeersOptions, ServerOptions};
/// use kv_remote::{RemoteReplica, ReplicaServer};
///
/// let cluster = 0xC1;
/// let node2 = Arc::new(MemoryReplica::new("node2")?);
/// let server = ReplicaServer::start(Identity::new(cluster, "node2"), ServerOptions::new(), node2)?;
/// let peers = Arc::new(Peers::start(Identity::new(cluster, "node1"), PeersOptions::new())?);
/// peers.add_peer("node2", server.local_addr())?;
/// assert!(peers.wait_connected("node2", Duration::from_secs(5)));
///
/// let remote = RemoteReplica::new("node2".parse()?, peers, Duration::from_secs(1));
/// remote.apply(1, Write { key: b"k", value: Some(b"v"), version: Version::new(5), expires: None })?;
/// assert_eq!(remote.read(1, b"k")?.map(|c| (c.value, c.version)), Some((Some("v".into()), Version::new(5))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ReplicaServer {
    server: Server,
    exports: Arc<ReplicaHandler>,
}

impl std::fmt::Debug for ReplicaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaServer")
            .field("local_addr", &self.server.local_addr())
            .field("replica", &self.exports.replica.id())
            .finish_non_exhaustive()
    }
}

impl ReplicaServer {
    /// Listens on [`ServerOptions::listen`] as node `identity` and serves `replica`.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if the listener cannot be bound or its runtime started.
    pub fn start(
        identity: Identity,
        options: ServerOptions,
        replica: Arc<dyn Replica>,
    ) -> Result<ReplicaServer> {
        Self::start_inner(identity, options, replica, false)
    }

    /// As [`start`](ReplicaServer::start), and the data operations (reads and writes of keys,
    /// batches included) are answered on the connection's task instead of the blocking pool,
    /// which saves two thread hops per request: for a replica whose reads never block and
    /// whose writes never wait for an fsync (a `kv-node` under periodic sync). A replica that
    /// can block must not be served this way: it would stall the server's async workers.
    ///
    /// # Errors
    ///
    /// As [`start`](ReplicaServer::start).
    pub fn start_inline_data(
        identity: Identity,
        options: ServerOptions,
        replica: Arc<dyn Replica>,
    ) -> Result<ReplicaServer> {
        Self::start_inner(identity, options, replica, true)
    }

    fn start_inner(
        identity: Identity,
        options: ServerOptions,
        replica: Arc<dyn Replica>,
        inline_data: bool,
    ) -> Result<ReplicaServer> {
        let handler = Arc::new(ReplicaHandler {
            exports: Exports::new(Arc::clone(&replica)),
            replica,
            inline_data,
            meta: RwLock::new(None),
            filtered: AtomicBool::new(false),
            members: RwLock::new(None),
            ranges: RwLock::new(None),
        });
        let server = Server::start_with_streams(
            identity,
            options,
            SharedHandler(Arc::clone(&handler)),
            SharedHandler(Arc::clone(&handler)),
        )
        .map_err(Error::Transport)?;
        Ok(ReplicaServer {
            server,
            exports: handler,
        })
    }

    /// The address it listens on (with the port chosen, if it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The ring epoch announced in later handshakes.
    pub fn set_epoch(&self, epoch: u64) {
        self.server.set_epoch(epoch);
    }

    /// The listener's counts of connections accepted, refused and failed, and its last error
    /// (kv-net's [`Server::stats`]).
    pub fn stats(&self) -> ServerStats {
        self.server.stats()
    }

    /// Export sessions open now.
    pub fn open_exports(&self) -> usize {
        self.exports.exports.open_sessions()
    }

    /// Serves [`Request::Meta`] with `handler` from now on (`None`: refuses them with
    /// [`NO_META_SERVICE`], as a server does until it is given one). Set after the start, so a
    /// node can serve its data before its metadata service exists; requests already running
    /// finish with the handler they started with.
    ///
    /// # Example
    ///
    /// See [`MetaHandler`].
    pub fn set_meta_handler(&self, handler: Option<Arc<dyn MetaHandler>>) {
        *self.exports.meta.write() = handler;
    }

    /// Serves the replica only to the nodes `members` allows from now on (`None`, the
    /// default: to every node its listener accepts). A request from any other node is answered
    /// with [`RemoteError::Failed`] naming [`NOT_A_MEMBER`], except [`Request::Meta`], which
    /// goes to the metadata service whoever sends it: a node joining the cluster connects
    /// (kv-net's [`PeerFilter`] lets any node of the cluster in) and asks to join through it
    /// before it is a member. Asked per request, so a filter over shared state follows the
    /// membership as it changes.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use kv_cluster::{MemoryReplica, Replica};
    /// use kv_net::{Identity, PeerFilter, Peers, PeersOptions, ServerOptions};
    /// use kv_remote::{NOT_A_MEMBER, RemoteReplica, ReplicaServer};
    ///
    /// let server = ReplicaServer::start(
    ///     Identity::new(7, "n2"), ServerOptions::new(), Arc::new(MemoryReplica::new("n2")?))?;
    /// server.set_member_filter(Some(PeerFilter::only(["n1", "n2"])));
    /// let peers = Arc::new(Peers::start(Identity::new(7, "n4"), PeersOptions::new())?);
    /// peers.add_peer("n2", server.local_addr())?;
    /// assert!(peers.wait_connected("n2", Duration::from_secs(5)));
    /// let stranger = RemoteReplica::new("n2".parse()?, peers, Duration::from_secs(5));
    /// let refused = stranger.held().unwrap_err();
    /// assert!(format!("{:?}", refused).contains(NOT_A_MEMBER));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_member_filter(&self, members: Option<PeerFilter>) {
        let mut slot = self.exports.members.write();
        self.exports
            .filtered
            .store(members.is_some(), Ordering::Release);
        *slot = members;
    }

    /// Takes range streams (a membership change's data, `docs/membership.md` §3.4) into
    /// `receiver` from now on (`None`, the default: refuses them with
    /// [`StreamError::NoReceiver`]). Streams are taken only from the nodes the member filter
    /// allows ([`StreamError::NotAMember`] otherwise). Streams already running keep the
    /// receiver they opened with.
    ///
    /// # Example
    ///
    /// See [`RangeStreamer`](crate::RangeStreamer).
    pub fn set_range_receiver(&self, receiver: Option<Arc<RangeReceiver>>) {
        *self.exports.ranges.write() = receiver;
    }
}

/// The handler shared with the server's tasks.
struct SharedHandler(Arc<ReplicaHandler>);

struct ReplicaHandler {
    replica: Arc<dyn Replica>,
    exports: Exports,
    /// Data operations answered on the connection's task ([`ReplicaServer::start_inline_data`]).
    inline_data: bool,
    /// The metadata service, if this node runs one ([`ReplicaServer::set_meta_handler`]).
    meta: RwLock<Option<Arc<dyn MetaHandler>>>,
    /// `members` is set: without one, requests skip its lock (the data path's common case).
    filtered: AtomicBool,
    /// The nodes served ([`ReplicaServer::set_member_filter`]).
    members: RwLock<Option<PeerFilter>>,
    /// Where range streams go ([`ReplicaServer::set_range_receiver`]).
    ranges: RwLock<Option<Arc<RangeReceiver>>>,
}

/// Range streams: from members only, to the receiver set (if any).
impl StreamHandler for SharedHandler {
    fn open(
        &self,
        from: &PeerInfo,
        header: Bytes,
    ) -> std::result::Result<Box<dyn StreamSink>, String> {
        let h = &self.0;
        if !h.is_member(&from.node_id) {
            let e = StreamError::NotAMember {
                node: from.node_id.clone(),
            };
            tracing::warn!(from = %from.node_id, "range stream from a non-member refused");
            return Err(e.to_string());
        }
        let receiver = h.ranges.read().clone();
        match receiver {
            None => Err(StreamError::NoReceiver.to_string()),
            Some(r) => r.open(from, header).map_err(|e| e.to_string()),
        }
    }
}

/// The response for a replica's result.
fn reply<T>(r: kv_cluster::Result<T>, ok: impl FnOnce(T) -> Response) -> Response {
    match r {
        Ok(v) => ok(v),
        Err(e) => Response::Failed(RemoteError::from_cluster(&e)),
    }
}

fn writes(entries: &[crate::protocol::Entry]) -> Vec<Write<'_>> {
    entries
        .iter()
        .map(crate::protocol::Entry::as_write)
        .collect()
}

impl ReplicaHandler {
    /// Whether node `id` is served the replica ([`ReplicaServer::set_member_filter`]).
    fn is_member(&self, id: &str) -> bool {
        if !self.filtered.load(Ordering::Acquire) {
            return true;
        }
        self.members.read().as_ref().is_none_or(|m| m.allows(id))
    }

    fn serve(&self, req: Request) -> Response {
        let r = &self.replica;
        match req {
            Request::Apply { epoch, write } => {
                reply(r.apply(epoch, write.as_write()), Response::Applied)
            }
            Request::ApplySwap {
                epoch,
                write,
                read_value,
            } => reply(r.apply_swap(epoch, write.as_write(), read_value), |s| {
                Response::Swapped(swap_to_wire(s))
            }),
            Request::ApplyBatch { epoch, writes: ws } => {
                reply(r.apply_batch(epoch, &writes(&ws)), |n| {
                    Response::Count(n as u64)
                })
            }
            Request::Read { epoch, key } => reply(r.read(epoch, &key), |v| {
                Response::Value(versioned_to_wire(v))
            }),
            Request::ReadVersion { epoch, key } => reply(r.read_version(epoch, &key), |v| {
                Response::Version(v.map(|v| v.as_u64()))
            }),
            Request::ReadMany { epoch, keys } => {
                let keys: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
                reply(r.read_many(epoch, &keys), |vs| {
                    Response::Values(vs.into_iter().map(versioned_to_wire).collect())
                })
            }
            Request::ReadVersions { epoch, keys } => {
                let keys: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
                reply(r.read_versions(epoch, &keys), |vs| {
                    Response::Versions(vs.into_iter().map(|v| v.map(|v| v.as_u64())).collect())
                })
            }
            Request::Import { epoch, records } => {
                let records: Vec<kv_node::Record> = records
                    .into_iter()
                    .map(crate::protocol::Entry::into_record)
                    .collect();
                reply(r.import(epoch, &records), |n| Response::Count(n as u64))
            }
            Request::DropRanges { epoch, ranges } => {
                reply(r.drop_ranges(epoch, &ranges_from_wire(ranges)), |n| {
                    Response::Count(n as u64)
                })
            }
            Request::CountInRanges { ranges } => {
                reply(r.count_in_ranges(&ranges_from_wire(ranges)), |c| {
                    Response::Counted(c.into())
                })
            }
            Request::Reserve { ranges, keys } => {
                r.reserve(&ranges_from_wire(ranges), keys);
                Response::Done
            }
            Request::Held => reply(r.held(), |c| Response::Counted(c.into())),
            Request::Fence { epoch } => {
                r.fence(epoch);
                Response::Done
            }
            Request::Sync => reply(r.sync(), |()| Response::Done),
            Request::Compact => reply(r.compact(), |c| Response::Compacted(compaction_to_wire(&c))),
            Request::LastFlush => Response::LastFlush(time_to_wire(r.last_flush())),
            Request::ExpiringKeys => match r.expiring_keys() {
                Some(n) => Response::Count(n),
                None => Response::Failed(RemoteError::Failed {
                    message: "this node does not count its keys with an expiry".into(),
                }),
            },
            Request::Digests {
                epoch,
                range,
                leaves,
            } => {
                if leaves == 0 || leaves > MAX_LEAVES {
                    return Response::Failed(RemoteError::BadRequest {
                        reason: format!("{leaves} leaves asked; 1 to {MAX_LEAVES} are served"),
                    });
                }
                reply(r.digests(epoch, range.into(), leaves), |ds| {
                    Response::Digests(ds.into_iter().map(LeafDigest::from).collect())
                })
            }
            Request::ExportOpen {
                epoch,
                ranges,
                batch_size,
            } => self
                .exports
                .open(epoch, ranges_from_wire(ranges), batch_size),
            Request::ExportNext { session } => self.exports.next(session),
            Request::ExportClose { session } => self.exports.close(session),
            // With a handler, answered on the async path (`handle_async`) instead.
            Request::Meta(_) => Response::Failed(RemoteError::Failed {
                message: NO_META_SERVICE.into(),
            }),
        }
    }
}

impl Handler<Envelope<Request>, Response> for SharedHandler {
    fn handle(&self, from: &PeerInfo, req: Envelope<Request>) -> Response {
        match req {
            Envelope::Current(req) => {
                if !matches!(req, Request::Meta(_)) && !self.0.is_member(&from.node_id) {
                    return Response::Failed(RemoteError::Failed {
                        message: NOT_A_MEMBER.into(),
                    });
                }
                self.0.serve(req)
            }
            Envelope::Unsupported(found) => Response::Failed(RemoteError::UnsupportedVersion {
                found,
                supported: PROTOCOL_VERSION,
            }),
            Envelope::Undecodable(reason) => Response::Failed(RemoteError::BadRequest {
                reason: format!("the request does not decode (an unknown operation?): {reason}"),
            }),
        }
    }

    fn handle_async(
        &self,
        from: &PeerInfo,
        req: &Envelope<Request>,
    ) -> Option<BoxFuture<'static, Response>> {
        let Envelope::Current(Request::Meta(body)) = req else {
            return None;
        };
        // No handler: `handle` refuses it, inline (`may_block`).
        let handler = self.0.meta.read().clone()?;
        let answer = handler.handle(from, body.clone());
        Some(Box::pin(async move { Response::Meta(answer.await) }))
    }

    fn may_block(&self, req: &Envelope<Request>) -> bool {
        if self.0.inline_data
            && matches!(
                req,
                Envelope::Current(
                    Request::Apply { .. }
                        | Request::ApplySwap { .. }
                        | Request::ApplyBatch { .. }
                        | Request::Read { .. }
                        | Request::ReadMany { .. }
                )
            )
        {
            return false;
        }
        !matches!(
            req,
            Envelope::Current(
                Request::ReadVersion { .. }
                    | Request::ReadVersions { .. }
                    | Request::Held
                    | Request::Fence { .. }
                    | Request::LastFlush
                    | Request::ExpiringKeys
                    | Request::Meta(_)
            ) | Envelope::Unsupported(_)
                | Envelope::Undecodable(_)
        )
    }
}
