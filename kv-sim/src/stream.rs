//! Range streams in the simulation: a change's task from its source to its destination over
//! a turmoil connection of its own (`docs/membership.md` §3.4).
//!
//! kv-net's bulk streams cannot run on turmoil: [`kv_remote::RangeStreamer`] and kv-net's
//! stream sender block their thread (`Handle::block_on` on the connect and on a full
//! buffer), and kv-net feeds a receiving sink from its blocking pool; threads run outside
//! the simulation, and turmoil's sockets exist only inside it. So the transport here is the
//! simulation's own, and both ends use kv-remote's real pieces where they can:
//!
//! - **Source** ([`send`]): exports the local replica over each range from its
//!   `done_through` ([`kv_cluster::Replica::export`] at the stream's epoch, local: no RPC),
//!   and sends chunks of at most [`MAX_CHUNK_RECORDS`] records / [`MAX_CHUNK_BYTES`], each a
//!   real [`StreamMessage`] in kv-remote's format, then a checkpoint at each range's end.
//!   Unlike `RangeStreamer` it does not cut ranges at index-partition boundaries (a run holds
//!   a few dozen keys: every range fits one chunk), has no rate limit and no term takeover
//!   on its side.
//! - **Destination** ([`serve`]): the real [`RangeReceiver`] (its [`RangeReceiver::open`]
//!   sink: decoding, bounds, LWW import at the header's epoch, sync before a checkpoint is
//!   reported, term takeover), fed inline on the connection's task.
//!
//! Framing: each frame is a kind byte (0 open, 1 chunk, 2 done) and a big-endian `u32`
//! length, then the body; the open frame's body is the source's id (a length byte, then
//! the id) and the encoded [`StreamHeader`]. The destination answers one line at the end:
//! `OK` or `ERR reason` (also sent, and the connection closed, at the first failure).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_cluster::Replica;
use kv_remote::{
    Entry, MAX_CHUNK_BYTES, MAX_CHUNK_RECORDS, RangeReceiver, StreamHeader, StreamMessage,
    StreamRange,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The port every node host takes streams on.
pub(crate) const STREAM_PORT: u16 = 7200;
/// The largest frame body read: a chunk of [`MAX_CHUNK_BYTES`] of keys and values plus its
/// encoding's overhead (lengths, versions) for [`MAX_CHUNK_RECORDS`] records.
const MAX_FRAME: usize = MAX_CHUNK_BYTES + MAX_CHUNK_RECORDS * 64 + 1024;
/// How long a whole stream may take before the source gives up (and retries from what the
/// destination reported synced): longer than any partition the fault generator draws.
pub(crate) const STREAM_TIMEOUT: Duration = Duration::from_secs(20);

const OPEN: u8 = 0;
const CHUNK: u8 = 1;
const DONE: u8 = 2;

/// One task as its source runs it.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) header: StreamHeader,
    pub(crate) destination: String,
    pub(crate) ranges: Vec<StreamRange>,
}

/// Streams `task` from `replica` (the source's own), as `me`: the records sent, once the
/// destination has imported and synced every one.
///
/// # Errors
/// A description of what failed (connection, export, the destination's verdict, timeout).
pub(crate) async fn send(replica: &Arc<dyn Replica>, me: &str, task: &Task) -> Result<u64, String> {
    match tokio::time::timeout(STREAM_TIMEOUT, send_inner(replica, me, task)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no verdict within {STREAM_TIMEOUT:?}")),
    }
}

async fn send_inner(replica: &Arc<dyn Replica>, me: &str, task: &Task) -> Result<u64, String> {
    let addr = SocketAddr::new(turmoil::lookup(task.destination.as_str()), STREAM_PORT);
    let stream = turmoil::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (rd, mut wr) = stream.into_split();
    let io = |e: std::io::Error| format!("write: {e}");
    let mut open = vec![u8::try_from(me.len()).map_err(|_| "id too long".to_string())?];
    open.extend_from_slice(me.as_bytes());
    open.extend_from_slice(&task.header.encode());
    write_frame(&mut wr, OPEN, &open).await.map_err(io)?;
    let mut keys = 0u64;
    for r in &task.ranges {
        let rest = match r.done_through {
            None => r.range,
            Some(d) if d == r.range.end => continue,
            Some(d) => kv_ring::TokenRange::new(d, r.range.end),
        };
        // Gathered before sending: the export borrows the replica, the sends await.
        let mut chunks: Vec<Vec<Entry>> = Vec::new();
        let mut records = Vec::new();
        let mut bytes = 0usize;
        let batches = replica
            .export(task.header.epoch, &[rest], MAX_CHUNK_RECORDS)
            .map_err(|e| format!("export: {e}"))?;
        for batch in batches {
            for record in batch.map_err(|e| format!("export: {e}"))? {
                let e = Entry::from_record(&record);
                let len = e.key.len() + e.value.as_ref().map_or(0, |v| v.len());
                if !records.is_empty()
                    && (bytes + len > MAX_CHUNK_BYTES || records.len() >= MAX_CHUNK_RECORDS)
                {
                    chunks.push(std::mem::take(&mut records));
                    bytes = 0;
                }
                records.push(e);
                bytes += len;
            }
        }
        if !records.is_empty() {
            chunks.push(records);
        }
        for chunk in chunks {
            keys += chunk.len() as u64;
            let msg = StreamMessage::Records(chunk).encode();
            write_frame(&mut wr, CHUNK, &msg).await.map_err(io)?;
        }
        let checkpoint = StreamMessage::Checkpoint {
            range: kv_remote::Range::from(r.range),
            done_through: r.range.end,
        };
        write_frame(&mut wr, CHUNK, &checkpoint.encode())
            .await
            .map_err(io)?;
    }
    write_frame(&mut wr, DONE, &[]).await.map_err(io)?;
    let mut verdict = String::new();
    let mut rd = BufReader::new(rd.take(4096));
    rd.read_line(&mut verdict)
        .await
        .map_err(|e| format!("read the verdict: {e}"))?;
    match verdict.trim_end() {
        "OK" => Ok(keys),
        "" => Err("the connection closed without a verdict".to_string()),
        other => Err(other.to_string()),
    }
}

