//! The cluster-metadata channel of the replica protocol: [`Request::Meta`] carries an opaque
//! body (kv-meta's raft messages, with their own version byte) to a node's [`MetaHandler`]
//! and [`Response::Meta`] carries its answer back, on the same connection and port as the
//! data. kv-remote knows nothing of what the bodies mean.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_net::{BoxFuture, PeerInfo};

use crate::error::{Error, Result};
use crate::protocol::{RemoteError, Request, Response};
use crate::replica::ReplicaPeers;

/// What a node without a [`MetaHandler`] answers a [`Request::Meta`] with, as
/// [`RemoteError::Failed`]'s message (and [`Error::Failed`]'s at the caller).
pub const NO_META_SERVICE: &str = "no metadata service";

/// Answers the metadata bodies ([`Request::Meta`]) a [`ReplicaServer`](crate::ReplicaServer)
/// receives: the node's metadata service (kv-meta's raft) behind the replica protocol.
///
/// [`handle`](MetaHandler::handle) is called on the connection's async task and must return
/// quickly; the future it returns runs as a task of its own on the server's runtime (kv-net's
/// async handler path: no thread hop, no `block_on`), so it may await other nodes (a
/// follower forwarding to its leader) without holding a thread. Its output is the answer's
/// body, sent back as [`Response::Meta`]; errors of the metadata service travel inside the
/// body, in its own encoding. A future that panics fails its request (the caller gets
/// [`Error::Transport`] with kv-net's `Remote` error); the server keeps serving. A future
/// still running when its connection closes is dropped.
///
/// A closure `Fn(&PeerInfo, Bytes) -> BoxFuture<'static, Bytes>` is a handler.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use bytes::Bytes;
/// use kv_cluster::MemoryReplica;
/// use kv_net::{BoxFuture, Identity, PeerInfo, Peers, PeersOptions, ServerOptions};
/// use kv_remote::{MetaClient, MetaHandler, ReplicaServer};
///
/// // Node n2's metadata service says who asked.
/// let service = |from: &PeerInfo, body: Bytes| -> BoxFuture<'static, Bytes> {
///     let answer = format!("{} asked {:?}", from.node_id, body);
///     Box::pin(async move { Bytes::from(answer) })
/// };
/// let server = ReplicaServer::start(
///     Identity::new(7, "n2"), ServerOptions::new(), Arc::new(MemoryReplica::new("n2")?))?;
/// server.set_meta_handler(Some(Arc::new(service)));
///
/// let peers = Arc::new(Peers::start(Identity::new(7, "n1"), PeersOptions::new())?);
/// peers.add_peer("n2", server.local_addr())?;
/// assert!(peers.wait_connected("n2", Duration::from_secs(5)));
/// let meta = MetaClient::new(peers);
/// let answer = meta.call_blocking("n2", Bytes::from_static(b"vote"), Duration::from_secs(5))?;
/// assert_eq!(answer, Bytes::from("n1 asked b\"vote\""));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait MetaHandler: Send + Sync + 'static {
    /// The answer to `body` from `from` (the node its connection's handshake announced).
    fn handle(&self, from: &PeerInfo, body: Bytes) -> BoxFuture<'static, Bytes>;
}

impl<F> MetaHandler for F
where
    F: Fn(&PeerInfo, Bytes) -> BoxFuture<'static, Bytes> + Send + Sync + 'static,
{
    fn handle(&self, from: &PeerInfo, body: Bytes) -> BoxFuture<'static, Bytes> {
        self(from, body)
    }
}

/// Sends metadata bodies ([`Request::Meta`]) to peers over a node's shared transport
/// ([`ReplicaPeers`], the one its [`RemoteReplica`](crate::RemoteReplica)s use) and hands back
/// their [`MetaHandler`]'s answers. Cheap to clone.
///
/// # Example
///
/// See [`MetaHandler`].
#[derive(Debug, Clone)]
pub struct MetaClient {
    peers: Arc<ReplicaPeers>,
}

impl MetaClient {
    /// A client over `peers` (each target must have been added there under its node id).
    pub fn new(peers: Arc<ReplicaPeers>) -> MetaClient {
        MetaClient { peers }
    }

    /// The transport it sends on.
    pub fn peers(&self) -> &Arc<ReplicaPeers> {
        &self.peers
    }

    /// Sends `body` to `peer` at once and returns a future of the answer's body, up to
    /// `timeout`. The future borrows nothing and works on any runtime (a [`MetaHandler`]'s
    /// future may await it to forward a request to another node).
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] (no answer in time: kv-net's `Timeout`; not connected, the
    /// connection dropped, ...); [`Error::Failed`] with [`NO_META_SERVICE`] if the peer has no
    /// metadata service; [`Error::BadRequest`] if the peer does not know the `Meta` request
    /// (a build from before it); [`Error::UnsupportedVersion`];
    /// [`Error::UnexpectedResponse`].
    pub fn call(
        &self,
        peer: &str,
        body: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<Bytes>> + Send + 'static {
        let answer = self.peers.call(peer, &Request::Meta(body), timeout);
        async move { meta_answer(answer.await) }
    }

    /// As [`MetaClient::call`], waiting on the calling thread (never call it from a thread of
    /// the transport's runtime).
    ///
    /// # Errors
    ///
    /// As [`MetaClient::call`].
    pub fn call_blocking(&self, peer: &str, body: Bytes, timeout: Duration) -> Result<Bytes> {
        meta_answer(
            self.peers
                .call_blocking(peer, &Request::Meta(body), timeout),
        )
    }
}

/// The body of a `Meta` answer, or the error it carries.
fn meta_answer(answer: kv_net::Result<Response>) -> Result<Bytes> {
    match answer {
        Err(e) => Err(Error::Transport(e)),
        Ok(Response::Meta(body)) => Ok(body),
        Ok(Response::Failed(e)) => Err(match e {
            RemoteError::Failed { message } => Error::Failed { message },
            RemoteError::BadRequest { reason } => Error::BadRequest { reason },
            RemoteError::UnsupportedVersion { found, supported } => {
                Error::UnsupportedVersion { found, supported }
            }
            // The data path's refusals do not answer a metadata request; should one arrive,
            // its text is kept.
            other => Error::Failed {
                message: format!("{other:?}"),
            },
        }),
        Ok(other) => Err(Error::UnexpectedResponse {
            request: "Meta",
            response: other.name(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_typed_errors() {
        let body = Bytes::from_static(b"x");
        assert_eq!(meta_answer(Ok(Response::Meta(body.clone()))).unwrap(), body);
        let refused = meta_answer(Ok(Response::Failed(RemoteError::Failed {
            message: NO_META_SERVICE.into(),
        })));
        assert!(matches!(refused, Err(Error::Failed { message }) if message == NO_META_SERVICE));
        let old = meta_answer(Ok(Response::Failed(RemoteError::BadRequest {
            reason: "unknown variant".into(),
        })));
        assert!(matches!(old, Err(Error::BadRequest { .. })));
        let odd = meta_answer(Ok(Response::Done));
        assert!(matches!(
            odd,
            Err(Error::UnexpectedResponse {
                request: "Meta",
                response: "Done"
            })
        ));
        let lost = meta_answer(Err(kv_net::Error::NotConnected { peer: "n2".into() }));
        assert!(matches!(lost, Err(Error::Transport(_))));
    }
}
