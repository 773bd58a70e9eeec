//! The crate's error type: what goes wrong reaching a replica over the network, as the
//! source of a [`kv_cluster::Error::Remote`] (or returned by [`RemoteBackend::new`] and
//! [`ReplicaServer::start`]).
//!
//! [`RemoteBackend::new`]: crate::RemoteBackend::new
//! [`ReplicaServer::start`]: crate::ReplicaServer::start

/// What went wrong between the coordinator and a replica in another process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed (not connected, the connection dropped, a frame too large, the
    /// peer failed to execute the request, ...).
    #[error("transport")]
    Transport(#[source] kv_net::Error),
    /// The replica failed the request; `message` is its error chain.
    #[error("the replica failed: {message}")]
    Failed {
        /// The replica's error, as text.
        message: String,
    },
    /// The replica could not make sense of the request (a body that does not decode, an
    /// unknown operation, an argument out of bounds, an unknown export session).
    #[error("the replica refused a bad request: {reason}")]
    BadRequest {
        /// Why.
        reason: String,
    },
    /// The two sides speak different versions of the replica protocol: a message carried
    /// version `found` and its receiver speaks `supported` (the replica refusing our request,
    /// or this node refusing the replica's answer).
    #[error(
        "replica protocol mismatch: a message of version {found} reached a receiver of version {supported}"
    )]
    UnsupportedVersion {
        /// The version the message carried.
        found: u8,
        /// The version its receiver speaks.
        supported: u8,
    },
    /// The replica answered with a response of another kind than the request asks for.
    #[error("the replica answered {response} to a {request} request")]
    UnexpectedResponse {
        /// The request.
        request: &'static str,
        /// The kind of response received.
        response: &'static str,
    },
    /// A range stream was cancelled, or refused, because a stream of the same task under a
    /// newer term runs (`docs/membership.md` §3.4: at most one stream per task).
    #[error("task {task} of change {change}: term {term} superseded by term {by}")]
    Superseded {
        /// The change.
        change: u64,
        /// The task.
        task: u64,
        /// This stream's term.
        term: u64,
        /// The newer term (this one's own when cancelled by
        /// [`RangeStreamer::cancel`](crate::RangeStreamer::cancel)).
        by: u64,
    },
    /// A member has no peer address configured.
    #[error("node {node} has no peer address: it is not in the peer list")]
    UnknownPeer {
        /// The node id.
        node: String,
    },
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn the_transport_variant_does_not_repeat_its_source() {
        let e = Error::Transport(kv_net::Error::NotConnected {
            peer: "node2".into(),
        });
        let source = e.source().map(ToString::to_string).unwrap_or_default();
        assert_eq!(source, "not connected to node2");
        assert!(!e.to_string().contains(&source));
    }
}
