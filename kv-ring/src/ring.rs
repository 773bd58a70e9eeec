//! The ring: members, their virtual nodes, and lookups.

use std::sync::Arc;

use crate::balanced;
use crate::error::{Error, Result};
use crate::node_id::NodeId;
use crate::options::{MAX_VNODES, Placement, RingOptions};
use crate::replicas::{Indices, Replicas};
use crate::token::{TokenRange, token};

/// A consistent-hash ring: an immutable snapshot of a membership and its virtual nodes.
///
/// A ring never changes: [`add_node`](Ring::add_node) and [`remove_node`](Ring::remove_node)
/// return a new ring with the next [epoch](Ring::epoch). Cloning is a reference-count increment,
/// so a coordinator keeps the current ring behind an `Arc`/`RwLock`/`ArcSwap` and swaps in the
/// successor; readers holding the old snapshot finish their lookups undisturbed.
///
/// Each virtual node at token `t` owns the range `(previous token, t]`; a key belongs to the first
/// virtual node at or after its [`token`](crate::token()), wrapping around.
///
/// # Example
/// ```
/// use kv_ring::{Ring, RingOptions};
///
/// let ring = Ring::with_nodes(RingOptions::default(), ["node1", "node2", "node3"])?;
/// let bigger = ring.add_node("node4")?;
/// assert_eq!((ring.len(), bigger.len()), (3, 4));
/// assert_eq!(bigger.epoch(), ring.epoch() + 1);
///
/// let replicas = bigger.replicas_for_key(b"user:1001", 3)?;
/// assert_eq!(replicas.len(), 3);
/// assert_eq!(replicas.primary(), bigger.primary(b"user:1001")?);
/// # Ok::<(), kv_ring::Error>(())
/// ```
#[derive(Clone)]
pub struct Ring {
    inner: Arc<Inner>,
}

struct Inner {
    options: RingOptions,
    epoch: u64,
    /// Sorted by id, so member indices are a function of the membership alone.
    members: Vec<Member>,
    /// Every virtual node's token, ascending and distinct.
    points: Vec<u64>,
    /// `owners[i]` is the member index owning `points[i]`.
    owners: Vec<u32>,
    /// `successors[i]`: the first `min(SUCCESSORS, members)` distinct owners from point `i` on,
    /// precomputed so that preference lists of the common replication factors are one lookup.
    successors: Vec<[u32; SUCCESSORS]>,
}

/// Preference lists up to this length come from the precomputed table.
const SUCCESSORS: usize = 4;

#[derive(Clone)]
struct Member {
    id: NodeId,
    weight: f64,
    /// This node's virtual node tokens, ascending.
    tokens: Arc<[u64]>,
}

/// One virtual node's range and the node that owns it (see [`Ring::ranges`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VnodeRange<'a> {
    /// The range `(previous token, token]`.
    pub range: TokenRange,
    /// The node whose virtual node sits at `range.end`.
    pub owner: &'a NodeId,
}

impl Ring {
    /// An empty ring (epoch 0).
    pub fn new(options: RingOptions) -> Self {
        Ring {
            inner: Arc::new(Inner {
                options,
                epoch: 0,
                members: Vec::new(),
                points: Vec::new(),
                owners: Vec::new(),
                successors: Vec::new(),
            }),
        }
    }

