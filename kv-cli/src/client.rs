//! A blocking Redis-protocol client of `kvstore serve`, for `kvstore --connect`: one
//! `std::net::TcpStream`, commands encoded and replies decoded by `kv-resp`, no async.
//!
//! Time is bounded everywhere, so a hung server never hangs the REPL:
//! - connecting gives up after [`Timeouts::connect`] (10 s by default);
//! - a reply must arrive within [`Timeouts::reply`] (`--timeout`, 30 s by default);
//! - a long administration command (`addnode`, `removenode`, `recover`, `repair`, `compact`)
//!   is answered by the server only when it is done, which on a large store takes longer than
//!   any fixed timeout. While waiting for it, the client asks the server for its progress on a
//!   second connection (`INFO cluster`) every second, with the same reply timeout: it waits as
//!   long as the server is alive and answering, and gives up as soon as it stops answering.
//!
//! A connection that failed (closed by the server, reset, timed out, a malformed reply) is
//! dropped: a reply still on its way would answer the wrong command. The next command connects
//! again; the failed command itself is never sent twice (a write that may or may not have been
//! applied is reported as failed, not silently repeated).

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kv_resp::{Frame, FrameDecoder};

/// How long each step may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Establishing a TCP connection.
    pub connect: Duration,
    /// A reply (and sending a command).
    pub reply: Duration,
    /// How often a long command's progress is asked for while it runs.
    pub poll: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            reply: Duration::from_secs(30),
            poll: Duration::from_secs(1),
        }
    }
}

