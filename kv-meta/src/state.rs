//! What every node agrees on: [`ClusterMeta`] and its members.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kv_ring::{Placement, Ring, RingOptions};
use serde::{Deserialize, Serialize};

use crate::change::{Change, ChangeKind, Step};

/// The number of coordinator slots, and so the most members a cluster can have (the low 6
/// bits of a version name the slot that minted it; format.md, "Versions").
pub const MAX_MEMBERS: usize = 64;

/// Where a member is in its life in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// Known (it has a raft id and a slot), not in any ring.
    Registered,
    /// Being added by the change in progress.
    Joining,
    /// In the ring.
    Normal,
    /// Being removed by the change in progress.
    Leaving,
    /// Removed from the ring; waiting for `Deregister`.
    Left,
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemberState::Registered => "registered",
            MemberState::Joining => "joining",
            MemberState::Normal => "normal",
            MemberState::Leaving => "leaving",
            MemberState::Left => "left",
        })
    }
}

/// A member of the ring as a ring needs it: id, weight, tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingMember {
    /// The node's id.
    pub id: String,
    /// Its weight (1.0 is a standard node).
    pub weight: f64,
    /// Its tokens, sorted.
    pub tokens: Vec<u64>,
}

/// The cluster-wide streaming limit; 0 is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Keys per second.
    pub keys_per_sec: u64,
    /// Bytes per second.
    pub bytes_per_sec: u64,
}

/// A registered node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Its raft node id: assigned at registration, never reused.
    pub raft_id: u64,
    /// Its coordinator slot, `0..64`.
    pub slot: u8,
    /// `host:port` of its peer port (kv-net).
    pub cluster_addr: String,
    /// `host:port` of its RESP port.
    pub client_addr: String,
    /// Its weight in the ring.
    pub weight: f64,
    /// Its ring tokens; empty while it is in no ring.
    pub tokens: Vec<u64>,
    /// Its state.
    pub state: MemberState,
}

/// Everything every node must agree on, replicated by raft. Applying the same entries in the
/// same order gives the same value on every node: [`apply`](ClusterMeta::apply) reads no
/// clock, draws no random number and does no I/O.
///
/// The default value is a cluster not yet bootstrapped (epoch 0, no members).
///
/// # Example
///
/// ```
/// use kv_meta::{ClusterMeta, Command, MetaResponse, NewMember};
///
/// let mut meta = ClusterMeta::default();
/// let bootstrap = Command::Bootstrap {
///     uuid: 7,
///     name: "demo".into(),
///     rf: 1,
///     vnodes: 4,
///     members: vec![NewMember {
///         id: "n1".into(),
///         cluster_addr: "127.0.0.1:7001".into(),
///         client_addr: "127.0.0.1:6379".into(),
///         weight: 1.0,
///         tokens: vec![1, 2, 3, 4],
///     }],
/// };
/// assert_eq!(meta.apply(1, &bootstrap), MetaResponse::Ok { epoch: 1 });
/// // The same command again is refused, and changes nothing.
/// assert!(matches!(meta.apply(2, &bootstrap), MetaResponse::Refused(_)));
/// assert_eq!(meta.members["n1"].raft_id, 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterMeta {
    /// Minted at bootstrap (never 0 after it); a node refuses another cluster's log.
    pub cluster_uuid: u128,
    /// The cluster's name.
    pub cluster_name: String,
    /// Replicas per key.
    pub replication_factor: u32,
    /// Virtual nodes of a node of weight 1.
    pub vnodes: u32,
    /// Bumped by every entry that changes routing; 1 after bootstrap.
    pub epoch: u64,
    /// Every registered node, whatever its state.
    pub members: BTreeMap<String, Member>,
    /// The raft id the next registration gets: ids are never reused.
    pub next_raft_id: u64,
    /// The change in progress, if any.
    pub change: Option<Change>,
    /// The cluster-wide streaming limit.
    pub stream_rate: RateLimit,
    /// The highest epoch each node reported fenced (display only).
    pub acks: BTreeMap<String, u64>,
}

impl ClusterMeta {
    /// Whether `Bootstrap` has been applied.
    pub fn is_bootstrapped(&self) -> bool {
        self.epoch > 0
    }

    /// The ring members in force (members holding tokens), ordered by raft id: the order the
    /// ring is rebuilt in, so every node rebuilds the same ring.
    pub fn ring_members(&self) -> Vec<RingMember> {
        let mut members: Vec<(&u64, RingMember)> = self
            .members
            .iter()
            .filter(|(_, m)| !m.tokens.is_empty())
            .map(|(id, m)| {
                (
                    &m.raft_id,
                    RingMember {
                        id: id.clone(),
                        weight: m.weight,
                        tokens: m.tokens.clone(),
                    },
                )
            })
            .collect();
        members.sort_by_key(|(raft_id, _)| **raft_id);
        members.into_iter().map(|(_, m)| m).collect()
    }

    /// The ring options of this cluster: its vnodes, balanced placement at its replication
    /// factor (what a proposer uses to compute a new node's tokens).
    ///
    /// # Errors
    /// A description if `vnodes` is out of kv-ring's bounds.
    pub fn ring_options(&self) -> Result<RingOptions, String> {
        ring_options(self.vnodes, self.replication_factor)
    }

    /// The ring in force, rebuilt from its members' tokens.
    ///
    /// # Errors
    /// A description if the stored tokens do not form a ring (never, for a state built by
    /// `apply`).
    pub fn ring(&self) -> Result<Ring, String> {
        build_ring(&self.ring_members(), self.vnodes, self.replication_factor)
    }

