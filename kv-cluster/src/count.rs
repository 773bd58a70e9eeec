//! Cheap counts of the cluster's keys, from the nodes' counters: [`Cluster::key_count`] and
//! [`Cluster::expiring_key_count`].

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

/// The keys with an expiry (a TTL), as [`Cluster::expiring_key_count`] and
/// [`ClusterStats::expiring`](crate::ClusterStats::expiring) count them from the nodes' own
/// counts ([`Replica::expiring_keys`](crate::Replica::expiring_keys)).
///
/// A node counts the keys it holds as any replica, so `keys` is `records` divided by the
/// replication factor (rounded up): exact when the replicas are in sync and every node is
/// counted, a lower bound otherwise (a node down, or one whose count is not known here, such
/// as a storage node of another process). A key counts from its write with an expiry until
/// compaction or active expiry removes it: an expired key not yet reclaimed still counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ExpiringCount {
    /// Distinct keys with an expiry: `records / replication factor`, rounded up.
    pub keys: u64,
    /// The counted nodes' counts summed (a key once per replica holding it).
    pub records: u64,
    /// The nodes whose count is known (up, and able to tell).
    pub counted: usize,
    /// The nodes asked: the members of the committed ring.
    pub nodes: usize,
}

impl ExpiringCount {
    /// Every node was counted: `keys` is exact whenever the replicas are in sync.
    pub fn complete(&self) -> bool {
        self.counted == self.nodes
    }

    /// The count from each node's own (`None`: not known), with replication factor `rf`.
    pub(crate) fn of(counts: impl IntoIterator<Item = Option<u64>>, rf: usize) -> Self {
        let mut c = ExpiringCount::default();
        for n in counts {
            c.nodes += 1;
            if let Some(n) = n {
                c.records = c.records.saturating_add(n);
                c.counted += 1;
            }
        }
        c.keys = c.records.div_ceil(rf.max(1) as u64);
        c
    }
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

    /// The keys with an expiry (a TTL), from each member's own count
    /// ([`Replica::expiring_keys`](crate::Replica::expiring_keys)): one call per node, no
    /// scan (what `INFO keyspace`'s `expires=` answers). See [`ExpiringCount`] for when it is
    /// exact; a node down or whose count is not known here makes it a lower bound.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// cluster.put_expiring(b"session:abc", b"active", Some(cluster.now_millis() + 60_000))?;
    /// cluster.put(b"plain", b"v")?;
    /// let count = cluster.expiring_key_count();
    /// // Three nodes, three replicas: each node holds the one key with a TTL.
    /// assert_eq!((count.keys, count.records, count.complete()), (1, 3, true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn expiring_key_count(&self) -> ExpiringCount {
        let routing = self.routing();
        let counts = routing.ring.nodes().filter_map(|id| {
            let node = routing.node(id)?;
            Some(if node.is_down() {
                None
            } else {
                node.expiring_keys()
            })
        });
        ExpiringCount::of(counts, self.rf)
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
    fn expiring_key_count_follows_writes_and_is_a_lower_bound_with_a_node_down() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = cluster(dir.path(), &["n1", "n2", "n3", "n4"]);
        let later = Some(cluster.now_millis() + 600_000);
        for i in 0..100u32 {
            cluster.put_expiring(&i.to_be_bytes(), b"v", later).unwrap();
            cluster.put(&(1000 + i).to_be_bytes(), b"v").unwrap();
        }
        let count = cluster.expiring_key_count();
        assert_eq!((count.keys, count.records), (100, 300), "{count:?}");
        assert_eq!((count.counted, count.nodes), (4, 4));
        assert!(count.complete());
        assert_eq!(count, cluster.stats().unwrap().expiring());
        // An expiry removed, a key deleted, a value without an expiry over another.
        assert!(cluster.persist_key(&0u32.to_be_bytes()).unwrap());
        cluster.delete(&1u32.to_be_bytes()).unwrap();
        cluster.put(&2u32.to_be_bytes(), b"plain").unwrap();
        assert_eq!(cluster.expiring_key_count().keys, 97);

        cluster.fail_node("n2").unwrap();
        let count = cluster.expiring_key_count();
        assert!(!count.complete());
        assert_eq!((count.counted, count.nodes), (3, 4));
        assert!(count.keys < 97 && count.records < 291, "{count:?}");
        assert_eq!(count, cluster.stats().unwrap().expiring());
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
