//! kv-net on a paused tokio clock (as a simulation runs it): request deadlines and liveness
//! follow virtual time, not the wall clock.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns unwrap too.

use std::time::Duration;

use kv_net::{
    BoxFuture, Error, Handler, Identity, PeerInfo, Peers, PeersOptions, Server, ServerOptions,
};

const CLUSTER: u128 = 0x71;
/// Wall-clock time allowed for what real sockets do (connect, a round trip).
const REAL: Duration = Duration::from_secs(10);

/// Answers 0 with 0 at once; never answers anything else.
struct Hang;

impl Handler<u64, u64> for Hang {
    fn handle(&self, _: &PeerInfo, n: u64) -> u64 {
        n
    }

    fn handle_async(&self, _: &PeerInfo, n: &u64) -> Option<BoxFuture<'static, u64>> {
        (*n != 0).then(|| -> BoxFuture<'static, u64> { Box::pin(std::future::pending()) })
    }
}

/// Waits for `cond` without moving the paused clock (yielding, never sleeping), up to `real`
/// of wall-clock time: real sockets make progress in real time.
async fn wait_real(real: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + real;
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    cond()
}

/// The server on its own runtime (a real clock), the client on the test's paused one.
fn setup() -> (Server, Peers<u64, u64>) {
    let server =
        Server::start(Identity::new(CLUSTER, "server"), ServerOptions::new(), Hang).unwrap();
    let options = PeersOptions::new().runtime(tokio::runtime::Handle::current());
    let peers = Peers::start(Identity::new(CLUSTER, "client"), options).unwrap();
    peers.add_peer("server", server.local_addr()).unwrap();
    (server, peers)
}

#[tokio::test(start_paused = true)]
async fn a_request_deadline_fires_on_virtual_time() {
    let (_server, peers) = setup();
    assert!(
        wait_real(REAL, || peers.status()[0].connected).await,
        "{:?}",
        peers.status()
    );
    // An answer is awaited busily: an idle paused runtime would move its clock to the next
    // timer before the real socket delivers (turmoil's sockets are virtual, these are not).
    let answered = tokio::spawn(peers.call("server", &0, Duration::from_secs(5)));
    assert!(wait_real(REAL, || answered.is_finished()).await);
    assert_eq!(answered.await.unwrap().unwrap(), 0);

    let virtual_start = tokio::time::Instant::now();
    let real_start = std::time::Instant::now();
    let timeout = Duration::from_secs(30);
    let answer = peers.call("server", &1, timeout).await;
    assert!(
        matches!(answer, Err(Error::Timeout { after, .. }) if after == timeout),
        "{answer:?}"
    );
    // Thirty virtual seconds passed; the wall clock moved far less.
    assert!(
        virtual_start.elapsed() >= timeout,
        "{:?}",
        virtual_start.elapsed()
    );
    assert!(
        real_start.elapsed() < Duration::from_secs(10),
        "{:?}",
        real_start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn liveness_follows_virtual_time() {
    let (_server, peers) = setup();
    assert!(wait_real(REAL, || peers.status()[0].connected).await);
    // Pings every 500 ms (virtual) are answered: alive, with a round trip measured.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(wait_real(REAL, || peers.status()[0].rtt.is_some()).await);
    assert!(peers.is_alive("server"), "{:?}", peers.status());

    // Nothing heard for more than the 3 s liveness timeout, counted in virtual time. The last
    // pong may be older than the cut: an idle paused runtime jumps its clock to the next timer
    // while a real socket has not delivered yet.
    let heard_before_cut = peers.status()[0].last_seen.unwrap();
    peers.faults().partition("server");
    let cut = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = peers.status().remove(0);
    assert!(!status.alive, "{status:?}");
    assert!(status.connected, "{status:?}");
    let last_seen = status.last_seen.unwrap();
    assert!(last_seen >= Duration::from_secs(5), "{last_seen:?}");
    assert!(
        last_seen <= cut.elapsed() + heard_before_cut + Duration::from_millis(100),
        "{last_seen:?}, heard {heard_before_cut:?} before the cut"
    );

    // Healed: the next pong makes it alive again.
    peers.faults().heal("server");
    let mut alive = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if wait_real(Duration::from_millis(100), || peers.is_alive("server")).await {
            alive = true;
            break;
        }
    }
    assert!(alive, "{:?}", peers.status());
}