    /// A ring of the given nodes, added in order (each of weight 1).
    ///
    /// # Errors
    /// As [`add_node`](Ring::add_node), for the first node that fails.
    pub fn with_nodes<I>(options: RingOptions, ids: I) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        ids.into_iter()
            .try_fold(Ring::new(options), |ring, id| ring.add_node(id.as_ref()))
    }

    /// The ring with `id` added (weight 1), at the next epoch.
    ///
    /// # Errors
    /// [`Error::InvalidNodeId`] or [`Error::DuplicateNode`].
    pub fn add_node(&self, id: &str) -> Result<Ring> {
        self.add_weighted_node(id, 1.0)
    }

    /// The ring with `id` added with a relative `weight` (a node of weight 2 gets twice the
    /// virtual nodes, and so about twice the data), at the next epoch.
    ///
    /// # Errors
    /// [`Error::InvalidNodeId`], [`Error::DuplicateNode`], [`Error::InvalidWeight`], or
    /// [`Error::InvalidVnodes`] when the weighted count leaves `1..=MAX_VNODES`.
    pub fn add_weighted_node(&self, id: &str, weight: f64) -> Result<Ring> {
        let node = self.check_new_member(id)?;
        let count = self.inner.options.vnodes_for(id, weight)?;
        let tokens = match self.inner.options.placement {
            Placement::Random => random_tokens(&node, count),
            Placement::Balanced { replication_factor } => {
                let (at, members) = self.members_with(&node, weight);
                let weights: Vec<f64> = members.iter().map(|m| m.weight).collect();
                let mut owners = self.grid_owners(|o| if o >= at { o + 1 } else { o });
                balanced::join(&mut owners, &weights, at, replication_factor.max(1));
                return self.with_partition_owners(members, &owners);
            }
        };
        self.with_member(node, weight, tokens)
    }

    /// The ring with `id` added at exactly the given tokens: how a ring persisted by its tokens
    /// (see [`tokens_of`](Ring::tokens_of)) is rebuilt, and how an operator pins a node's
    /// positions by hand (Cassandra's `initial_token`).
    ///
    /// # Errors
    /// [`Error::InvalidNodeId`], [`Error::DuplicateNode`], [`Error::InvalidWeight`], or
    /// [`Error::InvalidTokens`] if `tokens` is empty, longer than `MAX_VNODES * 60`, repeats a
    /// token or holds one that another node already has.
    pub fn add_node_with_tokens(&self, id: &str, weight: f64, tokens: &[u64]) -> Result<Ring> {
        let node = self.check_new_member(id)?;
        if !weight.is_finite() || weight <= 0.0 {
            return Err(Error::InvalidWeight {
                id: id.to_owned(),
                weight,
            });
        }
        let invalid = |reason: String| Error::InvalidTokens {
            id: id.to_owned(),
            reason,
        };
        // A balanced ring's node may own far more partitions than `MAX_VNODES` (all of them,
        // alone), so the bound here is the largest grid.
        let most = MAX_VNODES as usize * balanced::PARTITIONS_PER_VNODE;
        if tokens.is_empty() || tokens.len() > most {
            return Err(invalid(format!(
                "{} tokens given, 1..={most} expected",
                tokens.len()
            )));
        }
        let mut sorted = tokens.to_vec();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(format!("token {:#x} is given twice", w[0])));
        }
        if let Some(t) = sorted
            .iter()
            .find(|t| self.inner.points.binary_search(t).is_ok())
        {
            return Err(invalid(format!("token {t:#x} belongs to another node")));
        }
        self.with_member(node, weight, sorted)
    }

    /// The ring without `id`, at the next epoch. Only the ranges `id` held change hands: with
    /// [`Placement::Random`] the other nodes keep their tokens; with [`Placement::Balanced`] the
    /// leaver's partitions go to the nodes furthest under their share.
    ///
    /// # Errors
    /// [`Error::UnknownNode`] if `id` is not a member.
    pub fn remove_node(&self, id: &str) -> Result<Ring> {
        let at = self
            .member_index(id)
            .ok_or_else(|| Error::UnknownNode { id: id.to_owned() })?;
        let mut members = self.inner.members.clone();
        if let Placement::Balanced { replication_factor } = self.inner.options.placement {
            // Hand the leaver's partitions to the nodes furthest under their share.
            let weights: Vec<f64> = members.iter().map(|m| m.weight).collect();
            let mut owners = self.grid_owners(|o| o);
            balanced::leave(&mut owners, &weights, at, replication_factor.max(1));
            members.remove(at as usize);
            owners.iter_mut().filter(|o| **o > at).for_each(|o| *o -= 1);
            return self.with_partition_owners(members, &owners);
        }
        members.remove(at as usize);
        Ok(self.successor(members))
    }

    /// The owner of each partition of the balanced grid under this ring, as member indices
    /// passed through `map` (all 0 for an empty ring).
    fn grid_owners(&self, map: impl Fn(u32) -> u32) -> Vec<u32> {
        let grid = balanced::grid(self.grid_size());
        if self.is_empty() {
            return vec![0; grid.len()];
        }
        grid.iter()
            .map(|&g| map(self.inner.owners[self.point_index(g)]))
            .collect()
    }

    fn grid_size(&self) -> usize {
        self.inner.options.vnodes as usize * balanced::PARTITIONS_PER_VNODE
    }

    /// The ring whose balanced-grid partition `p` belongs to `members[owners[p]]`.
    fn with_partition_owners(&self, mut members: Vec<Member>, owners: &[u32]) -> Result<Ring> {
        let grid = balanced::grid(self.grid_size());
        let mut tokens: Vec<Vec<u64>> = vec![Vec::new(); members.len()];
        for (&g, &o) in grid.iter().zip(owners) {
            tokens[o as usize].push(g);
        }
        for (member, tokens) in members.iter_mut().zip(tokens) {
            if tokens.is_empty() {
                return Err(Error::InvalidVnodes {
                    vnodes: 0,
                    max: MAX_VNODES,
                });
            }
            member.tokens = Arc::from(tokens);
        }
        Ok(self.successor(members))
    }

    fn check_new_member(&self, id: &str) -> Result<NodeId> {
        let node = NodeId::new(id)?;
        if self.member_index(id).is_some() {
            return Err(Error::DuplicateNode { id: id.to_owned() });
        }
        Ok(node)
    }

    /// The member list with `node` inserted in id order (with no tokens yet), and its index.
    fn members_with(&self, node: &NodeId, weight: f64) -> (u32, Vec<Member>) {
        let mut members = self.inner.members.clone();
        let at = members.partition_point(|m| m.id < *node);
        members.insert(
            at,
            Member {
                id: node.clone(),
                weight,
                tokens: Arc::from([]),
            },
        );
        (at as u32, members)
    }

    fn with_member(&self, node: NodeId, weight: f64, mut tokens: Vec<u64>) -> Result<Ring> {
        tokens.sort_unstable();
        tokens.dedup();
        let (at, mut members) = self.members_with(&node, weight);
        members[at as usize].tokens = Arc::from(tokens);
        let ring = self.successor(members);
        // Hash-derived tokens can (with probability ~2^-50 for a large ring) collide with
        // another node's; the smaller id keeps the point. A node left with no point at all
        // could not be placed, so refuse it rather than build a ring that cannot route to it.
        if !ring.inner.owners.contains(&at) {
            return Err(Error::InvalidTokens {
                id: node.to_string(),
                reason: "every token collides with another node's".to_owned(),
            });
        }
        Ok(ring)
    }

    fn successor(&self, members: Vec<Member>) -> Ring {
        let mut pairs: Vec<(u64, u32)> = members
            .iter()
            .enumerate()
            .flat_map(|(i, m)| m.tokens.iter().map(move |&t| (t, i as u32)))
            .collect();
        pairs.sort_unstable();
        pairs.dedup_by_key(|p| p.0);
        let (points, owners): (Vec<u64>, Vec<u32>) = pairs.into_iter().unzip();
        let successors = successor_table(&owners, members.len());
        Ring {
            inner: Arc::new(Inner {
                options: self.inner.options,
                epoch: self.inner.epoch + 1,
                members,
                points,
                owners,
                successors,
            }),
        }
    }

    /// The ring's epoch: 0 when empty, one more with every membership change.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    /// This ring with its epoch set to `epoch`: for restoring a persisted ring, whose rebuild
    /// from tokens counts one epoch per member rather than the epoch it had.
    ///
    /// # Example
    /// ```
    /// use kv_ring::{Ring, RingOptions};
    ///
    /// let ring = Ring::with_nodes(RingOptions::default(), ["a", "b"])?;
    /// let saved: Vec<(String, Vec<u64>)> = ring
    ///     .nodes()
    ///     .map(|n| (n.to_string(), ring.tokens_of(n.as_str()).unwrap().to_vec()))
    ///     .collect();
    /// let restored = saved
    ///     .iter()
    ///     .try_fold(Ring::new(*ring.options()), |r, (id, tokens)| {
    ///         r.add_node_with_tokens(id, 1.0, tokens)
    ///     })?
    ///     .at_epoch(41);
    /// assert_eq!(restored.epoch(), 41);
    /// assert_eq!(restored.primary(b"k")?, ring.primary(b"k")?);
    /// # Ok::<(), kv_ring::Error>(())
    /// ```
    pub fn at_epoch(&self, epoch: u64) -> Ring {
        let inner = &*self.inner;
        Ring {
            inner: Arc::new(Inner {
                options: inner.options,
                epoch,
                members: inner.members.clone(),
                points: inner.points.clone(),
                owners: inner.owners.clone(),
                successors: inner.successors.clone(),
            }),
        }
    }

    /// The ring's parameters.
    pub fn options(&self) -> &RingOptions {
        &self.inner.options
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.inner.members.len()
    }

    /// Whether the ring has no nodes.
    pub fn is_empty(&self) -> bool {
        self.inner.members.is_empty()
    }

    /// The nodes, in id order.
    pub fn nodes(&self) -> impl ExactSizeIterator<Item = &NodeId> {
        self.inner.members.iter().map(|m| &m.id)
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &str) -> bool {
        self.member_index(id).is_some()
    }

    /// The tokens of `id`'s virtual nodes, ascending; `None` if it is not a member.
    pub fn tokens_of(&self, id: &str) -> Option<&[u64]> {
        let i = self.member_index(id)?;
        Some(&self.inner.members[i as usize].tokens)
    }

    /// The weight `id` was added with; `None` if it is not a member.
    pub fn weight_of(&self, id: &str) -> Option<f64> {
        let i = self.member_index(id)?;
        Some(self.inner.members[i as usize].weight)
    }

    /// The total number of virtual nodes.
    pub fn vnode_count(&self) -> usize {
        self.inner.points.len()
    }

    /// The node that owns `key` (its first replica).
    ///
    /// # Errors
    /// [`Error::EmptyRing`].
    pub fn primary(&self, key: &[u8]) -> Result<&NodeId> {
        self.primary_for_token(token(key))
    }

    /// The node that owns `token`.
    ///
    /// # Errors
    /// [`Error::EmptyRing`].
    #[inline]
    pub fn primary_for_token(&self, token: u64) -> Result<&NodeId> {
        if self.inner.points.is_empty() {
            return Err(Error::EmptyRing);
        }
        let i = self.point_index(token);
        Ok(self.member_id(self.inner.owners[i]))
    }

    /// The replicas of `key`: see [`preference_list`](Ring::preference_list).
    ///
    /// # Errors
    /// As [`preference_list`](Ring::preference_list).
    pub fn replicas_for_key(&self, key: &[u8], rf: usize) -> Result<Replicas<'_>> {
        self.preference_list(token(key), rf)
    }

    /// The first `rf` distinct nodes met walking clockwise from `token`: the token's replicas,
    /// primary first.
    ///
    /// # Errors
    /// [`Error::EmptyRing`]; [`Error::InvalidReplicationFactor`] if `rf` is 0 or more than the
    /// number of nodes.
    #[inline]
    pub fn preference_list(&self, token: u64, rf: usize) -> Result<Replicas<'_>> {
        self.check_rf(rf)?;
        let mut out = Indices::new();
        self.walk(self.point_index(token), rf, &mut out);
        Ok(Replicas::new(self, out))
    }

    /// Every virtual node's range with its owner, in token order. The ranges tile the ring.
    ///
    /// # Example
    /// ```
    /// use kv_ring::{Ring, RingOptions};
    ///
    /// let ring = Ring::with_nodes(RingOptions::default().vnodes(4)?, ["a", "b"])?;
    /// let total: u128 = ring.ranges().map(|r| r.range.len()).sum();
    /// assert_eq!(total, 1 << 64);
    /// # Ok::<(), kv_ring::Error>(())
    /// ```
    pub fn ranges(&self) -> impl ExactSizeIterator<Item = VnodeRange<'_>> {
        let points = &self.inner.points;
        (0..points.len()).map(move |i| VnodeRange {
            range: TokenRange::new(points[prev(i, points.len())], points[i]),
            owner: self.member_id(self.inner.owners[i]),
        })
    }

    /// The token ranges for which `id` is one of the `rf` replicas, merged where adjacent and in
    /// token order: what a node must hold.
    ///
    /// # Errors
    /// [`Error::UnknownNode`], [`Error::InvalidReplicationFactor`].
    pub fn replica_ranges(&self, id: &str, rf: usize) -> Result<Vec<TokenRange>> {
        let me = self
            .member_index(id)
            .ok_or_else(|| Error::UnknownNode { id: id.to_owned() })?;
        self.check_rf(rf)?;
        let points = &self.inner.points;
        let mut out: Vec<TokenRange> = Vec::new();
        let mut replicas = Indices::new();
        for i in 0..points.len() {
            self.walk(i, rf, &mut replicas);
            if replicas.contains(&me) {
                let range = TokenRange::new(points[prev(i, points.len())], points[i]);
                match out.last_mut() {
                    Some(last) if last.end == range.start && !last.is_full() => {
                        *last = TokenRange::new(last.start, range.end)
                    }
                    _ => out.push(range),
                }
            }
        }
        Ok(out)
    }

    /// The fraction of the token space each node owns, as primary and as any of `rf` replicas,
    /// in id order. Primary fractions sum to 1; replica fractions sum to `rf`.
    ///
    /// # Errors
    /// [`Error::EmptyRing`], [`Error::InvalidReplicationFactor`].
    ///
    /// # Example
    /// ```
    /// use kv_ring::{Ring, RingOptions};
    ///
    /// let ring = Ring::with_nodes(RingOptions::default(), ["node1", "node2", "node3", "node4"])?;
    /// let owned = ring.ownership(3)?;
    /// let primary: f64 = owned.iter().map(|o| o.primary).sum();
    /// let replica: f64 = owned.iter().map(|o| o.replica).sum();
    /// assert!((primary - 1.0).abs() < 1e-9 && (replica - 3.0).abs() < 1e-9);
    /// # Ok::<(), kv_ring::Error>(())
    /// ```
    pub fn ownership(&self, rf: usize) -> Result<Vec<Ownership>> {
        self.check_rf(rf)?;
        let mut primary = vec![0.0; self.len()];
        let mut replica = vec![0.0; self.len()];
        let mut replicas = Indices::new();
        for (i, r) in self.ranges().enumerate() {
            let share = r.range.fraction();
            self.walk(i, rf, &mut replicas);
            primary[replicas[0] as usize] += share;
            for &n in &replicas {
                replica[n as usize] += share;
            }
        }
        Ok(self
            .nodes()
            .zip(primary.into_iter().zip(replica))
            .map(|(node, (primary, replica))| Ownership {
                node: node.clone(),
                primary,
                replica,
            })
            .collect())
    }

    pub(crate) fn member_id(&self, index: u32) -> &NodeId {
        &self.inner.members[index as usize].id
    }

    fn member_index(&self, id: &str) -> Option<u32> {
        self.inner
            .members
            .binary_search_by(|m| m.id.as_str().cmp(id))
            .ok()
            .map(|i| i as u32)
    }

    pub(crate) fn check_rf(&self, rf: usize) -> Result<()> {
        if self.is_empty() {
            return Err(Error::EmptyRing);
        }
        if rf == 0 || rf > self.len() {
            return Err(Error::InvalidReplicationFactor {
                rf,
                nodes: self.len(),
            });
        }
        Ok(())
    }

    /// The index of the virtual node owning `token`. The ring must not be empty.
    #[inline]
    pub(crate) fn point_index(&self, token: u64) -> usize {
        let points = &self.inner.points;
        let i = points.partition_point(|&p| p < token);
        if i == points.len() { 0 } else { i }
    }

    /// The first `rf` distinct owners from virtual node `start` on, into `out`. `rf` must be in
    /// `1..=len()`; every member owns at least one point, so the walk ends within one turn.
    #[inline]
    pub(crate) fn walk(&self, start: usize, rf: usize, out: &mut Indices) {
        out.clear();
        if rf <= SUCCESSORS {
            out.extend_from_slice(&self.inner.successors[start][..rf]);
            return;
        }
        walk_owners(&self.inner.owners, start, rf, out);
    }

    /// Every virtual node token, ascending.
    pub(crate) fn points(&self) -> &[u64] {
        &self.inner.points
    }
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("epoch", &self.inner.epoch)
            .field("options", &self.inner.options)
            .field("nodes", &self.nodes().collect::<Vec<_>>())
            .field("vnodes", &self.inner.points.len())
            .finish()
    }
}

