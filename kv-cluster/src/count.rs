//! A cheap count of the cluster's keys: [`Cluster::key_count`].

use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// The number of distinct live keys, as [`Cluster::key_count`] estimates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyCount {
    /// Distinct live keys (see [`Cluster::key_count`] for when this is exact).
    pub keys: u64,
    /// Every member of the ring answered and no membership change is in progress: `keys` is
    /// then exact whenever the replicas are in sync. Otherwise it is extrapolated.
    pub complete: bool,
}

impl Cluster {
    /// The number of distinct live keys, from each member's live-key counter (a storage node
    /// keeps it in its index as it applies writes): one call per node, whatever the number of
    /// keys (what `DBSIZE` and `INFO keyspace` answer). [`stats`](Cluster::stats) counts key
    /// by key instead, and exactly per primary.
    ///
    /// Every key is held by `rf` members, so the count is the sum of the members' live keys
    /// divided by `rf`. That is **exact when every replica holds exactly the keys of its
    /// ranges**: all replicas in sync (no write missed by a replica, no hint waiting for
    /// handoff, no repair to do), no node down, no membership change in progress. Otherwise it
    /// is an estimate: a replica that missed a write or a delete shifts it by `1 / rf` per
    /// key; members that do not answer (down) are extrapolated from the others by the share
    /// of the token space they replicate (`sum of their keys / sum of their replica
    /// ownership`; [`KeyCount::complete`] is then `false`); during a membership change the
    /// joining node is not counted, and after the commit, until cleanup, a node still holding
    /// ranges it lost counts them too (also `complete: false`). Redis's `DBSIZE` is exact;
    /// this one is exact in a settled cluster.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when no member answers; a ring error.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// for i in 0..100u32 {
    ///     cluster.put(&i.to_be_bytes(), b"v")?;
    /// }
    /// cluster.delete(&7u32.to_be_bytes())?;
    /// let count = cluster.key_count()?;
    /// assert_eq!((count.keys, count.complete), (99, true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn key_count(&self) -> Result<KeyCount> {
        let routing = self.routing();
        let ring = &routing.ring;
        let mut live = 0u64;
        let mut share = 0.0f64;
        let (mut answered, mut errors) = (0, Vec::new());
        let ownership = ring.ownership(self.rf)?;
        for own in &ownership {
            let Some(node) = routing.node(&own.node) else {
                continue;
            };
            if node.is_down() {
                continue;
            }
            match node.held() {
                Ok(held) => {
                    live = live.saturating_add(held.live);
                    share += own.replica;
                    answered += 1;
                }
                Err(e) => errors.push(e),
            }
        }
        if answered == 0 {
            return Err(Error::unavailable(1, 0, errors));
        }
        let complete = answered == ownership.len() && self.pending_change().is_none();
        let keys = if answered == ownership.len() {
            let rf = self.rf as u64;
            live.saturating_add(rf / 2) / rf
        } else if share > 0.0 {
            (live as f64 / share).round() as u64
        } else {
            0
        };
        Ok(KeyCount { keys, complete })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;
    use crate::{ClusterOptions, MemoryBackend};

    fn cluster(dir: &std::path::Path, nodes: &[&str]) -> Cluster {
        let opts = ClusterOptions::new()
            .backend(Arc::new(MemoryBackend::default()))
            .initial_nodes(nodes.iter().copied());
        Cluster::open(dir, opts).unwrap()
    }

    #[test]
    fn key_count_is_exact_in_a_settled_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = cluster(dir.path(), &["n1", "n2", "n3", "n4", "n5"]);
        assert_eq!(cluster.key_count().unwrap().keys, 0);
        for i in 0..1000u32 {
            cluster.put(&i.to_be_bytes(), b"v").unwrap();
        }
        for i in 0..100u32 {
            cluster.delete(&i.to_be_bytes()).unwrap();
        }
        let count = cluster.key_count().unwrap();
        assert_eq!((count.keys, count.complete), (900, true));
        assert_eq!(count.keys, cluster.stats().unwrap().total_keys);
    }

    /// A down member is extrapolated from the others: close, not exact, and said so.
    #[test]
    fn key_count_with_a_down_node_is_an_estimate_marked_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = cluster(dir.path(), &["n1", "n2", "n3", "n4", "n5"]);
        for i in 0..3000u32 {
            cluster.put(&i.to_be_bytes(), b"v").unwrap();
        }
        cluster.fail_node("n2").unwrap();
        let count = cluster.key_count().unwrap();
        assert!(!count.complete);
        assert!((2700..=3300).contains(&count.keys), "{count:?}");
    }

    #[test]
    fn key_count_with_every_node_down_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = cluster(dir.path(), &["n1", "n2", "n3"]);
        for id in ["n1", "n2", "n3"] {
            cluster.fail_node(id).unwrap();
        }
        assert!(matches!(
            cluster.key_count(),
            Err(Error::Unavailable { .. })
        ));
    }
}
