//! Bad peers at the replica level: a body that does not decode, an unknown operation, another
//! protocol version, a node of another cluster. Each gets a clear error, and the server goes
//! on serving the others.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use kv_cluster::{MemoryReplica, Replica, Version, Write};
use kv_net::{Identity, Peers};
use kv_remote::{PROTOCOL_VERSION, RemoteError, Response};
use serde::ser::{SerializeTuple, Serializer};

/// Raw bytes as a request body: a tuple of bytes, which postcard writes as they are.
struct Raw(Vec<u8>);

impl serde::Serialize for Raw {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

fn raw_client(server: &kv_remote::ReplicaServer, cluster: u128) -> Peers<Raw, Response> {
    let peers = Peers::start(Identity::new(cluster, "mallory"), fast_options()).unwrap();
    peers.add_peer("node2", server.local_addr()).unwrap();
    peers
}

#[test]
fn undecodable_unknown_and_foreign_requests_get_clear_errors() {
    let served = Arc::new(MemoryReplica::new("node2").unwrap());
    let server = serve("node2", served.clone());
    let bad = raw_client(&server, CLUSTER);
    assert!(bad.wait_connected("node2", LONG));
    let ask = |bytes: Vec<u8>| bad.call_blocking("node2", &Raw(bytes), LONG).unwrap();

    // Variant 200 does not exist.
    let r = ask(vec![PROTOCOL_VERSION, 200, 1]);
    assert!(
        matches!(&r, Response::Failed(RemoteError::BadRequest { reason }) if reason.contains("does not decode")),
        "{r:?}"
    );
    // An Apply cut short.
    let r = ask(vec![PROTOCOL_VERSION, 0, 7, 3, b'k']);
    assert!(
        matches!(r, Response::Failed(RemoteError::BadRequest { .. })),
        "{r:?}"
    );
    // Another version: refused by name, the rest unread.
    let r = ask(vec![PROTOCOL_VERSION + 1, 0, 0xff]);
    assert_eq!(
        r,
        Response::Failed(RemoteError::UnsupportedVersion {
            found: PROTOCOL_VERSION + 1,
            supported: PROTOCOL_VERSION
        })
    );
    // An empty body has no version at all: kv-net fails the request.
    let e = bad
        .call_blocking("node2", &Raw(Vec::new()), LONG)
        .unwrap_err();
    assert!(
        matches!(e, kv_net::Error::Remote { ref message, .. } if message.contains("decode")),
        "{e:?}"
    );
    // An unknown export session.
    let r = ask(vec![PROTOCOL_VERSION, 18, 42]);
    assert!(
        matches!(r, Response::Failed(RemoteError::BadRequest { .. })),
        "{r:?}"
    );

    // A node of another cluster is refused at the handshake.
    let foreign = raw_client(&server, CLUSTER ^ 1);
    assert!(!foreign.wait_connected("node2", Duration::from_millis(500)));
    let status = &foreign.status()[0];
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("cluster")),
        "{status:?}"
    );
    assert!(server.stats().refused >= 1);

    // Through it all, a good coordinator is served, on the same connection as before too.
    let good = remote("node2", &server, Duration::from_secs(2));
    let w = Write {
        key: b"k",
        value: Some(b"v"),
        version: Version::new(3),
        expires: None,
    };
    assert!(good.apply(1, w).unwrap());
    assert_eq!(
        served.read(1, b"k").unwrap().map(|c| c.version),
        Some(Version::new(3))
    );
    assert_eq!(
        ask(vec![PROTOCOL_VERSION, 11]),
        Response::Counted(kv_remote::Counts {
            live: 1,
            tombstones: 0,
            live_bytes: 2
        })
    );
}

#[test]
fn a_reply_of_another_version_is_a_typed_error_at_the_coordinator() {
    let e = RemoteError::UnsupportedVersion {
        found: 9,
        supported: PROTOCOL_VERSION,
    }
    .into_cluster(&"node2".parse().unwrap());
    assert!(e.chain().contains("version 9"), "{}", e.chain());
    let decoded: Response = postcard::from_bytes(&[9, 0, 1]).unwrap();
    assert_eq!(
        decoded,
        Response::Failed(RemoteError::UnsupportedVersion {
            found: 9,
            supported: PROTOCOL_VERSION
        })
    );
}
