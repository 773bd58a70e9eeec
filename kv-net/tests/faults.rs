//! Each fault kind has its effect: drop -> timeout, delay -> latency at least the delay,
//! duplicate -> the handler runs twice and the caller gets one answer, black-hole -> a
//! partition (not alive, requests time out) that heals.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns unwrap too.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use kv_net::{Direction, Error, Fault};

#[test]
fn dropped_requests_time_out_and_the_rest_pass() {
    let counts = Counts::default();
    let server = server(counts.clone());
    let peers = client(server.local_addr(), fast_options());
    peers.faults().set(
        "server",
        Direction::Outbound,
        Fault::Drop { probability: 1.0 },
    );
    let reply = peers.call_blocking("server", &Req::Count, Duration::from_millis(200));
    assert!(matches!(reply, Err(Error::Timeout { .. })), "{reply:?}");
    assert_eq!(counts.get(), 0, "a dropped request reached the handler");

    // Half of them, with a fixed seed: some pass, some time out, never a wrong answer.
    peers.faults().set(
        "server",
        Direction::Outbound,
        Fault::Drop { probability: 0.5 },
    );
    let (tx, rx) = mpsc::channel();
    for i in 0..40 {
        peers.send("server", &Req::Echo(i), Duration::from_millis(300), &tx);
    }
    let (mut ok, mut timed_out) = (0, 0);
    for _ in 0..40 {
        match rx.recv_timeout(LONG).unwrap().result {
            Ok(_) => ok += 1,
            Err(Error::Timeout { .. }) => timed_out += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        ok > 0 && timed_out > 0,
        "{ok} answered, {timed_out} timed out"
    );

    // Dropped answers (inbound) time out too, though the handler ran.
    peers.faults().clear_all();
    peers.faults().set(
        "server",
        Direction::Inbound,
        Fault::Drop { probability: 1.0 },
    );
    let before = counts.get();
    let reply = peers.call_blocking("server", &Req::Count, Duration::from_millis(200));
    assert!(matches!(reply, Err(Error::Timeout { .. })), "{reply:?}");
    assert!(wait_until(LONG, || counts.get() == before + 1));
    peers.faults().clear_all();
    assert!(peers.call_blocking("server", &Req::Echo(1), LONG).is_ok());
}

#[test]
fn delayed_frames_arrive_at_least_the_delay_later() {
    let server = server(Counts::default());
    let peers = client(server.local_addr(), fast_options());
    let delay = Duration::from_millis(150);
    for direction in [Direction::Outbound, Direction::Inbound] {
        peers.faults().set("server", direction, Fault::Delay(delay));
        let start = Instant::now();
        assert_eq!(
            peers.call_blocking("server", &Req::Echo(7), LONG).unwrap(),
            Resp::Num(7)
        );
        let took = start.elapsed();
        assert!(took >= delay, "{direction:?}: {took:?}");
        peers.faults().clear("server", direction);
    }
    // Without the fault the round trip is back to loopback speed.
    let start = Instant::now();
    peers.call_blocking("server", &Req::Echo(7), LONG).unwrap();
    assert!(start.elapsed() < delay, "{:?}", start.elapsed());
}

#[test]
fn a_duplicated_request_runs_twice_and_is_answered_once() {
    let counts = Counts::default();
    let server = server(counts.clone());
    let peers = client(server.local_addr(), fast_options());
    peers
        .faults()
        .set("server", Direction::Outbound, Fault::Duplicate);
    let (tx, rx) = mpsc::channel();
    peers.send("server", &Req::Count, LONG, &tx);
    let first = rx.recv_timeout(LONG).unwrap();
    assert!(first.result.is_ok());
    assert!(
        wait_until(LONG, || counts.get() == 2),
        "the handler saw it {} times",
        counts.get()
    );
    // The second answer finds no pending request: the caller gets exactly one reply.
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    assert_eq!(peers.status()[0].in_flight, 0);
}

#[test]
fn a_black_hole_partitions_and_heals() {
    let server = server(Counts::default());
    let peers = client(server.local_addr(), fast_options());
    assert!(wait_until(LONG, || peers.is_alive("server")));

    peers.faults().partition("server");
    // Heartbeats stop: not alive once the 400 ms liveness timeout passes.
    assert!(
        wait_until(LONG, || !peers.is_alive("server")),
        "{:?}",
        peers.status()
    );
    let start = Instant::now();
    let reply = peers.call_blocking("server", &Req::Echo(1), Duration::from_millis(200));
    assert!(matches!(reply, Err(Error::Timeout { .. })), "{reply:?}");
    assert!(start.elapsed() < Duration::from_secs(1));

    peers.faults().heal("server");
    assert!(
        wait_until(LONG, || peers.is_alive("server")),
        "{:?}",
        peers.status()
    );
    assert_eq!(
        peers.call_blocking("server", &Req::Echo(2), LONG).unwrap(),
        Resp::Num(2)
    );
    // The partition was in the transport only: the connection was never dropped.
    assert_eq!(peers.status()[0].reconnects, 0);
}

#[test]
fn faults_are_per_peer() {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a = named_server_at("a", any, Counts::default());
    let b = named_server_at("b", any, Counts::default());
    let peers =
        kv_net::Peers::<Req, Resp>::start(kv_net::Identity::new(CLUSTER, "client"), fast_options())
            .unwrap();
    peers.add_peer("a", a.local_addr()).unwrap();
    peers.add_peer("b", b.local_addr()).unwrap();
    assert!(peers.wait_connected("a", LONG) && peers.wait_connected("b", LONG));
    peers.faults().partition("a");
    assert!(
        peers
            .call_blocking("a", &Req::Echo(1), Duration::from_millis(200))
            .is_err()
    );
    assert_eq!(
        peers.call_blocking("b", &Req::Echo(1), LONG).unwrap(),
        Resp::Num(1)
    );
}

#[test]
fn a_partition_stalls_streams_and_refuses_new_ones_until_it_heals() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

    use bytes::Bytes;
    use kv_net::{PeerInfo, Server, ServerOptions, StreamHandler, StreamSink};

    /// Bytes received in chunks, and bytes of finished streams.
    struct Counted(Arc<AtomicU64>, Arc<AtomicU64>);
    struct Sink(Arc<AtomicU64>, Arc<AtomicU64>, u64);
    impl StreamHandler for Counted {
        fn open(&self, _: &PeerInfo, _: Bytes) -> Result<Box<dyn StreamSink>, String> {
            Ok(Box::new(Sink(self.0.clone(), self.1.clone(), 0)))
        }
    }
    impl StreamSink for Sink {
        fn chunk(&mut self, data: Bytes) -> Result<(), String> {
            self.0.fetch_add(data.len() as u64, SeqCst);
            self.2 += data.len() as u64;
            Ok(())
        }
        fn finish(self: Box<Self>) -> Result<(), String> {
            self.1.fetch_add(self.2, SeqCst);
            Ok(())
        }
    }

    let received = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let server = Server::start_with_streams(
        kv_net::Identity::new(CLUSTER, "server"),
        ServerOptions::new(),
        handler(Counts::default()),
        Counted(received.clone(), finished.clone()),
    )
    .unwrap();
    let opts = fast_options()
        .stream_stall_timeout(Duration::from_millis(300))
        .stream_buffer_chunks(2);
    let peers = client(server.local_addr(), opts);

    peers.faults().partition("server");
    let refused = peers.open_stream("server", b"x");
    assert!(
        matches!(refused, Err(Error::NotConnected { .. })),
        "{refused:?}"
    );
    peers.faults().heal("server");

    // Partitioned mid-stream: the bytes stop, the sender fails at its stall timeout.
    let mut stream = peers.open_stream("server", b"x").unwrap();
    stream.send(&[1u8; 1000]).unwrap();
    assert!(wait_until(LONG, || received.load(SeqCst) == 1000));
    peers.faults().partition("server");
    let start = Instant::now();
    let err = loop {
        if let Err(e) = stream.send(&[2u8; 1000]) {
            break e;
        }
        assert!(start.elapsed() < LONG, "the stream never stalled");
    };
    assert!(
        matches!(&err, Error::Stream { reason, .. } if reason.contains("took nothing")),
        "{err}"
    );
    assert_eq!(received.load(SeqCst), 1000, "bytes crossed the partition");
    drop(stream);

    peers.faults().heal("server");
    let mut stream = peers.open_stream("server", b"x").unwrap();
    stream.send(&[3u8; 500]).unwrap();
    stream.finish(LONG).unwrap();
    // Only the healed stream finished (the abandoned one may deliver the chunk it held once
    // the partition heals, but its sink is never finished).
    assert_eq!(finished.load(SeqCst), 500);
}

#[test]
fn a_reset_fails_the_requests_in_flight_and_the_connection_comes_back() {
    let server = server(Counts::default());
    let peers = client(server.local_addr(), fast_options());
    let reconnects = |peers: &kv_net::Peers<Req, Resp>| peers.status()[0].reconnects;
    assert_eq!(reconnects(&peers), 0);

    // A slow request in flight when the connection is cut fails at once (at the next pong,
    // a heartbeat later), long before its answer or its deadline.
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    peers.send("server", &Req::Sleep { ms: 2_000, tag: 1 }, LONG, &tx);
    peers.faults().reset("server");
    let done = rx.recv_timeout(LONG).unwrap();
    assert!(
        matches!(done.result, Err(Error::Disconnected { .. })),
        "{:?}",
        done.result
    );
    assert!(
        start.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        start.elapsed()
    );
    assert!(!peers.faults().is_active(), "the reset is one-shot");

    // The connection is reestablished with backoff and serves again.
    assert!(wait_until(LONG, || reconnects(&peers) == 1 && peers.is_alive("server")));
    assert_eq!(
        peers.call_blocking("server", &Req::Echo(3), LONG).unwrap(),
        Resp::Num(3)
    );
}
