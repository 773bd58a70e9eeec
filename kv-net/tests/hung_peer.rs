//! A peer that hangs (as under SIGSTOP: its socket stays open, nothing comes back): requests
//! time out at their deadlines, it stops being alive, and what queues up for it is bounded.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns unwrap too.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use kv_net::{Error, Frame, FrameKind, Hello, Identity, Peers, PeersOptions, Purpose};

/// A node "hung" that completes the handshake and then neither reads nor writes.
fn hung_peer<Q, R>(peers: &Peers<Q, R>) -> TcpStream
where
    Q: serde::Serialize,
    R: serde::de::DeserializeOwned + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    peers
        .add_peer("hung", listener.local_addr().unwrap())
        .unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let hello = Hello {
        cluster_id: CLUSTER,
        node_id: "hung".into(),
        epoch: 0,
        purpose: Purpose::Rpc,
    };
    conn.write_all(&kv_net::opening_bytes(&hello).unwrap())
        .unwrap();
    conn.write_all(
        &Frame::new(FrameKind::Accept, 0, Vec::new())
            .to_bytes(4096)
            .unwrap(),
    )
    .unwrap();
    assert!(peers.wait_connected("hung", LONG));
    conn
}

#[test]
fn a_hung_peer_times_out_requests_and_is_not_alive() {
    let peers: Peers<Req, Resp> =
        Peers::start(Identity::new(CLUSTER, "client"), fast_options()).unwrap();
    let _conn = hung_peer(&peers);
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    for i in 0..10 {
        peers.send("hung", &Req::Echo(i), Duration::from_millis(300), &tx);
    }
    for _ in 0..10 {
        let reply = rx.recv_timeout(LONG).unwrap();
        assert!(
            matches!(reply.result, Err(Error::Timeout { .. })),
            "{:?}",
            reply.result
        );
    }
    assert!(
        start.elapsed() < Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
    // No pong for longer than the 400 ms liveness timeout.
    assert!(
        wait_until(LONG, || !peers.is_alive("hung")),
        "{:?}",
        peers.status()
    );
    let status = &peers.status()[0];
    assert!(
        status.connected && !status.alive && status.in_flight == 0,
        "{status:?}"
    );
}

#[test]
fn bytes_queued_for_a_peer_that_does_not_read_are_bounded() {
    let opts = PeersOptions::new().max_queued_bytes(8 << 20).seed(1);
    let peers: Peers<Vec<u8>, Resp> = Peers::start(Identity::new(CLUSTER, "client"), opts).unwrap();
    let conn = hung_peer(&peers);

    // 128 MiB of requests: the socket buffers take a few MiB, the queue 8 MiB, the rest is
    // refused at once.
    let (tx, rx) = mpsc::channel();
    let body = vec![1u8; 1 << 20];
    for _ in 0..128 {
        peers.send("hung", &body, Duration::from_secs(2), &tx);
    }
    let mut queue_full = 0;
    for _ in 0..128 {
        match rx.recv_timeout(LONG).unwrap().result {
            Err(Error::QueueFull { limit, .. }) => {
                assert_eq!(limit, 8 << 20);
                queue_full += 1;
            }
            Err(Error::Timeout { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(queue_full >= 64, "only {queue_full} of 128 refused");
    drop(conn);
}

#[test]
fn a_stream_to_a_hung_receiver_fails_at_the_stall_timeout() {
    let opts = fast_options().stream_stall_timeout(Duration::from_millis(300));
    let peers: Peers<Req, Resp> = Peers::start(Identity::new(CLUSTER, "client"), opts).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    peers
        .add_peer("hung", listener.local_addr().unwrap())
        .unwrap();
    // Accept the request connection and the stream's, handshake both, then read nothing.
    let acceptor = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().unwrap();
            let hello = Hello {
                cluster_id: CLUSTER,
                node_id: "hung".into(),
                epoch: 0,
                purpose: Purpose::Rpc,
            };
            conn.write_all(&kv_net::opening_bytes(&hello).unwrap())
                .unwrap();
            conn.write_all(
                &Frame::new(FrameKind::Accept, 0, Vec::new())
                    .to_bytes(4096)
                    .unwrap(),
            )
            .unwrap();
            conns.push(conn);
        }
        conns
    });
    assert!(peers.wait_connected("hung", LONG));
    let mut stream = peers.open_stream("hung", b"x").unwrap();
    let chunk = vec![0u8; 1 << 20];
    let start = Instant::now();
    let err = loop {
        if let Err(e) = stream.send(&chunk) {
            break e;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the sender never gave up"
        );
    };
    assert!(
        matches!(&err, Error::Stream { reason, .. } if reason.contains("took nothing for 300ms")),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    drop(stream);
    drop(acceptor.join().unwrap());
}
