//! The round trip of one peer request on loopback through `kv-net` (a 100-byte body, echoed by
//! the server's handler), against a raw TCP echo of the same 100 bytes measured in the same
//! run: the transport's own cost (framing, postcard, the caller's channel, the writer and
//! reader tasks, the handler's hop to the blocking pool) over the kernel's.
//!
//! * `net_round_trip/kv_net_call`: `Peers::call_blocking` from a plain thread; the server runs
//!   the handler on its blocking pool (a closure handler: every request may block).
//! * `net_round_trip/kv_net_call_inline`: the same with a handler whose `may_block` is false,
//!   run on the connection's async task (two thread hops fewer).
//! * `net_round_trip/raw_tcp_echo`: `write` 100 bytes, `read_exact` 100 bytes on a
//!   `TCP_NODELAY` socket to a thread that echoes them.
//! * `net_round_trip/remote_apply`: one `Replica::apply` (a 100-byte value) through
//!   `kv_remote::RemoteReplica` to a `ReplicaServer` over a `MemoryReplica`: the replica
//!   protocol's cost (building the request, the version byte, the replica's own work) on top
//!   of `kv_net_call`.
//! * Then a p50/p99 table from hdrhistogram: the two alternate in rounds (the box is shared
//!   and noisy, so neither gets the quiet half of the run).
//!
//! Run: `cargo bench -p benches --bench net` (about a minute).

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use criterion::Criterion;
use hdrhistogram::Histogram;
use kv_cluster::{Collector, MemoryReplica, Replica, Started, Version, Write as KvWrite};
use kv_net::{Handler, Identity, PeerInfo, Peers, PeersOptions, Server, ServerOptions};

const BODY: usize = 100;
const ROUNDS: usize = 6;
const PER_ROUND: usize = 20_000;
const TIMEOUT: Duration = Duration::from_secs(5);

/// A thread echoing every byte back, one connection.
fn raw_echo() -> TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let client = TcpStream::connect(addr).expect("connect");
    client.set_nodelay(true).expect("nodelay");
    client
}

fn raw_round_trip(conn: &mut TcpStream, body: &[u8], back: &mut [u8]) {
    conn.write_all(body).expect("write");
    conn.read_exact(back).expect("read");
}

type Net = (Server, Peers<Vec<u8>, Vec<u8>>);

/// Echoes on the connection's task.
struct InlineEcho;

impl Handler<Vec<u8>, Vec<u8>> for InlineEcho {
    fn handle(&self, _from: &PeerInfo, body: Vec<u8>) -> Vec<u8> {
        body
    }

    fn may_block(&self, _req: &Vec<u8>) -> bool {
        false
    }
}

fn connect(server: Server) -> Net {
    let peers = Peers::start(Identity::new(1, "client"), PeersOptions::new()).expect("peers");
    peers.add_peer("server", server.local_addr()).expect("add");
    assert!(peers.wait_connected("server", TIMEOUT), "no connection");
    (server, peers)
}

fn kv_net_pair() -> Net {
    let echo = |_: &PeerInfo, body: Vec<u8>| body;
    connect(Server::start(Identity::new(1, "server"), ServerOptions::new(), echo).expect("server"))
}

fn kv_net_pair_inline() -> Net {
    connect(
        Server::start(Identity::new(1, "server"), ServerOptions::new(), InlineEcho)
            .expect("server"),
    )
}

fn net_round_trip(peers: &Peers<Vec<u8>, Vec<u8>>, body: &Vec<u8>) -> Vec<u8> {
    peers.call_blocking("server", body, TIMEOUT).expect("call")
}

/// A remote replica of node "node2", served by a `ReplicaServer` over a `MemoryReplica`.
fn remote_pair() -> (kv_remote::ReplicaServer, kv_remote::RemoteReplica) {
    let replica = std::sync::Arc::new(MemoryReplica::new("node2").expect("replica"));
    let server =
        kv_remote::ReplicaServer::start(Identity::new(1, "node2"), ServerOptions::new(), replica)
            .expect("server");
    let peers: kv_remote::ReplicaPeers =
        Peers::start(Identity::new(1, "node1"), PeersOptions::new()).expect("peers");
    peers.add_peer("node2", server.local_addr()).expect("peer");
    assert!(peers.wait_connected("node2", TIMEOUT));
    let remote = kv_remote::RemoteReplica::new(
        "node2".parse().expect("node id"),
        std::sync::Arc::new(peers),
        TIMEOUT,
    );
    (server, remote)
}

/// One apply of a 100-byte value under key "k", each with a newer version.
fn remote_apply(remote: &kv_remote::RemoteReplica, version: &mut u64, value: &[u8]) -> bool {
    *version += 1;
    let w = KvWrite {
        key: b"k",
        value: Some(value),
        version: Version::new(*version),
        expires: None,
    };
    remote.apply(1, w).expect("apply")
}

/// A node process's remote replica: the caller's transport on `rt` (one worker), the replica
/// served inline on a runtime of its own.
struct AsyncPair {
    rt: tokio::runtime::Runtime,
    _server_rt: tokio::runtime::Runtime,
    _server: kv_remote::ReplicaServer,
    remote: std::sync::Arc<kv_remote::RemoteReplica>,
}

