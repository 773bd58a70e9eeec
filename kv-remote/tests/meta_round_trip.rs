//! `Request::Meta` between node processes' servers over real sockets: opaque bodies reach the
//! node's `MetaHandler` and its answers come back; a handler may await another node (a
//! follower forwarding to its leader) without holding a thread; a node without a handler
//! refuses with a typed error; the data path is served meanwhile.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kv_cluster::{MemoryReplica, Replica, Version, Write};
use kv_net::{BoxFuture, Identity, PeerFilter, PeerInfo, ServerOptions};
use kv_remote::{
    Error, MetaClient, MetaHandler, NO_META_SERVICE, NOT_A_MEMBER, RemoteReplica, ReplicaPeers,
    ReplicaServer,
};

/// A metadata service that answers `"<me> heard <body> from <sender>"`, and forwards a body
/// starting with `fwd:` to `leader` (awaiting its answer on the server's runtime).
struct Service {
    me: &'static str,
    leader: Option<(MetaClient, &'static str)>,
    handled: AtomicU64,
}

impl MetaHandler for Service {
    fn handle(&self, from: &PeerInfo, body: Bytes) -> BoxFuture<'static, Bytes> {
        self.handled.fetch_add(1, Ordering::SeqCst);
        if let (Some(rest), Some((client, leader))) =
            (body.strip_prefix(b"fwd:"), self.leader.as_ref())
        {
            let forwarded = client.call(leader, Bytes::copy_from_slice(rest), LONG);
            return Box::pin(async move {
                match forwarded.await {
                    Ok(answer) => answer,
                    Err(e) => Bytes::from(format!("forwarding failed: {e}")),
                }
            });
        }
        let answer = format!(
            "{} heard {} from {}",
            self.me,
            String::from_utf8_lossy(&body),
            from.node_id
        );
        Box::pin(async move { Bytes::from(answer) })
    }
}

fn server(id: &str) -> ReplicaServer {
    serve(id, Arc::new(MemoryReplica::new(id).unwrap()))
}

#[test]
fn meta_bodies_round_trip_between_two_servers() {
    let (n1, n2) = (server("n1"), server("n2"));
    // Each node's transport reaches the other (a node process has one per node).
    let to_n2 = transport("n1", &[("n2", &n2)]);
    let to_n1 = transport("n2", &[("n1", &n1)]);
    let n2_service = Arc::new(Service {
        me: "n2",
        leader: None,
        handled: AtomicU64::new(0),
    });
    n2.set_meta_handler(Some(n2_service.clone()));
    // n1 forwards `fwd:` bodies to n2, over n1's own transport.
    n1.set_meta_handler(Some(Arc::new(Service {
        me: "n1",
        leader: Some((MetaClient::new(Arc::clone(&to_n2)), "n2")),
        handled: AtomicU64::new(0),
    })));

    let from_n1 = MetaClient::new(Arc::clone(&to_n2));
    let from_n2 = MetaClient::new(Arc::clone(&to_n1));
    assert_eq!(
        from_n1
            .call_blocking("n2", Bytes::from_static(b"vote"), LONG)
            .unwrap(),
        "n2 heard vote from n1"
    );
    assert_eq!(
        from_n2
            .call_blocking("n1", Bytes::from_static(b"append"), LONG)
            .unwrap(),
        "n1 heard append from n2"
    );
    // n2 asks n1, n1's handler asks n2 and answers with what n2 said: n2 heard it from n1.
    assert_eq!(
        from_n2
            .call_blocking("n1", Bytes::from_static(b"fwd:propose"), LONG)
            .unwrap(),
        "n2 heard propose from n1"
    );
    assert_eq!(n2_service.handled.load(Ordering::SeqCst), 2);

    // Bodies of any bytes, many in flight at once, each answered with its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answers = runtime.block_on(async {
        let calls: Vec<_> = (0..64u32)
            .map(|i| from_n1.call("n2", Bytes::from(i.to_string()), LONG))
            .collect();
        let mut out = Vec::new();
        for call in calls {
            out.push(call.await.unwrap());
        }
        out
    });
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer, &format!("n2 heard {i} from n1"));
    }
    assert_eq!(n2_service.handled.load(Ordering::SeqCst), 66);

    // The data path on the same connection is unaffected.
    let replica = RemoteReplica::new("n2".parse().unwrap(), Arc::clone(&to_n2), LONG);
    let write = Write {
        key: b"k",
        value: Some(b"v"),
        version: Version::new(1),
        expires: None,
    };
    assert!(replica.apply(1, write).unwrap());
}

