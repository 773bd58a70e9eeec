//! Connections that are not good peers: garbage, a wrong magic, another cluster, an old
//! protocol version, the wrong node at an address, a huge frame length, half a frame. Each is
//! refused with a typed error on the side that checks it (and the reason reaches the other
//! side), nothing panics, and the listener keeps serving good peers.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns unwrap too.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use kv_net::{
    Error, Frame, FrameCodec, FrameKind, Hello, Identity, Peers, Purpose, Server, ServerOptions,
};

fn hello(cluster_id: u128, node: &str) -> Hello {
    Hello {
        cluster_id,
        node_id: node.into(),
        epoch: 3,
        purpose: Purpose::Rpc,
    }
}

/// Connects with raw bytes, as a misbehaving peer.
fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    s
}

/// Everything the server sends until it closes the connection.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The frames after the 12-byte preamble.
fn frames_after_preamble(bytes: &[u8]) -> Vec<Frame> {
    assert!(bytes.len() >= 12, "{bytes:?}");
    assert_eq!(&bytes[..8], b"KVPEER\0\n");
    let codec = FrameCodec::new(4096);
    let mut buf = bytes::BytesMut::from(&bytes[12..]);
    let mut out = Vec::new();
    while let Ok(Some(f)) = codec.decode_frame(&mut buf) {
        out.push(f);
    }
    out
}

fn refusal_reason(frames: &[Frame]) -> String {
    let refuse = frames
        .iter()
        .find(|f| f.kind == FrameKind::Refuse)
        .expect("a refusal frame");
    postcard::from_bytes(&refuse.body).unwrap()
}

/// The server still serves a good peer.
fn still_serves(server: &Server) {
    let peers = client(server.local_addr(), fast_options());
    assert_eq!(
        peers.call_blocking("server", &Req::Echo(42), LONG).unwrap(),
        Resp::Num(42)
    );
}

fn wait_for_error(server: &Server, needle: &str) -> String {
    assert!(
        wait_until(LONG, || server
            .stats()
            .last_error
            .is_some_and(|e| e.contains(needle))),
        "{:?}",
        server.stats()
    );
    server.stats().last_error.unwrap()
}

#[test]
fn garbage_is_refused_as_a_bad_magic() {
    let server = server(Counts::default());
    let mut s = raw(server.local_addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    read_to_close(&mut s);
    let err = wait_for_error(&server, "bad magic");
    assert!(err.contains("not a kvstore peer"), "{err}");
    assert_eq!(server.stats().refused, 1);
    still_serves(&server);
}

#[test]
fn a_wrong_magic_with_the_right_length_is_refused() {
    let server = server(Counts::default());
    let mut s = raw(server.local_addr());
    let mut p = kv_net::preamble();
    p[0] = b'X';
    s.write_all(&p).unwrap();
    read_to_close(&mut s);
    wait_for_error(&server, "bad magic");
    still_serves(&server);
}

#[test]
fn another_cluster_is_refused_on_both_sides() {
    let server = server(Counts::default());
    // Raw: the reason comes back in a refusal frame.
    let mut s = raw(server.local_addr());
    s.write_all(&kv_net::opening_bytes(&hello(999, "intruder")).unwrap())
        .unwrap();
    let frames = frames_after_preamble(&read_to_close(&mut s));
    assert!(
        refusal_reason(&frames).contains("belongs to cluster 0x3e7"),
        "{frames:?}"
    );
    wait_for_error(&server, "belongs to cluster 0x3e7");

    // A real Peers of another cluster: its side sees the mismatch too (it checks the server's
    // hello), in its status.
    let peers: Peers<Req, Resp> =
        Peers::start(Identity::new(999, "intruder"), fast_options()).unwrap();
    peers.add_peer("server", server.local_addr()).unwrap();
    assert!(wait_until(LONG, || peers.status()[0]
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("belongs to cluster"))));
    assert!(!peers.wait_connected("server", Duration::from_millis(200)));
    still_serves(&server);
}

#[test]
fn an_old_protocol_version_is_refused_on_both_sides() {
    let server = server(Counts::default());
    let mut s = raw(server.local_addr());
    let mut opening = kv_net::opening_bytes(&hello(CLUSTER, "old")).unwrap();
    opening[8..12].copy_from_slice(&0u32.to_le_bytes());
    s.write_all(&opening).unwrap();
    let answer = read_to_close(&mut s);
    // The server's preamble tells the old peer which version it speaks, so it can refuse too.
    assert_eq!(&answer[8..12], &kv_net::PROTOCOL_VERSION.to_le_bytes());
    let err = wait_for_error(&server, "speaks peer protocol version 0");
    assert!(
        err.contains(&format!("this node speaks {}", kv_net::PROTOCOL_VERSION)),
        "{err}"
    );
    still_serves(&server);
}

