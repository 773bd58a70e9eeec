//! The listening side: [`Server`] accepts peers, runs the handshake, and answers each request
//! with a [`Handler`]: synchronously off the async workers, inline, or as a task of its own.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use parking_lot::Mutex;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::runtime::Runtime;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::frame::{FrameKind, frame_bytes};
use crate::handshake::{Expect, Hello, Purpose, handshake};
use crate::io::{FrameReader, write_loop};
use crate::net_stream::NetStream;
use crate::options::{Identity, ServerOptions};
use crate::socket::{Listener, Socket};
use crate::stream::{StreamHandler, serve_stream};

/// The peer a request or stream comes from, as its handshake announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its node id.
    pub node_id: String,
    /// The address of its connection.
    pub addr: SocketAddr,
    /// The ring epoch it announced.
    pub epoch: u64,
}

/// A future that answers a request, boxed: what [`Handler::handle_async`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Answers requests, in one of three ways the handler chooses per request:
///
/// - **async** ([`Handler::handle_async`] returns a future): the future is spawned as a task
///   of its own on the server's runtime and its output is the answer. No thread hop and no
///   `block_on`: the form for a request that waits on other nodes or on async code (a raft
///   message), and the only one that runs on a paused (simulated) clock without a thread.
/// - **inline** ([`Handler::may_block`] says `false`): [`Handler::handle`] runs on the
///   connection's async task, which saves two thread hops (the blocking pool's and the way
///   back to the writer).
/// - **blocking** (the default): [`Handler::handle`] runs on the server's blocking pool, so it
///   may block (on a disk, a lock); many run at once, one per request in flight.
///
/// Every answer carries its request's id, so answers of the three kinds leave in any order
/// and each reaches the request it answers. A closure `Fn(&PeerInfo, Req) -> Resp` is a
/// handler (every request blocking). A handler (or an async handler's future) that panics
/// answers the request with a failure ([`Error::Remote`] at the caller); the server keeps
/// serving.
pub trait Handler<Req, Resp>: Send + Sync + 'static {
    /// The response to `req` from `from`.
    fn handle(&self, from: &PeerInfo, req: Req) -> Resp;

    /// False if answering `req` never blocks (no disk read that can miss the page cache, no
    /// lock held for long, no waiting on another node): it then runs inline on an async worker
    /// of the server. Must be quick to decide. Default: true.
    fn may_block(&self, _req: &Req) -> bool {
        true
    }

    /// A future answering `req`, for a request answered asynchronously; `None` (the default)
    /// for one answered by [`Handler::handle`]. It is called on the connection's task before
    /// [`Handler::may_block`], so it must decide quickly and must not block; it takes `req`
    /// by reference so that a `None` leaves it to `handle` (an async request clones what its
    /// future needs, cheap for [`bytes::Bytes`]). The future runs as a task on the server's
    /// runtime, counts as a request in flight of its connection
    /// ([`ServerOptions::max_in_flight`](crate::ServerOptions::max_in_flight)) until it
    /// completes, and is dropped if the connection closes first.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use kv_net::{BoxFuture, Handler, Identity, PeerInfo, Peers, PeersOptions, Server, ServerOptions};
    ///
    /// /// Answers odd numbers at once, even ones after an async wait.
    /// struct Mixed;
    /// impl Handler<u64, u64> for Mixed {
    ///     fn handle(&self, _: &PeerInfo, n: u64) -> u64 {
    ///         n
    ///     }
    ///     fn handle_async(&self, _: &PeerInfo, n: &u64) -> Option<BoxFuture<'static, u64>> {
    ///         let n = *n;
    ///         (n % 2 == 0).then(|| -> BoxFuture<'static, u64> {
    ///             Box::pin(async move {
    ///                 tokio::time::sleep(Duration::from_millis(1)).await;
    ///                 n * 10
    ///             })
    ///         })
    ///     }
    /// }
    ///
    /// let server = Server::start(Identity::new(7, "b"), ServerOptions::new(), Mixed)?;
    /// let peers: Peers<u64, u64> = Peers::start(Identity::new(7, "a"), PeersOptions::new())?;
    /// peers.add_peer("b", server.local_addr())?;
    /// assert!(peers.wait_connected("b", Duration::from_secs(5)));
    /// assert_eq!(peers.call_blocking("b", &3, Duration::from_secs(5))?, 3);
    /// assert_eq!(peers.call_blocking("b", &4, Duration::from_secs(5))?, 40);
    /// # Ok::<(), kv_net::Error>(())
    /// ```
    fn handle_async(&self, _from: &PeerInfo, _req: &Req) -> Option<BoxFuture<'static, Resp>> {
        None
    }
}

