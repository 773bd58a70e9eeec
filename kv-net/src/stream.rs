//! Bulk streams: a connection of its own per stream, chunks in order, bounded buffering on
//! both ends, and a verdict from the receiver at the end.
//!
//! A stream never shares a connection with requests, so a transfer of gigabytes delays no
//! request behind it (TCP's flow control on the stream's connection, plus the bounded queues
//! at each end, is its flow control).

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};

use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::frame::{FrameKind, frame_bytes};
use crate::handshake::Purpose;
use crate::io::{AbortOnDrop, FrameReader};
use crate::net_stream::NetStream;
use crate::peer_state::PeerState;
use crate::peers::Core;
use crate::server::PeerInfo;

/// Receives bulk streams on a [`Server`](crate::Server) (see
/// [`Server::start_with_streams`](crate::Server::start_with_streams)). Runs on the blocking
/// pool.
///
/// # Example
///
/// A receiver that counts bytes, and a sender of 1 MiB in 64 KiB chunks.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
/// use bytes::Bytes;
/// use kv_net::*;
///
/// struct Count(Arc<AtomicU64>);
/// struct CountSink(Arc<AtomicU64>, u64);
/// impl StreamHandler for Count {
///     fn open(&self, _from: &PeerInfo, _header: Bytes) -> Result<Box<dyn StreamSink>, String> {
///         Ok(Box::new(CountSink(Arc::clone(&self.0), 0)))
///     }
/// }
/// impl StreamSink for CountSink {
///     fn chunk(&mut self, data: Bytes) -> Result<(), String> {
///         self.1 += data.len() as u64;
///         Ok(())
///     }
///     fn finish(self: Box<Self>) -> Result<(), String> {
///         self.0.store(self.1, Ordering::SeqCst);
///         Ok(())
///     }
/// }
///
/// let received = Arc::new(AtomicU64::new(0));
/// let server = Server::start_with_streams(
///     Identity::new(1, "b"),
///     ServerOptions::new(),
///     |_: &PeerInfo, (): ()| (),
///     Count(Arc::clone(&received)),
/// )?;
/// let peers: Peers<(), ()> = Peers::start(Identity::new(1, "a"), PeersOptions::new())?;
/// peers.add_peer("b", server.local_addr())?;
/// let mut stream = peers.open_stream("b", b"ranges 1..4")?;
/// for _ in 0..16 {
///     stream.send(&[7u8; 64 * 1024])?;
/// }
/// stream.finish(Duration::from_secs(10))?;
/// assert_eq!(received.load(Ordering::SeqCst), 1 << 20);
/// # Ok::<(), kv_net::Error>(())
/// ```
pub trait StreamHandler: Send + Sync + 'static {
    /// A stream from `from` opens with `header`: the sink that takes its chunks, or why it is
    /// refused (the sender's [`StreamSender::finish`] gets [`Error::Stream`] with it).
    ///
    /// # Errors
    ///
    /// The reason for refusing the stream.
    fn open(&self, from: &PeerInfo, header: Bytes) -> Result<Box<dyn StreamSink>, String>;
}

/// Takes one stream's chunks, in the order sent. Dropped without [`StreamSink::finish`] if
/// the stream is cut short (the sender went away): the sink then discards what it has.
pub trait StreamSink: Send {
    /// The next chunk.
    ///
    /// # Errors
    ///
    /// Why the stream cannot go on; it ends and the sender gets [`Error::Stream`] with it.
    fn chunk(&mut self, data: Bytes) -> Result<(), String>;

    /// Every chunk has arrived. Its result is what the sender's [`StreamSender::finish`]
    /// returns.
    ///
    /// # Errors
    ///
    /// Why the stream as a whole is refused.
    fn finish(self: Box<Self>) -> Result<(), String>;
}

/// The sending end of a bulk stream, from [`Peers::open_stream`](crate::Peers::open_stream).
///
/// At most [`PeersOptions::stream_buffer_chunks`](crate::PeersOptions::stream_buffer_chunks)
/// chunks wait to be written; [`StreamSender::send`] blocks while they do. Dropping it without
/// [`StreamSender::finish`] aborts the stream (the receiver's sink is dropped unfinished).
#[derive(Debug)]
pub struct StreamSender {
    peer: Arc<str>,
    handle: Handle,
    /// The connection's task: stopped (closing the connection) when the sender is dropped,
    /// so an abandoned stream never keeps a socket to a hung peer.
    _task: AbortOnDrop,
    stall_timeout: Duration,
    tx: Option<mpsc::Sender<Bytes>>,
    seq: u64,
    max_frame_len: usize,
    /// A std channel, waited on without the runtime: it works even after the transport
    /// shut down (the sending task is gone then, and the wait ends at once).
    verdict: Option<std::sync::mpsc::Receiver<Result<()>>>,
}