#[test]
fn the_wrong_node_at_an_address_is_refused_on_both_sides() {
    let server = server(Counts::default());
    let peers: Peers<Req, Resp> =
        Peers::start(Identity::new(CLUSTER, "client"), fast_options()).unwrap();
    // The client expects "node9" where "server" listens.
    peers.add_peer("node9", server.local_addr()).unwrap();
    assert!(wait_until(LONG, || peers.status()[0]
        .last_error
        .as_deref()
        .is_some_and(
            |e| e.contains("is node server, expected node node9")
        )));
    // The server got the client's refusal, with the reason.
    let err = wait_for_error(&server, "refused the handshake");
    assert!(err.contains("expected node node9"), "{err}");
    still_serves(&server);
}

#[test]
fn a_node_outside_the_allowed_peers_is_refused() {
    let server = Server::start(
        Identity::new(CLUSTER, "server"),
        ServerOptions::new().allowed_peers(["client"]),
        handler(Counts::default()),
    )
    .unwrap();
    let mut s = raw(server.local_addr());
    s.write_all(&kv_net::opening_bytes(&hello(CLUSTER, "stranger")).unwrap())
        .unwrap();
    let frames = frames_after_preamble(&read_to_close(&mut s));
    assert!(refusal_reason(&frames).contains("node stranger, which is not an allowed peer"));
    still_serves(&server);
}

/// A raw connection that completed the handshake as node "raw".
fn handshaken(addr: SocketAddr) -> TcpStream {
    let mut s = raw(addr);
    s.write_all(&kv_net::opening_bytes(&hello(CLUSTER, "raw")).unwrap())
        .unwrap();
    s.write_all(
        &Frame::new(FrameKind::Accept, 0, Vec::new())
            .to_bytes(4096)
            .unwrap(),
    )
    .unwrap();
    // Preamble, the server's hello and its accept.
    let mut got = Vec::new();
    let codec = FrameCodec::new(4096);
    let mut chunk = [0u8; 256];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed during the handshake");
        got.extend_from_slice(&chunk[..n]);
        if got.len() > 12 {
            let mut buf = bytes::BytesMut::from(&got[12..]);
            let mut kinds = Vec::new();
            while let Ok(Some(f)) = codec.decode_frame(&mut buf) {
                kinds.push(f.kind);
            }
            if kinds == [FrameKind::Hello, FrameKind::Accept] {
                return s;
            }
        }
    }
}

#[test]
fn a_frame_claiming_a_huge_length_closes_the_connection() {
    let server = server(Counts::default());
    let mut s = handshaken(server.local_addr());
    let mut header = u32::MAX.to_le_bytes().to_vec();
    header.push(FrameKind::Request as u8);
    s.write_all(&header).unwrap();
    read_to_close(&mut s);
    let err = wait_for_error(&server, "longer than the limit");
    assert!(
        err.contains(&format!("frame of {} bytes", u32::MAX)),
        "{err}"
    );
    assert_eq!(server.stats().failed, 1);
    still_serves(&server);
}

#[test]
fn half_a_frame_then_a_disconnect_is_a_truncation() {
    let server = server(Counts::default());
    let mut s = handshaken(server.local_addr());
    let frame = Frame::new(FrameKind::Request, 1, vec![7u8; 100])
        .to_bytes(4096)
        .unwrap();
    s.write_all(&frame[..50]).unwrap();
    drop(s);
    let err = wait_for_error(&server, "in the middle of a frame");
    assert!(err.contains("50 bytes buffered"), "{err}");
    still_serves(&server);
}

#[test]
fn an_unknown_frame_kind_after_the_handshake_closes_the_connection() {
    let server = server(Counts::default());
    let mut s = handshaken(server.local_addr());
    s.write_all(&[9, 0, 0, 0, 0xEE, 0, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    read_to_close(&mut s);
    wait_for_error(&server, "unknown frame kind 238");
    still_serves(&server);
}

#[test]
fn a_silent_connection_is_dropped_at_the_handshake_timeout() {
    let server = Server::start(
        Identity::new(CLUSTER, "server"),
        ServerOptions::new().handshake_timeout(Duration::from_millis(200)),
        handler(Counts::default()),
    )
    .unwrap();
    let mut s = raw(server.local_addr());
    read_to_close(&mut s);
    let err = wait_for_error(&server, "did not complete within");
    assert!(err.contains("200ms"), "{err}");
    still_serves(&server);
}

#[test]
fn a_refused_error_names_the_reason_and_address() {
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let e = Error::Refused {
        addr,
        reason: "r".into(),
    };
    assert_eq!(e.to_string(), "127.0.0.1:1 refused the handshake: r");
}
