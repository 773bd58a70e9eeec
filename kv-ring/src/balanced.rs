//! Balanced placement ([`Placement::Balanced`](crate::Placement::Balanced)): equal fixed
//! partitions, Dynamo's strategy 3.
//!
//! # Why not smarter random tokens
//! A node stores its own ranges *and* the `rf - 1` ranges before each of its tokens. With tokens at
//! arbitrary positions those preceding ranges are as uneven as the tokens, so even a node whose
//! primary ranges are perfectly balanced carries 10-20% more or less than its share counting all
//! replicas. (Choosing each new token greedily to even out replicated load, as Cassandra's
//! allocator does, reaches 1.6x max/mean at 64 nodes: no single join can undo the unevenness
//! earlier joins left.)
//!
//! # The scheme
//! The token space is cut once into `Q = vnodes * 60` equal partitions (the ring's *grid*: token
//! `floor(p * 2^64 / Q)` ends partition `p`). Every partition has one owner. Two invariants make
//! balance exact:
//! 1. **Counts**: each node owns `Q * weight / total weight` partitions, rounded (so within one
//!    partition of its share).
//! 2. **Distinct windows**: no node owns two partitions within `rf - 1` of each other. Then the
//!    replicas of a partition are exactly the owners of it and the next `rf - 1` partitions, and
//!    a node's replicated load is `rf` times its partition count, exactly.
//!
//! With `Q / N >= 20` partitions per node the busiest node holds at most 1.05x the mean. At 100
//! vnodes that holds up to N = 300 nodes.
//!
//! # Membership changes
//! - **Join**: the new node *steals* its share one partition at a time, always from the nodes
//!   furthest over their (new) target, at the position nearest an evenly spaced ideal that keeps
//!   its windows distinct. Only stolen partitions change owner; each changes one member of `rf`
//!   replica sets, so exactly the new node's fair share of data moves.
//! - **Leave**: each partition of the leaving node goes to the node furthest under its target
//!   whose windows stay distinct. Again only the leaving node's data moves.
//! - While the ring has at most `rf` nodes every node replicates everything whatever the layout,
//!   so the partitions are simply dealt out in turn (`p -> member p mod N`), which leaves distinct
//!   windows for the joins that follow. (Only primary ownership changes there; no data moves at
//!   replication factor `rf`.)
//!
//! If no position keeps the windows distinct (tiny rings, extreme weights) the constraint is
//! relaxed for that partition; placement stays correct, only balance degrades.
//!
//! Unlike [`Placement::Random`](crate::Placement::Random), the layout depends on the order of
//! changes: a removed and re-added node gets its share back, not necessarily the same partitions.

/// Partitions per virtual node of the options: `Q = vnodes * 60`. 60 is divisible by 1 to 6, so
/// the dealt-out layout of a small ring wraps around without a repeated window for `rf <= 6`.
pub(crate) const PARTITIONS_PER_VNODE: usize = 60;

/// The grid of a ring with `q` partitions: the token ending each partition.
pub(crate) fn grid(q: usize) -> Vec<u64> {
    (0..q as u128)
        .map(|p| ((p << 64) / q as u128) as u64)
        .collect()
}

/// Reassigns `owners` (a member index per partition) after member `new` joined. `weights` is
/// indexed by member, `new` included; `owners` never mentions `new` on entry.
pub(crate) fn join(owners: &mut [u32], weights: &[f64], new: u32, rf: usize) {
    let n = weights.len();
    if n <= rf {
        deal(owners, (0..n as u32).collect());
        return;
    }
    let q = owners.len();
    let targets = targets(weights, q, None);
    let mut counts = counts(owners, n);
    let need = (targets[new as usize].round() as usize).clamp(1, q.saturating_sub(n - 1));
    let stride = q as f64 / need as f64;
    for k in 0..need {
        let ideal = (k as f64 * stride) as usize % q;
        let max_over = (0..n)
            .filter(|&m| m != new as usize)
            .map(|m| counts[m] as f64 - targets[m])
            .fold(f64::MIN, f64::max);
        let donor = |m: u32| {
            m != new
                && counts[m as usize] > 1
                && counts[m as usize] as f64 - targets[m as usize] >= max_over - 0.5
        };
        let found = (0..q)
            .map(|d| (ideal + d) % q)
            .find(|&p| donor(owners[p]) && window_free(owners, p, new, rf))
            .or_else(|| (0..q).map(|d| (ideal + d) % q).find(|&p| donor(owners[p])));
        let Some(p) = found else { break };
        counts[owners[p] as usize] -= 1;
        counts[new as usize] += 1;
        owners[p] = new;
    }
}

