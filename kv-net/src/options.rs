//! Who a node is, and the knobs of each side of the transport, with their defaults.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::frame::DEFAULT_MAX_FRAME_LEN;
use crate::tls::Tls;

/// This node, as it announces itself in every handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The cluster's id: peers with another one are refused.
    pub cluster_id: u128,
    /// This node's id.
    pub node_id: String,
    /// The ring epoch this node is at (it can be changed later with
    /// [`Peers::set_epoch`](crate::Peers::set_epoch)).
    pub epoch: u64,
}

impl Identity {
    /// A node of a cluster, at epoch 0.
    pub fn new(cluster_id: u128, node_id: impl Into<String>) -> Self {
        Self {
            cluster_id,
            node_id: node_id.into(),
            epoch: 0,
        }
    }

    /// The same, at `epoch`.
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }
}

/// Options of the dialing side, [`Peers`](crate::Peers).
#[derive(Debug, Clone)]
pub struct PeersOptions {
    pub(crate) max_frame_len: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) max_queued_bytes: usize,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) liveness_timeout: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) worker_threads: usize,
    pub(crate) runtime: Option<tokio::runtime::Handle>,
    pub(crate) seed: u64,
    pub(crate) stream_buffer_chunks: usize,
    pub(crate) stream_stall_timeout: Duration,
    pub(crate) tls: Option<Tls>,
    #[cfg(feature = "sim")]
    pub(crate) sim: bool,
}

impl Default for PeersOptions {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(2),
            max_in_flight: 1024,
            max_queued_bytes: 64 * 1024 * 1024,
            heartbeat_interval: Duration::from_millis(500),
            liveness_timeout: Duration::from_secs(3),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
            worker_threads: 2,
            runtime: None,
            seed: 0,
            stream_buffer_chunks: 8,
            stream_stall_timeout: Duration::from_secs(10),
            tls: None,
            #[cfg(feature = "sim")]
            sim: false,
        }
    }
}

impl PeersOptions {
    /// The defaults (each setter names its own).
    pub fn new() -> Self {
        Self::default()
    }

    /// Dials over turmoil's simulated network instead of real sockets (feature `sim`): the
    /// peers must start inside a turmoil host, with [`PeersOptions::runtime`] set to the
    /// host's runtime. Framing, handshake, reconnects and liveness are the real code, on the
    /// host's paused clock. TLS is not simulated: a connection with both fails to connect.
    #[cfg(feature = "sim")]
    pub fn sim(mut self) -> Self {
        self.sim = true;
        self
    }

    /// Longest frame sent or accepted, after its length field. Default
    /// [`DEFAULT_MAX_FRAME_LEN`] (16 MiB + 128 KiB).
    pub fn max_frame_len(mut self, bytes: usize) -> Self {
        self.max_frame_len = bytes;
        self
    }

    /// Time allowed for a TCP connect. Default 1 s.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Time allowed for the handshake. Default 2 s.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// Requests in flight per peer; one more is refused at once with
    /// [`Error::Overloaded`](crate::Error::Overloaded) (callers do not wait). Default 1024.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Bytes of requests queued per peer and not yet written to its socket; a request that
    /// would pass it is refused at once with
    /// [`Error::QueueFull`](crate::Error::QueueFull). Default 64 MiB.
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// Time between two pings to a peer. Default 500 ms.
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.heartbeat_interval = d;
        self
    }

    /// A peer from which nothing (no answer, no pong) arrived for this long is not alive
    /// ([`Peers::is_alive`](crate::Peers::is_alive)). A fixed timeout: several heartbeat
    /// intervals, so one lost or late pong is not a death. Default 3 s.
    pub fn liveness_timeout(mut self, d: Duration) -> Self {
        self.liveness_timeout = d;
        self
    }

    /// Reconnect delays: from `min`, doubling up to `max`, each jittered in `[d/2, d]`.
    /// Default 50 ms to 5 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }

    /// Threads of the transport's own tokio runtime. Default 2.
    pub fn worker_threads(mut self, n: usize) -> Self {
        self.worker_threads = n.max(1);
        self
    }

    /// Runs the transport on this runtime (a multi-threaded one) instead of its own: a
    /// server whose connection tasks await answers from peers then wakes them without a hop
    /// between runtimes. The runtime must outlive the [`Peers`](crate::Peers). Default: its
    /// own runtime of [`worker_threads`](PeersOptions::worker_threads) threads.
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Seed of the reconnect jitter and of the faults' random choices. Default 0.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Chunks a bulk stream's sender buffers before [`StreamSender::send`](crate::StreamSender::send)
    /// waits. Default 8.
    pub fn stream_buffer_chunks(mut self, n: usize) -> Self {
        self.stream_buffer_chunks = n.max(1);
        self
    }

    /// How long [`StreamSender::send`](crate::StreamSender::send) waits for room in a full
    /// buffer before it fails the stream (a receiver that takes nothing for this long is hung
    /// or partitioned away). Default 10 s.
    pub fn stream_stall_timeout(mut self, d: Duration) -> Self {
        self.stream_stall_timeout = d;
        self
    }

    /// Connects over TLS with mutual authentication (the listeners must use TLS too, with
    /// the same CA). Default: plain TCP.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// Options of the listening side, [`Server`](crate::Server).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub(crate) listen: SocketAddr,
    pub(crate) max_frame_len: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) max_connections: usize,
    pub(crate) peer_filter: Option<PeerFilter>,
    pub(crate) worker_threads: usize,
    pub(crate) max_blocking_threads: usize,
    pub(crate) runtime: Option<tokio::runtime::Handle>,
    pub(crate) stream_buffer_chunks: usize,
    pub(crate) tls: Option<Tls>,
    #[cfg(feature = "sim")]
    pub(crate) sim: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            handshake_timeout: Duration::from_secs(2),
            max_in_flight: 1024,
            max_connections: 1024,
            peer_filter: None,
            worker_threads: 2,
            max_blocking_threads: 64,
            runtime: None,
            stream_buffer_chunks: 8,
            tls: None,
            #[cfg(feature = "sim")]
            sim: false,
        }
    }
}

