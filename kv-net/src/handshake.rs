//! The handshake both sides of a new connection run before anything else.
//!
//! Each side writes, without waiting, its preamble (magic and protocol version) and a
//! [`FrameKind::Hello`] frame with its [`Hello`]; then reads the other side's, checks it, and
//! answers [`FrameKind::Accept`] or [`FrameKind::Refuse`] (with the reason); then reads the
//! other side's verdict. So a refusal is seen, with a typed error, on both sides: the side that
//! refuses has its own check's error, the other gets [`Error::Refused`] with the reason. A
//! version mismatch is found by each side from the other's preamble, before any frame of an
//! unknown layout is read.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::frame::{Frame, FrameCodec, FrameKind, encode_parts};
use crate::options::PeerFilter;

/// The first eight bytes each side sends: `"KVPEER\0\n"`.
pub const MAGIC: [u8; 8] = *b"KVPEER\0\n";
/// The version of the peer protocol this build speaks (docs/format.md, "Peer protocol").
pub const PROTOCOL_VERSION: u32 = 1;
/// Bytes of the preamble: the magic and the version (`u32` LE).
pub const PREAMBLE_LEN: usize = 12;
/// The limit of a frame's length during the handshake (a `Hello` is a few dozen bytes).
pub const HANDSHAKE_MAX_FRAME_LEN: usize = 4096;

/// Who is at each end of a connection, as announced in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The cluster the sender belongs to; a different one is refused.
    pub cluster_id: u128,
    /// The sender's node id.
    pub node_id: String,
    /// The sender's ring epoch (informational: the transport records it, the layers above
    /// fence on it).
    pub epoch: u64,
    /// What the connection is for.
    pub purpose: Purpose,
}

/// What a connection carries after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Purpose {
    /// Requests and responses, multiplexed by request id, and heartbeats.
    Rpc,
    /// One bulk stream: `StreamOpen`, chunks, `StreamEnd`, then the receiver's `StreamDone`.
    Stream,
}

/// What the side running the handshake requires of the other.
#[derive(Debug, Clone)]
pub(crate) enum Expect {
    /// The dialing side: this node id at this address.
    Node(String),
    /// The listening side: any node, or one the filter allows.
    AnyOf(Option<PeerFilter>),
}

/// The preamble's bytes.
pub fn preamble() -> [u8; PREAMBLE_LEN] {
    let mut out = [0u8; PREAMBLE_LEN];
    out[..8].copy_from_slice(&MAGIC);
    out[8..].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out
}

/// The bytes a side sends first: preamble and `Hello` frame.
///
/// # Errors
///
/// [`Error::Encode`] (not expected: a `Hello` always encodes), [`Error::FrameTooLarge`] for a
/// node id of several KiB.
pub fn opening_bytes(hello: &Hello) -> Result<BytesMut> {
    let body = postcard::to_allocvec(hello).map_err(|source| Error::Encode {
        what: "hello",
        source,
    })?;
    let mut out = BytesMut::with_capacity(PREAMBLE_LEN + 13 + body.len());
    out.put_slice(&preamble());
    encode_parts(
        FrameKind::Hello,
        0,
        &body,
        &mut out,
        HANDSHAKE_MAX_FRAME_LEN,
    )?;
    Ok(out)
}

/// Checks a preamble (or as much of it as has arrived: a wrong magic is refused at its first
/// wrong byte). `Ok(true)` once it is complete and right.
pub(crate) fn check_preamble(addr: SocketAddr, buf: &[u8]) -> Result<bool> {
    let magic_part = &buf[..buf.len().min(8)];
    if magic_part != &MAGIC[..magic_part.len()] {
        let mut found = [0u8; 8];
        found[..magic_part.len()].copy_from_slice(magic_part);
        return Err(Error::BadMagic { addr, found });
    }
    let Some(version) = buf.get(8..PREAMBLE_LEN) else {
        return Ok(false);
    };
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(version);
    let found = u32::from_le_bytes(bytes);
    if found != PROTOCOL_VERSION {
        return Err(Error::UnsupportedVersion {
            addr,
            found,
            supported: PROTOCOL_VERSION,
        });
    }
    Ok(true)
}

