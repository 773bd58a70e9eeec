//! The read and write loops every connection runs after its handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::net_stream::{BoxRead, BoxWrite};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::frame::{Frame, FrameCodec};

/// Size of a connection's write buffer: small frames queued together leave in one write.
const WRITE_BUFFER: usize = 64 * 1024;
/// Read-buffer space reserved before each read (a frame's remainder is reserved by the codec,
/// bounded by its limit).
const READ_CHUNK: usize = 16 * 1024;

/// The queue of encoded frames a connection's writer drains, and the bytes it holds.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) tx: mpsc::UnboundedSender<Bytes>,
    pub(crate) queued: Arc<AtomicUsize>,
}

/// Writes the frames of `rx` in order, flushing once the queue is empty (a burst leaves in as
/// few writes as the buffer allows). Returns when every sender is gone or a write fails.
pub(crate) async fn write_loop(
    wr: BoxWrite,
    addr: SocketAddr,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
) -> Result<()> {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, wr);
    let io = |source| Error::Io {
        op: "write",
        addr,
        source,
    };
    while let Some(frame) = rx.recv().await {
        out.write_all(&frame).await.map_err(io)?;
        queued.fetch_sub(frame.len(), Ordering::Relaxed);
        while let Ok(frame) = rx.try_recv() {
            out.write_all(&frame).await.map_err(io)?;
            queued.fetch_sub(frame.len(), Ordering::Relaxed);
        }
        out.flush().await.map_err(io)?;
    }
    Ok(())
}

/// Aborts a task when dropped: ties a helper task's life to its owner's.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads frames off one connection.
pub(crate) struct FrameReader {
    rd: BoxRead,
    addr: SocketAddr,
    codec: FrameCodec,
    buf: BytesMut,
}

impl FrameReader {
    /// A reader that starts with what the handshake read past its end.
    pub(crate) fn new(rd: BoxRead, addr: SocketAddr, max_frame_len: usize, buf: BytesMut) -> Self {
        Self {
            rd,
            addr,
            codec: FrameCodec::new(max_frame_len),
            buf,
        }
    }

    /// The next frame, or `None` at a clean end of the connection (between frames).
    ///
    /// # Errors
    ///
    /// The codec's errors, [`Error::Truncated`] for an end in the middle of a frame,
    /// [`Error::Io`].
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.codec.decode_frame(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
                self.buf.reserve(READ_CHUNK);
            }
            let n = self
                .rd
                .read_buf(&mut self.buf)
                .await
                .map_err(|source| Error::Io {
                    op: "read",
                    addr: self.addr,
                    source,
                })?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(Error::Truncated {
                    addr: self.addr,
                    buffered: self.buf.len(),
                });
            }
        }
    }

    /// Bytes the read buffer has room for (tests check it stays bounded).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn a_frame_claiming_4_gib_is_refused_and_nothing_is_reserved_for_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (rd, _wr) = server.into_split();
        let mut reader = FrameReader::new(Box::new(rd), addr, 1024 * 1024, BytesMut::new());
        client.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        client.write_all(&[4u8; 64]).await.unwrap();
        let err = reader.next().await.unwrap_err();
        assert!(
            matches!(err, Error::FrameTooLarge { len, .. } if len == u64::from(u32::MAX)),
            "{err}"
        );
        assert!(
            reader.capacity() <= 2 * READ_CHUNK,
            "read buffer grew to {}",
            reader.capacity()
        );
    }

    #[tokio::test]
    async fn half_a_frame_then_a_close_is_a_truncation() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (rd, _wr) = server.into_split();
        let mut reader = FrameReader::new(Box::new(rd), addr, 1024 * 1024, BytesMut::new());
        client.write_all(&[100, 0, 0, 0, 4, 1, 2]).await.unwrap();
        drop(client);
        let err = reader.next().await.unwrap_err();
        assert!(matches!(err, Error::Truncated { buffered: 7, .. }), "{err}");
    }
}
