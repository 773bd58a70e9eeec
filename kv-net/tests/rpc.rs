//! Requests and answers on one multiplexed connection: out of order, deadlines, backpressure,
//! the async API, handler failures, liveness and status.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns unwrap too.

mod common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use kv_net::Error;

#[test]
fn many_requests_in_flight_are_answered_out_of_order_by_id() {
    let server = server(Counts::default());
    let peers = client(server.local_addr(), fast_options());
    let (tx, rx) = mpsc::channel();
    // The first sent sleeps longest: answers come back in reverse order of sending.
    let n = 40u64;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(peers.send(
            "server",
            &Req::Sleep {
                ms: (n - i) * 10,
                tag: i,
            },
            LONG,
            &tx,
        ));
    }
    let mut order = Vec::new();
    for _ in 0..n {
        let reply = rx.recv_timeout(LONG).expect("an answer");
        let Resp::Num(tag) = reply.result.expect("a response");
        // The reply's id is the id `send` returned for that request.
        assert_eq!(reply.request, ids[tag as usize]);
        assert_eq!(&*reply.peer, "server");
        order.push(tag);
    }
    assert_eq!(
        order.iter().copied().collect::<HashSet<_>>().len(),
        n as usize
    );
    assert!(
        order.first() > order.last(),
        "answers in send order: {order:?}"
    );
    assert_eq!(peers.status()[0].in_flight, 0);
}

#[test]
fn a_peer_that_never_answers_times_out_at_the_deadline() {
    let server = server(Counts::default());
    let peers = client(server.local_addr(), fast_options());
    let (tx, rx) = mpsc::channel();
    let deadline = Duration::from_millis(300);
    let start = Instant::now();
    peers.send("server", &Req::Sleep { ms: 3000, tag: 1 }, deadline, &tx);
    let reply = rx.recv_timeout(LONG).expect("the timeout is posted");
    let elapsed = start.elapsed();
    assert!(
        matches!(reply.result, Err(Error::Timeout { after, .. }) if after == deadline),
        "{:?}",
        reply.result
    );
    assert!(elapsed >= deadline, "{elapsed:?}");
    assert!(
        elapsed < deadline + Duration::from_millis(500),
        "{elapsed:?}"
    );
    // The connection is still usable, and the late answer is ignored.
    assert_eq!(
        peers.call_blocking("server", &Req::Echo(5), LONG).unwrap(),
        Resp::Num(5)
    );
}

#[test]
fn one_channel_collects_the_first_answers_of_several_peers() {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let replicas: Vec<_> = ["r1", "r2", "r3"]
        .iter()
        .map(|n| named_server_at(n, any, Counts::default()))
        .collect();
    let peers =
        kv_net::Peers::<Req, Resp>::start(kv_net::Identity::new(CLUSTER, "client"), fast_options())
            .unwrap();
    for (name, server) in ["r1", "r2", "r3"].iter().zip(&replicas) {
        peers.add_peer(name, server.local_addr()).unwrap();
        assert!(peers.wait_connected(name, LONG));
    }
    // r3 is slow; a quorum of two needs only r1 and r2, and an unknown peer fails at once.
    let (tx, rx) = mpsc::channel();
    peers.send("r1", &Req::Sleep { ms: 20, tag: 1 }, LONG, &tx);
    peers.send("r2", &Req::Sleep { ms: 40, tag: 2 }, LONG, &tx);
    peers.send(
        "r3",
        &Req::Sleep { ms: 3000, tag: 3 },
        Duration::from_millis(500),
        &tx,
    );
    peers.send("nobody", &Req::Echo(4), LONG, &tx);
    let start = Instant::now();
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    while ok.len() < 2 {
        let reply = rx
            .recv_timeout(Duration::from_secs(1))
            .expect("two answers well before r3's");
        match reply.result {
            Ok(Resp::Num(tag)) => ok.push((reply.peer.to_string(), tag)),
            Err(e) => failed.push(e),
        }
    }
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    ok.sort();
    assert_eq!(ok, [("r1".to_string(), 1), ("r2".to_string(), 2)]);
    assert!(
        matches!(failed[..], [Error::UnknownPeer { .. }]),
        "{failed:?}"
    );
    // r3's reply is its timeout, at its own deadline.
    let last = rx.recv_timeout(LONG).unwrap();
    assert_eq!(&*last.peer, "r3");
    assert!(
        matches!(last.result, Err(Error::Timeout { .. })),
        "{:?}",
        last.result
    );
}

