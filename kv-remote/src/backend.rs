//! [`RemoteBackend`]: how a node process opens the members of its cluster.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kv_cluster::{Backend, Error as ClusterError, Replica};
use kv_net::{Identity, Peers, PeersOptions};
use kv_ring::NodeId;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::replica::{RemoteReplica, ReplicaPeers};

/// The [`Backend`] of a node process: its own node is opened through a local backend (a
/// `kv_node::Node` on its disk, [`kv_cluster::KvNodeBackend`]) and remembered, to be served
/// to the others with a [`ReplicaServer`](crate::ReplicaServer); every other member is a
/// [`RemoteReplica`] over one shared [`Peers`] transport (one connection per peer).
///
/// [`destroy`](Backend::destroy) of another member does nothing: that node deletes its own
/// data when it leaves.
///
/// **Hint stores are local.** The coordinator opens the store of the hints it keeps for a
/// node through the backend too, under that node's id, in
/// `<data-dir>/<holder>/hints/<target>/` (kv-cluster's documented layout): a directory whose
/// parent is named [`HINTS_DIR`] is opened (and destroyed) through the local backend
/// whatever the id, since hints live on the disk of the coordinator that keeps them.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend, MemoryReplica};
/// use kv_net::{Identity, PeersOptions, ServerOptions};
/// use kv_remote::{RemoteBackend, ReplicaServer};
///
/// let cluster_id = 0xC1;
/// // node2 and node3 in "other processes".
/// let servers: Vec<ReplicaServer> = ["node2", "node3"]
///     .into_iter()
///     .map(|id| ReplicaServer::start(Identity::new(cluster_id, id), ServerOptions::new(),
///         Arc::new(MemoryReplica::new(id).unwrap())))
///     .collect::<Result<_, _>>()?;
/// let peers = vec![
///     ("node2".parse()?, servers[0].local_addr()),
///     ("node3".parse()?, servers[1].local_addr()),
/// ];
/// let backend = Arc::new(RemoteBackend::new(
///     "node1".parse()?,
///     Arc::new(MemoryBackend::default()),
///     peers,
///     Identity::new(cluster_id, "node1"),
///     PeersOptions::new(),
///     Duration::from_secs(1),
/// )?);
/// assert!(backend.wait_connected(Duration::from_secs(5)));
/// let dir = tempfile::tempdir()?;
/// let cluster = Cluster::open(dir.path(), ClusterOptions::new().backend(backend.clone()))?;
/// cluster.put(b"k", b"v")?;
/// assert_eq!(cluster.get(b"k")?.as_deref(), Some(&b"v"[..]));
/// assert!(backend.local_replica().is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RemoteBackend {
    self_id: NodeId,
    local: Arc<dyn Backend>,
    peers: Arc<ReplicaPeers>,
    addrs: Mutex<HashMap<NodeId, SocketAddr>>,
    timeout: Duration,
    maintenance_timeout: Option<Duration>,
    local_replica: Mutex<Option<Arc<dyn Replica>>>,
}

impl RemoteBackend {
    /// The same, with `timeout` for the maintenance operations of the remote replicas it
    /// opens ([`RemoteReplica::with_maintenance_timeout`]; default: the larger of the data
    /// timeout and [`DEFAULT_MAINTENANCE_TIMEOUT`](crate::DEFAULT_MAINTENANCE_TIMEOUT)). A
    /// request whose frames are lost (a partition) holds its caller this long.
    pub fn with_maintenance_timeout(mut self, timeout: Duration) -> RemoteBackend {
        self.maintenance_timeout = Some(timeout);
        self
    }

    /// The backend of node `self_id`: its own node opened through `local`, the nodes of
    /// `peers` (node id and peer address; an entry for `self_id` is skipped) reached with
    /// `identity` and `options`, each data operation waited on up to `timeout`. Connections
    /// are made in the background.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if the transport cannot start or a peer is listed twice.
    pub fn new(
        self_id: NodeId,
        local: Arc<dyn Backend>,
        peers: Vec<(NodeId, SocketAddr)>,
        identity: Identity,
        options: PeersOptions,
        timeout: Duration,
    ) -> Result<RemoteBackend> {
        let transport: ReplicaPeers = Peers::start(identity, options).map_err(Error::Transport)?;
        let mut addrs = HashMap::new();
        for (id, addr) in peers {
            if id == self_id {
                continue;
            }
            transport
                .add_peer(id.as_str(), addr)
                .map_err(Error::Transport)?;
            addrs.insert(id, addr);
        }
        Ok(RemoteBackend {
            self_id,
            local,
            peers: Arc::new(transport),
            addrs: Mutex::new(addrs),
            timeout,
            maintenance_timeout: None,
            local_replica: Mutex::new(None),
        })
    }

