//! `KVSTORE EXPIRING`: the lines `stats` adds about keys with a TTL, answered by `kvstore
//! serve` for `kvstore --connect` (a [`KvstoreExtension`]: the counts come from the storage
//! nodes this process opened, which only the program embedding the server knows).
//!
//! Other `KVSTORE` subcommands of an extension already given (a node's `PEERS`, `FAULT`) go
//! to it unchanged.

use std::sync::Arc;

use bytes::Bytes;
use kv_cluster::Cluster;
use kv_server::KvstoreExtension;

use crate::local_nodes::LocalNodes;

/// The subcommand, lowercased as the server passes it.
pub const SUBCOMMAND: &str = "expiring";

/// What the server's `KVSTORE EXPIRING` runs.
#[derive(Debug)]
pub struct ExpiringStats {
    cluster: Arc<Cluster>,
    nodes: Arc<LocalNodes>,
    inner: Option<Arc<dyn KvstoreExtension>>,
}

impl ExpiringStats {
    /// `KVSTORE EXPIRING` on `cluster`, counted on `nodes`; `inner` answers the rest.
    pub fn new(
        cluster: Arc<Cluster>,
        nodes: Arc<LocalNodes>,
        inner: Option<Arc<dyn KvstoreExtension>>,
    ) -> Self {
        ExpiringStats {
            cluster,
            nodes,
            inner,
        }
    }
}

/// The lines `stats` adds for keys with a TTL: the same text in the REPL and the server.
///
/// # Errors
/// The cluster's statistics failed (its message, chained).
pub fn lines(cluster: &Cluster, nodes: &LocalNodes) -> Result<Vec<String>, String> {
    let st = cluster.stats().map_err(|e| e.chain())?;
    Ok(kv_cluster::report::expiring(&st, &nodes.expiring_keys()))
}

impl KvstoreExtension for ExpiringStats {
    fn handles(&self, sub: &str) -> bool {
        sub == SUBCOMMAND || self.inner.as_ref().is_some_and(|i| i.handles(sub))
    }

    fn call(&self, args: &[Bytes]) -> Result<Vec<String>, String> {
        let ours = args
            .get(1)
            .is_some_and(|a| a.eq_ignore_ascii_case(SUBCOMMAND.as_bytes()));
        match &self.inner {
            Some(inner) if !ours => inner.call(args),
            _ if args.len() != 2 => Err("usage: KVSTORE EXPIRING".to_owned()),
            _ => lines(&self.cluster, &self.nodes).map_err(|e| format!("stats: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_nodes::TrackingBackend;
    use kv_cluster::{ClusterOptions, NodeOptions};

    #[test]
    fn expiring_answers_the_lines_of_the_repl_and_checks_its_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = Arc::new(LocalNodes::default());
        let backend = TrackingBackend::new(NodeOptions::new(), Arc::clone(&nodes));
        let cluster = Arc::new(
            Cluster::open(dir.path(), ClusterOptions::new().backend(Arc::new(backend))).unwrap(),
        );
        cluster
            .put_expiring(b"k", b"v", Some(cluster.now_millis() + 600_000))
            .unwrap();
        let ext = ExpiringStats::new(Arc::clone(&cluster), Arc::clone(&nodes), None);
        assert!(ext.handles("expiring"));
        assert!(!ext.handles("peers"));
        let got = ext
            .call(&[Bytes::from("KVSTORE"), Bytes::from("EXPIRING")])
            .unwrap();
        assert_eq!(got, lines(&cluster, &nodes).unwrap());
        assert_eq!(
            got[0],
            "Keys with a TTL per node: node1 1, node2 1, node3 1"
        );
        let extra = [
            Bytes::from("KVSTORE"),
            Bytes::from("EXPIRING"),
            Bytes::from("x"),
        ];
        assert_eq!(ext.call(&extra).unwrap_err(), "usage: KVSTORE EXPIRING");
        drop(ext);
        Arc::into_inner(cluster).unwrap().close().unwrap();
    }
}
