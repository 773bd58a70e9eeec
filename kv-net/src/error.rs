//! The crate's error type.

use std::net::SocketAddr;
use std::time::Duration;

/// What went wrong in the transport.
///
/// Each `Display` says what failed and where (peer, address, lengths); a cause is a `#[source]`
/// field, never repeated in the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket operation failed (`op` says which: connect, read, write, bind, accept).
    #[error("{op} {addr}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The remote (or, for `bind`, local) address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An I/O error of a tokio-util `Framed` driven by [`FrameCodec`](crate::FrameCodec) (the
    /// crate's own connections report [`Error::Io`] instead, with the address).
    #[error("I/O on a framed stream")]
    FramedIo(#[source] std::io::Error),
    /// The runtime that runs the transport's tasks could not be built.
    #[error("starting the transport's runtime")]
    Runtime(#[source] std::io::Error),
    /// A frame header claims more bytes than the configured maximum. Nothing was allocated for
    /// it; the connection is closed.
    #[error("frame of {len} bytes is longer than the limit of {max}")]
    FrameTooLarge {
        /// The length the header claims.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// A frame header claims fewer bytes than a frame's fixed part (kind and request id).
    #[error("frame of {len} bytes is shorter than its 9-byte header")]
    FrameTooShort {
        /// The length the header claims.
        len: u64,
    },
    /// A frame of a kind this version does not know.
    #[error("unknown frame kind {kind}")]
    UnknownFrameKind {
        /// The kind byte.
        kind: u8,
    },
    /// A frame of a known kind where the protocol does not allow it.
    #[error("unexpected {kind} frame during {during}")]
    UnexpectedFrame {
        /// The kind received.
        kind: &'static str,
        /// The protocol phase.
        during: &'static str,
    },
    /// The connection ended in the middle of a frame or of the handshake.
    #[error("connection closed by {addr} in the middle of a frame ({buffered} bytes buffered)")]
    Truncated {
        /// The remote address.
        addr: SocketAddr,
        /// Bytes of the incomplete frame that had arrived.
        buffered: usize,
    },
    /// The connection ended cleanly before the handshake completed.
    #[error("connection closed by {addr} during the handshake")]
    ClosedDuringHandshake {
        /// The remote address.
        addr: SocketAddr,
    },
    /// The first bytes from the other side are not the peer protocol's magic: not a kvstore
    /// peer (or garbage).
    #[error("bad magic {found:02x?} from {addr}: not a kvstore peer")]
    BadMagic {
        /// The remote address.
        addr: SocketAddr,
        /// The eight bytes received.
        found: [u8; 8],
    },
    /// The other side speaks a protocol version this build does not.
    #[error("{addr} speaks peer protocol version {found}; this node speaks {supported}")]
    UnsupportedVersion {
        /// The remote address.
        addr: SocketAddr,
        /// The version received.
        found: u32,
        /// The version this build speaks.
        supported: u32,
    },
    /// The other side belongs to another cluster.
    #[error("{addr} (node {node}) belongs to cluster {found:#x}, not {expected:#x}")]
    ClusterMismatch {
        /// The remote address.
        addr: SocketAddr,
        /// The node id it announced.
        node: String,
        /// This node's cluster id.
        expected: u128,
        /// The cluster id it announced.
        found: u128,
    },
    /// The node at an address is not the one expected there.
    #[error("{addr} is node {found}, expected node {expected}")]
    NodeIdMismatch {
        /// The remote address.
        addr: SocketAddr,
        /// The node id configured for the address.
        expected: String,
        /// The node id it announced.
        found: String,
    },
    /// A server configured with a list of allowed peers was contacted by another node.
    #[error("{addr} announced node {node}, which is not an allowed peer")]
    UnknownNode {
        /// The remote address.
        addr: SocketAddr,
        /// The node id it announced.
        node: String,
    },
    /// The other side refused the handshake; `reason` is its explanation.
    #[error("{addr} refused the handshake: {reason}")]
    Refused {
        /// The remote address.
        addr: SocketAddr,
        /// What the other side said.
        reason: String,
    },
    /// The handshake did not complete in time.
    #[error("handshake with {addr} did not complete within {after:?}")]
    HandshakeTimeout {
        /// The remote address.
        addr: SocketAddr,
        /// The time allowed.
        after: Duration,
    },
    /// A request got no answer before its deadline. It may or may not have been executed.
    #[error("request {request} to {peer} got no answer within {after:?}")]
    Timeout {
        /// The peer.
        peer: String,
        /// The request id.
        request: u64,
        /// The time allowed.
        after: Duration,
    },
    /// The connection carrying a request dropped before its answer arrived. It may or may not
    /// have been executed; it is never resent by the transport.
    #[error("connection to {peer} dropped with request {request} in flight")]
    Disconnected {
        /// The peer.
        peer: String,
        /// The request id.
        request: u64,
    },
    /// The connection to the peer was cut by [`Faults::reset`](crate::Faults::reset) (tests
    /// and simulations): it is reestablished with backoff.
    #[error("connection to {peer} cut by an injected reset")]
    InjectedReset {
        /// The peer.
        peer: String,
    },
    /// No connection to the peer is up (it is being established or re-established); nothing
    /// was sent.
    #[error("not connected to {peer}")]
    NotConnected {
        /// The peer.
        peer: String,
    },
    /// The peer already has the maximum number of requests in flight; nothing was sent.
    #[error("{peer} has {limit} requests in flight already")]
    Overloaded {
        /// The peer.
        peer: String,
        /// The limit in force.
        limit: usize,
    },
    /// The peer's queue of unwritten requests already holds the maximum number of bytes;
    /// nothing was sent.
    #[error("{peer} has {queued} bytes queued; a request of {len} would pass the limit of {limit}")]
    QueueFull {
        /// The peer.
        peer: String,
        /// Bytes queued.
        queued: usize,
        /// The request's frame length.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// No peer of that node id was added.
    #[error("unknown peer {peer}")]
    UnknownPeer {
        /// The node id asked for.
        peer: String,
    },
    /// A peer of that node id exists already.
    #[error("peer {peer} was added already")]
    DuplicatePeer {
        /// The node id.
        peer: String,
    },
    /// A message could not be encoded.
    #[error("encoding a {what}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The cause.
        #[source]
        source: postcard::Error,
    },
    /// A message body could not be decoded.
    #[error("decoding a {what} from {peer}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The peer (or address) it came from.
        peer: String,
        /// The cause.
        #[source]
        source: postcard::Error,
    },
    /// The peer could not execute the request (it could not decode it, or its handler
    /// panicked); `message` is its explanation.
    #[error("{peer} failed the request: {message}")]
    Remote {
        /// The peer.
        peer: String,
        /// What the peer said.
        message: String,
    },
    /// A bulk stream ended badly (the receiver's sink refused a chunk, or the stream's
    /// connection dropped before the receiver confirmed the end).
    #[error("stream to {peer} failed: {reason}")]
    Stream {
        /// The peer.
        peer: String,
        /// What happened.
        reason: String,
    },
    /// A stream chunk (or its end) carries another sequence number than the next expected.
    #[error("stream frame {found} out of sequence: expected {expected}")]
    OutOfSequence {
        /// The next sequence number expected.
        expected: u64,
        /// The one received.
        found: u64,
    },
    /// TLS could not be set up (`what` says which step).
    #[error("TLS: {what}")]
    Tls {
        /// The step.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A TLS certificate or key file could not be read.
    #[error("reading {path}")]
    TlsFile {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The transport was shut down.
    #[error("the transport is shut down")]
    Shutdown,
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn messages_do_not_repeat_their_source() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let io = || std::io::Error::other("the-cause");
        let postcard_err = || postcard::Error::DeserializeUnexpectedEnd;
        let all = [
            Error::Io {
                op: "connect",
                addr,
                source: io(),
            },
            Error::Runtime(io()),
            Error::FramedIo(io()),
            Error::TlsFile {
                path: "/x".into(),
                source: io(),
            },
            Error::Tls {
                what: "reading the node key",
                source: Box::new(io()),
            },
            Error::Encode {
                what: "request",
                source: postcard_err(),
            },
            Error::Decode {
                what: "response",
                peer: "n1".into(),
                source: postcard_err(),
            },
        ];
        for e in all {
            let source = e.source().expect("has a source").to_string();
            assert!(!e.to_string().contains(&source), "{e} repeats {source}");
        }
    }
}
