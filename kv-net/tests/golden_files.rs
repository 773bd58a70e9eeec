//! The peer protocol's bytes, version 1, pinned by golden files (docs/format.md, "Peer
//! protocol"): each file is read back exactly and the same values encode to the same bytes.
//!
//! Regenerate only for a *new* protocol version (into a new directory, keeping this one):
//! `cargo test -p kv-net --test golden_files -- --ignored write_golden_files`.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns unwrap too.

use std::path::PathBuf;

use bytes::BytesMut;
use kv_net::{Frame, FrameCodec, FrameKind, Hello, PROTOCOL_VERSION, Purpose};
use serde::{Deserialize, Serialize};

/// A request shaped like a replica write, for the examples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum ReplicaRequest {
    Read {
        key: Vec<u8>,
    },
    Write {
        epoch: u64,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        version: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum ReplicaResponse {
    Applied,
    Value {
        value: Option<Vec<u8>>,
        version: u64,
    },
}

const CLUSTER: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
const VERSION: u64 = 0x019A_F0F5_5001_0001;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/peer-v1")
}

fn hello() -> Hello {
    Hello {
        cluster_id: CLUSTER,
        node_id: "node1".into(),
        epoch: 7,
        purpose: Purpose::Rpc,
    }
}

fn post<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap()
}

/// Every golden file: its name and its bytes, built from values.
fn files() -> Vec<(&'static str, Vec<u8>)> {
    let frame = |kind, id, body: Vec<u8>| {
        Frame::new(kind, id, body)
            .to_bytes(1 << 20)
            .unwrap()
            .to_vec()
    };
    let write = ReplicaRequest::Write {
        epoch: 7,
        key: b"user:1".to_vec(),
        value: Some(b"Alice".to_vec()),
        version: VERSION,
    };
    let answer = ReplicaResponse::Value {
        value: Some(b"Alice".to_vec()),
        version: VERSION,
    };
    vec![
        (
            "opening.bin",
            kv_net::opening_bytes(&hello()).unwrap().to_vec(),
        ),
        ("accept.bin", frame(FrameKind::Accept, 0, vec![])),
        (
            "refuse.bin",
            frame(FrameKind::Refuse, 0, post(&"wrong cluster".to_string())),
        ),
        (
            "request-write.bin",
            frame(FrameKind::Request, 1, post(&write)),
        ),
        (
            "request-read.bin",
            frame(
                FrameKind::Request,
                2,
                post(&ReplicaRequest::Read {
                    key: b"user:1".to_vec(),
                }),
            ),
        ),
        (
            "response-applied.bin",
            frame(FrameKind::Response, 1, post(&ReplicaResponse::Applied)),
        ),
        (
            "response-value.bin",
            frame(FrameKind::Response, 2, post(&answer)),
        ),
        (
            "failure.bin",
            frame(
                FrameKind::Failure,
                3,
                post(&"the request's handler panicked".to_string()),
            ),
        ),
        ("ping.bin", frame(FrameKind::Ping, 1_000_000, vec![])),
        ("pong.bin", frame(FrameKind::Pong, 1_000_000, vec![])),
        (
            "stream-open.bin",
            frame(FrameKind::StreamOpen, 0, b"ranges".to_vec()),
        ),
        (
            "stream-chunk.bin",
            frame(FrameKind::StreamChunk, 0, b"chunk of records".to_vec()),
        ),
        ("stream-end.bin", frame(FrameKind::StreamEnd, 1, vec![])),
        (
            "stream-done-ok.bin",
            frame(FrameKind::StreamDone, 0, post(&None::<String>)),
        ),
        (
            "stream-done-err.bin",
            frame(
                FrameKind::StreamDone,
                0,
                post(&Some("disk full".to_string())),
            ),
        ),
    ]
}

#[test]
fn golden_files_are_what_the_encoder_writes() {
    for (name, bytes) in files() {
        let on_disk = std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            on_disk, bytes,
            "{name} differs from what version {PROTOCOL_VERSION} writes"
        );
    }
}

#[test]
fn the_opening_reads_back_field_by_field() {
    let bytes = std::fs::read(dir().join("opening.bin")).unwrap();
    assert_eq!(&bytes[..8], b"KVPEER\0\n");
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
    let mut buf = BytesMut::from(&bytes[12..]);
    let frame = FrameCodec::new(4096)
        .decode_frame(&mut buf)
        .unwrap()
        .unwrap();
    assert!(buf.is_empty());
    assert_eq!((frame.kind, frame.id), (FrameKind::Hello, 0));
    assert_eq!(postcard::from_bytes::<Hello>(&frame.body).unwrap(), hello());
}

#[test]
fn golden_frames_decode_to_their_values() {
    let read = |name: &str| {
        let mut buf = BytesMut::from(&std::fs::read(dir().join(name)).unwrap()[..]);
        let frame = FrameCodec::new(1 << 20)
            .decode_frame(&mut buf)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty(), "{name}: trailing bytes");
        frame
    };
    let write = read("request-write.bin");
    assert_eq!((write.kind, write.id), (FrameKind::Request, 1));
    assert_eq!(
        postcard::from_bytes::<ReplicaRequest>(&write.body).unwrap(),
        ReplicaRequest::Write {
            epoch: 7,
            key: b"user:1".to_vec(),
            value: Some(b"Alice".to_vec()),
            version: VERSION
        }
    );
    let value = read("response-value.bin");
    assert_eq!(
        postcard::from_bytes::<ReplicaResponse>(&value.body).unwrap(),
        ReplicaResponse::Value {
            value: Some(b"Alice".to_vec()),
            version: VERSION
        }
    );
    let refuse = read("refuse.bin");
    assert_eq!(
        postcard::from_bytes::<String>(&refuse.body).unwrap(),
        "wrong cluster"
    );
    assert_eq!(read("ping.bin").id, 1_000_000);
    let done = read("stream-done-err.bin");
    assert_eq!(
        postcard::from_bytes::<Option<String>>(&done.body)
            .unwrap()
            .as_deref(),
        Some("disk full")
    );
}

#[test]
fn an_opening_of_another_version_is_refused_by_a_server() {
    use std::io::{Read, Write};
    let server = kv_net::Server::start(
        kv_net::Identity::new(CLUSTER, "server"),
        kv_net::ServerOptions::new(),
        |_: &kv_net::PeerInfo, r: ReplicaRequest| r,
    )
    .unwrap();
    let mut opening = std::fs::read(dir().join("opening.bin")).unwrap();
    opening[8] = 2;
    let mut s = std::net::TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(&opening).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while server.stats().refused == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let err = server.stats().last_error.unwrap();
    assert!(
        err.contains("speaks peer protocol version 2; this node speaks 1"),
        "{err}"
    );
}

#[test]
#[ignore = "writes the golden files; run only for a new protocol version"]
fn write_golden_files() {
    std::fs::create_dir_all(dir()).unwrap();
    for (name, bytes) in files() {
        std::fs::write(dir().join(name), bytes).unwrap();
    }
}
