//! A storage node reached over the network: the **replica protocol** between a coordinator
//! and the nodes of its cluster, on top of the peer transport `kv-net`.
//!
//! - [`Request`] / [`Response`] ([`protocol`](crate::Request)): one request per method of
//!   [`kv_cluster::Replica`], postcard bodies behind a version byte ([`PROTOCOL_VERSION`]),
//!   specified byte by byte in `docs/format.md` ("Replica protocol"); a replica's error
//!   travels as a [`RemoteError`] that rebuilds the coordinator's error exactly where the
//!   coordinator branches on it (`StaleEpoch`, the invalid requests).
//! - [`ReplicaServer`]: serves a node's replica to the others (a `kv_net::Server`).
//! - [`RemoteReplica`]: a [`kv_cluster::Replica`] in another process; its `start_*` methods
//!   defer the coordinator's ticket and complete it from the transport's reader, so a quorum
//!   waits on every replica at once.
//! - [`RemoteBackend`]: the [`kv_cluster::Backend`] of a node process: its own node local,
//!   every other member remote.
//! - [`RangeStreamer`] / [`RangeReceiver`]: a membership change's data, source to
//!   destination over kv-net bulk streams (format: [`StreamHeader`], [`StreamMessage`],
//!   `docs/format.md` "Range streams"): the source exports its own replica over a task's
//!   ranges and sends chunks and checkpoints, paced by a shared
//!   [`kv_cluster::RateLimiter`]; the destination imports them, syncs before it reports a
//!   checkpoint, and keeps one stream per task (a newer term cancels an older one).
//! - [`MetaHandler`] / [`MetaClient`]: opaque bodies for the node's metadata service
//!   ([`Request::Meta`], kv-meta's raft messages) on the same connections, served as async
//!   tasks; kv-remote knows nothing of raft.
//!
//! # The design decision that matters: the coordinator stays synchronous
//!
//! `kv-cluster` knows nothing of sockets or async runtimes: a remote replica is one more
//! `Replica`, and kv-net owns the runtime behind it. Each request is encoded on the caller's
//! thread before the call returns (so borrowed keys and values need no copying into tasks),
//! and each answer is decoded on kv-net's reader task and handed straight to the waiting
//! coordinator ([`kv_net::Peers::send_with`]), with no thread or channel per request.
//! An export's records flow from the listener to the dialer, against the direction of
//! kv-net's bulk streams, so it is paged over ordinary requests instead (a session per
//! export on the node, read lazily).
//!
//! Anchors: Cassandra's internode messaging (one verb per replica operation, a version per
//! connection), tarpc's request/response enums.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use kv_cluster::{MemoryReplica, Replica, Version, Write};
//! use kv_net::{Identity, Peers, PeersOptions, ServerOptions};
//! use kv_remote::{RemoteReplica, ReplicaServer};
//!
//! let node2 = Arc::new(MemoryReplica::new("node2")?);
//! let server = ReplicaServer::start(Identity::new(7, "node2"), ServerOptions::new(), node2)?;
//! let peers = Arc::new(Peers::start(Identity::new(7, "node1"), PeersOptions::new())?);
//! peers.add_peer("node2", server.local_addr())?;
//! assert!(peers.wait_connected("node2", Duration::from_secs(5)));
//!
//! let remote = RemoteReplica::new("node2".parse()?, peers, Duration::from_secs(1));
//! remote.fence(3);
//! let w = Write { key: b"k", value: Some(b"v"), version: Version::new(1), expires: None };
//! // Routed with an old ring: refused exactly as a local replica refuses it.
//! assert!(matches!(remote.apply(2, w), Err(kv_cluster::Error::StaleEpoch { current: 3, .. })));
//! assert!(remote.apply(3, w)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backend;
mod convert;
mod error;
mod export;
mod meta;
mod protocol;
mod range_stream;
mod receiver;
mod replica;
mod server;
mod streamer;

pub use backend::{HINTS_DIR, RemoteBackend};
pub use error::{Error, Result};
pub use export::{IDLE, MAX_EXPORT_SESSIONS, MAX_PAGE_RECORDS, PAGE_BYTES, PAGE_WAIT};
pub use meta::{MetaClient, MetaHandler, NO_META_SERVICE};
pub use protocol::{
    Compaction, Counts, Entry, LeafDigest, PROTOCOL_VERSION, PreviousEntry, Range, RemoteError,
    Request, Response, Swap, VersionedValue,
};
pub use range_stream::{
    CHECKPOINT_EVERY, MAX_CHUNK_BYTES, MAX_CHUNK_RECORDS, STREAM_FORMAT_VERSION, StreamError,
    StreamHeader, StreamMessage,
};
pub use receiver::{ImportTarget, RangeReceiver, SYNC_INTERVAL, StreamEvent, StreamReport};
pub use replica::{DEFAULT_MAINTENANCE_TIMEOUT, IMPORT_REQUEST_BYTES, RemoteReplica, ReplicaPeers};
pub use server::{MAX_LEAVES, NOT_A_MEMBER, ReplicaServer};
pub use streamer::{FINISH_TIMEOUT, RangeStreamer, StreamRange, StreamSummary, StreamTask};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
