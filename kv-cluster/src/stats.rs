//! What the cluster holds where: `stats()`, `nodes()`, `placement_of()`.

use bytes::Bytes;
use kv_ring::{NodeId, TokenRange, token};

use crate::cluster::Cluster;
use crate::count::ExpiringCount;
use crate::error::Result;
use crate::progress::ChangeKind;
use kv_node::Version;

/// A member's role in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeState {
    /// A member of the committed ring.
    Member,
    /// Joining: receives writes and streamed ranges, serves no reads yet.
    Joining,
    /// Leaving: still serves reads until the change commits.
    Leaving,
}

/// A node as [`Cluster::nodes`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeInfo {
    /// The node.
    pub id: NodeId,
    /// Its role.
    pub state: NodeState,
    /// Its number of virtual nodes (ring tokens).
    pub tokens: usize,
    /// Whether it answers (see [`Cluster::fail_node`]; [`Health::Unreachable`] for a
    /// peer whose handle reports it down).
    ///
    /// [`Health::Unreachable`]: crate::Health::Unreachable
    pub health: crate::Health,
    /// Hinted writes this cluster holds for it (see [`Cluster::hints_pending_for`]).
    pub hints: u64,
    /// Its catch-up running now, and the last one's result (see [`Cluster::catch_up`]).
    pub catch_up: crate::CatchUpStatus,
}

/// One node's share of the data (see [`Cluster::stats`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeStats {
    /// The node.
    pub id: NodeId,
    /// Live keys for which it is the primary (first) replica.
    pub primary_keys: u64,
    /// Live keys it holds as any replica.
    pub replica_keys: u64,
    /// Tombstones it holds in its replica ranges.
    pub tombstones: u64,
    /// Bytes of its replica keys, as the node counts them (a storage node counts the log
    /// records of live keys and tombstones).
    pub bytes: u64,
    /// `primary_keys` as a fraction of the cluster's keys.
    pub share: f64,
    /// The fraction of the token space it owns as primary.
    pub primary_ownership: f64,
    /// The fraction of the token space it holds as any replica.
    pub replica_ownership: f64,
    /// Whether it answered; a down node's counts are zero.
    pub up: bool,
    /// The keys with an expiry it holds as any replica
    /// ([`Replica::expiring_keys`](crate::Replica::expiring_keys)); `None` when not known
    /// (a down node, or a storage node of another process).
    pub expiring_keys: Option<u64>,
}

/// The cluster's data distribution.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// The committed ring's epoch.
    pub epoch: u64,
    /// The replication factor.
    pub replication_factor: usize,
    /// Distinct live keys (each counted once, at its primary).
    pub total_keys: u64,
    /// Per member, in id order.
    pub nodes: Vec<NodeStats>,
    /// The change pending, if any.
    pub change: Option<(ChangeKind, NodeId)>,
    /// Why the pending change stopped the last time it was driven, if it failed (see
    /// [`Cluster::change_error`]).
    pub change_error: Option<String>,
    /// Hinted writes held for down nodes, in the hint stores open now.
    pub hints: u64,
    /// The background repair's rounds and last result, if it runs.
    pub background_repair: Option<crate::BackgroundRepairStatus>,
}

impl ClusterStats {
    /// The keys with an expiry, from the nodes' [`NodeStats::expiring_keys`]: what
    /// [`Cluster::expiring_key_count`] answers, as of these statistics.
    pub fn expiring(&self) -> ExpiringCount {
        ExpiringCount::of(
            self.nodes.iter().map(|n| n.expiring_keys),
            self.replication_factor,
        )
    }
}

/// Where a key is and where it should be (see [`Cluster::placement_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPlacement {
    /// The key's replicas under the committed ring, primary first.
    pub expected: Vec<NodeId>,
    /// Every routed node holding a record of the key, with its value (`None`: a tombstone)
    /// and version, in id order.
    pub held: Vec<(NodeId, Option<Bytes>, Version)>,
}