/// What share of the token space a node owns (see [`Ring::ownership`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Ownership {
    /// The node.
    pub node: NodeId,
    /// The fraction of the token space for which it is the primary, in `[0, 1]`.
    pub primary: f64,
    /// The fraction of the token space for which it is any of the replicas, in `[0, 1]`.
    pub replica: f64,
}

/// The first `rf` distinct values of `owners` from index `start` on, wrapping, into `out`.
fn walk_owners(owners: &[u32], start: usize, rf: usize, out: &mut Indices) {
    out.clear();
    let mut i = start;
    for _ in 0..owners.len() {
        let o = owners[i];
        if !out.contains(&o) {
            out.push(o);
            if out.len() == rf {
                return;
            }
        }
        i += 1;
        if i == owners.len() {
            i = 0;
        }
    }
}

/// The successor table: for each point, its first `SUCCESSORS` distinct owners (padded with the
/// last one when the ring has fewer members; only `..min(rf, members)` is ever read).
fn successor_table(owners: &[u32], members: usize) -> Vec<[u32; SUCCESSORS]> {
    let k = SUCCESSORS.min(members);
    let mut out = Indices::new();
    (0..owners.len())
        .map(|i| {
            walk_owners(owners, i, k, &mut out);
            let mut row = [out[out.len() - 1]; SUCCESSORS];
            row[..out.len()].copy_from_slice(&out);
            row
        })
        .collect()
}