#[test]
fn a_node_without_a_metadata_service_refuses_with_a_typed_error() {
    let n2 = server("n2");
    let peers: Arc<ReplicaPeers> = transport("n1", &[("n2", &n2)]);
    let client = MetaClient::new(Arc::clone(&peers));
    match client.call_blocking("n2", Bytes::from_static(b"vote"), LONG) {
        Err(Error::Failed { message }) => assert_eq!(message, NO_META_SERVICE),
        other => panic!("expected the refusal, got {other:?}"),
    }
    // Given one at run time, it serves; taken away, it refuses again.
    n2.set_meta_handler(Some(Arc::new(
        |_: &PeerInfo, body: Bytes| -> BoxFuture<'static, Bytes> { Box::pin(async move { body }) },
    )));
    assert_eq!(
        client
            .call_blocking("n2", Bytes::from_static(b"echo"), LONG)
            .unwrap(),
        "echo"
    );
    n2.set_meta_handler(None);
    assert!(matches!(
        client.call_blocking("n2", Bytes::from_static(b"vote"), LONG),
        Err(Error::Failed { .. })
    ));
    // To a peer that is not there, a transport error.
    assert!(matches!(
        client.call_blocking("n9", Bytes::new(), LONG),
        Err(Error::Transport(kv_net::Error::UnknownPeer { .. }))
    ));
}

#[test]
fn a_meta_answer_that_never_comes_times_out_and_the_server_goes_on() {
    let n2 = ReplicaServer::start(
        Identity::new(CLUSTER, "n2"),
        ServerOptions::new(),
        Arc::new(MemoryReplica::new("n2").unwrap()),
    )
    .unwrap();
    n2.set_meta_handler(Some(Arc::new(
        |_: &PeerInfo, body: Bytes| -> BoxFuture<'static, Bytes> {
            if body.is_empty() {
                Box::pin(std::future::pending())
            } else {
                Box::pin(async move { body })
            }
        },
    )));
    let client = MetaClient::new(transport("n1", &[("n2", &n2)]));
    match client.call_blocking("n2", Bytes::new(), Duration::from_millis(200)) {
        Err(Error::Transport(kv_net::Error::Timeout { .. })) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(
        client
            .call_blocking("n2", Bytes::from_static(b"x"), LONG)
            .unwrap(),
        "x"
    );
}

#[test]
fn a_non_member_connects_and_is_refused_per_request_except_meta() {
    let n2 = server("n2");
    let members = Arc::new(std::sync::RwLock::new(vec![
        "n1".to_string(),
        "n2".to_string(),
    ]));
    let seen = Arc::clone(&members);
    n2.set_member_filter(Some(PeerFilter::new(move |id| {
        seen.read().unwrap().iter().any(|m| m == id)
    })));
    n2.set_meta_handler(Some(Arc::new(Service {
        me: "n2",
        leader: None,
        handled: AtomicU64::new(0),
    })));
    let write = Write {
        key: b"k",
        value: Some(b"v"),
        version: Version::new(1),
        expires: None,
    };

    // A member is served.
    let member = RemoteReplica::new("n2".parse().unwrap(), transport("n1", &[("n2", &n2)]), LONG);
    assert!(member.apply(1, write).unwrap());

    // A joiner connects (kv-net accepts any node of the cluster) but is served only Meta.
    let joiner_peers = transport("n4", &[("n2", &n2)]);
    let joiner = RemoteReplica::new("n2".parse().unwrap(), Arc::clone(&joiner_peers), LONG);
    match joiner.read(1, b"k") {
        Err(kv_cluster::Error::Remote { source, .. }) => match source.downcast_ref::<Error>() {
            Some(Error::Failed { message }) => assert_eq!(message, NOT_A_MEMBER),
            other => panic!("expected the refusal, got {other:?}"),
        },
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert!(joiner.apply(1, write).is_err());
    assert_eq!(
        MetaClient::new(Arc::clone(&joiner_peers))
            .call_blocking("n2", Bytes::from_static(b"join"), LONG)
            .unwrap(),
        "n2 heard join from n4"
    );

    // Once a member, served on the same connection.
    members.write().unwrap().push("n4".to_string());
    let cell = joiner.read(1, b"k").unwrap().unwrap();
    assert_eq!(cell.value.as_deref(), Some(&b"v"[..]));
    // Taken out again, refused again; without a filter, everyone is served.
    members.write().unwrap().retain(|m| m != "n4");
    assert!(joiner.read(1, b"k").is_err());
    n2.set_member_filter(None);
    assert!(joiner.read(1, b"k").unwrap().is_some());
}
