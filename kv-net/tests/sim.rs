//! kv-net over turmoil's simulated network (feature `sim`): the real framing, handshake,
//! deadlines and liveness on simulated sockets and simulated time. A partition made by the
//! simulation (not kv-net's own fault injection) makes a request time out after exactly its
//! deadline of simulated time; healing the link brings the answers back.
//!
//! The partition is turmoil's `hold` (segments queued, delivered on `release`), which is what
//! TCP does across a cut shorter than its retransmission timeout. turmoil's `partition`
//! drops segments for good and its TCP never retransmits, so a connection that lost one
//! stalls forever; kv-net keeps a connection whose liveness failed (it only marks the peer
//! dead), so it would never recover from that.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns unwrap too.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use kv_net::{Error, Handler, Identity, PeerInfo, Peers, PeersOptions, Server, ServerOptions};

const CLUSTER: u128 = 0x51;
const PORT: u16 = 9000;

/// Answers `n + 1`.
struct Inc;

impl Handler<u64, u64> for Inc {
    fn may_block(&self, _: &u64) -> bool {
        false
    }

    fn handle(&self, _: &PeerInfo, n: u64) -> u64 {
        n + 1
    }
}

/// The answer to `n`, asked up to `tries` times 200 ms (simulated) apart: a request before
/// the connection is up fails at once with `NotConnected`.
async fn answer_within(peers: &Peers<u64, u64>, n: u64, tries: u32) -> Option<u64> {
    for _ in 0..tries {
        if let Ok(answer) = peers.call("server", &n, Duration::from_secs(1)).await {
            return Some(answer);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[test]
fn request_partition_timeout_and_heal_on_simulated_time() {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(120))
        .rng_seed(7)
        .build();
    sim.host("server", || async {
        let options = ServerOptions::new()
            .listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)))
            .runtime(tokio::runtime::Handle::current())
            .sim();
        let server = Server::start(Identity::new(CLUSTER, "server"), options, Inc).unwrap();
        assert_eq!(server.local_addr().port(), PORT);
        std::future::pending::<()>().await;
        Ok(())
    });
    sim.client("client", async {
        let options = PeersOptions::new()
            .runtime(tokio::runtime::Handle::current())
            .liveness_timeout(Duration::from_secs(3))
            .seed(1)
            .sim();
        let peers: Peers<u64, u64> = Peers::start(Identity::new(CLUSTER, "client"), options)?;
        let addr = SocketAddr::new(turmoil::lookup("server"), PORT);
        peers.add_peer("server", addr)?;

        // Answered over the simulated network, once connected.
        assert_eq!(answer_within(&peers, 41, 50).await, Some(42));

        // Cut by the simulation: the deadline fires after its simulated duration.
        turmoil::hold("client", "server");
        let start = tokio::time::Instant::now();
        let timeout = Duration::from_secs(2);
        let answer = peers.call("server", &1, timeout).await;
        assert!(
            matches!(answer, Err(Error::Timeout { after, .. }) if after == timeout),
            "{answer:?}"
        );
        let waited = start.elapsed();
        assert!(
            waited >= timeout && waited < timeout + Duration::from_millis(100),
            "{waited:?}"
        );
        // Nothing heard past the liveness timeout: the peer is dead.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!peers.is_alive("server"), "{:?}", peers.status());

        // Healed: answers again.
        turmoil::release("client", "server");
        assert_eq!(
            answer_within(&peers, 9, 50).await,
            Some(10),
            "{:?}",
            peers.status()
        );
        assert!(peers.is_alive("server"));
        Ok(())
    });
    sim.run().unwrap();
}
