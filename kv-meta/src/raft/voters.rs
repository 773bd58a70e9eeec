//! The voter reconciler (membership.md §1.6): the leader keeps the raft's voters at
//! [`voter_target`] of the ring's members, choosing members that are up, oldest raft id
//! first, and changes one voter at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use openraft::Membership;

use crate::raft::MetaNode;
use crate::state::{ClusterMeta, MemberState};

/// Whether node `id` (a member's node id) is up, as the node's transport sees it (kv-net's
/// liveness in a node process: `Peers::is_alive`).
pub type Liveness = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// How many voters a cluster of `members` ring members has: 1 for one or two, 3 for three or
/// four, 5 for five or more (a majority of 3 or 5 survives 1 or 2 failures; more voters only
/// slow commits), and never more than `cap` (`--meta-voters`; at least 1).
///
/// # Example
///
/// ```
/// use kv_meta::voter_target;
/// assert_eq!([1, 2, 3, 4, 5, 9].map(|n| voter_target(n, 5)), [1, 1, 3, 3, 5, 5]);
/// assert_eq!(voter_target(9, 3), 3);
/// ```
pub fn voter_target(members: usize, cap: usize) -> usize {
    let target = match members {
        0..=2 => 1,
        3..=4 => 3,
        _ => 5,
    };
    target.min(cap.max(1))
}

/// One step of the reconciler: what the leader changes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoterStep {
    /// A ring member that is not a raft node yet becomes a learner.
    AddLearner(u64, MetaNode),
    /// The voter set becomes this one (one voter more or fewer than now).
    SetVoters(BTreeSet<u64>),
}

