//! Helpers of the integration tests: replica servers on loopback, and clients of them.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use kv_cluster::Replica;
use kv_net::{Identity, Peers, PeersOptions, ServerOptions};
use kv_remote::{RemoteReplica, ReplicaPeers, ReplicaServer};

pub const CLUSTER: u128 = 0x6b76_7265_6d6f_7465_0000_0000_0000_0001;
pub const LONG: Duration = Duration::from_secs(10);

/// A server for `replica` as node `id`, on a free loopback port.
pub fn serve(id: &str, replica: Arc<dyn Replica>) -> ReplicaServer {
    ReplicaServer::start(Identity::new(CLUSTER, id), ServerOptions::new(), replica).unwrap()
}

/// Quick heartbeats and reconnects, so that liveness changes within a test's patience.
pub fn fast_options() -> PeersOptions {
    PeersOptions::new()
        .heartbeat_interval(Duration::from_millis(50))
        .liveness_timeout(Duration::from_millis(400))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100))
}

/// A transport of node `me` with each `(id, server)` added and connected.
pub fn transport(me: &str, servers: &[(&str, &ReplicaServer)]) -> Arc<ReplicaPeers> {
    let peers: ReplicaPeers = Peers::start(Identity::new(CLUSTER, me), fast_options()).unwrap();
    for (id, server) in servers {
        peers.add_peer(id, server.local_addr()).unwrap();
        assert!(peers.wait_connected(id, LONG), "{id} connects");
    }
    Arc::new(peers)
}

/// A remote replica of node `id`, served by `server`, from a coordinator "node1".
pub fn remote(id: &str, server: &ReplicaServer, timeout: Duration) -> RemoteReplica {
    let peers = transport("node1", &[(id, server)]);
    RemoteReplica::new(id.parse().unwrap(), peers, timeout)
}
