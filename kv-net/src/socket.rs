//! The sockets under the transport, behind one seam: a [`Listener`] the server accepts on and
//! the [`Socket`]s it and the dialing side talk through. Both are TCP today. The simulation
//! planned in `docs/membership.md` (§4.1) adds a variant to each for turmoil's sockets behind
//! a `sim` feature; everything above this module (framing, handshake, multiplexing,
//! heartbeats, reconnects, bulk streams) then runs unchanged over simulated sockets. TLS
//! wraps a TCP socket only (it is not simulated).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;

/// Where a [`Server`](crate::Server) accepts connections.
#[derive(Debug)]
pub(crate) enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `addr` without awaiting, so that a server can start from any thread (one of the
    /// runtime's own included), and registers the listener with `handle`'s runtime.
    pub(crate) fn bind(addr: SocketAddr, handle: &Handle) -> io::Result<Listener> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let _entered = handle.enter();
        Ok(Listener::Tcp(TcpListener::from_std(std_listener)?))
    }

    /// The address it listens on (with the port chosen, if it was 0).
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr(),
        }
    }

    /// The next connection, with the address it comes from.
    pub(crate) async fn accept(&self) -> io::Result<(Socket, SocketAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (tcp, addr) = l.accept().await?;
                Ok((Socket::tcp(tcp), addr))
            }
        }
    }
}

/// One connection's byte stream, before any TLS.
#[derive(Debug)]
pub(crate) enum Socket {
    /// A TCP connection.
    Tcp(TcpStream),
}

impl Socket {
    /// Connects to `addr`.
    pub(crate) async fn connect(addr: SocketAddr) -> io::Result<Socket> {
        Ok(Socket::tcp(TcpStream::connect(addr).await?))
    }

    /// A TCP connection with Nagle's algorithm off: requests are small and latency-bound,
    /// and the writers batch what is queued themselves.
    fn tcp(tcp: TcpStream) -> Socket {
        let _ = tcp.set_nodelay(true);
        Socket::Tcp(tcp)
    }

    /// The TCP connection under it, for TLS to wrap.
    pub(crate) fn into_tcp(self) -> io::Result<TcpStream> {
        match self {
            Socket::Tcp(tcp) => Ok(tcp),
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
