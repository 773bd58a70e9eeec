//! The dialing side: [`Peers`], one multiplexed connection per peer, usable from synchronous
//! code.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::runtime::{Handle, Runtime};

use crate::error::{Error, Result};
use crate::faults::{Action, Direction, Faults};
use crate::frame::{FrameKind, frame_bytes};
use crate::handshake::{Hello, Purpose};
use crate::io::Link;
use crate::options::{Identity, PeersOptions};
use crate::peer_state::{Done, PeerState};
use crate::stream::StreamSender;

/// The id of a request, unique per peer for the life of a [`Peers`].
pub type RequestId = u64;

/// The answer to one [`Peers::send`], posted to the caller's channel.
#[derive(Debug)]
pub struct Reply<Resp> {
    /// The peer asked.
    pub peer: Arc<str>,
    /// The id [`Peers::send`] returned (0 if the peer is unknown).
    pub request: RequestId,
    /// The peer's response, or why there is none.
    pub result: Result<Resp>,
}

/// A snapshot of one peer's connection, from [`Peers::status`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PeerStatus {
    /// The peer's node id.
    pub node_id: String,
    /// Its address.
    pub addr: SocketAddr,
    /// A connection is up (handshake done).
    pub connected: bool,
    /// Connected and heard from within the liveness timeout.
    pub alive: bool,
    /// Time since a frame last arrived from it (`None`: never).
    pub last_seen: Option<Duration>,
    /// Smoothed ping round trip (`None`: no pong yet).
    pub rtt: Option<Duration>,
    /// Requests sent and not yet answered.
    pub in_flight: usize,
    /// Connections established after the first.
    pub reconnects: u64,
    /// The ring epoch it announced in its last handshake.
    pub epoch: Option<u64>,
    /// The last connect or handshake error, until a connection succeeds.
    pub last_error: Option<String>,
}

/// The transport's state shared by [`Peers`] and its tasks (no generics: bodies are bytes).
pub(crate) struct Core {
    pub(crate) handle: Handle,
    pub(crate) identity: Identity,
    pub(crate) epoch: AtomicU64,
    pub(crate) options: PeersOptions,
    peers: RwLock<HashMap<String, Arc<PeerState>>>,
    pub(crate) faults: Faults,
    /// The origin of [`Core::now_us`], on tokio's clock (see there).
    base: tokio::time::Instant,
    shut: AtomicBool,
}

