//! A peer connection's byte stream: a plain [`Socket`], or TLS over a TCP one.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::socket::Socket;

/// The read half of a connection, after the handshake.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection, after the handshake.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A connection to or from a peer.
pub(crate) enum NetStream {
    Plain(Socket),
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl NetStream {
    /// Splits the connection for its reader and writer tasks. Plain TCP splits without a lock;
    /// TLS (one session state for both directions) through tokio's `split`.
    pub(crate) fn into_split(self) -> (BoxRead, BoxWrite) {
        match self {
            NetStream::Plain(Socket::Tcp(tcp)) => {
                let (rd, wr) = tcp.into_split();
                (Box::new(rd), Box::new(wr))
            }
            #[cfg(feature = "sim")]
            NetStream::Plain(Socket::Sim(sim)) => {
                let (rd, wr) = sim.into_split();
                (Box::new(rd), Box::new(wr))
            }
            tls => {
                let (rd, wr) = tokio::io::split(tls);
                (Box::new(rd), Box::new(wr))
            }
        }
    }
}

impl AsyncRead for NetStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            NetStream::Client(s) => Pin::new(s).poll_read(cx, buf),
            NetStream::Server(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NetStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            NetStream::Client(s) => Pin::new(s).poll_write(cx, buf),
            NetStream::Server(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_flush(cx),
            NetStream::Client(s) => Pin::new(s).poll_flush(cx),
            NetStream::Server(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            NetStream::Client(s) => Pin::new(s).poll_shutdown(cx),
            NetStream::Server(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