async fn write_frame(
    wr: &mut turmoil::net::tcp::OwnedWriteHalf,
    kind: u8,
    body: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(kind);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    wr.write_all(&frame).await
}

/// Reads one frame: its kind and body (`None`: the connection ended cleanly).
async fn read_frame<R: AsyncReadExt + Unpin>(rd: &mut R) -> Result<Option<(u8, Bytes)>, String> {
    let mut head = [0u8; 5];
    match rd.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(format!("read: {e}")),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(format!("a frame of {len} bytes, more than {MAX_FRAME}"));
    }
    let mut body = vec![0u8; len];
    rd.read_exact(&mut body)
        .await
        .map_err(|e| format!("read: {e}"))?;
    Ok(Some((head[0], Bytes::from(body))))
}

/// Takes streams on [`STREAM_PORT`] into `receiver`, one task per connection, until the
/// host ends (or its port cannot be bound).
pub(crate) async fn serve(receiver: Arc<RangeReceiver>) -> std::io::Result<()> {
    let listener =
        turmoil::net::TcpListener::bind((std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), STREAM_PORT))
            .await?;
    loop {
        let (stream, peer) = listener.accept().await?;
        tokio::spawn(receive(Arc::clone(&receiver), stream, peer));
    }
}

/// One stream: the open frame, the chunks into the receiver's sink, the verdict.
async fn receive(receiver: Arc<RangeReceiver>, stream: turmoil::net::TcpStream, peer: SocketAddr) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let verdict = take(&receiver, &mut rd, peer).await;
    let line = match verdict {
        Ok(()) => "OK\n".to_string(),
        Err(e) => format!("ERR {}\n", e.replace('\n', " ")),
    };
    let _ = wr.write_all(line.as_bytes()).await;
}

async fn take<R: AsyncReadExt + Unpin>(
    receiver: &Arc<RangeReceiver>,
    rd: &mut R,
    peer: SocketAddr,
) -> Result<(), String> {
    let Some((OPEN, open)) = read_frame(rd).await? else {
        return Err("no open frame".to_string());
    };
    let id_len = usize::from(*open.first().ok_or("an empty open frame")?);
    if open.len() < 1 + id_len {
        return Err("a short open frame".to_string());
    }
    let from = String::from_utf8_lossy(&open[1..1 + id_len]).into_owned();
    let info = kv_net::PeerInfo {
        node_id: from,
        addr: peer,
        epoch: 0,
    };
    let mut sink = receiver
        .open(&info, open.slice(1 + id_len..))
        .map_err(|e| e.to_string())?;
    loop {
        match read_frame(rd).await? {
            // Dropped unfinished: the sink discards the stream (what it synced stands).
            None => return Err("the stream was cut short".to_string()),
            Some((CHUNK, body)) => sink.chunk(body)?,
            Some((DONE, _)) => return sink.finish(),
            Some((kind, _)) => return Err(format!("a frame of kind {kind}")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_a_lying_length_is_refused() {
        let mut wire = Vec::new();
        for (kind, body) in [
            (OPEN, &b"abc"[..]),
            (CHUNK, &[7u8; 300][..]),
            (DONE, &[][..]),
        ] {
            wire.push(kind);
            wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
            wire.extend_from_slice(body);
        }
        let mut rd = &wire[..];
        let (k, b) = read_frame(&mut rd).await.unwrap().unwrap();
        assert_eq!((k, &b[..]), (OPEN, &b"abc"[..]));
        let (k, b) = read_frame(&mut rd).await.unwrap().unwrap();
        assert_eq!((k, b.len()), (CHUNK, 300));
        let (k, b) = read_frame(&mut rd).await.unwrap().unwrap();
        assert_eq!((k, b.len()), (DONE, 0));
        assert!(read_frame(&mut rd).await.unwrap().is_none());
        // A length past the bound is refused before anything is allocated for it.
        let mut lying = vec![CHUNK];
        lying.extend_from_slice(&u32::MAX.to_be_bytes());
        let e = read_frame(&mut &lying[..]).await.unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }
}