    /// Adds a peer after the start (a node joining the cluster); its connection is made in
    /// the background.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if it is known already.
    pub fn add_peer(&self, id: NodeId, addr: SocketAddr) -> Result<()> {
        self.peers
            .add_peer(id.as_str(), addr)
            .map_err(Error::Transport)?;
        self.addrs.lock().insert(id, addr);
        Ok(())
    }

    /// The own node's replica, once [`open`](Backend::open) has opened it: what this process
    /// serves to the others with a [`ReplicaServer`](crate::ReplicaServer).
    pub fn local_replica(&self) -> Option<Arc<dyn Replica>> {
        self.local_replica.lock().clone()
    }

    /// The transport to the other nodes (for their status and, in tests, faults).
    pub fn peers(&self) -> &Arc<ReplicaPeers> {
        &self.peers
    }

    /// This node's id.
    pub fn self_id(&self) -> &NodeId {
        &self.self_id
    }

    /// Waits until every peer is connected, up to `timeout` in all. False if one is not.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let ids: Vec<NodeId> = self.addrs.lock().keys().cloned().collect();
        ids.iter().all(|id| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            self.peers.wait_connected(id.as_str(), left)
        })
    }
}

/// The name of the directory that holds a coordinator's hint stores, one per target
/// (`<data-dir>/<holder>/hints/<target>/`, kv-cluster's layout).
pub const HINTS_DIR: &str = "hints";

/// Whether `dir` is a hint store's (`.../hints/<target>`).
fn is_hint_store(dir: &Path) -> bool {
    dir.parent()
        .and_then(Path::file_name)
        .is_some_and(|name| name == HINTS_DIR)
}

impl Backend for RemoteBackend {
    fn open(&self, id: &NodeId, dir: &Path) -> kv_cluster::Result<Arc<dyn Replica>> {
        if is_hint_store(dir) {
            return self.local.open(id, dir);
        }
        if *id == self.self_id {
            // Opened once: a joining node serves its storage (and the metadata) before its
            // cluster routes to it, and the install that adds it to a ring asks again.
            let mut slot = self.local_replica.lock();
            if let Some(replica) = slot.clone() {
                return Ok(replica);
            }
            let replica = self.local.open(id, dir)?;
            *slot = Some(Arc::clone(&replica));
            return Ok(replica);
        }
        if !self.addrs.lock().contains_key(id) {
            return Err(ClusterError::Remote {
                node: id.clone(),
                source: Box::new(Error::UnknownPeer {
                    node: id.to_string(),
                }),
            });
        }
        let replica = RemoteReplica::new(id.clone(), Arc::clone(&self.peers), self.timeout);
        Ok(Arc::new(match self.maintenance_timeout {
            Some(t) => replica.with_maintenance_timeout(t),
            None => replica,
        }))
    }

    fn destroy(&self, id: &NodeId, dir: &Path) -> kv_cluster::Result<()> {
        if *id == self.self_id || is_hint_store(dir) {
            return self.local.destroy(id, dir);
        }
        // Another node's data is on its own disk: it deletes it itself.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_stores_are_recognised_by_their_parent_directory() {
        assert!(is_hint_store(Path::new("/data/node1/hints/node3")));
        assert!(is_hint_store(Path::new("hints/node3")));
        assert!(!is_hint_store(Path::new("/data/node3")));
        assert!(!is_hint_store(Path::new("/data/hints")));
        assert!(!is_hint_store(Path::new("/")));
    }

    #[test]
    fn a_hint_store_opens_locally_whatever_its_target() {
        let backend = RemoteBackend::new(
            "node1".parse().unwrap(),
            Arc::new(kv_cluster::MemoryBackend::default()),
            vec![("node2".parse().unwrap(), "127.0.0.1:9".parse().unwrap())],
            Identity::new(1, "node1"),
            PeersOptions::new(),
            Duration::from_secs(1),
        )
        .unwrap();
        let node2: NodeId = "node2".parse().unwrap();
        let store = backend
            .open(&node2, Path::new("/d/node1/hints/node2"))
            .unwrap();
        let w = kv_node::Write {
            key: b"k",
            value: None,
            version: kv_node::Version::new(1),
            expires: None,
        };
        // A local store answers at once; the remote node2 (nothing listens) could not.
        assert!(store.apply(0, w).unwrap());
        let remote = backend.open(&node2, Path::new("/d/node2")).unwrap();
        assert!(remote.apply(0, w).is_err());
        // Unknown members are refused clearly.
        let e = backend
            .open(&"node9".parse().unwrap(), Path::new("/d/node9"))
            .unwrap_err();
        assert!(e.chain().contains("not in the peer list"), "{}", e.chain());
        assert!(backend.local_replica().is_none());
    }
}