/// Why a command got no answer from the server, or got an error answer.
#[derive(Debug)]
pub enum ClientError {
    /// The server answered with an error (`-ERR ...`, `-NOAUTH ...`); the text after `-`,
    /// without the generic `ERR ` code.
    Server(String),
    /// No connection could be made to `addr`.
    Connect {
        /// The address as given on the command line.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The connection failed while sending a command or reading its reply.
    Lost {
        /// The address as given on the command line.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The connection was closed by the server.
    Closed {
        /// The address as given on the command line.
        addr: String,
    },
    /// No reply within the reply timeout.
    Timeout {
        /// The address as given on the command line.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// A reply that is not valid RESP, or not the one the command expects.
    BadReply {
        /// The address as given on the command line.
        addr: String,
        /// What was wrong.
        what: String,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Server(text) => f.write_str(text),
            ClientError::Connect { addr, source } => {
                write!(f, "cannot connect to {addr}: {source}")
            }
            ClientError::Lost { addr, source } => write!(f, "connection to {addr} lost: {source}"),
            ClientError::Closed { addr } => write!(f, "connection closed by the server at {addr}"),
            ClientError::Timeout { addr, after } => write!(
                f,
                "no answer from {addr} within {} s (the connection is dropped; --timeout sets the limit)",
                after.as_secs_f64()
            ),
            ClientError::BadReply { addr, what } => write!(f, "bad reply from {addr}: {what}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A client of one server: the address, the password, and the connection (made again after
/// a failure, on the next command).
pub struct Client {
    addr: String,
    password: Option<String>,
    timeouts: Timeouts,
    conn: RefCell<Option<Connection>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Without the password.
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("password", &self.password.as_ref().map(|_| "..."))
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `addr` (`HOST:PORT`), logs in with `password` if one is given, and checks
    /// with a `PING` that the server accepts commands.
    ///
    /// # Errors
    ///
    /// The address cannot be resolved or reached, the password is refused, the server needs a
    /// password and none is given, or it does not answer in time.
    pub fn connect(
        addr: &str,
        password: Option<String>,
        timeouts: Timeouts,
    ) -> Result<Client, ClientError> {
        let client = Client {
            addr: addr.to_owned(),
            password,
            timeouts,
            conn: RefCell::new(None),
        };
        match client.call(&[b"PING"]) {
            Ok(Frame::Simple(s)) if &s[..] == b"PONG" => Ok(client),
            Ok(other) => Err(client.bad(format!("PING answered {other:?}"))),
            Err(ClientError::Server(text)) if text.starts_with("NOAUTH") => {
                Err(ClientError::Server(format!(
                    "{} requires a password: give it with --password or in the KVSTORE_AUTH environment variable ({text})",
                    client.addr
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Sends one command and reads its reply; an error reply is [`ClientError::Server`].
    ///
    /// # Errors
    ///
    /// See [`ClientError`]; after any but [`ClientError::Server`] the connection is dropped.
    pub fn call(&self, args: &[&[u8]]) -> Result<Frame, ClientError> {
        self.call_with(args, None)
    }

    /// A command answered `+OK`.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; any other reply is [`ClientError::BadReply`].
    pub fn call_ok(&self, args: &[&[u8]]) -> Result<(), ClientError> {
        match self.call(args)? {
            Frame::Simple(s) if &s[..] == b"OK" => Ok(()),
            other => Err(self.unexpected(args, &other)),
        }
    }

    /// A command answered with a bulk string or nil.
    ///
    /// # Errors
    ///
    /// As [`Client::call_ok`].
    pub fn call_bulk(&self, args: &[&[u8]]) -> Result<Option<Bytes>, ClientError> {
        let frame = self.call(args)?;
        bulk(frame).map_err(|other| self.unexpected(args, &other))
    }

    /// A command answered with an integer.
    ///
    /// # Errors
    ///
    /// As [`Client::call_ok`].
    pub fn call_integer(&self, args: &[&[u8]]) -> Result<i64, ClientError> {
        match self.call(args)? {
            Frame::Integer(n) => Ok(n),
            other => Err(self.unexpected(args, &other)),
        }
    }

    /// A command answered with an array of bulk strings or nils (`MGET`).
    ///
    /// # Errors
    ///
    /// As [`Client::call_ok`].
    pub fn call_bulks(&self, args: &[&[u8]]) -> Result<Vec<Option<Bytes>>, ClientError> {
        match self.call(args)? {
            Frame::Array(items) => items
                .into_iter()
                .map(|f| bulk(f).map_err(|other| self.unexpected(args, &other)))
                .collect(),
            other => Err(self.unexpected(args, &other)),
        }
    }

    fn unexpected(&self, args: &[&[u8]], reply: &Frame) -> ClientError {
        let name = args
            .first()
            .map(|n| String::from_utf8_lossy(n))
            .unwrap_or_default();
        self.bad(format!("{name} answered {reply:?}"))
    }

    /// As [`Client::call`], for a command the server answers only when it is done, however
    /// long that takes: while it runs, `progress` is given the server's `INFO cluster` text
    /// every [`Timeouts::poll`], read on a second connection. The wait ends with an error
    /// only if the server stops answering (or the connection fails).
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn call_long(
        &self,
        args: &[&[u8]],
        progress: &mut dyn FnMut(&str),
    ) -> Result<Frame, ClientError> {
        self.call_with(args, Some(progress))
    }

    fn call_with(
        &self,
        args: &[&[u8]],
        progress: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Frame, ClientError> {
        // Taken out while in use, put back only if it is still in step with the server.
        let taken = self.conn.borrow_mut().take();
        let mut conn = match taken {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = match progress {
            None => conn.call(args, None),
            Some(progress) => {
                // One side connection for the whole wait, made when first needed.
                let mut side: Option<Connection> = None;
                let mut poll = || -> Result<(), ClientError> {
                    let answer = match side.take() {
                        Some(s) => Ok(s),
                        None => self.open(),
                    }
                    .and_then(|mut s| {
                        let info = s.info_cluster()?;
                        side = Some(s);
                        Ok(info)
                    });
                    match answer {
                        Ok(info) => progress(&info),
                        // An error answer (`max number of clients reached`) is a server alive
                        // and answering: keep waiting, on a new side connection next time.
                        Err(ClientError::Server(_)) => {}
                        Err(e) => return Err(e),
                    }
                    Ok(())
                };
                conn.call(args, Some(&mut poll))
            }
        };
        if result.is_ok() {
            *self.conn.borrow_mut() = Some(conn);
        }
        match result {
            Ok(Frame::Error(text)) => Err(ClientError::Server(server_text(&text))),
            other => other,
        }
    }

    /// A new connection, logged in.
    fn open(&self) -> Result<Connection, ClientError> {
        let mut conn = Connection::open(&self.addr, self.timeouts)?;
        if let Some(password) = &self.password {
            match conn.call(&[b"AUTH", password.as_bytes()], None)? {
                Frame::Simple(_) => {}
                Frame::Error(text) => {
                    return Err(ClientError::Server(format!(
                        "{} refused the password: {}",
                        self.addr,
                        server_text(&text)
                    )));
                }
                other => return Err(self.bad(format!("AUTH answered {other:?}"))),
            }
        }
        Ok(conn)
    }

    /// A [`ClientError::BadReply`].
    pub fn bad(&self, what: String) -> ClientError {
        ClientError::BadReply {
            addr: self.addr.clone(),
            what,
        }
    }
}

/// An error reply's text, without the generic `ERR ` code (`NOAUTH ...`, `WRONGPASS ...`
/// keep theirs).
fn server_text(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    text.strip_prefix("ERR ").unwrap_or(&text).to_owned()
}

/// One TCP connection with its read buffer and decoder.
#[derive(Debug)]
struct Connection {
    addr: String,
    stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
    timeouts: Timeouts,
}

impl Connection {
    fn open(addr: &str, timeouts: Timeouts) -> Result<Connection, ClientError> {
        let connect_err = |source| ClientError::Connect {
            addr: addr.to_owned(),
            source,
        };
        let resolved: Vec<SocketAddr> = addr.to_socket_addrs().map_err(connect_err)?.collect();
        let mut last = std::io::Error::new(ErrorKind::NotFound, "the name resolves to no address");
        let mut stream = None;
        for a in resolved {
            match TcpStream::connect_timeout(&a, timeouts.connect) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| connect_err(last))?;
        // Commands are small and answered one at a time: send each at once.
        stream.set_nodelay(true).map_err(connect_err)?;
        stream
            .set_write_timeout(Some(timeouts.reply))
            .map_err(connect_err)?;
        Ok(Connection {
            addr: addr.to_owned(),
            stream,
            buf: BytesMut::with_capacity(16 << 10),
            decoder: FrameDecoder::new(),
            timeouts,
        })
    }

    /// Sends `args`, reads the reply. With `poll`, a reply slower than [`Timeouts::poll`] is
    /// waited for as long as `poll` succeeds; without, for [`Timeouts::reply`].
    fn call(
        &mut self,
        args: &[&[u8]],
        mut poll: Option<&mut dyn FnMut() -> Result<(), ClientError>>,
    ) -> Result<Frame, ClientError> {
        let mut out = BytesMut::new();
        kv_resp::encode_command(&mut out, args.iter());
        self.stream.write_all(&out).map_err(|e| self.io(e))?;
        let wait = if poll.is_some() {
            self.timeouts.poll
        } else {
            self.timeouts.reply
        };
        self.stream
            .set_read_timeout(Some(wait))
            .map_err(|e| self.io(e))?;
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => {
                    return Err(ClientError::BadReply {
                        addr: self.addr.clone(),
                        what: e.to_string(),
                    });
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(ClientError::Closed {
                        addr: self.addr.clone(),
                    });
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    match poll.as_mut() {
                        // The server is alive and answering others: the command still runs.
                        Some(poll) => poll()?,
                        None => {
                            return Err(ClientError::Timeout {
                                addr: self.addr.clone(),
                                after: wait,
                            });
                        }
                    }
                }
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    /// `INFO cluster`'s text.
    fn info_cluster(&mut self) -> Result<String, ClientError> {
        match self.call(&[b"INFO", b"cluster"], None)? {
            Frame::Bulk(text) => Ok(String::from_utf8_lossy(&text).into_owned()),
            Frame::Error(text) => Err(ClientError::Server(server_text(&text))),
            other => Err(ClientError::BadReply {
                addr: self.addr.clone(),
                what: format!("INFO answered {other:?}"),
            }),
        }
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        if matches!(source.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            return ClientError::Timeout {
                addr: self.addr.clone(),
                after: self.timeouts.reply,
            };
        }
        ClientError::Lost {
            addr: self.addr.clone(),
            source,
        }
    }
}

/// A bulk string reply's bytes, or what else came.
pub fn bulk(frame: Frame) -> Result<Option<Bytes>, Frame> {
    match frame {
        Frame::Bulk(b) => Ok(Some(b)),
        Frame::Null | Frame::NullArray => Ok(None),
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            reply: Duration::from_millis(300),
            poll: Duration::from_millis(50),
        }
    }

    #[test]
    fn an_error_reply_loses_its_generic_code_only() {
        assert_eq!(
            server_text(b"ERR fail node9: no such node"),
            "fail node9: no such node"
        );
        assert_eq!(
            server_text(b"NOAUTH Authentication required."),
            "NOAUTH Authentication required."
        );
    }

    #[test]
    fn a_server_that_stops_answering_is_a_timeout_not_a_hang() {
        let addr = scripted_server(|name| match name {
            b"PING" => Some(b"+PONG\r\n"),
            _ => None,
        });
        let client = Client::connect(&addr, None, timeouts()).unwrap();
        let err = client.call(&[b"GET", b"k"]).unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("no answer from"), "{err}");
    }

    #[test]
    fn a_reply_split_across_reads_is_put_together() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            s.write_all(b"+PO").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(b"NG\r\n").unwrap();
            let _ = s.read(&mut buf);
            s.write_all(b"$5\r\nhel").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(b"lo\r\n").unwrap();
            let _ = s.read(&mut buf);
        });
        let client = Client::connect(&addr, None, timeouts()).unwrap();
        let got = client.call(&[b"GET", b"k"]).unwrap();
        assert_eq!(bulk(got).unwrap(), Some(Bytes::from_static(b"hello")));
    }

    #[test]
    fn garbage_from_the_server_is_a_bad_reply() {
        let addr = scripted_server(|name| match name {
            b"PING" => Some(b"+PONG\r\n"),
            _ => Some(b"?what\r\n"),
        });
        let client = Client::connect(&addr, None, timeouts()).unwrap();
        let err = client.call(&[b"GET", b"k"]).unwrap_err();
        assert!(matches!(err, ClientError::BadReply { .. }), "{err}");
    }

    /// A server running `answer` for each command of each connection (a thread each); `None`
    /// is no answer, ever.
    fn scripted_server(
        answer: impl Fn(&[u8]) -> Option<&'static [u8]> + Send + Sync + 'static,
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let answer = std::sync::Arc::new(answer);
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { return };
                let answer = std::sync::Arc::clone(&answer);
                std::thread::spawn(move || {
                    let mut decoder = kv_resp::CommandDecoder::new();
                    let mut buf = BytesMut::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while let Ok(Some(cmd)) = decoder.decode(&mut buf) {
                            match answer(cmd.name()) {
                                Some(reply) => s.write_all(reply).unwrap(),
                                None => std::thread::sleep(Duration::from_secs(3600)),
                            }
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn a_long_command_is_waited_for_while_the_server_reports_progress() {
        let infos = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = std::sync::Arc::clone(&infos);
        let addr = scripted_server(move |name| match name {
            b"PING" => Some(b"+PONG\r\n"),
            b"INFO" => {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Some(b"$14\r\n# Cluster\r\nx:1\r\n")
            }
            // Answered after many poll intervals and reply timeouts.
            _ => {
                std::thread::sleep(Duration::from_millis(1200));
                Some(b"$4\r\ndone\r\n")
            }
        });
        let client = Client::connect(&addr, None, timeouts()).unwrap();
        let mut reports = Vec::new();
        let got = client
            .call_long(&[b"KVSTORE", b"ADDNODE", b"n"], &mut |info| {
                reports.push(info.to_owned());
            })
            .unwrap();
        assert_eq!(got, Frame::bulk("done"));
        assert!(reports.len() >= 5, "{reports:?}");
        assert_eq!(reports[0], "# Cluster\r\nx:1");
        assert_eq!(
            infos.load(std::sync::atomic::Ordering::SeqCst),
            reports.len()
        );
        // The connection is still in step: the next command gets its own answer.
        assert_eq!(client.call(&[b"PING"]).unwrap(), Frame::simple("PONG"));
    }

    #[test]
    fn a_long_command_outlives_progress_checks_the_server_refuses() {
        let addr = scripted_server(|name| match name {
            b"PING" => Some(b"+PONG\r\n"),
            b"INFO" => Some(b"-ERR max number of clients reached\r\n"),
            _ => {
                std::thread::sleep(Duration::from_millis(700));
                Some(b"$4\r\ndone\r\n")
            }
        });
        let client = Client::connect(&addr, None, timeouts()).unwrap();
        let got = client.call_long(&[b"KVSTORE", b"COMPACT"], &mut |_| {});
        assert_eq!(got.unwrap(), Frame::bulk("done"));
    }

    #[test]
    fn a_long_command_is_given_up_on_when_the_server_stops_answering() {
        let addr = scripted_server(|name| match name {
            b"PING" => Some(b"+PONG\r\n"),
            _ => None,
        });
        let client = Client::connect(&addr, None, timeouts()).unwrap();
        let err = client
            .call_long(&[b"KVSTORE", b"REPAIR"], &mut |_| {})
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    }

    #[test]
    fn nothing_listening_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = Client::connect(&addr, None, timeouts()).unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
        assert!(err.to_string().starts_with("cannot connect to "), "{err}");
    }
}
