//! The sockets under the transport, behind one seam: a [`Listener`] the server accepts on and
//! the [`Socket`]s it and the dialing side talk through: TCP, or with feature `sim` turmoil's
//! simulated TCP (`docs/membership.md` §4.1), chosen by `ServerOptions::sim` /
//! `PeersOptions::sim`. Everything above this module (framing, handshake, multiplexing,
//! heartbeats, reconnects, bulk streams) runs unchanged over simulated sockets. TLS wraps a
//! real TCP socket only (it is not simulated). Without the feature the enums have their TCP
//! variants only, so the seam costs nothing.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

#[cfg(feature = "sim")]
use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;

/// Where a [`Server`](crate::Server) accepts connections.
pub(crate) enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A listener on turmoil's simulated network.
    #[cfg(feature = "sim")]
    Sim(turmoil::net::TcpListener),
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listener::Tcp(l) => f.debug_tuple("Tcp").field(l).finish(),
            #[cfg(feature = "sim")]
            Listener::Sim(l) => f.debug_tuple("Sim").field(&l.local_addr().ok()).finish(),
        }
    }
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

    /// Binds `addr` on turmoil's simulated network, without awaiting: turmoil's bind
    /// registers the port with the current host at once and never waits, so it completes on
    /// its first poll. Must run inside a turmoil host.
    #[cfg(feature = "sim")]
    pub(crate) fn bind_sim(addr: SocketAddr) -> io::Result<Listener> {
        let mut bind = std::pin::pin!(turmoil::net::TcpListener::bind(addr));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match bind.as_mut().poll(&mut cx) {
            Poll::Ready(bound) => Ok(Listener::Sim(bound?)),
            Poll::Pending => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "turmoil's bind did not complete at once",
            )),
        }
    }

    /// The address it listens on (with the port chosen, if it was 0).
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr(),
            #[cfg(feature = "sim")]
            Listener::Sim(l) => l.local_addr(),
        }
    }

    /// The next connection, with the address it comes from.
    pub(crate) async fn accept(&self) -> io::Result<(Socket, SocketAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (tcp, addr) = l.accept().await?;
                Ok((Socket::tcp(tcp), addr))
            }
            #[cfg(feature = "sim")]
            Listener::Sim(l) => {
                let (sim, addr) = l.accept().await?;
                Ok((Socket::Sim(sim), addr))
            }
        }
    }
}

/// One connection's byte stream, before any TLS.
#[derive(Debug)]
pub(crate) enum Socket {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A connection on turmoil's simulated network.
    #[cfg(feature = "sim")]
    Sim(turmoil::net::TcpStream),
}

impl Socket {
    /// Connects to `addr`.
    pub(crate) async fn connect(addr: SocketAddr) -> io::Result<Socket> {
        Ok(Socket::tcp(TcpStream::connect(addr).await?))
    }

    /// Connects to `addr` on turmoil's simulated network (inside a turmoil host).
    #[cfg(feature = "sim")]
    pub(crate) async fn connect_sim(addr: SocketAddr) -> io::Result<Socket> {
        Ok(Socket::Sim(turmoil::net::TcpStream::connect(addr).await?))
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
            #[cfg(feature = "sim")]
            Socket::Sim(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "TLS over a simulated socket is not supported",
            )),
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
            #[cfg(feature = "sim")]
            Socket::Sim(s) => Pin::new(s).poll_read(cx, buf),
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
            #[cfg(feature = "sim")]
            Socket::Sim(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "sim")]
            Socket::Sim(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "sim")]
            Socket::Sim(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