impl ServerOptions {
    /// Listens on turmoil's simulated network instead of a real socket (feature `sim`): the
    /// server must start inside a turmoil host, with [`ServerOptions::runtime`] set to the
    /// host's runtime; [`ServerOptions::listen`]'s port is the simulated one (0.0.0.0 binds
    /// the host's address). Everything above the socket (framing, handshake, handlers) is the
    /// real code. TLS is not simulated: with both, every connection fails its handshake.
    #[cfg(feature = "sim")]
    pub fn sim(mut self) -> Self {
        self.sim = true;
        self
    }

    /// The defaults (each setter names its own).
    pub fn new() -> Self {
        Self::default()
    }

    /// Address to listen on. Default `127.0.0.1:0` (loopback, a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Longest frame accepted or sent, after its length field. Default
    /// [`DEFAULT_MAX_FRAME_LEN`].
    pub fn max_frame_len(mut self, bytes: usize) -> Self {
        self.max_frame_len = bytes;
        self
    }

    /// Time allowed for a connection's handshake. Default 2 s.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// Requests of one connection handled at once; past it the server stops reading that
    /// connection until one finishes (backpressure through TCP). Default 1024.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Connections served at once (handshakes included); past it the server stops accepting
    /// until one closes. Default 1024.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Only these node ids may connect (others are refused with
    /// [`Error::UnknownNode`](crate::Error::UnknownNode)): a fixed list, the convenient form
    /// of [`ServerOptions::peer_filter`] with [`PeerFilter::only`]. Default: any node of the
    /// cluster.
    pub fn allowed_peers<I: IntoIterator<Item = S>, S: Into<String>>(self, peers: I) -> Self {
        self.peer_filter(PeerFilter::only(peers))
    }

    /// Only node ids `filter` allows may connect (others are refused with
    /// [`Error::UnknownNode`](crate::Error::UnknownNode)). The filter is asked at each
    /// connection's handshake, so a set of members that changes at run time (a predicate over
    /// shared state) admits a new member from its next connection on; connections already
    /// established are not re-judged. Default: any node of the cluster.
    ///
    /// # Example
    ///
    /// ```
    /// use std::collections::HashSet;
    /// use std::sync::{Arc, RwLock};
    /// use kv_net::{PeerFilter, ServerOptions};
    ///
    /// let members = Arc::new(RwLock::new(HashSet::from(["n1".to_string()])));
    /// let seen = Arc::clone(&members);
    /// let filter = PeerFilter::new(move |id| seen.read().is_ok_and(|m| m.contains(id)));
    /// let _options = ServerOptions::new().peer_filter(filter.clone());
    /// assert!(!filter.allows("n2"));
    /// members.write().unwrap().insert("n2".to_string());
    /// assert!(filter.allows("n2"));
    /// ```
    pub fn peer_filter(mut self, filter: PeerFilter) -> Self {
        self.peer_filter = Some(filter);
        self
    }

    /// Threads of the server's own tokio runtime. Default 2.
    pub fn worker_threads(mut self, n: usize) -> Self {
        self.worker_threads = n.max(1);
        self
    }

    /// Threads that run the synchronous handlers (tokio's blocking pool). Default 64.
    pub fn max_blocking_threads(mut self, n: usize) -> Self {
        self.max_blocking_threads = n.max(1);
        self
    }

    /// Serves on this runtime (a multi-threaded one) instead of its own (whose
    /// [`worker_threads`](ServerOptions::worker_threads) and
    /// [`max_blocking_threads`](ServerOptions::max_blocking_threads) are then unused).
    /// Dropping the [`Server`](crate::Server) still closes the listener and every
    /// connection. The runtime must outlive the server. Default: its own runtime.
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Chunks of a bulk stream received and not yet given to its sink; past it the server
    /// stops reading the stream's connection. Default 8.
    pub fn stream_buffer_chunks(mut self, n: usize) -> Self {
        self.stream_buffer_chunks = n.max(1);
        self
    }

    /// Accepts only TLS connections whose client certificate the cluster's CA signed.
    /// Default: plain TCP.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// Which node ids a [`Server`](crate::Server) accepts
/// ([`ServerOptions::peer_filter`]): a predicate over the id a connection announces in its
/// handshake, asked once per connection. Cheap to clone (shared).
#[derive(Clone)]
pub struct PeerFilter(Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl PeerFilter {
    /// A filter that allows the ids for which `allows` is true. It runs on the server's async
    /// task during a handshake: it must be quick and must not block for long (a read lock
    /// over a set of members is fine).
    pub fn new<F>(allows: F) -> Self
    where
        F: Fn(&str) -> bool + Send + Sync + 'static,
    {
        Self(Arc::new(allows))
    }

    /// A filter that allows exactly these ids (a fixed list).
    ///
    /// # Example
    ///
    /// ```
    /// let filter = kv_net::PeerFilter::only(["n1", "n2"]);
    /// assert!(filter.allows("n2"));
    /// assert!(!filter.allows("n3"));
    /// ```
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(ids: I) -> Self {
        let ids: HashSet<String> = ids.into_iter().map(Into::into).collect();
        Self::new(move |id| ids.contains(id))
    }

    /// Whether node `id` may connect.
    pub fn allows(&self, id: &str) -> bool {
        (self.0)(id)
    }
}

impl std::fmt::Debug for PeerFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerFilter").finish_non_exhaustive()
    }
}