#[test]
fn past_the_in_flight_bound_requests_are_refused_at_once() {
    let server = server(Counts::default());
    let peers = client(server.local_addr(), fast_options().max_in_flight(4));
    let (tx, rx) = mpsc::channel();
    for i in 0..4 {
        peers.send("server", &Req::Sleep { ms: 300, tag: i }, LONG, &tx);
    }
    let start = Instant::now();
    peers.send("server", &Req::Echo(9), LONG, &tx);
    let reply = rx
        .recv_timeout(Duration::from_millis(100))
        .expect("refused at once");
    assert!(
        matches!(reply.result, Err(Error::Overloaded { limit: 4, .. })),
        "{:?}",
        reply.result
    );
    assert!(start.elapsed() < Duration::from_millis(100));
    for _ in 0..4 {
        assert!(rx.recv_timeout(LONG).unwrap().result.is_ok());
    }
    // Once answered, the slots are free again.
    assert_eq!(
        peers.call_blocking("server", &Req::Echo(9), LONG).unwrap(),
        Resp::Num(9)
    );
}

#[test]
fn past_the_queued_bytes_bound_requests_are_refused() {
    let server = server(Counts::default());
    let peers = client(server.local_addr(), fast_options().max_queued_bytes(10));
    let reply = peers.call_blocking("server", &Req::Sleep { ms: 0, tag: 0 }, LONG);
    assert!(
        matches!(reply, Err(Error::QueueFull { limit: 10, .. })),
        "{reply:?}"
    );
}

#[test]
fn a_handler_that_panics_fails_its_request_and_the_server_goes_on() {
    let server = server(Counts::default());
    let peers = client(server.local_addr(), fast_options());
    let reply = peers.call_blocking("server", &Req::Panic, LONG);
    assert!(
        matches!(&reply, Err(Error::Remote { message, .. }) if message.contains("panicked")),
        "{reply:?}"
    );
    assert_eq!(
        peers.call_blocking("server", &Req::Echo(3), LONG).unwrap(),
        Resp::Num(3)
    );
}

#[test]
fn a_request_the_server_cannot_decode_is_a_remote_failure() {
    let server = server(Counts::default());
    // A client whose request type the server does not know.
    let peers: kv_net::Peers<(u8, String), Resp> =
        kv_net::Peers::start(kv_net::Identity::new(CLUSTER, "client"), fast_options()).unwrap();
    peers.add_peer("server", server.local_addr()).unwrap();
    assert!(peers.wait_connected("server", LONG));
    let reply = peers.call_blocking("server", &(200, "x".to_string()), LONG);
    assert!(
        matches!(&reply, Err(Error::Remote { message, .. }) if message.contains("decode")),
        "{reply:?}"
    );
}

#[test]
fn the_async_api_works_from_another_runtime() {
    let server = server(Counts::default());
    let peers = client(server.local_addr(), fast_options());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answers = rt.block_on(async {
        let calls = (0..10).map(|i| peers.call("server", &Req::Echo(i), LONG));
        let mut out = Vec::new();
        for call in calls {
            out.push(call.await.unwrap());
        }
        out
    });
    assert_eq!(answers, (0..10).map(Resp::Num).collect::<Vec<_>>());
}

#[test]
fn status_shows_liveness_round_trip_and_epochs() {
    let server = server(Counts::default());
    let peers = client(server.local_addr(), fast_options());
    assert!(
        wait_until(LONG, || peers.status()[0].rtt.is_some()),
        "no pong: {:?}",
        peers.status()
    );
    let status = &peers.status()[0];
    assert!(peers.is_alive("server"));
    assert!(status.connected && status.alive);
    assert_eq!(status.node_id, "server");
    assert_eq!(status.epoch, Some(0));
    assert_eq!(status.reconnects, 0);
    assert!(status.last_seen.unwrap() < Duration::from_millis(400));
    assert!(!peers.is_alive("nobody"));
}

#[test]
fn not_connected_is_reported_at_once_and_removing_a_peer_fails_its_requests() {
    let server = server(Counts::default());
    let peers = client(server.local_addr(), fast_options());
    let (tx, rx) = mpsc::channel();
    peers.send("server", &Req::Sleep { ms: 1000, tag: 1 }, LONG, &tx);
    std::thread::sleep(Duration::from_millis(50));
    peers.remove_peer("server").unwrap();
    let reply = rx.recv_timeout(Duration::from_millis(500)).unwrap();
    assert!(
        matches!(reply.result, Err(Error::Disconnected { .. })),
        "{:?}",
        reply.result
    );

    // A peer whose address has nobody listening: requests fail at once, not at the deadline.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = nobody.local_addr().unwrap();
    drop(nobody);
    peers.add_peer("ghost", addr).unwrap();
    let start = Instant::now();
    let reply = peers.call_blocking("ghost", &Req::Echo(1), LONG);
    assert!(
        matches!(reply, Err(Error::NotConnected { .. })),
        "{reply:?}"
    );
    assert!(start.elapsed() < Duration::from_millis(200));
    assert!(wait_until(LONG, || peers
        .status()
        .iter()
        .any(|s| s.node_id == "ghost" && s.last_error.is_some())));
}

