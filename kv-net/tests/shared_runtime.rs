//! Both sides of the transport on a runtime they do not own ([`PeersOptions::runtime`],
//! [`ServerOptions::runtime`]): requests are answered, and dropping either side ends its
//! connections although the runtime lives on.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns unwrap too.

mod common;

use std::time::Duration;

use common::*;
use kv_net::{Error, Identity, Server, ServerOptions};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_server_and_peers_on_one_shared_runtime_answer_and_close() {
    let rt = runtime();
    let counts = Counts::default();
    let server = Server::start(
        Identity::new(CLUSTER, "server"),
        ServerOptions::new().runtime(rt.handle().clone()),
        handler(counts.clone()),
    )
    .unwrap();
    let peers = client(
        server.local_addr(),
        fast_options().runtime(rt.handle().clone()),
    );
    // Synchronous calls from a thread outside the runtime, and the async API on it.
    assert_eq!(
        peers.call_blocking("server", &Req::Echo(3), LONG).unwrap(),
        Resp::Num(3)
    );
    let answer = rt
        .block_on(peers.call("server", &Req::Echo(4), LONG))
        .unwrap();
    assert_eq!(answer, Resp::Num(4));
    assert_eq!(
        peers.call_blocking("server", &Req::Count, LONG).unwrap(),
        Resp::Num(1)
    );
    assert_eq!(counts.get(), 1);

    // Dropping the server closes the connection although the runtime lives on: the peer
    // sees it drop.
    let addr = server.local_addr();
    drop(server);
    assert!(
        wait_until(Duration::from_secs(5), || !peers.status()[0].connected),
        "{:?}",
        peers.status()
    );
    let err = peers
        .call_blocking("server", &Req::Echo(5), Duration::from_millis(200))
        .unwrap_err();
    assert!(
        matches!(err, Error::NotConnected { .. } | Error::Timeout { .. }),
        "{err}"
    );
    // The port is free again.
    let again = server_at(addr, Counts::default());
    assert!(
        wait_until(Duration::from_secs(5), || peers.status()[0].connected),
        "{:?}",
        peers.status()
    );
    drop(again);
    drop(peers);
    drop(rt);
}

#[test]
fn a_server_starts_from_a_thread_of_the_runtime_it_uses() {
    let rt = runtime();
    let handle = rt.handle().clone();
    let server = rt
        .block_on(async move {
            tokio::task::spawn(async move {
                Server::start(
                    Identity::new(CLUSTER, "server"),
                    ServerOptions::new().runtime(handle),
                    handler(Counts::default()),
                )
            })
            .await
        })
        .unwrap()
        .unwrap();
    let peers = client(server.local_addr(), fast_options());
    assert_eq!(
        peers.call_blocking("server", &Req::Echo(9), LONG).unwrap(),
        Resp::Num(9)
    );
}