pub(crate) fn open(core: &Arc<Core>, p: &Arc<PeerState>, header: &[u8]) -> Result<StreamSender> {
    let max = core.options.max_frame_len;
    let open_frame = frame_bytes(FrameKind::StreamOpen, 0, header, max)?;
    if core.faults.black_holed(&p.id) {
        return Err(Error::NotConnected {
            peer: p.id.to_string(),
        });
    }
    let (stream, _hello, buf) =
        core.handle
            .block_on(crate::conn::connect(core, p, Purpose::Stream))?;
    let (tx, rx) = mpsc::channel(core.options.stream_buffer_chunks);
    let (verdict_tx, verdict_rx) = std::sync::mpsc::sync_channel(1);
    let sender = SenderTask {
        addr: p.addr,
        peer: Arc::clone(&p.id),
        open_frame,
        rx,
        verdict_tx,
        faults: core.faults.clone(),
    };
    let task = core.handle.spawn(sender.run(stream, buf));
    Ok(StreamSender {
        peer: Arc::clone(&p.id),
        handle: core.handle.clone(),
        _task: AbortOnDrop(task.abort_handle()),
        stall_timeout: core.options.stream_stall_timeout,
        tx: Some(tx),
        seq: 0,
        max_frame_len: max,
        verdict: Some(verdict_rx),
    })
}

impl StreamSender {
    /// Sends the next chunk (at most the frame limit less 9 bytes), waiting while the buffer
    /// is full, up to [`PeersOptions::stream_stall_timeout`](crate::PeersOptions::stream_stall_timeout).
    ///
    /// # Errors
    ///
    /// [`Error::FrameTooLarge`]; [`Error::Stream`] (or the connection's error) if the stream
    /// has ended: the receiver refused a chunk, the connection dropped, or the receiver took
    /// nothing for the stall timeout (the stream is then abandoned).
    ///
    /// # Panics
    ///
    /// If called from within a tokio runtime (it blocks).
    pub fn send(&mut self, chunk: &[u8]) -> Result<()> {
        let frame = frame_bytes(FrameKind::StreamChunk, self.seq, chunk, self.max_frame_len)?;
        self.queue(frame)?;
        self.seq += 1;
        Ok(())
    }