fn one_worker() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn async_pair() -> AsyncPair {
    let (rt, server_rt) = (one_worker(), one_worker());
    let replica = std::sync::Arc::new(MemoryReplica::new("node2").expect("replica"));
    let server = kv_remote::ReplicaServer::start_inline_data(
        Identity::new(1, "node2"),
        ServerOptions::new().runtime(server_rt.handle().clone()),
        replica,
    )
    .expect("server");
    let peers: kv_remote::ReplicaPeers = Peers::start(
        Identity::new(1, "node1"),
        PeersOptions::new().runtime(rt.handle().clone()),
    )
    .expect("peers");
    peers.add_peer("node2", server.local_addr()).expect("peer");
    assert!(peers.wait_connected("node2", TIMEOUT));
    let remote = kv_remote::RemoteReplica::new(
        "node2".parse().expect("node id"),
        std::sync::Arc::new(peers),
        TIMEOUT,
    );
    AsyncPair {
        rt,
        _server_rt: server_rt,
        _server: server,
        remote: std::sync::Arc::new(remote),
    }
}

/// `n` applies awaited one after the other in a task on the pair's runtime; each one's time
/// goes to `record`.
fn remote_apply_async(
    pair: &AsyncPair,
    n: u64,
    first_version: u64,
    mut record: impl FnMut(Duration) + Send + 'static,
) -> (Duration, impl FnMut(Duration) + Send + 'static) {
    let remote = std::sync::Arc::clone(&pair.remote);
    let task = pair.rt.spawn(async move {
        let value = [7u8; BODY];
        let start = Instant::now();
        for i in 0..n {
            let one = Instant::now();
            let w = KvWrite {
                key: b"k",
                value: Some(&value),
                version: Version::new(first_version + i),
                expires: None,
            };
            let c: Collector<bool> = Collector::new();
            if let Started::Done(r) = remote.start_apply(1, w, c.ticket(0)) {
                black_box(r.expect("apply"));
            } else {
                let (_, r) = c.wait(Instant::now() + TIMEOUT).await.expect("an answer");
                black_box(r.expect("apply"));
            }
            record(one.elapsed());
        }
        (start.elapsed(), record)
    });
    pair.rt.block_on(task).expect("task")
}

fn describe(label: &str, h: &Histogram<u64>) {
    println!(
        "net_round_trip/{label}: {} requests, p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3,
    );
}

fn percentiles(
    net: &Net,
    inline: &Net,
    raw: &mut TcpStream,
    remote: &kv_remote::RemoteReplica,
    pair: &AsyncPair,
) {
    let body = vec![7u8; BODY];
    let mut back = vec![0u8; BODY];
    let new = || Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram");
    let (mut h_net, mut h_inline, mut h_raw, mut h_remote) = (new(), new(), new(), new());
    let mut version = 1u64 << 40;
    let mut async_version = 1u64 << 41;
    let h_async = std::sync::Arc::new(std::sync::Mutex::new(new()));
    for _ in 0..ROUNDS {
        let h = std::sync::Arc::clone(&h_async);
        let record = move |d: Duration| {
            if let Ok(mut h) = h.lock() {
                h.saturating_record(d.as_nanos() as u64);
            }
        };
        let _ = remote_apply_async(pair, PER_ROUND as u64, async_version, record);
        async_version += PER_ROUND as u64;
        for _ in 0..PER_ROUND {
            let start = Instant::now();
            raw_round_trip(raw, &body, &mut back);
            h_raw.saturating_record(start.elapsed().as_nanos() as u64);
        }
        for _ in 0..PER_ROUND {
            let start = Instant::now();
            black_box(net_round_trip(&net.1, &body));
            h_net.saturating_record(start.elapsed().as_nanos() as u64);
        }
        for _ in 0..PER_ROUND {
            let start = Instant::now();
            black_box(net_round_trip(&inline.1, &body));
            h_inline.saturating_record(start.elapsed().as_nanos() as u64);
        }
        for _ in 0..PER_ROUND {
            let start = Instant::now();
            black_box(remote_apply(remote, &mut version, &body));
            h_remote.saturating_record(start.elapsed().as_nanos() as u64);
        }
    }
    describe("raw_tcp_echo", &h_raw);
    describe("kv_net_call", &h_net);
    describe("kv_net_call_inline", &h_inline);
    describe("remote_apply", &h_remote);
    if let Ok(h) = h_async.lock() {
        describe("remote_apply_async", &h);
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let net = kv_net_pair();
    let inline = kv_net_pair_inline();
    let mut raw = raw_echo();
    let body = vec![7u8; BODY];
    let mut back = vec![0u8; BODY];
    let mut g = c.benchmark_group("net_round_trip");
    g.bench_function("raw_tcp_echo", |b| {
        b.iter(|| raw_round_trip(&mut raw, &body, &mut back))
    });
    g.bench_function("kv_net_call", |b| {
        b.iter(|| black_box(net_round_trip(&net.1, &body)))
    });
    g.bench_function("kv_net_call_inline", |b| {
        b.iter(|| black_box(net_round_trip(&inline.1, &body)))
    });
    let (_server, remote) = remote_pair();
    let mut version = 1u64 << 30;
    g.bench_function("remote_apply", |b| {
        b.iter(|| black_box(remote_apply(&remote, &mut version, &body)))
    });
    let pair = async_pair();
    let mut async_version = 1u64 << 35;
    g.bench_function("remote_apply_async", |b| {
        b.iter_custom(|iters| {
            let (took, _) = remote_apply_async(&pair, iters, async_version, |_| {});
            async_version += iters;
            took
        })
    });
    g.finish();
    c.final_summary();
    percentiles(&net, &inline, &mut raw, &remote, &pair);
}