/// Runs the handshake on a fresh connection. Returns the other side's `Hello` and whatever it
/// sent after its verdict (already in the read buffer).
///
/// On a refusal the connection is closed gracefully (write half shut, the other side's bytes
/// drained briefly) so that the other side reads the reason rather than a reset.
pub(crate) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    addr: SocketAddr,
    local: &Hello,
    expect: &Expect,
    timeout: Duration,
) -> Result<(Hello, BytesMut)> {
    match tokio::time::timeout(timeout, exchange(stream, addr, local, expect)).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => {
            close_gracefully(stream).await;
            Err(e)
        }
        Err(_) => Err(Error::HandshakeTimeout {
            addr,
            after: timeout,
        }),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    addr: SocketAddr,
    local: &Hello,
    expect: &Expect,
) -> Result<(Hello, BytesMut)> {
    let opening = opening_bytes(local)?;
    stream
        .write_all(&opening)
        .await
        .map_err(|source| Error::Io {
            op: "write",
            addr,
            source,
        })?;

    let mut buf = BytesMut::with_capacity(256);
    while !check_preamble(addr, &buf)? {
        read_some(stream, addr, &mut buf).await?;
    }
    let _ = buf.split_to(PREAMBLE_LEN);

    let codec = FrameCodec::new(HANDSHAKE_MAX_FRAME_LEN);
    let hello_frame = read_frame(stream, addr, &codec, &mut buf).await?;
    let theirs = match hello_frame.kind {
        FrameKind::Hello => {
            postcard::from_bytes::<Hello>(&hello_frame.body).map_err(|source| Error::Decode {
                what: "hello",
                peer: addr.to_string(),
                source,
            })?
        }
        other => {
            return Err(Error::UnexpectedFrame {
                kind: other.name(),
                during: "handshake",
            });
        }
    };

    if let Err(e) = verify(addr, local, expect, &theirs) {
        let reason = e.to_string();
        let body = postcard::to_allocvec(&reason).map_err(|source| Error::Encode {
            what: "refusal",
            source,
        })?;
        let mut out = BytesMut::new();
        encode_parts(
            FrameKind::Refuse,
            0,
            &body,
            &mut out,
            HANDSHAKE_MAX_FRAME_LEN,
        )?;
        // The refusal is best effort: the error to report is the check's.
        let _ = stream.write_all(&out).await;
        return Err(e);
    }
    let accept = Frame::new(FrameKind::Accept, 0, Vec::new()).to_bytes(HANDSHAKE_MAX_FRAME_LEN)?;
    stream
        .write_all(&accept)
        .await
        .map_err(|source| Error::Io {
            op: "write",
            addr,
            source,
        })?;

    let verdict = read_frame(stream, addr, &codec, &mut buf).await?;
    match verdict.kind {
        FrameKind::Accept => Ok((theirs, buf)),
        FrameKind::Refuse => {
            let reason = postcard::from_bytes::<String>(&verdict.body)
                .unwrap_or_else(|_| String::from("(unreadable reason)"));
            Err(Error::Refused { addr, reason })
        }
        other => Err(Error::UnexpectedFrame {
            kind: other.name(),
            during: "handshake",
        }),
    }
}

fn verify(addr: SocketAddr, local: &Hello, expect: &Expect, theirs: &Hello) -> Result<()> {
    if theirs.cluster_id != local.cluster_id {
        return Err(Error::ClusterMismatch {
            addr,
            node: theirs.node_id.clone(),
            expected: local.cluster_id,
            found: theirs.cluster_id,
        });
    }
    match expect {
        Expect::Node(expected) if *expected != theirs.node_id => Err(Error::NodeIdMismatch {
            addr,
            expected: expected.clone(),
            found: theirs.node_id.clone(),
        }),
        Expect::AnyOf(Some(allowed)) if !allowed.allows(&theirs.node_id) => {
            Err(Error::UnknownNode {
                addr,
                node: theirs.node_id.clone(),
            })
        }
        _ => Ok(()),
    }
}

async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    addr: SocketAddr,
    buf: &mut BytesMut,
) -> Result<()> {
    buf.reserve(256);
    let n = stream.read_buf(buf).await.map_err(|source| Error::Io {
        op: "read",
        addr,
        source,
    })?;
    if n == 0 {
        return Err(if buf.is_empty() {
            Error::ClosedDuringHandshake { addr }
        } else {
            Error::Truncated {
                addr,
                buffered: buf.len(),
            }
        });
    }
    Ok(())
}

async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    addr: SocketAddr,
    codec: &FrameCodec,
    buf: &mut BytesMut,
) -> Result<Frame> {
    loop {
        if let Some(frame) = codec.decode_frame(buf)? {
            return Ok(frame);
        }
        read_some(stream, addr, buf).await?;
    }
}

/// Shuts the write half and drains what the other side still sends for a moment, so that our
/// last bytes reach it instead of being discarded by a reset.
pub(crate) async fn close_gracefully<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    #[test]
    fn a_partial_preamble_is_checked_as_far_as_it_goes() {
        let p = preamble();
        assert!(!check_preamble(addr(), &p[..5]).unwrap());
        assert!(check_preamble(addr(), &p).unwrap());
        assert!(matches!(
            check_preamble(addr(), b"GET"),
            Err(Error::BadMagic { .. })
        ));
    }

    #[test]
    fn another_version_is_refused_naming_both() {
        let mut p = preamble();
        p[8] = 0;
        let err = check_preamble(addr(), &p).unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnsupportedVersion {
                    found: 0,
                    supported: PROTOCOL_VERSION,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn verify_checks_cluster_then_node() {
        let local = Hello {
            cluster_id: 7,
            node_id: "a".into(),
            epoch: 1,
            purpose: Purpose::Rpc,
        };
        let mut theirs = Hello {
            cluster_id: 8,
            node_id: "b".into(),
            epoch: 1,
            purpose: Purpose::Rpc,
        };
        let any = Expect::AnyOf(None);
        assert!(matches!(
            verify(addr(), &local, &any, &theirs),
            Err(Error::ClusterMismatch { .. })
        ));
        theirs.cluster_id = 7;
        assert!(verify(addr(), &local, &any, &theirs).is_ok());
        let wrong = Expect::Node("c".into());
        assert!(matches!(
            verify(addr(), &local, &wrong, &theirs),
            Err(Error::NodeIdMismatch { .. })
        ));
        let allowed = Expect::AnyOf(Some(PeerFilter::only(["c"])));
        assert!(matches!(
            verify(addr(), &local, &allowed, &theirs),
            Err(Error::UnknownNode { .. })
        ));
    }
}
