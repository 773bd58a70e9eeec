//! The peer set changing at run time: a server's `PeerFilter` admitting a node it refused
//! before, peers added to and removed from a running `Peers`.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns unwrap too.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, RwLock, mpsc};
use std::time::{Duration, Instant};

use common::*;
use kv_net::{Error, Identity, PeerFilter, Peers, Server, ServerOptions};

/// A server whose allowed peers are a set the test changes while it runs.
fn filtered_server(members: &Arc<RwLock<HashSet<String>>>) -> Server {
    let seen = Arc::clone(members);
    let filter = PeerFilter::new(move |id| seen.read().unwrap().contains(id));
    Server::start(
        Identity::new(CLUSTER, "server"),
        ServerOptions::new().peer_filter(filter),
        handler(Counts::default()),
    )
    .unwrap()
}

#[test]
fn a_node_the_filter_refuses_is_closed_until_the_filter_admits_it() {
    let members = Arc::new(RwLock::new(HashSet::from(["client".to_string()])));
    let server = filtered_server(&members);

    let late: Peers<Req, Resp> =
        Peers::start(Identity::new(CLUSTER, "late"), fast_options()).unwrap();
    late.add_peer("server", server.local_addr()).unwrap();
    // Refused at its handshake, as a node outside a fixed list is: both sides say why.
    assert!(wait_until(LONG, || server.stats().refused >= 2));
    assert!(!late.wait_connected("server", Duration::from_millis(200)));
    let server_says = server.stats().last_error.unwrap();
    assert!(
        server_says.contains("node late, which is not an allowed peer"),
        "{server_says}"
    );
    let late_says = late.status()[0].last_error.clone().unwrap();
    assert!(late_says.contains("refused the handshake"), "{late_says}");
    // A member is served meanwhile.
    let member = client(server.local_addr(), fast_options());
    assert_eq!(
        member.call_blocking("server", &Req::Echo(1), LONG).unwrap(),
        Resp::Num(1)
    );

    // Admitted: the next reconnect (backoff) is accepted and served.
    members.write().unwrap().insert("late".to_string());
    assert!(late.wait_connected("server", LONG), "{:?}", late.status());
    assert_eq!(
        late.call_blocking("server", &Req::Echo(2), LONG).unwrap(),
        Resp::Num(2)
    );
    assert_eq!(late.status()[0].last_error, None);
}

#[test]
fn a_peer_added_at_run_time_is_dialled_and_used() {
    let first = named_server_at("first", "127.0.0.1:0".parse().unwrap(), Counts::default());
    let peers: Peers<Req, Resp> =
        Peers::start(Identity::new(CLUSTER, "client"), fast_options()).unwrap();
    peers.add_peer("first", first.local_addr()).unwrap();
    assert!(peers.wait_connected("first", LONG));
    assert_eq!(
        peers.call_blocking("first", &Req::Echo(1), LONG).unwrap(),
        Resp::Num(1)
    );

    // A node that starts later joins the running transport.
    let second = named_server_at("second", "127.0.0.1:0".parse().unwrap(), Counts::default());
    let (tx, rx) = mpsc::channel();
    peers.send("second", &Req::Echo(2), LONG, &tx);
    assert!(matches!(
        rx.recv_timeout(LONG).unwrap().result,
        Err(Error::UnknownPeer { .. })
    ));
    peers.add_peer("second", second.local_addr()).unwrap();
    assert!(peers.wait_connected("second", LONG), "{:?}", peers.status());
    assert_eq!(
        peers.call_blocking("second", &Req::Echo(2), LONG).unwrap(),
        Resp::Num(2)
    );
    assert!(wait_until(LONG, || peers.is_alive("second")));
    let ids: Vec<String> = peers.status().into_iter().map(|s| s.node_id).collect();
    assert_eq!(ids, ["first", "second"]);
    // The first peer is unaffected.
    assert_eq!(
        peers.call_blocking("first", &Req::Echo(3), LONG).unwrap(),
        Resp::Num(3)
    );
}

#[test]
fn a_removed_peer_fails_its_requests_in_flight_and_is_not_dialled_again() {
    let server = server(Counts::default());
    let peers = client(server.local_addr(), fast_options());
    let (tx, rx) = mpsc::channel();
    let id = peers.send("server", &Req::Sleep { ms: 3000, tag: 1 }, LONG, &tx);
    assert!(wait_until(LONG, || peers.status()[0].in_flight == 1));
    let accepted = server.stats().accepted;

    let start = Instant::now();
    peers.remove_peer("server").unwrap();
    let reply = rx.recv_timeout(LONG).unwrap();
    // Failed at once with a typed error, not left to its deadline or to the answer.
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(reply.request, id);
    match reply.result {
        Err(Error::Disconnected { peer, request }) => {
            assert_eq!((peer.as_str(), request), ("server", id));
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(peers.status().is_empty());
    assert!(!peers.is_alive("server"));
    peers.send("server", &Req::Echo(1), LONG, &tx);
    assert!(matches!(
        rx.recv_timeout(LONG).unwrap().result,
        Err(Error::UnknownPeer { .. })
    ));
    assert!(matches!(
        peers.remove_peer("server"),
        Err(Error::UnknownPeer { .. })
    ));
    // Several reconnect delays (20 to 200 ms) later, nothing dialled it again.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(server.stats().accepted, accepted);
    // The sleeping request's late answer found no one and broke nothing.
    assert!(rx.try_recv().is_err());

    // Added again under the same id: a new connection, served.
    peers.add_peer("server", server.local_addr()).unwrap();
    assert!(peers.wait_connected("server", LONG));
    assert_eq!(
        peers.call_blocking("server", &Req::Echo(9), LONG).unwrap(),
        Resp::Num(9)
    );
    assert_eq!(server.stats().accepted, accepted + 1);
}