/// The next step towards [`voter_target`] voters, or `None` when the voters are right (or a
/// membership change is in progress: one at a time).
///
/// The candidates are `Normal` members that are raft nodes and up (`leader` always is),
/// oldest raft id first. In order: a `Normal` member that is not a raft node becomes a
/// learner; a voter that is down or no longer `Normal` is removed if there are more voters
/// than the target; an up candidate is added while fewer voters than the target are up; a
/// voter over the target is removed (a down one first, else the youngest that is not the
/// leader).
pub(crate) fn plan(
    meta: &ClusterMeta,
    membership: &Membership<u64, MetaNode>,
    leader: u64,
    is_up: &dyn Fn(&str) -> bool,
    cap: usize,
) -> Option<VoterStep> {
    if !meta.is_bootstrapped() || membership.get_joint_config().len() > 1 {
        return None;
    }
    let normal: BTreeMap<u64, (&String, &str)> = meta
        .members
        .iter()
        .filter(|(_, m)| m.state == MemberState::Normal)
        .map(|(id, m)| (m.raft_id, (id, m.cluster_addr.as_str())))
        .collect();
    if let Some((&raft_id, (_, addr))) = normal
        .iter()
        .find(|(raft_id, _)| membership.get_node(raft_id).is_none())
    {
        let node = MetaNode {
            id: raft_id,
            cluster_addr: addr.to_string(),
        };
        return Some(VoterStep::AddLearner(raft_id, node));
    }
    let up =
        |raft_id: u64| raft_id == leader || normal.get(&raft_id).is_some_and(|(id, _)| is_up(id));
    let target = voter_target(normal.len(), cap);
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let (live, dead): (BTreeSet<u64>, BTreeSet<u64>) = voters.iter().partition(|&&v| up(v));
    let with = |add: Option<u64>, remove: Option<u64>| {
        let mut set = voters.clone();
        set.extend(add);
        if let Some(r) = remove {
            set.remove(&r);
        }
        Some(VoterStep::SetVoters(set))
    };
    if voters.len() > target
        && let Some(&d) = dead.iter().next_back()
    {
        return with(None, Some(d));
    }
    if live.len() < target
        && let Some(&c) = normal.keys().find(|&&c| !voters.contains(&c) && up(c))
    {
        return with(Some(c), None);
    }
    if voters.len() > target {
        let youngest = voters.iter().rev().find(|&&v| v != leader).copied();
        return with(None, youngest);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, NewMember};

    fn meta(n: u64) -> ClusterMeta {
        let mut meta = ClusterMeta::default();
        let members = (1..=n)
            .map(|i| NewMember {
                id: format!("n{i}"),
                cluster_addr: format!("10.0.0.{i}:7000"),
                client_addr: format!("10.0.0.{i}:6379"),
                weight: 1.0,
                tokens: vec![i * 100],
            })
            .collect();
        let cmd = Command::Bootstrap {
            uuid: 1,
            name: "t".into(),
            rf: 1,
            vnodes: 1,
            members,
        };
        assert!(meta.apply(1, &cmd).is_ok());
        meta
    }

    fn membership(voters: &[u64], nodes: &[u64]) -> Membership<u64, MetaNode> {
        let nodes: BTreeMap<u64, MetaNode> = nodes
            .iter()
            .map(|&i| {
                let node = MetaNode {
                    id: i,
                    cluster_addr: format!("10.0.0.{i}:7000"),
                };
                (i, node)
            })
            .collect();
        Membership::new(vec![voters.iter().copied().collect()], nodes)
    }

    fn set(ids: &[u64]) -> Option<VoterStep> {
        Some(VoterStep::SetVoters(ids.iter().copied().collect()))
    }

    #[test]
    fn keeps_three_of_five_one_voter_at_a_time() {
        let meta = meta(5);
        let all_up = |_: &str| true;
        // A member that is not a raft node becomes a learner first.
        let m = membership(&[1, 2, 3], &[1, 2, 3, 4]);
        assert!(matches!(
            plan(&meta, &m, 1, &all_up, 3),
            Some(VoterStep::AddLearner(5, _))
        ));
        // Right as it is.
        let m = membership(&[1, 2, 3], &[1, 2, 3, 4, 5]);
        assert_eq!(plan(&meta, &m, 1, &all_up, 3), None);
        // Five voters, cap 3: the youngest non-leaders go, one at a time.
        let m = membership(&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5]);
        assert_eq!(plan(&meta, &m, 5, &all_up, 3), set(&[1, 2, 3, 5]));
        // Without a cap, five voters of five members are right.
        assert_eq!(plan(&meta, &m, 5, &all_up, 5), None);
        // n2 down: the oldest up learner is added, then n2 removed.
        let n2_down = |id: &str| id != "n2";
        let m = membership(&[1, 2, 3], &[1, 2, 3, 4, 5]);
        assert_eq!(plan(&meta, &m, 1, &n2_down, 3), set(&[1, 2, 3, 4]));
        let m = membership(&[1, 2, 3, 4], &[1, 2, 3, 4, 5]);
        assert_eq!(plan(&meta, &m, 1, &n2_down, 3), set(&[1, 3, 4]));
        let m = membership(&[1, 3, 4], &[1, 2, 3, 4, 5]);
        assert_eq!(plan(&meta, &m, 1, &n2_down, 3), None);
        // Nobody to promote: the down voter stays (removing it would not help a quorum).
        let only_voters = |id: &str| id == "n1" || id == "n3";
        let m = membership(&[1, 2, 3], &[1, 2, 3, 4, 5]);
        assert_eq!(plan(&meta, &m, 1, &only_voters, 3), None);
        // The leader counts as up whatever the liveness says of it.
        let nobody = |_: &str| false;
        let m = membership(&[1], &[1, 2, 3, 4, 5]);
        assert_eq!(plan(&meta, &m, 1, &nobody, 3), None);
        // A joint membership: wait.
        let joint = Membership::new(
            vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([1, 3, 4])],
            m.nodes()
                .map(|(k, v)| (*k, v.clone()))
                .collect::<BTreeMap<_, _>>(),
        );
        assert_eq!(plan(&meta, &joint, 1, &n2_down, 3), None);
    }

    #[test]
    fn small_clusters_have_one_voter_then_three() {
        let all_up = |_: &str| true;
        let m = membership(&[1, 2], &[1, 2]);
        assert_eq!(plan(&meta(2), &m, 1, &all_up, 5), set(&[1]));
        let m = membership(&[1], &[1, 2, 3]);
        assert_eq!(plan(&meta(3), &m, 1, &all_up, 5), set(&[1, 2]));
        assert_eq!(plan(&ClusterMeta::default(), &m, 1, &all_up, 5), None);
    }
}
