//! A peer killed with requests in flight: they fail with `Disconnected` (never resent), and the
//! connection comes back by itself once the peer does.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns unwrap too.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use kv_net::Error;

#[test]
fn a_peer_killed_mid_request_fails_it_then_reconnects_when_back() {
    let counts = Counts::default();
    let server = server(counts.clone());
    let addr = server.local_addr();
    let peers = client(addr, fast_options());

    let (tx, rx) = mpsc::channel();
    for i in 0..5 {
        peers.send("server", &Req::Sleep { ms: 2000, tag: i }, LONG, &tx);
    }
    std::thread::sleep(Duration::from_millis(100));
    let killed = Instant::now();
    drop(server);
    for _ in 0..5 {
        let reply = rx
            .recv_timeout(Duration::from_secs(3))
            .expect("every request fails");
        assert!(
            matches!(reply.result, Err(Error::Disconnected { .. })),
            "{:?}",
            reply.result
        );
    }
    // Well before the requests' own deadline.
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "{:?}",
        killed.elapsed()
    );
    assert!(wait_until(LONG, || !peers.status()[0].connected));
    assert!(!peers.is_alive("server"));
    let down = peers.call_blocking("server", &Req::Echo(1), LONG);
    assert!(matches!(down, Err(Error::NotConnected { .. })), "{down:?}");

    // Back on the same address: the transport reconnects with backoff, nothing was resent.
    let server = server_at(addr, counts.clone());
    assert!(peers.wait_connected("server", LONG), "{:?}", peers.status());
    assert_eq!(
        peers.call_blocking("server", &Req::Count, LONG).unwrap(),
        Resp::Num(1)
    );
    let status = &peers.status()[0];
    assert_eq!(status.reconnects, 1);
    assert!(wait_until(LONG, || peers.is_alive("server")));
    drop(server);
}

#[test]
fn reconnect_attempts_back_off_while_the_peer_is_down() {
    // Nobody listens: attempts fail; with a 20 ms..200 ms backoff, a second of downtime makes
    // a handful of attempts, not hundreds. Counted through a listener that accepts and closes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peers: kv_net::Peers<Req, Resp> =
        kv_net::Peers::start(kv_net::Identity::new(CLUSTER, "client"), fast_options()).unwrap();
    peers.add_peer("server", addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let mut attempts = 0;
    while start.elapsed() < Duration::from_secs(1) {
        match listener.accept() {
            Ok((conn, _)) => {
                attempts += 1;
                drop(conn);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    // 0, 20, 40, 80, 160, 200, 200... ms steps (each jittered down to half): 5 to 15 in 1 s.
    assert!((4..=20).contains(&attempts), "{attempts} attempts in 1 s");
    assert!(peers.status()[0].last_error.is_some());
}

#[test]
fn removing_a_peer_closes_its_connection() {
    use kv_net::{Frame, FrameKind, Hello, Purpose};
    use std::io::{Read, Write};
    // A hand-made peer: completes the handshake, then only reads (pings) until the close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peers: kv_net::Peers<Req, Resp> =
        kv_net::Peers::start(kv_net::Identity::new(CLUSTER, "client"), fast_options()).unwrap();
    peers
        .add_peer("fake", listener.local_addr().unwrap())
        .unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let hello = Hello {
        cluster_id: CLUSTER,
        node_id: "fake".into(),
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
    assert!(peers.wait_connected("fake", LONG));

    peers.remove_peer("fake").unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the connection of a removed peer stays open"
        );
    }
}