impl<Req, Resp, F> Handler<Req, Resp> for F
where
    F: Fn(&PeerInfo, Req) -> Resp + Send + Sync + 'static,
{
    fn handle(&self, from: &PeerInfo, req: Req) -> Resp {
        self(from, req)
    }
}

/// Counts of a server's connections, from [`Server::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections accepted (before their handshake).
    pub accepted: u64,
    /// Connections whose handshake failed or was refused.
    pub refused: u64,
    /// Established connections closed on an error (a bad frame, a truncated frame, I/O).
    pub failed: u64,
    /// The last refusal or connection error, as logged.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Everything a connection task needs, shared.
struct Ctx<Req, Resp> {
    counters: Arc<Counters>,
    hello: Hello,
    epoch: Arc<AtomicU64>,
    expect: Expect,
    options: ServerOptions,
    handler: Box<dyn Handler<Req, Resp>>,
    streams: Option<Arc<dyn StreamHandler>>,
}

/// A listener for peers: accepts connections, refuses those whose handshake fails (one
/// warning line each; the listener keeps serving), and serves requests and bulk streams.
///
/// It owns its tokio runtime (unless [`ServerOptions::runtime`] gives it one); dropping it
/// closes the listener and every connection (handlers still running get a second to finish
/// on its own runtime).
///
/// # Example
///
/// See [`Peers`](crate::Peers).
pub struct Server {
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    epoch: Arc<AtomicU64>,
    accept: AbortHandle,
    /// Dropped with the server: every connection's task sees it and ends (on a runtime the
    /// server does not own, nothing else would end them).
    _closing: watch::Sender<()>,
    runtime: Option<Runtime>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Listens on [`ServerOptions::listen`] and answers requests with `handler`. Bulk streams
    /// are refused.
    ///
    /// # Errors
    ///
    /// [`Error::Runtime`], [`Error::Io`] (`bind`).
    pub fn start<Req, Resp, H>(
        identity: Identity,
        options: ServerOptions,
        handler: H,
    ) -> Result<Self>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        H: Handler<Req, Resp>,
    {
        Self::start_inner(identity, options, Box::new(handler), None)
    }

    /// As [`Server::start`], and bulk streams are given to `streams`.
    ///
    /// # Errors
    ///
    /// As [`Server::start`].
    pub fn start_with_streams<Req, Resp, H, S>(
        identity: Identity,
        options: ServerOptions,
        handler: H,
        streams: S,
    ) -> Result<Self>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        H: Handler<Req, Resp>,
        S: StreamHandler,
    {
        Self::start_inner(
            identity,
            options,
            Box::new(handler),
            Some(Arc::new(streams)),
        )
    }

    fn start_inner<Req, Resp>(
        identity: Identity,
        options: ServerOptions,
        handler: Box<dyn Handler<Req, Resp>>,
        streams: Option<Arc<dyn StreamHandler>>,
    ) -> Result<Self>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
    {
        let (runtime, handle) = match &options.runtime {
            Some(handle) => (None, handle.clone()),
            None => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(options.worker_threads)
                    .max_blocking_threads(options.max_blocking_threads)
                    .thread_name(format!("kv-net-srv-{}", identity.node_id))
                    .enable_all()
                    .build()
                    .map_err(Error::Runtime)?;
                let handle = runtime.handle().clone();
                (Some(runtime), handle)
            }
        };
        let listen = options.listen;
        let io = |source| Error::Io {
            op: "bind",
            addr: listen,
            source,
        };
        #[cfg(feature = "sim")]
        let listener = if options.sim {
            Listener::bind_sim(listen)
        } else {
            Listener::bind(listen, &handle)
        };
        #[cfg(not(feature = "sim"))]
        let listener = Listener::bind(listen, &handle);
        let listener = listener.map_err(io)?;
        let local_addr = listener.local_addr().map_err(io)?;
        let expect = Expect::AnyOf(options.peer_filter.clone());
        let counters = Arc::new(Counters::default());
        let epoch = Arc::new(AtomicU64::new(identity.epoch));
        let ctx = Arc::new(Ctx {
            counters: Arc::clone(&counters),
            epoch: Arc::clone(&epoch),
            hello: Hello {
                cluster_id: identity.cluster_id,
                node_id: identity.node_id.clone(),
                epoch: identity.epoch,
                purpose: Purpose::Rpc,
            },
            expect,
            options,
            handler,
            streams,
        });
        let (closing, closed) = watch::channel(());
        let accept = handle
            .spawn(accept_loop(listener, ctx, closed))
            .abort_handle();
        Ok(Self {
            local_addr,
            counters,
            epoch,
            accept,
            _closing: closing,
            runtime,
        })
    }

    /// The address it listens on (with the port chosen, if it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The epoch announced in later handshakes.
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// Counts of connections accepted, refused and failed, and the last error.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            accepted: self.counters.accepted.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            last_error: self.counters.last_error.lock().clone(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
        if let Some(rt) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Inside another runtime a drop may not block.
                rt.shutdown_background();
            } else {
                // Waits for the workers to drop every connection, so the port is free again
                // when this returns.
                rt.shutdown_timeout(std::time::Duration::from_secs(1));
            }
        }
    }
}

