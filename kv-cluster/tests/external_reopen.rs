//! A cluster whose topology comes from outside (a node process, `external_topology`) reopens
//! with the members its caller names, not the ones stored at its first open: a node that
//! joined a cluster of n1..n3, which then removed n2, no longer knows n2's address (its
//! backend cannot open n2), and must still restart (kv-cli's `cluster_change_faults.rs`
//! found the restart refused: "node n2 has no peer address").

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kv_cluster::{Backend, Cluster, ClusterOptions, Error, MemoryBackend, Replica};
use kv_ring::NodeId;

/// Opens only the nodes it knows an address for, as kv-remote's backend does.
#[derive(Debug, Default)]
struct KnownOnly {
    inner: MemoryBackend,
    known: Mutex<BTreeSet<String>>,
}

impl Backend for KnownOnly {
    fn open(&self, id: &NodeId, dir: &Path) -> kv_cluster::Result<Arc<dyn Replica>> {
        if !self.known.lock().unwrap().contains(id.as_str()) {
            return Err(Error::Remote {
                node: id.clone(),
                source: format!("node {id} has no peer address").into(),
            });
        }
        self.inner.open(id, dir)
    }

    fn destroy(&self, id: &NodeId, dir: &Path) -> kv_cluster::Result<()> {
        self.inner.destroy(id, dir)
    }
}

fn options(backend: &Arc<KnownOnly>, nodes: &[&str], external: bool) -> ClusterOptions {
    *backend.known.lock().unwrap() = nodes.iter().map(|n| (*n).to_owned()).collect();
    ClusterOptions::new()
        .backend(Arc::clone(backend) as Arc<dyn Backend>)
        .initial_nodes(nodes.iter().copied())
        .replication_factor(3)
        .external_topology(external)
}

fn ring_nodes(cluster: &Cluster) -> BTreeSet<String> {
    cluster.ring().nodes().map(|n| n.to_string()).collect()
}

#[test]
fn an_external_topology_reopens_with_the_callers_members() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(KnownOnly::default());
    let first = Cluster::open(dir.path(), options(&backend, &["n1", "n2", "n3"], true)).unwrap();
    assert_eq!(
        ring_nodes(&first),
        BTreeSet::from(["n1", "n2", "n3"].map(String::from))
    );
    drop(first);

    // n2 was removed and forgotten; n4 joined.
    let again = Cluster::open(dir.path(), options(&backend, &["n1", "n3", "n4"], true))
        .unwrap_or_else(|e| panic!("reopen without n2: {e}"));
    assert_eq!(
        ring_nodes(&again),
        BTreeSet::from(["n1", "n3", "n4"].map(String::from))
    );
    drop(again);

    // And the stored members follow: the same members reopen as they are.
    let third = Cluster::open(dir.path(), options(&backend, &["n4", "n1", "n3"], true)).unwrap();
    assert_eq!(
        ring_nodes(&third),
        BTreeSet::from(["n1", "n3", "n4"].map(String::from))
    );
}

#[test]
fn a_cluster_of_its_own_keeps_its_stored_members() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(KnownOnly::default());
    drop(Cluster::open(dir.path(), options(&backend, &["n1", "n2", "n3"], false)).unwrap());
    // Without an external topology the stored members win over `initial_nodes` (as before):
    // n2, whose address the backend lost, cannot be opened.
    let e = Cluster::open(dir.path(), options(&backend, &["n1", "n3", "n4"], false)).unwrap_err();
    assert!(e.to_string().contains("n2"), "{e}");
}