#[test]
fn a_shorter_deadline_sent_later_times_out_first() {
    let server = server(Counts::default());
    let peers = client(server.local_addr(), fast_options());
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let long = peers.send(
        "server",
        &Req::Sleep { ms: 3000, tag: 1 },
        Duration::from_millis(1500),
        &tx,
    );
    let short = peers.send(
        "server",
        &Req::Sleep { ms: 3000, tag: 2 },
        Duration::from_millis(200),
        &tx,
    );
    let first = rx.recv_timeout(LONG).unwrap();
    let first_at = start.elapsed();
    assert_eq!(first.request, short);
    assert!(
        matches!(first.result, Err(Error::Timeout { after, .. }) if after == Duration::from_millis(200))
    );
    assert!(
        first_at >= Duration::from_millis(200) && first_at < Duration::from_millis(1000),
        "{first_at:?}"
    );
    let second = rx.recv_timeout(LONG).unwrap();
    assert_eq!(second.request, long);
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(peers.status()[0].in_flight, 0);
}

/// Answers `Echo` inline (it never blocks) and everything else on the blocking pool.
struct InlineEcho;

impl kv_net::Handler<Req, Resp> for InlineEcho {
    fn handle(&self, from: &kv_net::PeerInfo, req: Req) -> Resp {
        handler(Counts::default())(from, req)
    }

    fn may_block(&self, req: &Req) -> bool {
        !matches!(req, Req::Echo(_) | Req::Panic)
    }
}

#[test]
fn requests_that_never_block_are_answered_while_the_blocking_pool_is_busy() {
    let one_thread = kv_net::ServerOptions::new().max_blocking_threads(1);
    let server = kv_net::Server::start(
        kv_net::Identity::new(CLUSTER, "server"),
        one_thread,
        InlineEcho,
    )
    .unwrap();
    let peers = client(server.local_addr(), fast_options());
    let (tx, rx) = mpsc::channel();
    peers.send("server", &Req::Sleep { ms: 600, tag: 1 }, LONG, &tx);
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    assert_eq!(
        peers.call_blocking("server", &Req::Echo(2), LONG).unwrap(),
        Resp::Num(2)
    );
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    // A panic inline is caught as on the pool.
    let reply = peers.call_blocking("server", &Req::Panic, LONG);
    assert!(
        matches!(&reply, Err(Error::Remote { message, .. }) if message.contains("panicked")),
        "{reply:?}"
    );
    assert!(rx.recv_timeout(LONG).unwrap().result.is_ok());

    // With every request on the pool (a closure handler), the echo waits behind the sleep.
    let one_thread = kv_net::ServerOptions::new().max_blocking_threads(1);
    let pooled = kv_net::Server::start(
        kv_net::Identity::new(CLUSTER, "server"),
        one_thread,
        handler(Counts::default()),
    )
    .unwrap();
    let peers = client(pooled.local_addr(), fast_options());
    peers.send("server", &Req::Sleep { ms: 600, tag: 1 }, LONG, &tx);
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    assert_eq!(
        peers.call_blocking("server", &Req::Echo(2), LONG).unwrap(),
        Resp::Num(2)
    );
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn send_with_calls_back_once_per_request_from_the_transport() {
    let server = server(Counts::default());
    let peers = client(server.local_addr(), fast_options());
    let (tx, rx) = mpsc::channel();
    for tag in 0..5u64 {
        let tx = tx.clone();
        let caller = std::thread::current().id();
        peers.send_with("server", &Req::Sleep { ms: 20, tag }, LONG, move |answer| {
            // An answer that crossed the network comes from a transport thread.
            let _ = tx.send((answer, std::thread::current().id() != caller));
        });
    }
    let mut tags = Vec::new();
    for _ in 0..5 {
        let (answer, from_transport) = rx.recv_timeout(LONG).expect("a callback");
        assert!(from_transport);
        let Resp::Num(tag) = answer.expect("a response");
        tags.push(tag);
    }
    tags.sort_unstable();
    assert_eq!(tags, [0, 1, 2, 3, 4]);
    // Exactly once: no sixth callback.
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    // An unknown peer and a deadline are errors given to the callback.
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    peers.send_with("nobody", &Req::Sleep { ms: 0, tag: 0 }, LONG, move |a| {
        let _ = tx2.send(a);
    });
    assert!(matches!(
        rx.recv_timeout(LONG),
        Ok(Err(Error::UnknownPeer { .. }))
    ));
    let start = Instant::now();
    peers.send_with(
        "server",
        &Req::Sleep { ms: 2000, tag: 9 },
        Duration::from_millis(200),
        move |a| {
            let _ = tx.send(a);
        },
    );
    assert!(matches!(
        rx.recv_timeout(LONG),
        Ok(Err(Error::Timeout { .. }))
    ));
    assert!(start.elapsed() < Duration::from_millis(1500));
}
