//! The connection of [`Peers`](crate::Peers) to one peer: connect, handshake, serve, and
//! reconnect with backoff when it drops.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::faults::{Action, Direction};
use crate::frame::{Frame, FrameKind, frame_bytes};
use crate::handshake::{Expect, Hello, Purpose, handshake};
use crate::io::{AbortOnDrop, FrameReader, Link, write_loop};
use crate::net_stream::NetStream;
use crate::peer_state::PeerState;
use crate::peers::Core;
use crate::socket::Socket;

/// Runs for as long as the peer is added: keeps one connection up.
pub(crate) async fn run_peer(core: Arc<Core>, p: Arc<PeerState>) {
    let seed = core.options.seed ^ fnv1a(p.id.as_bytes());
    let mut backoff = Backoff::new(core.options.reconnect_min, core.options.reconnect_max, seed);
    let mut connected_before = false;
    let mut last_logged: Option<String> = None;
    loop {
        match connect(&core, &p, Purpose::Rpc).await {
            Ok((stream, hello, buf)) => {
                backoff.reset();
                if connected_before {
                    p.reconnects.fetch_add(1, Ordering::AcqRel);
                }
                connected_before = true;
                last_logged = None;
                *p.last_error.lock() = None;
                p.epoch.store(hello.epoch, Ordering::Release);
                info!(peer = %p.id, addr = %p.addr, epoch = hello.epoch, "connected to peer {}", p.id);
                match serve(&core, &p, stream, buf).await {
                    Ok(()) => info!(peer = %p.id, "peer {} closed the connection", p.id),
                    Err(e) => warn!(peer = %p.id, "connection to peer {} lost: {e}", p.id),
                }
            }
            Err(e) => {
                let message = e.to_string();
                // One line per distinct failure, not one per attempt.
                if last_logged.as_deref() != Some(message.as_str()) {
                    warn!(peer = %p.id, addr = %p.addr, "cannot connect to peer {}: {message}", p.id);
                    last_logged = Some(message.clone());
                }
                *p.last_error.lock() = Some(message);
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Connects to a peer and runs the handshake.
pub(crate) async fn connect(
    core: &Core,
    p: &PeerState,
    purpose: Purpose,
) -> Result<(NetStream, Hello, BytesMut)> {
    let addr = p.addr;
    let io = |source| Error::Io {
        op: "connect",
        addr,
        source,
    };
    #[cfg(feature = "sim")]
    let dial = async {
        if core.options.sim {
            Socket::connect_sim(addr).await
        } else {
            Socket::connect(addr).await
        }
    };
    #[cfg(not(feature = "sim"))]
    let dial = Socket::connect(addr);
    let socket = match tokio::time::timeout(core.options.connect_timeout, dial).await {
        Ok(connected) => connected.map_err(io)?,
        Err(_) => {
            let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
            return Err(io(source));
        }
    };
    let mut stream = match &core.options.tls {
        None => NetStream::Plain(socket),
        Some(tls) => {
            let name = crate::tls::server_name(&p.id)?;
            let tcp = socket.into_tcp().map_err(io)?;
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.client));
            let timeout = core.options.handshake_timeout;
            match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
                Ok(Ok(tls)) => NetStream::Client(Box::new(tls)),
                Ok(Err(source)) => {
                    return Err(Error::Io {
                        op: "TLS handshake with",
                        addr,
                        source,
                    });
                }
                Err(_) => {
                    return Err(Error::HandshakeTimeout {
                        addr,
                        after: timeout,
                    });
                }
            }
        }
    };
    let expect = Expect::Node(p.id.to_string());
    let (hello, buf) = handshake(
        &mut stream,
        addr,
        &core.hello(purpose),
        &expect,
        core.options.handshake_timeout,
    )
    .await?;
    Ok((stream, hello, buf))
}

/// Serves one established connection until it drops; then fails its requests in flight.
async fn serve(
    core: &Arc<Core>,
    p: &Arc<PeerState>,
    stream: NetStream,
    buf: BytesMut,
) -> Result<()> {
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let link = Link {
        tx,
        queued: Arc::clone(&queued),
    };
    let mut writer = core.handle.spawn(write_loop(wr, p.addr, rx, queued));
    // If this task is aborted (the peer is removed), the guards stop the writer and the
    // pinger with it, which closes the socket.
    let writer_guard = AbortOnDrop(writer.abort_handle());
    p.last_seen_us.store(core.now_us(), Ordering::Release);
    *p.link.lock() = Some(link.clone());
    p.connected.store(true, Ordering::Release);
    let pinger = core
        .handle
        .spawn(ping_loop(Arc::clone(core), Arc::clone(p), link));
    let pinger_guard = AbortOnDrop(pinger.abort_handle());

    let mut reader = FrameReader::new(rd, p.addr, core.options.max_frame_len, buf);
    let mut writer_finished = false;
    let result = tokio::select! {
        r = read_loop(core, p, &mut reader) => r,
        w = &mut writer => {
            writer_finished = true;
            w.unwrap_or(Ok(()))
        }
    };

    // Teardown, in this order: no new request can take the link; the writer is gone (so a
    // request queued from now on fails to send and completes itself); then every request
    // still pending is failed.
    p.connected.store(false, Ordering::Release);
    *p.link.lock() = None;
    drop(pinger_guard);
    let _ = pinger.await;
    drop(writer_guard);
    if !writer_finished {
        let _ = writer.await;
    }
    p.fail_all(false);
    result
}

async fn read_loop(core: &Arc<Core>, p: &Arc<PeerState>, reader: &mut FrameReader) -> Result<()> {
    while let Some(frame) = reader.next().await? {
        match core.faults.decide(&p.id, Direction::Inbound) {
            Action::Pass => dispatch(core, p, frame)?,
            Action::Drop => {}
            Action::Reset => {
                return Err(Error::InjectedReset {
                    peer: p.id.to_string(),
                });
            }
            Action::Duplicate => {
                dispatch(core, p, frame.clone())?;
                dispatch(core, p, frame)?;
            }
            Action::Delay(d) => {
                let (core, p) = (Arc::clone(core), Arc::clone(p));
                core.handle.clone().spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = dispatch(&core, &p, frame);
                });
            }
        }
    }
    Ok(())
}