/// The index before `i` on a ring of `len` points.
#[inline]
pub(crate) fn prev(i: usize, len: usize) -> usize {
    if i == 0 { len - 1 } else { i - 1 }
}

/// `count` hash-derived tokens for `node`: virtual node `i` sits at
/// `xxh3_64(id ++ [0xff] ++ i as u32 little-endian)`.
///
/// Not `xxh3_64_with_seed(id, i)`: for inputs of 1 to 3 bytes xxh3 folds the seed into the input
/// linearly, so ids like `n10`/`n11` collide at neighbouring seeds. `0xff` never occurs in a valid
/// id, so the encoding is unambiguous.
fn random_tokens(node: &NodeId, count: u32) -> Vec<u64> {
    let mut buf = node.as_str().as_bytes().to_vec();
    buf.push(0xff);
    let id_len = buf.len();
    (0..count)
        .map(|i| {
            buf.truncate(id_len);
            buf.extend_from_slice(&i.to_le_bytes());
            token(&buf)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ids: &[&str]) -> Ring {
        Ring::with_nodes(RingOptions::default(), ids).unwrap()
    }

    #[test]
    fn errors_for_bad_input() {
        let empty = Ring::new(RingOptions::default());
        assert_eq!(empty.primary(b"k").unwrap_err(), Error::EmptyRing);
        assert_eq!(empty.preference_list(1, 1).unwrap_err(), Error::EmptyRing);
        let r = ring(&["a", "b"]);
        assert!(matches!(r.add_node("a"), Err(Error::DuplicateNode { .. })));
        assert!(matches!(
            r.remove_node("zz"),
            Err(Error::UnknownNode { .. })
        ));
        assert!(matches!(
            r.add_node("no spaces"),
            Err(Error::InvalidNodeId { .. })
        ));
        assert!(matches!(
            r.preference_list(1, 0),
            Err(Error::InvalidReplicationFactor { rf: 0, nodes: 2 })
        ));
        assert!(matches!(
            r.preference_list(1, 3),
            Err(Error::InvalidReplicationFactor { rf: 3, nodes: 2 })
        ));
        assert!(matches!(
            r.add_weighted_node("c", 0.0),
            Err(Error::InvalidWeight { .. })
        ));
        assert!(matches!(
            r.add_weighted_node("c", f64::NAN),
            Err(Error::InvalidWeight { .. })
        ));
        assert!(matches!(
            r.add_weighted_node("c", 1e9),
            Err(Error::InvalidVnodes { .. })
        ));
        assert!(matches!(
            r.ownership(3),
            Err(Error::InvalidReplicationFactor { .. })
        ));
    }

    #[test]
    fn preference_list_is_distinct_and_starts_at_primary() {
        let r = ring(&["a", "b", "c", "d", "e"]);
        for k in 0..1000u32 {
            let key = k.to_le_bytes();
            let p = r.replicas_for_key(&key, 5).unwrap();
            let mut ids: Vec<_> = p.iter().collect();
            assert_eq!(p.primary(), r.primary(&key).unwrap());
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), 5);
        }
    }

    #[test]
    fn lookups_wrap_around() {
        let r = Ring::new(RingOptions::default())
            .add_node_with_tokens("a", 1.0, &[100])
            .unwrap()
            .add_node_with_tokens("b", 1.0, &[200])
            .unwrap();
        assert_eq!(r.primary_for_token(100).unwrap().as_str(), "a");
        assert_eq!(r.primary_for_token(101).unwrap().as_str(), "b");
        assert_eq!(r.primary_for_token(200).unwrap().as_str(), "b");
        assert_eq!(r.primary_for_token(201).unwrap().as_str(), "a");
        assert_eq!(r.primary_for_token(0).unwrap().as_str(), "a");
        assert_eq!(r.primary_for_token(u64::MAX).unwrap().as_str(), "a");
        let p = r.preference_list(150, 2).unwrap().to_vec();
        assert_eq!(
            p,
            vec![NodeId::new("b").unwrap(), NodeId::new("a").unwrap()]
        );
        assert_eq!(
            r.replica_ranges("a", 1).unwrap(),
            vec![TokenRange::new(200, 100)],
            "a owns (200, 100] wrapping"
        );
    }

    #[test]
    fn explicit_tokens_are_checked() {
        let r = Ring::new(RingOptions::default())
            .add_node_with_tokens("a", 1.0, &[5])
            .unwrap();
        for bad in [&[][..], &[5][..], &[7, 7][..]] {
            assert!(matches!(
                r.add_node_with_tokens("b", 1.0, bad),
                Err(Error::InvalidTokens { .. })
            ));
        }
        assert_eq!(r.tokens_of("a"), Some(&[5u64][..]));
    }

    #[test]
    fn ring_is_a_function_of_membership() {
        let a = ring(&["n1", "n2", "n3", "n4"]);
        let b = ring(&["n4", "n2", "n1", "n3"]);
        assert_eq!(a.points(), b.points());
        for k in 0..500u32 {
            let key = k.to_be_bytes();
            assert_eq!(
                a.replicas_for_key(&key, 3).unwrap().to_vec(),
                b.replicas_for_key(&key, 3).unwrap().to_vec()
            );
        }
    }

    /// Short ids get all their virtual nodes: positions derived as
    /// `xxh3_64_with_seed(id, index)` would collide (`n10` at index 2 and `n11` at index 1).
    #[test]
    fn hash_positions_of_short_ids_do_not_collide() {
        let ids: Vec<String> = (0..200).map(|n| format!("n{n}")).collect();
        let r = Ring::with_nodes(RingOptions::default().vnodes(64).unwrap(), &ids).unwrap();
        assert_eq!(r.vnode_count(), 200 * 64);
    }

    /// A balanced ring persisted by its tokens and rebuilt places every key the same way, and
    /// its next join gives the same result as the original's.
    #[test]
    fn balanced_ring_round_trips_through_tokens() {
        let options = RingOptions::default()
            .vnodes(8)
            .unwrap()
            .placement(Placement::Balanced {
                replication_factor: 3,
            });
        let ring = Ring::with_nodes(options, ["a", "b", "c", "d", "e"]).unwrap();
        let restored = ring
            .nodes()
            .try_fold(Ring::new(options), |r, n| {
                let id = n.as_str();
                r.add_node_with_tokens(id, 1.0, ring.tokens_of(id).unwrap())
            })
            .unwrap()
            .at_epoch(ring.epoch());
        assert_eq!(restored.epoch(), ring.epoch());
        let (a, b) = (ring.add_node("f").unwrap(), restored.add_node("f").unwrap());
        // A node of a small balanced ring owns more than MAX_VNODES partitions, and its tokens
        // are accepted back.
        let big = Ring::with_nodes(options.vnodes(256).unwrap(), ["x", "y", "z"]).unwrap();
        let tokens = big.tokens_of("x").unwrap();
        assert!(tokens.len() > MAX_VNODES as usize);
        Ring::new(*big.options())
            .add_node_with_tokens("x", 1.0, tokens)
            .unwrap();
        for k in 0..500u32 {
            let key = k.to_le_bytes();
            assert_eq!(
                ring.replicas_for_key(&key, 3).unwrap().to_vec(),
                restored.replicas_for_key(&key, 3).unwrap().to_vec()
            );
            assert_eq!(
                a.replicas_for_key(&key, 3).unwrap().to_vec(),
                b.replicas_for_key(&key, 3).unwrap().to_vec()
            );
        }
    }

    /// Readers keep looking up on the snapshot they hold while a writer swaps in successors.
    #[test]
    fn lookups_continue_while_the_ring_is_replaced() {
        use std::sync::RwLock;
        let current = RwLock::new(ring(&["n1", "n2", "n3"]));
        std::thread::scope(|s| {
            for t in 0..2u32 {
                let current = &current;
                s.spawn(move || {
                    for k in 0..2_000u32 {
                        let snapshot = current.read().unwrap().clone();
                        let key = (t, k);
                        let key = format!("{key:?}");
                        let replicas = snapshot.replicas_for_key(key.as_bytes(), 3).unwrap();
                        assert!(replicas.iter().all(|n| snapshot.contains(n.as_str())));
                    }
                });
            }
            s.spawn(|| {
                for i in 4..40 {
                    let next = current.read().unwrap().add_node(&format!("n{i}")).unwrap();
                    *current.write().unwrap() = next;
                }
            });
        });
        assert_eq!(current.read().unwrap().len(), 39);
    }

    /// The precomputed successor table gives the same lists as walking the ring.
    #[test]
    fn successor_table_matches_the_walk() {
        for members in 1..=6 {
            let ids: Vec<String> = (0..members).map(|i| format!("n{i}")).collect();
            let r = Ring::with_nodes(RingOptions::default().vnodes(7).unwrap(), &ids).unwrap();
            let (mut fast, mut slow) = (Indices::new(), Indices::new());
            for i in 0..r.vnode_count() {
                for rf in 1..=members {
                    r.walk(i, rf, &mut fast);
                    walk_owners(&r.inner.owners, i, rf, &mut slow);
                    assert_eq!(fast, slow, "members {members}, point {i}, rf {rf}");
                }
            }
        }
    }

    #[test]
    fn ring_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Ring>();
        assert_send_sync::<crate::TransferPlan>();
    }

    #[test]
    fn weights_scale_vnodes() {
        let r = Ring::new(RingOptions::default())
            .add_node("a")
            .unwrap()
            .add_weighted_node("b", 2.0)
            .unwrap();
        assert_eq!(r.tokens_of("a").unwrap().len(), 100);
        assert_eq!(r.tokens_of("b").unwrap().len(), 200);
        assert_eq!(r.weight_of("b"), Some(2.0));
        assert_eq!(r.vnode_count(), 300);
    }

    #[test]
    fn replica_ranges_match_ownership() {
        let r = ring(&["a", "b", "c", "d"]);
        let own = r.ownership(2).unwrap();
        for o in &own {
            let total: f64 = r
                .replica_ranges(o.node.as_str(), 2)
                .unwrap()
                .iter()
                .map(TokenRange::fraction)
                .sum();
            assert!((total - o.replica).abs() < 1e-9);
        }
        let single = ring(&["only"]);
        assert_eq!(
            single.replica_ranges("only", 1).unwrap(),
            vec![TokenRange::FULL]
        );
        assert!((single.ownership(1).unwrap()[0].primary - 1.0).abs() < 1e-12);
    }
}