    /// Queues a frame for the connection's task, waiting up to the stall timeout for room.
    fn queue(&mut self, frame: Bytes) -> Result<()> {
        let Some(tx) = self.tx.as_ref() else {
            return Err(self.ended());
        };
        match tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(self.ended()),
            Err(TrySendError::Full(frame)) => {
                match self
                    .handle
                    .block_on(tx.send_timeout(frame, self.stall_timeout))
                {
                    Ok(()) => Ok(()),
                    Err(SendTimeoutError::Closed(_)) => Err(self.ended()),
                    Err(SendTimeoutError::Timeout(_)) => {
                        // The stream is abandoned: its task (and connection) stop with `self`.
                        self.tx = None;
                        let stalled = self.stall_timeout;
                        Err(self.failed(&format!("the receiver took nothing for {stalled:?}")))
                    }
                }
            }
        }
    }

    /// Chunks sent so far.
    pub fn chunks_sent(&self) -> u64 {
        self.seq
    }

    /// Ends the stream and waits, up to `timeout`, for the receiver's verdict: every chunk
    /// received in order and its sink finished.
    ///
    /// # Errors
    ///
    /// [`Error::Stream`] with the receiver's reason, or if no verdict came in time.
    ///
    /// # Panics
    ///
    /// If called from within a tokio runtime (it blocks).
    pub fn finish(mut self, timeout: Duration) -> Result<()> {
        let end = frame_bytes(FrameKind::StreamEnd, self.seq, &[], self.max_frame_len)?;
        self.queue(end)?;
        self.tx = None;
        let Some(verdict) = self.verdict.take() else {
            return Err(self.failed("the stream had already ended"));
        };
        match verdict.recv_timeout(timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Disconnected) => {
                Err(self.failed("the stream's connection task ended"))
            }
            Err(RecvTimeoutError::Timeout) => {
                Err(self.failed(&format!("no verdict from the receiver within {timeout:?}")))
            }
        }
    }

    /// The error that ended the stream early.
    fn ended(&mut self) -> Error {
        self.tx = None;
        let Some(verdict) = self.verdict.take() else {
            return self.failed("the stream had already ended");
        };
        match verdict.recv_timeout(Duration::from_secs(1)) {
            Ok(Err(e)) => e,
            _ => self.failed("the stream's connection closed"),
        }
    }

    fn failed(&self, reason: &str) -> Error {
        Error::Stream {
            peer: self.peer.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// The sending side of a stream's connection: writes the queued chunks, then reads the
/// receiver's verdict.
struct SenderTask {
    addr: SocketAddr,
    peer: Arc<str>,
    open_frame: Bytes,
    rx: mpsc::Receiver<Bytes>,
    verdict_tx: std::sync::mpsc::SyncSender<Result<()>>,
    faults: Faults,
}

impl SenderTask {
    async fn run(self, stream: NetStream, buf: BytesMut) {
        let SenderTask {
            addr,
            peer,
            open_frame,
            mut rx,
            verdict_tx,
            faults,
        } = self;
        let (rd, mut wr) = stream.into_split();
        let writer_peer = Arc::clone(&peer);
        let writer = tokio::spawn(async move {
            let io = |source| Error::Io {
                op: "write",
                addr,
                source,
            };
            wr.write_all(&open_frame).await.map_err(io)?;
            while let Some(frame) = rx.recv().await {
                // A partition stalls the stream (nothing lost, nothing reordered) until it heals.
                while faults.black_holed(&writer_peer) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                wr.write_all(&frame).await.map_err(io)?;
            }
            wr.flush().await.map_err(io)
        });
        let _writer_guard = AbortOnDrop(writer.abort_handle());
        // The receiver sends one frame, its verdict, at the end (or early, on a refusal).
        let mut reader = FrameReader::new(rd, addr, 64 * 1024, buf);
        let stream_err = |reason: String| Error::Stream {
            peer: peer.to_string(),
            reason,
        };
        let verdict = match reader.next().await {
            Ok(Some(frame)) if frame.kind == FrameKind::StreamDone => {
                match postcard::from_bytes::<Option<String>>(&frame.body) {
                    Ok(None) => Ok(()),
                    Ok(Some(reason)) => Err(stream_err(reason)),
                    Err(source) => Err(Error::Decode {
                        what: "stream verdict",
                        peer: peer.to_string(),
                        source,
                    }),
                }
            }
            Ok(Some(frame)) => Err(Error::UnexpectedFrame {
                kind: frame.kind.name(),
                during: "a stream",
            }),
            Ok(None) => Err(stream_err(String::from(
                "the receiver closed the connection without a verdict",
            ))),
            Err(e) => Err(stream_err(e.to_string())),
        };
        let _ = verdict_tx.send(verdict);
    }
}

/// Serves one stream connection on the receiving side.
pub(crate) async fn serve_stream(
    handler: Option<Arc<dyn StreamHandler>>,
    stream: NetStream,
    buf: BytesMut,
    info: Arc<PeerInfo>,
    max_frame_len: usize,
    buffer_chunks: usize,
) -> Result<()> {
    let addr = info.addr;
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::new(rd, addr, max_frame_len, buf);
    let Some(first) = reader.next().await? else {
        return Ok(());
    };
    if first.kind != FrameKind::StreamOpen {
        return Err(Error::UnexpectedFrame {
            kind: first.kind.name(),
            during: "a stream's opening",
        });
    }
    let outcome = match handler {
        None => Err(String::from("this node accepts no bulk streams")),
        Some(handler) => receive(handler, &mut reader, first.body, &info, buffer_chunks).await?,
    };
    let body = postcard::to_allocvec(&outcome.err()).unwrap_or_default();
    let done = frame_bytes(FrameKind::StreamDone, 0, &body, usize::MAX)?;
    let io = |source| Error::Io {
        op: "write",
        addr,
        source,
    };
    wr.write_all(&done).await.map_err(io)?;
    wr.shutdown().await.map_err(io)?;
    Ok(())
}

/// Feeds the chunks to the sink on a blocking thread; the sink's verdict. An `Err` of the
/// outer result is a connection or protocol error (no verdict is sent then).
async fn receive(
    handler: Arc<dyn StreamHandler>,
    reader: &mut FrameReader,
    header: Bytes,
    info: &Arc<PeerInfo>,
    buffer_chunks: usize,
) -> Result<Result<(), String>> {
    // `Some(chunk)`, then `None` for the end; a channel closed without `None` is an abort.
    let (tx, mut rx) = mpsc::channel::<Option<Bytes>>(buffer_chunks);
    let from = Arc::clone(info);
    let consumer = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let run = AssertUnwindSafe(move || {
            let mut sink = handler.open(&from, header)?;
            loop {
                match rx.blocking_recv() {
                    Some(Some(chunk)) => sink.chunk(chunk)?,
                    Some(None) => return sink.finish(),
                    None => return Err(String::from("the stream was cut short")),
                }
            }
        });
        std::panic::catch_unwind(run)
            .unwrap_or_else(|_| Err(String::from("the stream's sink panicked")))
    });
    let mut expected = 0u64;
    loop {
        let Some(frame) = reader.next().await? else {
            return Err(Error::Stream {
                peer: info.node_id.clone(),
                reason: String::from("the connection closed before the stream's end"),
            });
        };
        match frame.kind {
            FrameKind::StreamChunk | FrameKind::StreamEnd if frame.id != expected => {
                return Err(Error::OutOfSequence {
                    expected,
                    found: frame.id,
                });
            }
            FrameKind::StreamChunk => {
                expected += 1;
                if tx.send(Some(frame.body)).await.is_err() {
                    // The sink stopped early: its error is the verdict.
                    break;
                }
            }
            FrameKind::StreamEnd => {
                let _ = tx.send(None).await;
                break;
            }
            other => {
                return Err(Error::UnexpectedFrame {
                    kind: other.name(),
                    during: "a stream",
                });
            }
        }
    }
    drop(tx);
    Ok(consumer
        .await
        .unwrap_or_else(|_| Err(String::from("the stream's sink task failed"))))
}