/// Reassigns the partitions of member `gone` among the others. `weights` is indexed by member,
/// `gone` included (its weight is ignored).
pub(crate) fn leave(owners: &mut [u32], weights: &[f64], gone: u32, rf: usize) {
    let n = weights.len();
    let remaining: Vec<u32> = (0..n as u32).filter(|&m| m != gone).collect();
    if remaining.len() <= rf {
        deal(owners, remaining);
        return;
    }
    let q = owners.len();
    let targets = targets(weights, q, Some(gone));
    let mut counts = counts(owners, n);
    for p in 0..q {
        if owners[p] != gone {
            continue;
        }
        let deficit = |m: u32| targets[m as usize] - counts[m as usize] as f64;
        // Furthest under target first, then the smallest index: deterministic.
        let mut by_need = remaining.clone();
        by_need.sort_by(|&a, &b| deficit(b).total_cmp(&deficit(a)).then(a.cmp(&b)));
        let max_deficit = deficit(by_need[0]);
        let heir = by_need
            .iter()
            .copied()
            .take_while(|&m| deficit(m) >= max_deficit - 0.5)
            .find(|&m| window_free(owners, p, m, rf))
            .or_else(|| {
                by_need
                    .iter()
                    .copied()
                    .find(|&m| window_free(owners, p, m, rf))
            })
            .unwrap_or(by_need[0]);
        counts[heir as usize] += 1;
        owners[p] = heir;
    }
}

/// Deals the partitions out in turn: `p -> members[p mod len]`.
fn deal(owners: &mut [u32], members: Vec<u32>) {
    for (p, owner) in owners.iter_mut().enumerate() {
        *owner = members[p % members.len()];
    }
}

/// Whether `node` owns no partition within `rf - 1` of partition `p` (other than `p`).
fn window_free(owners: &[u32], p: usize, node: u32, rf: usize) -> bool {
    let q = owners.len();
    (1..rf.min(q)).all(|d| owners[(p + d) % q] != node && owners[(p + q - d) % q] != node)
}

/// Each member's fair number of partitions (0 for `skip`).
fn targets(weights: &[f64], q: usize, skip: Option<u32>) -> Vec<f64> {
    let present = |m: usize| skip != Some(m as u32);
    let total: f64 = (0..weights.len())
        .filter(|&m| present(m))
        .map(|m| weights[m])
        .sum();
    (0..weights.len())
        .map(|m| {
            if present(m) {
                q as f64 * weights[m] / total
            } else {
                0.0
            }
        })
        .collect()
}

fn counts(owners: &[u32], n: usize) -> Vec<usize> {
    let mut counts = vec![0; n];
    for &o in owners {
        counts[o as usize] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows_distinct(owners: &[u32], rf: usize) -> bool {
        (0..owners.len()).all(|p| window_free(owners, p, owners[p], rf))
    }

    #[test]
    fn grid_is_even() {
        let g = grid(4);
        assert_eq!(g, vec![0, 1 << 62, 2 << 62, 3 << 62]);
    }

    #[test]
    fn joins_keep_counts_fair_and_windows_distinct() {
        let q = 600;
        let mut owners = vec![0u32; q];
        let mut weights = vec![1.0];
        for n in 1..20u32 {
            weights.push(1.0);
            join(&mut owners, &weights, n, 3);
            let counts = counts(&owners, weights.len());
            let fair = q as f64 / weights.len() as f64;
            assert!(
                counts.iter().all(|&c| (c as f64 - fair).abs() <= 1.0),
                "{counts:?}"
            );
            if weights.len() >= 3 {
                assert!(windows_distinct(&owners, 3), "N={}", weights.len());
            }
        }
        // A leave hands out only the leaver's partitions, fairly.
        let before = owners.clone();
        leave(&mut owners, &weights, 7, 3);
        assert!(owners.iter().all(|&o| o != 7));
        assert!(before.iter().zip(&owners).all(|(b, a)| b == a || *b == 7));
        let counts = counts(&owners, weights.len());
        let fair = q as f64 / 19.0;
        assert!(
            counts
                .iter()
                .enumerate()
                .all(|(m, &c)| m == 7 || (c as f64 - fair).abs() <= 1.0),
            "{counts:?}"
        );
        assert!(windows_distinct(&owners, 3));
    }
}