async fn accept_loop<Req, Resp>(
    listener: Listener,
    ctx: Arc<Ctx<Req, Resp>>,
    closed: watch::Receiver<()>,
) where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(ctx.options.max_connections));
    loop {
        // Past the bound, stop accepting: connections wait in the kernel's backlog.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, addr)) => {
                let ctx = Arc::clone(&ctx);
                let mut closed = closed.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = serve_connection(ctx, stream, addr) => {}
                        _ = closed.changed() => {}
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                // Out of file descriptors, typically: wait instead of spinning.
                warn!("accepting a peer connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection<Req, Resp>(ctx: Arc<Ctx<Req, Resp>>, socket: Socket, addr: SocketAddr)
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    ctx.counters.accepted.fetch_add(1, Ordering::Relaxed);
    let mut stream = match &ctx.options.tls {
        None => NetStream::Plain(socket),
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.server));
            let timeout = ctx.options.handshake_timeout;
            let accepted = async {
                let tcp = socket.into_tcp()?;
                acceptor.accept(tcp).await
            };
            let outcome = match tokio::time::timeout(timeout, accepted).await {
                Ok(Ok(tls)) => Ok(NetStream::Server(Box::new(tls))),
                Ok(Err(source)) => Err(Error::Io {
                    op: "TLS handshake with",
                    addr,
                    source,
                }),
                Err(_) => Err(Error::HandshakeTimeout {
                    addr,
                    after: timeout,
                }),
            };
            match outcome {
                Ok(stream) => stream,
                Err(e) => {
                    warn!(%addr, "refused a peer connection from {addr}: {e}");
                    ctx.counters.refused.fetch_add(1, Ordering::Relaxed);
                    *ctx.counters.last_error.lock() = Some(e.to_string());
                    return;
                }
            }
        }
    };
    let hello = Hello {
        epoch: ctx.epoch.load(Ordering::Relaxed),
        ..ctx.hello.clone()
    };
    let (theirs, buf) = match handshake(
        &mut stream,
        addr,
        &hello,
        &ctx.expect,
        ctx.options.handshake_timeout,
    )
    .await
    {
        Ok(done) => done,
        Err(e) => {
            warn!(%addr, "refused a peer connection from {addr}: {e}");
            ctx.counters.refused.fetch_add(1, Ordering::Relaxed);
            *ctx.counters.last_error.lock() = Some(e.to_string());
            return;
        }
    };
    let info = Arc::new(PeerInfo {
        node_id: theirs.node_id,
        addr,
        epoch: theirs.epoch,
    });
    debug!(peer = %info.node_id, %addr, purpose = ?theirs.purpose, "peer connected");
    let result = match theirs.purpose {
        Purpose::Rpc => serve_rpc(&ctx, stream, buf, &info).await,
        Purpose::Stream => {
            let chunks = ctx.options.stream_buffer_chunks;
            serve_stream(
                ctx.streams.clone(),
                stream,
                buf,
                Arc::clone(&info),
                ctx.options.max_frame_len,
                chunks,
            )
            .await
        }
    };
    match result {
        Ok(()) => debug!(peer = %info.node_id, %addr, "peer connection closed"),
        Err(e) => {
            warn!(peer = %info.node_id, %addr, "closed the connection of peer {}: {e}", info.node_id);
            ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
            *ctx.counters.last_error.lock() = Some(e.to_string());
        }
    }
}

