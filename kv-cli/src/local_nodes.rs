//! The storage nodes this process opened, by id: for the counts `stats` shows that the
//! cluster's own statistics do not carry (keys with a TTL, [`kv_node::NodeStats::expiring_keys`]).
//!
//! The cluster reaches its nodes through [`Replica`] handles, which answer key counts per
//! token range but not the node's own counters. [`TrackingBackend`] opens each node exactly as
//! [`KvNodeBackend`] does and notes it here on the way, so the REPL (and `kvstore serve`, for
//! `--connect`) can read its [`kv_node::Node::stats`]. A node of another process (a cluster
//! of processes) is not here: its count is not known to this one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use kv_cluster::{Backend, KvNodeBackend, LocalReplica, NodeOptions, Replica};
use kv_ring::NodeId;

/// The nodes opened in this process. A node is held weakly: one the cluster dropped (a crash,
/// a removal) is gone from here too, and one opened again replaces it.
#[derive(Debug, Default)]
pub struct LocalNodes {
    nodes: Mutex<BTreeMap<NodeId, Weak<kv_node::Node>>>,
}

impl LocalNodes {
    /// Keys with a TTL per node open in this process (those still alive), in id order.
    pub fn expiring_keys(&self) -> BTreeMap<NodeId, u64> {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes
            .iter()
            .filter_map(|(id, n)| Some((id.clone(), n.upgrade()?.stats().expiring_keys)))
            .collect()
    }

    fn note(&self, id: &NodeId, node: &Arc<kv_node::Node>) {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.insert(id.clone(), Arc::downgrade(node));
    }

    fn forget(&self, id: &NodeId) {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.remove(id);
    }
}

/// [`KvNodeBackend`], noting every node it opens in a [`LocalNodes`].
#[derive(Debug)]
pub struct TrackingBackend {
    options: NodeOptions,
    inner: KvNodeBackend,
    nodes: Arc<LocalNodes>,
}

impl TrackingBackend {
    /// A backend opening every node with `options`, noting them in `nodes`.
    pub fn new(options: NodeOptions, nodes: Arc<LocalNodes>) -> Self {
        TrackingBackend {
            inner: KvNodeBackend::new(options.clone()),
            options,
            nodes,
        }
    }
}

impl Backend for TrackingBackend {
    fn open(&self, id: &NodeId, dir: &Path) -> kv_cluster::Result<Arc<dyn Replica>> {
        let replica = LocalReplica::open(id.as_str(), dir, self.options.clone())?;
        self.nodes.note(id, replica.node());
        Ok(Arc::new(replica))
    }

    fn destroy(&self, id: &NodeId, dir: &Path) -> kv_cluster::Result<()> {
        self.nodes.forget(id);
        self.inner.destroy(id, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_cluster::{Cluster, ClusterOptions};

    #[test]
    fn every_node_the_cluster_opens_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = Arc::new(LocalNodes::default());
        let backend = TrackingBackend::new(NodeOptions::new(), Arc::clone(&nodes));
        let opts = ClusterOptions::new().backend(Arc::new(backend));
        let cluster = Cluster::open(dir.path(), opts).unwrap();
        let later = Some(cluster.now_millis() + 600_000);
        cluster.put_expiring(b"a", b"1", later).unwrap();
        cluster.put_expiring(b"b", b"2", later).unwrap();
        cluster.put(b"c", b"3").unwrap();
        let counts = nodes.expiring_keys();
        let ids: Vec<&str> = counts.keys().map(NodeId::as_str).collect();
        assert_eq!(ids, ["node1", "node2", "node3"]);
        // Three replicas of each key with a TTL, none of the plain one.
        assert_eq!(counts.values().sum::<u64>(), 6, "{counts:?}");
        assert!(cluster.persist_key(b"a").unwrap());
        assert_eq!(nodes.expiring_keys().values().sum::<u64>(), 3);
        cluster.close().unwrap();
    }
}
