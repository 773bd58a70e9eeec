//! The pieces of a change's streaming plan that the in-process change (`change.rs`) and a
//! node process's streams (kv-meta's driver, kv-remote's `RangeStreamer`) share
//! (`docs/membership.md` §3.7): where a range is copied from, and ranges coalesced for the
//! export. The rate limiter they share is in `rate.rs`.
//!
//! **The source is the losing replica, or else every survivor** (§3.1): a write acknowledged
//! at the old epoch is on `W` replicas of the old set `O`; the new set is `O − {L} + {J}`, so
//! copying from the loser `L` (fenced before its export began) brings every write on `L`,
//! while the others are already in the new set. Copying from one other old replica instead
//! could lose a write that was on `L` and one more replica but not on it. When `L` is down,
//! only the union of every other old replica of each part is sure to hold each write.

use kv_ring::{NodeId, Ring, TokenRange};

use crate::error::{Error, Result};

/// Where a task's ranges are copied from.
///
/// # Example
/// ```
/// use kv_cluster::{Source, choose_source};
/// use kv_ring::NodeId;
///
/// let loser = NodeId::new("n2")?;
/// assert_eq!(choose_source(&loser, true), Source::Loser(loser.clone()));
/// assert_eq!(choose_source(&loser, false), Source::Survivors { down: loser });
/// # Ok::<(), kv_ring::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The losing replica itself, which holds every write it acknowledged.
    Loser(NodeId),
    /// Every other old replica of each part, newest version wins on the destination: the
    /// loser `down` is down.
    Survivors {
        /// The losing replica that cannot stream.
        down: NodeId,
    },
}

/// The source of a task whose losing replica is `loser`: the loser while it is up, else its
/// survivors (§3.1, §3.6).
pub fn choose_source(loser: &NodeId, loser_up: bool) -> Source {
    if loser_up {
        Source::Loser(loser.clone())
    } else {
        Source::Survivors {
            down: loser.clone(),
        }
    }
}

/// The survivor sources of `ranges`: each part of them (a stretch between two of the `old`
/// ring's tokens, where the replica set is constant) assigned to **every** old replica of
/// the part except those in `excluded` (a source that is down or failed) and `dst`, grouped
/// by source in first-seen order, each source's parts in the order given.
///
/// # Errors
/// `cause` if some part has no such replica; [`Error::NodeDown`] naming a replica that
/// `is_up` says is down (it may hold a write that only it and an excluded replica
/// acknowledged, so the union without it would be incomplete); [`Error::Ring`] if the ring
/// cannot hold `rf` replicas.
///
/// # Example
/// ```
/// use kv_cluster::{Error, survivor_sources};
/// use kv_ring::{NodeId, Ring, RingOptions, TokenRange};
///
/// let ring = Ring::with_nodes(RingOptions::default(), ["a", "b", "c"])?;
/// let (a, d) = (NodeId::new("a")?, NodeId::new("d")?);
/// let cause = Error::NodeDown { node: a.clone() };
/// let by = survivor_sources(&ring, 3, &[TokenRange::FULL], &[a], &d, |_| true, cause)?;
/// let sources: Vec<&str> = by.iter().map(|(id, _)| id.as_str()).collect();
/// assert_eq!(sources.len(), 2);
/// assert!(!sources.contains(&"a"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn survivor_sources(
    old: &Ring,
    rf: usize,
    ranges: &[TokenRange],
    excluded: &[NodeId],
    dst: &NodeId,
    is_up: impl Fn(&NodeId) -> bool,
    cause: Error,
) -> Result<Vec<(NodeId, Vec<TokenRange>)>> {
    let points: Vec<u64> = old.ranges().map(|v| v.range.end).collect();
    let mut by_source: Vec<(NodeId, Vec<TokenRange>)> = Vec::new();
    for part in ranges.iter().flat_map(|r| split_at(*r, &points)) {
        let replicas = old.preference_list(part.end, rf)?;
        let mut any = false;
        for id in replicas.iter() {
            if excluded.contains(id) || id == dst {
                continue;
            }
            if !is_up(id) {
                return Err(Error::NodeDown { node: id.clone() });
            }
            any = true;
            match by_source.iter_mut().find(|(n, _)| n == id) {
                Some((_, parts)) => parts.push(part),
                None => by_source.push((id.clone(), vec![part])),
            }
        }
        if !any {
            return Err(cause);
        }
    }
    Ok(by_source)
}

/// `r` cut at every one of `points` that lies inside it, in ring order.
pub(crate) fn split_at(r: TokenRange, points: &[u64]) -> Vec<TokenRange> {
    let mut cuts: Vec<u64> = points
        .iter()
        .copied()
        .filter(|&p| r.contains(p) && p != r.end)
        .collect();
    // Clockwise from the range's start.
    cuts.sort_unstable_by_key(|&p| p.wrapping_sub(r.start));
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = r.start;
    for c in cuts {
        out.push(TokenRange::new(start, c));
        start = c;
    }
    out.push(TokenRange::new(start, r.end));
    out
}

/// `ranges` sorted by token with adjacent ones merged (`(a, b]` and `(b, c]` become
/// `(a, c]`): the same tokens in fewer ranges, so an export scans each index partition
/// about once and tests each entry against few ranges.
///
/// # Example
/// ```
/// use kv_cluster::coalesce;
/// use kv_ring::TokenRange;
///
/// let r = TokenRange::new;
/// assert_eq!(coalesce(&[r(20, 30), r(10, 20), r(50, 60)]), vec![r(10, 30), r(50, 60)]);
/// assert_eq!(coalesce(&[r(0, 9), r(9, 0)]), vec![TokenRange::FULL]);
/// ```
pub fn coalesce(ranges: &[TokenRange]) -> Vec<TokenRange> {
    if ranges.iter().any(|r| r.is_full()) {
        return vec![TokenRange::FULL];
    }
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut merged: Vec<TokenRange> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match merged.last_mut() {
            // Only a range that does not wrap can be extended: its end is below the next start.
            Some(last) if last.start < last.end && last.end == r.start => {
                *last = TokenRange::new(last.start, r.end);
            }
            _ => merged.push(r),
        }
    }
    merged
}