async fn serve_rpc<Req, Resp>(
    ctx: &Arc<Ctx<Req, Resp>>,
    stream: NetStream,
    buf: BytesMut,
    info: &Arc<PeerInfo>,
) -> Result<()>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let addr = info.addr;
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let queued = Arc::new(AtomicUsize::new(0));
    let mut writer = tokio::spawn(write_loop(wr, addr, rx, Arc::clone(&queued)));
    let permits = Arc::new(Semaphore::new(ctx.options.max_in_flight));
    let mut reader = FrameReader::new(rd, addr, ctx.options.max_frame_len, buf);
    let max = ctx.options.max_frame_len;

    // The async handlers' tasks: dropped (aborted) with the connection.
    let mut tasks = JoinSet::new();
    let read = async {
        while let Some(frame) = reader.next().await? {
            match frame.kind {
                FrameKind::Request => {
                    // Past the bound, stop reading: the peer's writes back up in TCP.
                    let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                        return Ok(());
                    };
                    let req = match postcard::from_bytes::<Req>(&frame.body) {
                        Ok(req) => req,
                        Err(e) => {
                            let out = failure(frame.id, format!("cannot decode the request: {e}"));
                            queued.fetch_add(out.len(), Ordering::Relaxed);
                            let _ = tx.send(out);
                            continue;
                        }
                    };
                    // Reap the finished tasks, so the set holds only those running.
                    while tasks.try_join_next().is_some() {}
                    let started = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        ctx.handler.handle_async(info, &req)
                    }));
                    match started {
                        Ok(None) => {}
                        Ok(Some(future)) => {
                            let (tx, queued, id) = (tx.clone(), Arc::clone(&queued), frame.id);
                            let max = ctx.options.max_frame_len;
                            tasks.spawn(async move {
                                let out = match CatchUnwind(future).await {
                                    Ok(resp) => response(id, &resp, max),
                                    Err(()) => {
                                        failure(id, String::from("the request's handler panicked"))
                                    }
                                };
                                queued.fetch_add(out.len(), Ordering::Relaxed);
                                let _ = tx.send(out);
                                drop(permit);
                            });
                            continue;
                        }
                        Err(_) => {
                            let out =
                                failure(frame.id, String::from("the request's handler panicked"));
                            queued.fetch_add(out.len(), Ordering::Relaxed);
                            let _ = tx.send(out);
                            continue;
                        }
                    }
                    if !ctx.handler.may_block(&req) {
                        let out = execute(ctx, info, frame.id, req);
                        queued.fetch_add(out.len(), Ordering::Relaxed);
                        let _ = tx.send(out);
                        continue;
                    }
                    let (ctx, info, tx, queued) = (
                        Arc::clone(ctx),
                        Arc::clone(info),
                        tx.clone(),
                        Arc::clone(&queued),
                    );
                    tokio::task::spawn_blocking(move || {
                        let out = execute(&ctx, &info, frame.id, req);
                        queued.fetch_add(out.len(), Ordering::Relaxed);
                        let _ = tx.send(out);
                        drop(permit);
                    });
                }
                FrameKind::Ping => {
                    let pong = frame_bytes(FrameKind::Pong, frame.id, &[], max)?;
                    queued.fetch_add(pong.len(), Ordering::Relaxed);
                    let _ = tx.send(pong);
                }
                other => {
                    return Err(Error::UnexpectedFrame {
                        kind: other.name(),
                        during: "a peer connection",
                    });
                }
            }
        }
        Ok(())
    };
    let mut writer_finished = false;
    let result = tokio::select! {
        r = read => r,
        w = &mut writer => {
            writer_finished = true;
            w.unwrap_or(Ok(()))
        }
    };
    if !writer_finished {
        writer.abort();
    }
    result
}

/// Runs the handler on one request; the frame to send back (a response or a failure).
fn execute<Req, Resp>(ctx: &Ctx<Req, Resp>, info: &PeerInfo, id: u64, req: Req) -> Bytes
where
    Req: 'static,
    Resp: Serialize + 'static,
{
    match std::panic::catch_unwind(AssertUnwindSafe(|| ctx.handler.handle(info, req))) {
        Ok(resp) => response(id, &resp, ctx.options.max_frame_len),
        Err(_) => failure(id, String::from("the request's handler panicked")),
    }
}

/// A response frame for `resp` (or a failure frame, if it cannot be encoded or sent).
fn response<Resp: Serialize>(id: u64, resp: &Resp, max_frame_len: usize) -> Bytes {
    match postcard::to_allocvec(resp) {
        Ok(body) => match frame_bytes(FrameKind::Response, id, &body, max_frame_len) {
            Ok(frame) => frame,
            Err(e) => failure(id, format!("cannot send the response: {e}")),
        },
        Err(e) => failure(id, format!("cannot encode the response: {e}")),
    }
}

/// An async handler's future with its panics caught: `Err(())` if polling it panicked (the
/// future is not polled again).
struct CatchUnwind<T>(BoxFuture<'static, T>);

impl<T> Future for CatchUnwind<T> {
    type Output = std::result::Result<T, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(resp)) => Poll::Ready(Ok(resp)),
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// A failure frame: the request could not be executed, and why.
fn failure(id: u64, message: String) -> Bytes {
    let body = postcard::to_allocvec(&message).unwrap_or_default();
    // A failure is a short message: it always fits (an empty result would leave the caller to
    // its deadline, never corrupt the stream).
    frame_bytes(FrameKind::Failure, id, &body, usize::MAX).unwrap_or_default()
}
