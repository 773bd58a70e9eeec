//! The node-to-node transport of kvstore: framed, multiplexed RPC over TCP between the nodes
//! of a cluster, usable from synchronous code.
//!
//! - [`Peers`] (the dialing side) keeps one connection per peer and carries many requests in
//!   flight on it, answered by request id in any order. [`Peers::send`] never blocks: it posts
//!   each [`Reply`] (the response, or a typed error) to a `std::sync::mpsc` channel the caller
//!   waits on with a deadline, so a coordinator sends to every replica and takes the first
//!   `W` answers. [`Peers::call`] is the same for async code.
//! - [`Server`] (the listening side) accepts peers, runs the handshake, and answers each
//!   request with a [`Handler`]: synchronously on its blocking pool, inline for requests the
//!   handler says never block, or as an async task of its own ([`Handler::handle_async`], for
//!   requests that await other nodes). Which node ids may connect is a predicate
//!   ([`PeerFilter`]) asked at each handshake, so the set can change at run time, as the
//!   dialing side's ([`Peers::add_peer`], [`Peers::remove_peer`]).
//! - Every connection starts with a handshake ([`Hello`]: magic, protocol version, cluster
//!   id, node id, ring epoch); a peer of another cluster, another version, or not the node
//!   expected at its address is refused on both sides with a typed [`Error`] and one log line.
//! - Every request has a deadline ([`Error::Timeout`]), on tokio's clock like liveness, so a
//!   paused clock (a simulation) drives both on virtual time; a connection that drops fails its
//!   requests in flight ([`Error::Disconnected`], never resent) and is remade with capped,
//!   jittered exponential backoff. Requests in flight and bytes queued per peer are bounded
//!   ([`Error::Overloaded`], [`Error::QueueFull`]: refused at once, the caller never waits).
//! - Heartbeats: a ping per peer every [`PeersOptions::heartbeat_interval`]; a peer heard
//!   from within [`PeersOptions::liveness_timeout`] (a fixed timeout) is alive
//!   ([`Peers::is_alive`], [`Peers::status`]: last seen, round trip, in flight, reconnects).
//! - Bulk streams ([`Peers::open_stream`], [`StreamHandler`]) each use a connection of their
//!   own, so a long transfer never delays requests.
//! - Optional TLS with mutual authentication ([`Tls`], rustls): every node's certificate is
//!   signed by the cluster's CA, and a dialer checks the listener's names the node expected.
//! - [`Faults`] drops, delays, duplicates or black-holes frames per peer and direction, for
//!   tests; off by default, and then one atomic load per frame.
//!
//! The wire format is specified byte by byte in `docs/format.md` ("Peer protocol", version
//! [`PROTOCOL_VERSION`]); bodies are [postcard](https://docs.rs/postcard).
//!
//! # The design decision that matters: async inside, synchronous outside
//!
//! The coordinator (`kv-cluster`) is synchronous code and stays free of any async runtime.
//! The transport therefore owns its tokio runtime (a couple of threads), and its callers talk
//! to it through channels: a request is encoded on the caller's thread and queued to the
//! peer's writer task; the answer is decoded in the reader task and posted to the caller's
//! channel. One channel can collect answers from many peers, which is exactly the shape of a
//! quorum. On the server side the storage handlers are synchronous too (storage blocks on
//! disks and locks) and run on tokio's blocking pool, never on the async workers; requests
//! that are async by nature (raft messages) get a future of their own instead.
//!
//! Anchors: tokio-util's `LengthDelimitedCodec` (the frame length, checked against a limit
//! before anything is reserved), tarpc's request-id multiplexing and per-request deadlines,
//! Cassandra's separate streaming connections, TCP's smoothed RTT for the heartbeat's round
//! trip, and the AWS "exponential backoff and jitter" note for reconnects.
//!
//! # Example
//!
//! A quorum read: ask three replicas, take the first two answers.
//!
//! ```
//! use std::sync::mpsc;
//! use std::time::{Duration, Instant};
//! use kv_net::{Identity, PeerInfo, Peers, PeersOptions, Server, ServerOptions};
//!
//! let cluster = 0xC1u128;
//! let replicas: Vec<Server> = (1..=3)
//!     .map(|i| {
//!         Server::start(Identity::new(cluster, format!("n{i}")), ServerOptions::new(),
//!             move |_: &PeerInfo, key: String| format!("{key}@n{i}"))
//!     })
//!     .collect::<Result<_, _>>()?;
//! let peers: Peers<String, String> = Peers::start(Identity::new(cluster, "coordinator"), PeersOptions::new())?;
//! for (i, server) in replicas.iter().enumerate() {
//!     peers.add_peer(&format!("n{}", i + 1), server.local_addr())?;
//! }
//! for i in 1..=3 {
//!     assert!(peers.wait_connected(&format!("n{i}"), Duration::from_secs(5)));
//! }
//!
//! let (tx, rx) = mpsc::channel();
//! for i in 1..=3 {
//!     peers.send(&format!("n{i}"), &"k".to_string(), Duration::from_secs(2), &tx);
//! }
//! let deadline = Instant::now() + Duration::from_secs(2);
//! let mut answers = Vec::new();
//! while answers.len() < 2 {
//!     let reply = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("two answers in time");
//!     if let Ok(value) = reply.result {
//!         answers.push(value);
//!     }
//! }
//! assert!(answers.iter().all(|v| v.starts_with("k@n")));
//! # Ok::<(), kv_net::Error>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backoff;
mod conn;
mod error;
mod faults;
mod frame;
mod handshake;
mod io;
mod net_stream;
mod options;
mod peer_state;
mod peers;
mod server;
mod socket;
mod stream;
mod tls;

pub use error::{Error, Result};
pub use faults::{Direction, Fault, Faults};
pub use frame::{DEFAULT_MAX_FRAME_LEN, FRAME_HEADER_LEN, Frame, FrameCodec, FrameKind};
pub use handshake::{
    HANDSHAKE_MAX_FRAME_LEN, Hello, MAGIC, PREAMBLE_LEN, PROTOCOL_VERSION, Purpose, opening_bytes,
    preamble,
};
pub use options::{Identity, PeerFilter, PeersOptions, ServerOptions};
pub use peers::{PeerStatus, Peers, Reply, RequestId};
pub use server::{BoxFuture, Handler, PeerInfo, Server, ServerStats};
pub use stream::{StreamHandler, StreamSender, StreamSink};
pub use tls::Tls;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
