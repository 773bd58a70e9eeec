//! Shared by the integration tests: a small request vocabulary, a server answering it, and a
//! client connected to it. Everything listens on 127.0.0.1 with a free port.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kv_net::{Identity, PeerInfo, Peers, PeersOptions, Server, ServerOptions};
use serde::{Deserialize, Serialize};

pub const CLUSTER: u128 = 0x6b76_7374_6f72_6500_0000_0000_0000_0001;

/// What the test server understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Req {
    /// Answered at once with the same number.
    Echo(u64),
    /// Answered with `tag` after `ms` milliseconds.
    Sleep { ms: u64, tag: u64 },
    /// Counted (see `Counts`), answered with the count so far.
    Count,
    /// The handler panics.
    Panic,
}

/// What it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resp {
    Num(u64),
}

/// How many `Count` requests the server has handled.
#[derive(Debug, Default, Clone)]
pub struct Counts(pub Arc<AtomicU64>);

impl Counts {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn handler(counts: Counts) -> impl Fn(&PeerInfo, Req) -> Resp + Send + Sync + 'static {
    move |_, req| match req {
        Req::Echo(n) => Resp::Num(n),
        Req::Sleep { ms, tag } => {
            std::thread::sleep(Duration::from_millis(ms));
            Resp::Num(tag)
        }
        Req::Count => Resp::Num(counts.0.fetch_add(1, Ordering::SeqCst) + 1),
        Req::Panic => panic!("the test handler panics on purpose"),
    }
}

/// A server "server" of the test cluster, on `addr` (port 0: a free one).
pub fn server_at(addr: SocketAddr, counts: Counts) -> Server {
    named_server_at("server", addr, counts)
}

/// A server of the test cluster with node id `name`.
pub fn named_server_at(name: &str, addr: SocketAddr, counts: Counts) -> Server {
    let opts = ServerOptions::new().listen(addr);
    // A port just freed may take a moment to be bindable again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Server::start(
            Identity::new(CLUSTER, name),
            opts.clone(),
            handler(counts.clone()),
        ) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("bind {addr}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot start the server: {e}"),
        }
    }
}

pub fn server(counts: Counts) -> Server {
    server_at("127.0.0.1:0".parse().unwrap(), counts)
}

/// Quick heartbeats and reconnects, so tests see liveness changes in well under a second.
pub fn fast_options() -> PeersOptions {
    PeersOptions::new()
        .heartbeat_interval(Duration::from_millis(50))
        .liveness_timeout(Duration::from_millis(400))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .seed(7)
}

/// A client "client" with the server added as peer "server", connected.
pub fn client(server_addr: SocketAddr, options: PeersOptions) -> Peers<Req, Resp> {
    let peers = Peers::start(Identity::new(CLUSTER, "client"), options).unwrap();
    peers.add_peer("server", server_addr).unwrap();
    assert!(
        peers.wait_connected("server", Duration::from_secs(5)),
        "{:?}",
        peers.status()
    );
    peers
}

/// Polls `cond` every 10 ms up to `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

pub const LONG: Duration = Duration::from_secs(5);