impl Core {
    /// Microseconds since `base`, plus one (so that 0 can mean "never"): the clock of
    /// liveness (last seen) and of the heartbeats' round trips. It is tokio's clock, so a
    /// paused runtime (tests, the simulation) drives liveness on virtual time. Read outside
    /// the runtime's context it is the monotonic clock, which is the same unless the clock is
    /// paused; the synchronous methods that report it (`is_alive`, `status`) enter the
    /// runtime first.
    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX - 1) + 1
    }

    pub(crate) fn hello(&self, purpose: Purpose) -> Hello {
        Hello {
            cluster_id: self.identity.cluster_id,
            node_id: self.identity.node_id.clone(),
            epoch: self.epoch.load(Ordering::Relaxed),
            purpose,
        }
    }

    pub(crate) fn peer(&self, id: &str) -> Result<Arc<PeerState>> {
        self.peers
            .read()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::UnknownPeer {
                peer: id.to_string(),
            })
    }

    /// Sends an encoded request body to a peer; `done` is called exactly once.
    fn submit(
        self: &Arc<Self>,
        peer: &str,
        body: Result<Vec<u8>>,
        timeout: Duration,
        done: Done,
    ) -> RequestId {
        if self.shut.load(Ordering::Acquire) {
            done(0, Err(Error::Shutdown));
            return 0;
        }
        let p = match self.peer(peer) {
            Ok(p) => p,
            Err(e) => {
                done(0, Err(e));
                return 0;
            }
        };
        let id = p.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let frame = match body
            .and_then(|b| frame_bytes(FrameKind::Request, id, &b, self.options.max_frame_len))
        {
            Ok(f) => f,
            Err(e) => {
                done(id, Err(e));
                return id;
            }
        };
        let limit = self.options.max_in_flight;
        if p.in_flight.fetch_add(1, Ordering::AcqRel) >= limit {
            p.in_flight.fetch_sub(1, Ordering::AcqRel);
            done(
                id,
                Err(Error::Overloaded {
                    peer: p.id.to_string(),
                    limit,
                }),
            );
            return id;
        }
        let Some(link) = p.link.lock().clone() else {
            p.in_flight.fetch_sub(1, Ordering::AcqRel);
            done(
                id,
                Err(Error::NotConnected {
                    peer: p.id.to_string(),
                }),
            );
            return id;
        };
        let queued = link.queued.load(Ordering::Relaxed);
        if queued + frame.len() > self.options.max_queued_bytes {
            p.in_flight.fetch_sub(1, Ordering::AcqRel);
            done(
                id,
                Err(Error::QueueFull {
                    peer: p.id.to_string(),
                    queued,
                    len: frame.len(),
                    limit: self.options.max_queued_bytes,
                }),
            );
            return id;
        }
        // Pending before sent, so that an answer (or the connection's teardown, which drains
        // the pending requests after the writer has stopped) always finds it.
        p.insert(id, done, timeout);
        if !self.send_frame(&p, &link, frame) {
            p.complete(
                id,
                Err(Error::Disconnected {
                    peer: p.id.to_string(),
                    request: id,
                }),
            );
        }
        id
    }

    /// Queues a frame for a peer's connection, through the faults. False if the connection
    /// is gone.
    pub(crate) fn send_frame(&self, p: &PeerState, link: &Link, frame: Bytes) -> bool {
        match self.faults.decide(&p.id, Direction::Outbound) {
            // A reset is decided on inbound frames only.
            Action::Pass | Action::Reset => {}
            Action::Drop => return true,
            Action::Duplicate => {
                link.queued.fetch_add(frame.len(), Ordering::Relaxed);
                if link.tx.send(frame.clone()).is_err() {
                    return false;
                }
            }
            Action::Delay(d) => {
                let link = link.clone();
                self.handle.spawn(async move {
                    tokio::time::sleep(d).await;
                    link.queued.fetch_add(frame.len(), Ordering::Relaxed);
                    let _ = link.tx.send(frame);
                });
                return true;
            }
        }
        link.queued.fetch_add(frame.len(), Ordering::Relaxed);
        link.tx.send(frame).is_ok()
    }
}

/// The dialing side of the transport: one connection per peer, many requests in flight on
/// each, answered by request id in any order. Generic over the request and response types,
/// which travel postcard-encoded.
///
/// It owns a small tokio runtime (its own threads, unless [`PeersOptions::runtime`] gives it
/// one), so every method but [`Peers::call`] is plain synchronous code (never call the
/// blocking ones from a thread of the runtime it runs on): a caller sends to several peers
/// with one reply channel and waits on it with a deadline (`recv_timeout`), taking the
/// first `W` answers. Each request has its
/// own deadline, after which its reply is [`Error::Timeout`] whatever the peer does.
///
/// Connections are made in the background when a peer is added, and remade after a drop with
/// exponential backoff (capped, jittered). A request sent while a peer is not connected fails
/// at once with [`Error::NotConnected`]; a request in flight on a connection that drops fails
/// with [`Error::Disconnected`]; nothing is ever resent by the transport.
///
/// # Example
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use kv_net::{Identity, Peers, PeersOptions, PeerInfo, Server, ServerOptions};
///
/// // Node "b" doubles numbers.
/// let server = Server::start(
///     Identity::new(7, "b"),
///     ServerOptions::new(),
///     |_from: &PeerInfo, n: u64| n * 2,
/// )?;
/// // Node "a" asks it.
/// let peers: Peers<u64, u64> = Peers::start(Identity::new(7, "a"), PeersOptions::new())?;
/// peers.add_peer("b", server.local_addr())?;
/// assert!(peers.wait_connected("b", Duration::from_secs(5)));
///
/// let (tx, rx) = mpsc::channel();
/// for n in 1..=3 {
///     peers.send("b", &n, Duration::from_secs(5), &tx);
/// }
/// let mut answers: Vec<u64> = (0..3).map(|_| rx.recv().unwrap().result.unwrap()).collect();
/// answers.sort();
/// assert_eq!(answers, [2, 4, 6]);
/// # Ok::<(), kv_net::Error>(())
/// ```
pub struct Peers<Req, Resp> {
    core: Arc<Core>,
    runtime: Option<Runtime>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> std::fmt::Debug for Peers<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("node_id", &self.core.identity.node_id)
            .finish_non_exhaustive()
    }
}