/// Handles one frame from the peer.
fn dispatch(core: &Core, p: &PeerState, frame: Frame) -> Result<()> {
    let now = core.now_us();
    p.last_seen_us.store(now, Ordering::Release);
    match frame.kind {
        FrameKind::Response => p.complete(frame.id, Ok(frame.body)),
        FrameKind::Failure => {
            let message = postcard::from_bytes::<String>(&frame.body)
                .unwrap_or_else(|_| String::from("(unreadable reason)"));
            p.complete(
                frame.id,
                Err(Error::Remote {
                    peer: p.id.to_string(),
                    message,
                }),
            );
        }
        FrameKind::Pong => {
            let sample = now.saturating_sub(frame.id).max(1);
            let old = p.rtt_us.load(Ordering::Acquire);
            // Exponentially weighted, 1/8 per sample (as TCP's SRTT).
            let smoothed = if old == 0 {
                sample
            } else {
                (old * 7 + sample) / 8
            };
            p.rtt_us.store(smoothed.max(1), Ordering::Release);
        }
        other => {
            return Err(Error::UnexpectedFrame {
                kind: other.name(),
                during: "a peer connection",
            });
        }
    }
    Ok(())
}

/// Pings the peer every heartbeat interval; the stamp is this side's clock, echoed back.
async fn ping_loop(core: Arc<Core>, p: Arc<PeerState>, link: Link) {
    let mut interval = tokio::time::interval(core.options.heartbeat_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Ok(frame) = frame_bytes(
            FrameKind::Ping,
            core.now_us(),
            &[],
            core.options.max_frame_len,
        ) else {
            return;
        };
        if !core.send_frame(&p, &link, frame) {
            return;
        }
    }
}

/// FNV-1a, to give each peer's backoff its own jitter sequence from one seed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