    /// The lowest coordinator slot no member holds.
    pub(crate) fn free_slot(&self) -> Option<u8> {
        let taken: BTreeSet<u8> = self.members.values().map(|m| m.slot).collect();
        (0..MAX_MEMBERS as u8).find(|s| !taken.contains(s))
    }

    /// Checks every invariant the state machine keeps; `Err` names the first one broken.
    ///
    /// They are: a state before bootstrap is empty; at most [`MAX_MEMBERS`] members, each
    /// with a valid id, a unique slot below 64 and a unique raft id below `next_raft_id`; the
    /// members holding tokens form a valid ring of at least `replication_factor` nodes; each
    /// member's state agrees with its tokens and with the change in progress; the change's
    /// rings are valid, its step epochs rise and none is above `epoch`; every task has one
    /// progress mark per range.
    ///
    /// # Errors
    /// A description of the first invariant broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        if !self.is_bootstrapped() {
            return if *self == ClusterMeta::default() {
                Ok(())
            } else {
                Err("epoch 0 but the state is not empty".into())
            };
        }
        if self.cluster_uuid == 0 {
            return Err("bootstrapped with cluster uuid 0".into());
        }
        if self.members.len() > MAX_MEMBERS {
            return Err(format!(
                "{} members, over {MAX_MEMBERS}",
                self.members.len()
            ));
        }
        let mut slots = BTreeSet::new();
        let mut raft_ids = BTreeSet::new();
        for (id, m) in &self.members {
            kv_ring::NodeId::new(id).map_err(|e| e.to_string())?;
            if usize::from(m.slot) >= MAX_MEMBERS || !slots.insert(m.slot) {
                return Err(format!("member {id}: slot {} is invalid or taken", m.slot));
            }
            if m.raft_id == 0 || m.raft_id >= self.next_raft_id || !raft_ids.insert(m.raft_id) {
                return Err(format!(
                    "member {id}: raft id {} is invalid or taken",
                    m.raft_id
                ));
            }
        }
        let ring = self.ring_members();
        if ring.len() < self.replication_factor as usize {
            return Err(format!(
                "{} ring members, fewer than the replication factor {}",
                ring.len(),
                self.replication_factor
            ));
        }
        build_ring(&ring, self.vnodes, self.replication_factor)?;
        for (id, m) in &self.members {
            let about = self.change.as_ref().filter(|c| &c.node == id);
            let has_tokens = !m.tokens.is_empty();
            let ok = match (m.state, about) {
                (MemberState::Registered | MemberState::Left, None) => !has_tokens,
                (MemberState::Normal, None) => has_tokens,
                // A joiner is `Normal` from `Final` on, with the new ring's tokens.
                (MemberState::Joining, Some(c)) => {
                    c.kind == ChangeKind::Add && c.step != Step::Final && !has_tokens
                }
                (MemberState::Normal, Some(c)) => {
                    c.kind == ChangeKind::Add && c.step == Step::Final && has_tokens
                }
                (MemberState::Leaving, Some(c)) => {
                    c.kind == ChangeKind::Remove && has_tokens == (c.step != Step::Final)
                }
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "member {id} is {} with {} tokens, change {:?}",
                    m.state,
                    m.tokens.len(),
                    about.map(|c| (c.kind, c.step))
                ));
            }
        }
        if let Some(c) = &self.change {
            if !self.members.contains_key(&c.node) {
                return Err(format!("change {}: node {} is not a member", c.id, c.node));
            }
            build_ring(&c.from_members, self.vnodes, self.replication_factor)?;
            build_ring(&c.to_members, self.vnodes, self.replication_factor)?;
            let in_force = if c.step == Step::Final {
                &c.to_members
            } else {
                &c.from_members
            };
            if ids(in_force) != ids(&ring) {
                return Err(format!(
                    "change {}: the ring in force is not the change's",
                    c.id
                ));
            }
            let [p, m, f] = c.step_epochs;
            let entered = match c.step {
                Step::Pending | Step::Streaming | Step::Aborting => p > 0 && m == 0 && f == 0,
                Step::Mid => p > 0 && m > p && f == 0,
                Step::Final => p > 0 && m > p && f > m,
            };
            if !entered || p > self.epoch || m > self.epoch || f > self.epoch {
                return Err(format!("change {}: step epochs {:?}", c.id, c.step_epochs));
            }
            for t in &c.tasks {
                if t.done_through.len() != t.ranges.len() {
                    return Err(format!("change {} task {}: progress marks", c.id, t.id));
                }
            }
        } else if self
            .members
            .values()
            .any(|m| matches!(m.state, MemberState::Joining | MemberState::Leaving))
        {
            return Err("a member is joining or leaving without a change".into());
        }
        Ok(())
    }
}

/// The ids of ring members, as a set.
pub(crate) fn ids(members: &[RingMember]) -> BTreeSet<&str> {
    members.iter().map(|m| m.id.as_str()).collect()
}

/// Ring options for `vnodes` per node and balanced placement at `rf`.
pub(crate) fn ring_options(vnodes: u32, rf: u32) -> Result<RingOptions, String> {
    Ok(RingOptions::default()
        .vnodes(vnodes)
        .map_err(|e| e.to_string())?
        .placement(Placement::Balanced {
            replication_factor: rf as usize,
        }))
}

/// Rebuilds a ring from its members' tokens (kv-ring checks ids, weights and tokens).
pub(crate) fn build_ring(members: &[RingMember], vnodes: u32, rf: u32) -> Result<Ring, String> {
    let options = ring_options(vnodes, rf)?;
    members
        .iter()
        .try_fold(Ring::new(options), |ring, m| {
            ring.add_node_with_tokens(&m.id, m.weight, &m.tokens)
        })
        .map_err(|e| e.to_string())
}