impl Cluster {
    /// The nodes: members of the committed ring, and during a change the joining or leaving
    /// node, each with its health, the hints held for it and its catch-up.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend, NodeState};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// let nodes = cluster.nodes();
    /// assert_eq!(nodes.len(), 3);
    /// assert!(nodes.iter().all(|n| n.state == NodeState::Member));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let routing = self.routing();
        let ring = &routing.ring;
        let hints = self.hints_by_target();
        let info = |id: &NodeId, state: NodeState, tokens: usize| {
            let health = match self.health(id.as_str()) {
                Some(crate::Health::Up) | None if routing.node(id).is_some_and(|n| n.is_down()) => {
                    crate::Health::Unreachable
                }
                Some(h) => h,
                None => crate::Health::Up,
            };
            NodeInfo {
                id: id.clone(),
                state,
                tokens,
                health,
                hints: hints.get(id).copied().unwrap_or(0),
                catch_up: self.catch_ups.get(id),
            }
        };
        let mut out: Vec<NodeInfo> = ring
            .nodes()
            .map(|id| {
                // In `Mid` the routed ring is the new one: a node missing from the other
                // (old) ring is the one joining.
                let state = match &routing.pending {
                    Some(p) if !p.contains(id.as_str()) && routing.mid => NodeState::Joining,
                    Some(p) if !p.contains(id.as_str()) => NodeState::Leaving,
                    _ => NodeState::Member,
                };
                info(
                    id,
                    state,
                    ring.tokens_of(id.as_str()).map_or(0, <[u64]>::len),
                )
            })
            .collect();
        if let Some(p) = &routing.pending {
            for id in p.nodes().filter(|id| !ring.contains(id.as_str())) {
                let tokens = p.tokens_of(id.as_str()).map_or(0, <[u64]>::len);
                let state = match routing.mid {
                    true => NodeState::Leaving,
                    false => NodeState::Joining,
                };
                out.push(info(id, state, tokens));
            }
        }
        out
    }

    /// Keys per node (as primary and as any replica), each node's share, bytes, and the
    /// ring's ownership; a down node counts nothing (so `total_keys` misses the keys whose
    /// primary is down). Costs a count over every key held (the nodes count by token range);
    /// [`key_count`](Cluster::key_count) counts from the nodes' counters instead.
    ///
    /// # Errors
    /// A node's error.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// for i in 0..300u32 {
    ///     cluster.put(&i.to_be_bytes(), b"v")?;
    /// }
    /// let stats = cluster.stats()?;
    /// assert_eq!(stats.total_keys, 300);
    /// // Three nodes, three replicas: every node holds every key.
    /// assert!(stats.nodes.iter().all(|n| n.replica_keys == 300));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Result<ClusterStats> {
        let routing = self.routing();
        let ring = &routing.ring;
        let ownership = ring.ownership(self.rf)?;
        let mut nodes = Vec::with_capacity(ring.len());
        for own in ownership {
            let id = own.node;
            let Some(node) = routing.node(&id) else {
                continue;
            };
            if node.is_down() {
                nodes.push(NodeStats {
                    id,
                    primary_keys: 0,
                    replica_keys: 0,
                    tombstones: 0,
                    bytes: 0,
                    share: 0.0,
                    primary_ownership: own.primary,
                    replica_ownership: own.replica,
                    up: false,
                    expiring_keys: None,
                });
                continue;
            }
            let primary: Vec<TokenRange> = ring
                .ranges()
                .filter(|r| r.owner == &id)
                .map(|r| r.range)
                .collect();
            let p = node.count_in_ranges(&primary)?;
            let r = node.count_in_ranges(&ring.replica_ranges(id.as_str(), self.rf)?)?;
            nodes.push(NodeStats {
                id,
                primary_keys: p.live,
                replica_keys: r.live,
                tombstones: r.tombstones,
                bytes: r.live_bytes,
                share: 0.0,
                primary_ownership: own.primary,
                replica_ownership: own.replica,
                up: true,
                expiring_keys: node.expiring_keys(),
            });
        }
        let total_keys: u64 = nodes.iter().map(|n| n.primary_keys).sum();
        if total_keys > 0 {
            for n in &mut nodes {
                n.share = n.primary_keys as f64 / total_keys as f64;
            }
        }
        Ok(ClusterStats {
            epoch: ring.epoch(),
            replication_factor: self.rf,
            total_keys,
            nodes,
            change: self.pending_change(),
            change_error: self.change_error(),
            hints: self.hints_pending(),
            background_repair: self.background_repair(),
        })
    }

    /// Where `key` should be and where it actually is: a diagnostic (and what the tests use
    /// to check that every key has exactly its replicas).
    ///
    /// # Errors
    /// A node's error.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// cluster.put(b"k", b"v")?;
    /// let p = cluster.placement_of(b"k")?;
    /// let holders: Vec<_> = p.held.iter().map(|(id, _, _)| id.clone()).collect();
    /// let mut expected = p.expected.clone();
    /// expected.sort();
    /// assert_eq!(holders, expected);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn placement_of(&self, key: &[u8]) -> Result<KeyPlacement> {
        let routing = self.routing();
        let expected = routing.ring.preference_list(token(key), self.rf)?.to_vec();
        let mut ids: Vec<&NodeId> = routing.nodes.keys().collect();
        ids.sort();
        let mut held = Vec::new();
        for id in ids {
            if let Some(node) = routing.node(id)
                && !node.is_down()
                && let Some(cell) = node.read(routing.epoch(), key)?
            {
                // An expired value shows as the tombstone it stands for.
                let cell = cell.judged(self.now_millis());
                held.push((id.clone(), cell.value, cell.version));
            }
        }
        Ok(KeyPlacement { expected, held })
    }
}