impl<Req, Resp> Peers<Req, Resp>
where
    Req: Serialize,
    Resp: DeserializeOwned + Send + 'static,
{
    /// Starts the transport's runtime; no peer yet.
    ///
    /// # Errors
    ///
    /// [`Error::Runtime`] if its threads cannot be started.
    pub fn start(identity: Identity, options: PeersOptions) -> Result<Self> {
        let (runtime, handle) = match &options.runtime {
            Some(handle) => (None, handle.clone()),
            None => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(options.worker_threads)
                    .thread_name(format!("kv-net-{}", identity.node_id))
                    .enable_all()
                    .build()
                    .map_err(Error::Runtime)?;
                let handle = runtime.handle().clone();
                (Some(runtime), handle)
            }
        };
        let base = {
            // Read inside the runtime, so that a paused clock is the one read.
            let _entered = handle.enter();
            tokio::time::Instant::now()
        };
        let core = Arc::new(Core {
            handle,
            epoch: AtomicU64::new(identity.epoch),
            faults: Faults::new(options.seed),
            identity,
            options,
            peers: RwLock::new(HashMap::new()),
            base,
            shut: AtomicBool::new(false),
        });
        Ok(Self {
            core,
            runtime,
            _types: PhantomData,
        })
    }

    /// Adds a peer: the node `node_id`, expected at `addr` (a node announcing another id there
    /// is refused with [`Error::NodeIdMismatch`]). Its connection is made in the background.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicatePeer`].
    pub fn add_peer(&self, node_id: &str, addr: SocketAddr) -> Result<()> {
        let mut peers = self.core.peers.write();
        if peers.contains_key(node_id) {
            return Err(Error::DuplicatePeer {
                peer: node_id.to_string(),
            });
        }
        let state = Arc::new(PeerState::new(node_id, addr));
        let task = self.core.handle.spawn(crate::conn::run_peer(
            Arc::clone(&self.core),
            Arc::clone(&state),
        ));
        let sweeper = self
            .core
            .handle
            .spawn(crate::peer_state::sweep_deadlines(Arc::clone(&state)));
        *state.tasks.lock() = vec![task.abort_handle(), sweeper.abort_handle()];
        peers.insert(node_id.to_string(), state);
        Ok(())
    }

    /// Removes a peer: closes its connection and fails its requests in flight with
    /// [`Error::Disconnected`].
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPeer`].
    pub fn remove_peer(&self, node_id: &str) -> Result<()> {
        let state = self
            .core
            .peers
            .write()
            .remove(node_id)
            .ok_or_else(|| Error::UnknownPeer {
                peer: node_id.to_string(),
            })?;
        state.stop(false);
        Ok(())
    }

    /// Sends `req` to `peer`; its [`Reply`] (the response, or the error: timeout at
    /// `timeout`, disconnected, not connected, overloaded, unknown peer...) is posted to
    /// `reply_to` exactly once. Never blocks. One channel can collect the replies of many
    /// requests to many peers.
    pub fn send(
        &self,
        peer: &str,
        req: &Req,
        timeout: Duration,
        reply_to: &mpsc::Sender<Reply<Resp>>,
    ) -> RequestId {
        let tx = reply_to.clone();
        let name: Arc<str> = match self.core.peer(peer) {
            Ok(p) => Arc::clone(&p.id),
            Err(_) => Arc::from(peer),
        };
        let done: Done = Box::new(move |request, result| {
            let result = result.and_then(|body| decode_response::<Resp>(&name, &body));
            let _ = tx.send(Reply {
                peer: name,
                request,
                result,
            });
        });
        self.core.submit(peer, encode_request(req), timeout, done)
    }

    /// Sends `req` to `peer` and calls `done` with the answer (the response, or the error as
    /// for [`Peers::send`]) exactly once. Never blocks. `done` runs on the transport's reader
    /// task when the answer arrives (or on the sweeper at the deadline, or on the caller's
    /// thread at once if nothing could be sent), so it must be quick and must not block: hand
    /// the answer on (complete a pending answer, post to a channel) and return. This is the
    /// form for callers that have their own completion object and want no extra channel or
    /// thread per request.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use kv_net::{Identity, PeerInfo, Peers, PeersOptions, Server, ServerOptions};
    ///
    /// let server = Server::start(Identity::new(7, "b"), ServerOptions::new(),
    ///     |_: &PeerInfo, n: u64| n + 1)?;
    /// let peers: Peers<u64, u64> = Peers::start(Identity::new(7, "a"), PeersOptions::new())?;
    /// peers.add_peer("b", server.local_addr())?;
    /// assert!(peers.wait_connected("b", Duration::from_secs(5)));
    /// let (tx, rx) = mpsc::channel();
    /// peers.send_with("b", &41, Duration::from_secs(5), move |answer| {
    ///     let _ = tx.send(answer);
    /// });
    /// assert_eq!(rx.recv().unwrap()?, 42);
    /// # Ok::<(), kv_net::Error>(())
    /// ```
    pub fn send_with<F>(&self, peer: &str, req: &Req, timeout: Duration, done: F) -> RequestId
    where
        F: FnOnce(Result<Resp>) + Send + 'static,
    {
        let name: Arc<str> = match self.core.peer(peer) {
            Ok(p) => Arc::clone(&p.id),
            Err(_) => Arc::from(peer),
        };
        let done: Done = Box::new(move |_, result| {
            done(result.and_then(|body| decode_response::<Resp>(&name, &body)));
        });
        self.core.submit(peer, encode_request(req), timeout, done)
    }

    /// Sends `req` and waits for the answer, up to `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Reply::result`].
    pub fn call_blocking(&self, peer: &str, req: &Req, timeout: Duration) -> Result<Resp> {
        let (tx, rx) = mpsc::channel();
        self.send(peer, req, timeout, &tx);
        // The transport posts a timeout at the deadline; the margin covers scheduling.
        match rx.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(reply) => reply.result,
            Err(_) => Err(Error::Timeout {
                peer: peer.to_string(),
                request: 0,
                after: timeout,
            }),
        }
    }

    /// Sends `req` at once and returns a future of the answer, up to `timeout`: the API for
    /// async code (a server's handler running on tokio). The future borrows nothing, so many
    /// can be in flight; it works on any runtime.
    ///
    /// # Errors
    ///
    /// As [`Reply::result`].
    pub fn call(
        &self,
        peer: &str,
        req: &Req,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Resp>> + Send + use<Req, Resp> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let name = peer.to_string();
        let done: Done = Box::new(move |_, result| {
            let _ = tx.send(result);
        });
        self.core.submit(peer, encode_request(req), timeout, done);
        async move {
            match rx.await {
                Ok(result) => result.and_then(|body| decode_response::<Resp>(&name, &body)),
                Err(_) => Err(Error::Shutdown),
            }
        }
    }

    /// True if `peer` is connected and a frame (an answer or a pong) arrived from it within
    /// the liveness timeout ([`PeersOptions::liveness_timeout`]).
    pub fn is_alive(&self, peer: &str) -> bool {
        // The runtime's clock, also when asked from a thread outside it.
        let _entered = self.core.handle.enter();
        self.core.peer(peer).is_ok_and(|p| self.alive(&p))
    }

    fn alive(&self, p: &PeerState) -> bool {
        let seen = p.last_seen_us.load(Ordering::Acquire);
        p.connected.load(Ordering::Acquire)
            && seen != 0
            && self.core.now_us().saturating_sub(seen)
                <= self.core.options.liveness_timeout.as_micros() as u64
    }

    /// The liveness timeout this transport judges peers by
    /// ([`PeersOptions::liveness_timeout`]): what a caller waits before it trusts that a peer
    /// never heard from is not alive rather than not yet connected.
    pub fn liveness_timeout(&self) -> Duration {
        self.core.options.liveness_timeout
    }

    /// Waits until `peer` is connected, up to `timeout`. False if it did not connect in time
    /// (or is unknown).
    pub fn wait_connected(&self, peer: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.core.peer(peer) {
                Ok(p) if p.connected.load(Ordering::Acquire) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A snapshot of every peer's connection, sorted by node id.
    pub fn status(&self) -> Vec<PeerStatus> {
        // The runtime's clock, also when asked from a thread outside it.
        let _entered = self.core.handle.enter();
        let now = self.core.now_us();
        let mut out: Vec<PeerStatus> = self
            .core
            .peers
            .read()
            .values()
            .map(|p| {
                let seen = p.last_seen_us.load(Ordering::Acquire);
                let rtt = p.rtt_us.load(Ordering::Acquire);
                let epoch = p.epoch.load(Ordering::Acquire);
                PeerStatus {
                    node_id: p.id.to_string(),
                    addr: p.addr,
                    connected: p.connected.load(Ordering::Acquire),
                    alive: self.alive(p),
                    last_seen: (seen != 0).then(|| Duration::from_micros(now.saturating_sub(seen))),
                    rtt: (rtt != 0).then(|| Duration::from_micros(rtt)),
                    in_flight: p.in_flight.load(Ordering::Acquire),
                    reconnects: p.reconnects.load(Ordering::Acquire),
                    epoch: (epoch != u64::MAX).then_some(epoch),
                    last_error: p.last_error.lock().clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// The fault-injection handle of this transport (off until a fault is set).
    pub fn faults(&self) -> &Faults {
        &self.core.faults
    }

    /// The epoch announced in later handshakes.
    pub fn set_epoch(&self, epoch: u64) {
        self.core.epoch.store(epoch, Ordering::Relaxed);
    }

    /// This node's identity (with the epoch it started at).
    pub fn identity(&self) -> &Identity {
        &self.core.identity
    }

    /// Opens a bulk stream to `peer` on a connection of its own, so that its chunks never wait
    /// behind (or delay) requests. `header` is given to the receiver's
    /// [`StreamHandler::open`](crate::StreamHandler::open).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPeer`], the connect and handshake errors, [`Error::Stream`] if the
    /// receiver refuses the stream.
    ///
    /// # Panics
    ///
    /// If called from within a tokio runtime (it blocks).
    pub fn open_stream(&self, peer: &str, header: &[u8]) -> Result<StreamSender> {
        let p = self.core.peer(peer)?;
        crate::stream::open(&self.core, &p, header)
    }
}

fn encode_request<Req: Serialize>(req: &Req) -> Result<Vec<u8>> {
    postcard::to_allocvec(req).map_err(|source| Error::Encode {
        what: "request",
        source,
    })
}

fn decode_response<Resp: DeserializeOwned>(peer: &str, body: &[u8]) -> Result<Resp> {
    postcard::from_bytes(body).map_err(|source| Error::Decode {
        what: "response",
        peer: peer.to_string(),
        source,
    })
}

impl<Req, Resp> Drop for Peers<Req, Resp> {
    fn drop(&mut self) {
        self.core.shut.store(true, Ordering::Release);
        #[cfg_attr(not(feature = "sim"), allow(unused_mut))]
        let mut peers: Vec<(String, Arc<PeerState>)> = self.core.peers.write().drain().collect();
        // A simulation replays a seed exactly: peers stop in id order, not in the hash map's
        // (randomly seeded) order.
        #[cfg(feature = "sim")]
        peers.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (_, p) in peers {
            p.stop(true);
        }
        if let Some(rt) = self.runtime.take() {
            if Handle::try_current().is_ok() {
                // Inside another runtime a drop may not block.
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(1));
            }
        }
    }
}
