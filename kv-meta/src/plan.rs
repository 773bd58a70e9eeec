//! The proposer's plan of a membership change (membership.md §3.1, §3.4): the ring after the
//! change and the stream tasks that fill it, as the `StartChange` the change driver
//! proposes. Pure: the same metadata gives the same plan, and `apply` validates it again.

use std::collections::BTreeMap;

use crate::change::{Change, ChangeKind, Source, StreamTask};
use crate::command::Command;
use crate::error::MetaError;
use crate::state::{ClusterMeta, RingMember, build_ring};

/// The `StartChange` that adds (`Add`: a `Registered` member) or removes (`Remove`: a
/// `Normal` member) `node`: the new ring (the old members' tokens unchanged; a joiner's
/// tokens computed by the ring, weight 1), and one task per `(losing replica, gaining
/// replica)` pair of [`kv_ring::transfer_plan`], its ranges coalesced, sourced from the
/// replica that loses them (consistent range movement: the one whose data the new replica
/// replaces). `started_ms` is the proposer's wall clock, for display.
///
/// # Errors
/// [`MetaError::NotBootstrapped`]; [`MetaError::ChangeInProgress`]; the member's absence or
/// state ([`MetaError::UnknownMember`], [`MetaError::WrongState`]);
/// [`MetaError::TooFewMembers`] for a removal below the replication factor;
/// [`MetaError::InvalidPlan`] if the rings cannot be built.
///
/// # Example
///
/// ```
/// use kv_meta::{ChangeKind, ClusterMeta, Command, MetaResponse, NewMember, plan_change};
/// use kv_ring::{Placement, Ring, RingOptions};
/// let options = RingOptions::default()
///     .vnodes(16)?
///     .placement(Placement::Balanced { replication_factor: 2 });
/// let ring = Ring::with_nodes(options, ["n1", "n2", "n3"])?;
/// let members = ["n1", "n2", "n3"].iter().enumerate().map(|(i, id)| NewMember {
///     id: id.to_string(),
///     cluster_addr: format!("127.0.0.1:{}", 17001 + i),
///     client_addr: format!("127.0.0.1:{}", 7001 + i),
///     weight: 1.0,
///     tokens: ring.tokens_of(id).unwrap().to_vec(),
/// }).collect();
/// let mut meta = ClusterMeta::default();
/// let boot = Command::BootstrapAt {
///     uuid: 7, name: "kvstore".into(), rf: 2, vnodes: 16, members, epoch: 3,
/// };
/// assert!(matches!(meta.apply(1, &boot), MetaResponse::Ok { .. }));
/// let register = Command::Register {
///     id: "n4".into(),
///     cluster_addr: "127.0.0.1:17004".into(),
///     client_addr: "127.0.0.1:7004".into(),
/// };
/// assert!(matches!(meta.apply(2, &register), MetaResponse::Ok { .. }));
/// let plan = plan_change(&meta, ChangeKind::Add, "n4", 0)?;
/// let Command::StartChange { tasks, .. } = &plan else { unreachable!() };
/// assert!(!tasks.is_empty() && tasks.iter().all(|t| t.to == "n4"));
/// assert!(matches!(meta.apply(3, &plan), MetaResponse::Ok { epoch: 4 }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn plan_change(
    meta: &ClusterMeta,
    kind: ChangeKind,
    node: &str,
    started_ms: u64,
) -> Result<Command, MetaError> {
    if !meta.is_bootstrapped() {
        return Err(MetaError::NotBootstrapped);
    }
    if let Some(c) = &meta.change {
        return Err(MetaError::ChangeInProgress { change: c.id });
    }
    let member = meta
        .members
        .get(node)
        .ok_or_else(|| MetaError::UnknownMember {
            id: node.to_owned(),
        })?;
    let needed = match kind {
        ChangeKind::Add => crate::MemberState::Registered,
        ChangeKind::Remove => crate::MemberState::Normal,
    };
    if member.state != needed {
        return Err(MetaError::WrongState {
            id: node.to_owned(),
            state: member.state,
            expected: needed.to_string(),
        });
    }
    let rf = meta.replication_factor;
    let invalid = |reason: String| MetaError::InvalidPlan { reason };
    let from_members = meta.ring_members();
    let old = build_ring(&from_members, meta.vnodes, rf).map_err(invalid)?;
    let new = match kind {
        ChangeKind::Add => old.add_node(node),
        ChangeKind::Remove => {
            let remaining = from_members.len().saturating_sub(1);
            if remaining < rf as usize {
                return Err(MetaError::TooFewMembers {
                    remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                    rf,
                });
            }
            old.remove_node(node)
        }
    }
    .map_err(|e| invalid(e.to_string()))?;
    let to_members: Vec<RingMember> = new
        .nodes()
        .map(|id| RingMember {
            id: id.to_string(),
            weight: new.weight_of(id.as_str()).unwrap_or(1.0),
            tokens: new.tokens_of(id.as_str()).unwrap_or_default().to_vec(),
        })
        .collect();
    let plan =
        kv_ring::transfer_plan(&old, &new, rf as usize).map_err(|e| invalid(e.to_string()))?;
    let mut pairs: BTreeMap<(String, String), Vec<kv_ring::TokenRange>> = BTreeMap::new();
    for t in &plan.transfers {
        // The replica the range leaves is the source (its data is what the new replica
        // replaces); transfer_plan's own pick is any old replica.
        let loser =
            loser_of(&old, &new, rf as usize, t.range.end).unwrap_or_else(|| t.from.to_string());
        pairs
            .entry((loser, t.to.to_string()))
            .or_default()
            .push(t.range);
    }
    let tasks = pairs
        .into_iter()
        .enumerate()
        .map(|(i, ((from, to), ranges))| {
            let ranges = coalesce(ranges);
            StreamTask::new(
                u32::try_from(i).unwrap_or(u32::MAX),
                Source::Node(from),
                to,
                ranges,
            )
        })
        .collect();
    Ok(Command::StartChange {
        kind,
        node: node.to_owned(),
        to_members,
        tasks,
        started_ms,
    })
}

/// What a membership change moves for one node: the token ranges `(start, end]` (coalesced,
/// in token order) it replicates in the old ring and not in the new one (`lost`: what a
/// loser drops once the new ring is in force), and those it replicates in the new ring and
/// not in the old one (`gained`: what a joiner drops when the change is aborted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MovedRanges {
    /// Replicated before the change, not after it.
    pub lost: Vec<(u64, u64)>,
    /// Replicated after the change, not before it.
    pub gained: Vec<(u64, u64)>,
}

/// The ranges `change` takes away from and gives to `node` (see [`MovedRanges`]), computed
/// from the change's two rings at the metadata's `vnodes` and `rf` (the same rings every node
/// routes by, so every node computes the same answer).
///
/// # Errors
/// [`MetaError::InvalidPlan`] if a ring cannot be rebuilt (never for a change `apply`
/// accepted).
///
/// # Example
///
/// ```
/// use kv_meta::{Change, ChangeKind, RingMember, Step, moved_ranges};
/// let member = |id: &str, tokens: Vec<u64>| RingMember { id: id.into(), weight: 1.0, tokens };
/// let from = vec![member("n1", vec![100]), member("n2", vec![200])];
/// let mut to = from.clone();
/// to.push(member("n3", vec![150]));
/// let change = Change {
///     id: 9, kind: ChangeKind::Add, node: "n3".into(), from_members: from, to_members: to,
///     step: Step::Final, step_epochs: [2, 3, 4], tasks: vec![], error: None, started_ms: 0,
/// };
/// // RF 1: n3 takes (100, 150] from n2, which owned (100, 200].
/// let n3 = moved_ranges(&change, 1, 1, "n3")?;
/// assert_eq!((n3.lost, n3.gained), (vec![], vec![(100, 150)]));
/// assert_eq!(moved_ranges(&change, 1, 1, "n2")?.lost, vec![(100, 150)]);
/// assert_eq!(moved_ranges(&change, 1, 1, "n1")?, Default::default());
/// # Ok::<(), kv_meta::MetaError>(())
/// ```
pub fn moved_ranges(
    change: &Change,
    vnodes: u32,
    rf: u32,
    node: &str,
) -> Result<MovedRanges, MetaError> {
    let invalid = |reason: String| MetaError::InvalidPlan { reason };
    let old = build_ring(&change.from_members, vnodes, rf).map_err(invalid)?;
    let new = build_ring(&change.to_members, vnodes, rf).map_err(invalid)?;
    let plan =
        kv_ring::transfer_plan(&old, &new, rf as usize).map_err(|e| invalid(e.to_string()))?;
    let (mut lost, mut gained) = (Vec::new(), Vec::new());
    for t in &plan.transfers {
        let before = old
            .preference_list(t.range.end, rf as usize)
            .map_err(|e| invalid(e.to_string()))?;
        let after = new
            .preference_list(t.range.end, rf as usize)
            .map_err(|e| invalid(e.to_string()))?;
        match (before.contains(node), after.contains(node)) {
            (true, false) => lost.push(t.range),
            (false, true) => gained.push(t.range),
            _ => {}
        }
    }
    // A range that moves to two new replicas is listed once per transfer.
    let dedup = |mut v: Vec<kv_ring::TokenRange>| {
        v.sort_by_key(|r| (r.start, r.end));
        v.dedup();
        coalesce(v)
    };
    Ok(MovedRanges {
        lost: dedup(lost),
        gained: dedup(gained),
    })
}

/// The old replica of `token` that is not a replica under `new` (the first, in preference
/// order), if any.
fn loser_of(old: &kv_ring::Ring, new: &kv_ring::Ring, rf: usize, token: u64) -> Option<String> {
    let before = old.preference_list(token, rf).ok()?;
    let after = new.preference_list(token, rf).ok()?;
    before
        .iter()
        .find(|id| !after.contains(id.as_str()))
        .map(|id| id.to_string())
}

/// `(start, end]` pairs in token order, adjacent ones merged.
fn coalesce(mut ranges: Vec<kv_ring::TokenRange>) -> Vec<(u64, u64)> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.1 == r.start => last.1 = r.end,
            _ => out.push((r.start, r.end)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemberState, NewMember};
    use kv_ring::Ring;

    /// Three members with the tokens a 64-vnode ring gives them, RF 3, and `n4` registered.
    fn cluster() -> ClusterMeta {
        // The placement the metadata's rings use (balanced for RF 3).
        let options = crate::state::ring_options(64, 3).unwrap();
        let ring = Ring::with_nodes(options, ["n1", "n2", "n3"]).unwrap();
        let members = ["n1", "n2", "n3"]
            .iter()
            .enumerate()
            .map(|(i, id)| NewMember {
                id: id.to_string(),
                cluster_addr: format!("127.0.0.1:{}", 17001 + i),
                client_addr: format!("127.0.0.1:{}", 7001 + i),
                weight: 1.0,
                tokens: ring.tokens_of(id).unwrap().to_vec(),
            })
            .collect();
        let mut meta = ClusterMeta::default();
        let boot = Command::BootstrapAt {
            uuid: 9,
            name: "kvstore".into(),
            rf: 3,
            vnodes: 64,
            members,
            epoch: 3,
        };
        assert!(matches!(
            meta.apply(1, &boot),
            crate::MetaResponse::Ok { .. }
        ));
        let register = Command::Register {
            id: "n4".into(),
            cluster_addr: "127.0.0.1:17004".into(),
            client_addr: "127.0.0.1:7004".into(),
        };
        assert!(matches!(
            meta.apply(2, &register),
            crate::MetaResponse::Ok { .. }
        ));
        meta
    }

    fn fraction(tasks: &[StreamTask]) -> f64 {
        tasks
            .iter()
            .flat_map(|t| &t.ranges)
            .map(|&(start, end)| kv_ring::TokenRange { start, end }.fraction())
            .sum()
    }

    #[test]
    fn an_add_streams_about_rf_over_n_to_the_joiner_from_the_losing_replicas() {
        let mut meta = cluster();
        let plan = plan_change(&meta, ChangeKind::Add, "n4", 5).unwrap();
        let Command::StartChange {
            tasks, to_members, ..
        } = &plan
        else {
            panic!("{plan:?}")
        };
        assert_eq!(to_members.len(), 4);
        assert!(tasks.iter().all(|t| t.to == "n4"), "{tasks:?}");
        let sources: Vec<&Source> = tasks.iter().map(|t| &t.from).collect();
        assert!(
            sources
                .iter()
                .all(|s| matches!(s, Source::Node(n) if n != "n4"))
        );
        // One task per losing replica; n4 gains RF/N of the token space (3/4 with RF 3 of
        // 4 members), within 10% of it.
        assert!(tasks.len() <= 3, "{tasks:?}");
        let moved = fraction(tasks);
        assert!((moved - 0.75).abs() < 0.075, "moved {moved}");
        // The state machine accepts it: the joiner is joining, the epoch rose.
        assert!(matches!(
            meta.apply(3, &plan),
            crate::MetaResponse::Ok { epoch: 4 }
        ));
        assert_eq!(meta.members["n4"].state, MemberState::Joining);
        // A second plan while this change runs is refused.
        assert!(matches!(
            plan_change(&meta, ChangeKind::Remove, "n1", 0),
            Err(MetaError::ChangeInProgress { .. })
        ));
    }

    fn share(ranges: &[(u64, u64)]) -> f64 {
        ranges
            .iter()
            .map(|&(start, end)| kv_ring::TokenRange { start, end }.fraction())
            .sum()
    }

    /// What each node drops at `Final` (lost) or before an abort (gained) matches the plan:
    /// in an add the losers lose what the joiner gains, each loser what it streams; in a
    /// removal the leaver loses everything it replicated and nobody else loses anything.
    #[test]
    fn moved_ranges_are_what_the_losers_stream_and_the_gainers_receive() {
        let mut meta = cluster();
        let plan = plan_change(&meta, ChangeKind::Add, "n4", 0).unwrap();
        assert!(meta.apply(3, &plan).is_ok());
        let c = meta.change.clone().unwrap();
        let n4 = moved_ranges(&c, 64, 3, "n4").unwrap();
        assert!(n4.lost.is_empty());
        assert!(
            (share(&n4.gained) - 0.75).abs() < 0.075,
            "{}",
            share(&n4.gained)
        );
        let mut lost_total = 0.0;
        for id in ["n1", "n2", "n3"] {
            let m = moved_ranges(&c, 64, 3, id).unwrap();
            assert!(m.gained.is_empty(), "{id} gains nothing in an add");
            // The loser's lost ranges are exactly the ones its tasks stream.
            let mut streamed: Vec<(u64, u64)> = c
                .tasks
                .iter()
                .filter(|t| t.from == Source::Node(id.to_owned()))
                .flat_map(|t| t.ranges.clone())
                .collect();
            streamed.sort_unstable();
            assert_eq!(m.lost, streamed, "{id}");
            lost_total += share(&m.lost);
        }
        assert!((lost_total - share(&n4.gained)).abs() < 1e-9);

        // A removal of n2 from four members: n2 loses all it replicated (3/4 of the ring).
        let mut meta = cluster();
        let plan = plan_change(&meta, ChangeKind::Add, "n4", 0).unwrap();
        assert!(meta.apply(3, &plan).is_ok());
        for cmd in [
            Command::EnterFinal { change: 3 },
            Command::FinishChange { change: 3 },
        ] {
            // Shortcut through the steps: the tasks' progress is not what this tests.
            let c = meta.change.as_mut().unwrap();
            c.tasks.iter_mut().for_each(|t| t.finished = true);
            if matches!(cmd, Command::EnterFinal { .. }) {
                assert!(
                    meta.apply(4, &Command::BeginStreaming { change: 3 })
                        .is_ok()
                );
                assert!(meta.apply(5, &Command::EnterMid { change: 3 }).is_ok());
            }
            assert!(meta.apply(6, &cmd).is_ok(), "{cmd:?}");
        }
        let plan = plan_change(&meta, ChangeKind::Remove, "n2", 0).unwrap();
        assert!(meta.apply(8, &plan).is_ok());
        let c = meta.change.clone().unwrap();
        let n2 = moved_ranges(&c, 64, 3, "n2").unwrap();
        assert!(n2.gained.is_empty());
        assert!(
            (share(&n2.lost) - 0.75).abs() < 0.075,
            "{}",
            share(&n2.lost)
        );
        let mut gained_total = 0.0;
        for id in ["n1", "n3", "n4"] {
            let m = moved_ranges(&c, 64, 3, id).unwrap();
            assert!(m.lost.is_empty(), "{id} loses nothing in a removal");
            gained_total += share(&m.gained);
        }
        assert!((gained_total - share(&n2.lost)).abs() < 1e-9);
    }

    #[test]
    fn a_removal_streams_from_the_leaver_to_the_others() {
        let mut meta = cluster();
        // RF 3 of 3: a removal would leave too few.
        assert!(matches!(
            plan_change(&meta, ChangeKind::Remove, "n2", 0),
            Err(MetaError::TooFewMembers {
                remaining: 2,
                rf: 3
            })
        ));
        // Bring n4 in (the change's steps, without data), then remove n2.
        let plan = plan_change(&meta, ChangeKind::Add, "n4", 0).unwrap();
        assert!(matches!(
            meta.apply(3, &plan),
            crate::MetaResponse::Ok { .. }
        ));
        let change = meta.change.as_ref().unwrap().id;
        let tasks: Vec<u32> = meta
            .change
            .as_ref()
            .unwrap()
            .tasks
            .iter()
            .map(|t| t.id)
            .collect();
        assert!(matches!(
            meta.apply(4, &Command::BeginStreaming { change }),
            crate::MetaResponse::Ok { .. }
        ));
        for (i, task) in tasks.into_iter().enumerate() {
            let t = meta
                .change
                .as_ref()
                .unwrap()
                .tasks
                .iter()
                .find(|t| t.id == task)
                .unwrap()
                .clone();
            for (r, &(_, end)) in t.ranges.iter().enumerate() {
                let progress = Command::Progress {
                    change,
                    task,
                    range: u32::try_from(r).unwrap(),
                    done_through: end,
                    keys: 0,
                    bytes: 0,
                };
                let index = 5 + (i * 1000 + r) as u64;
                assert!(
                    matches!(meta.apply(index, &progress), crate::MetaResponse::Ok { .. }),
                    "{progress:?}"
                );
            }
        }
        for (i, cmd) in [
            Command::EnterMid { change },
            Command::EnterFinal { change },
            Command::FinishChange { change },
        ]
        .iter()
        .enumerate()
        {
            let r = meta.apply(100_000 + i as u64, cmd);
            assert!(
                matches!(r, crate::MetaResponse::Ok { .. }),
                "{cmd:?}: {r:?}"
            );
        }
        assert_eq!(meta.members["n4"].state, MemberState::Normal);
        let plan = plan_change(&meta, ChangeKind::Remove, "n2", 0).unwrap();
        let Command::StartChange {
            tasks, to_members, ..
        } = &plan
        else {
            panic!("{plan:?}")
        };
        assert!(to_members.iter().all(|m| m.id != "n2"));
        assert!(
            tasks
                .iter()
                .all(|t| t.from == Source::Node("n2".into()) && t.to != "n2"),
            "{tasks:?}"
        );
        // n2's share (RF/N = 3/4 of the space) moves to the others.
        let moved = fraction(tasks);
        assert!((moved - 0.75).abs() < 0.075, "moved {moved}");
        assert!(matches!(
            meta.apply(200_000, &plan),
            crate::MetaResponse::Ok { .. }
        ));
        assert_eq!(meta.members["n2"].state, MemberState::Leaving);
    }

    #[test]
    fn a_plan_names_a_member_in_the_right_state() {
        let meta = cluster();
        assert!(matches!(
            plan_change(&meta, ChangeKind::Add, "n9", 0),
            Err(MetaError::UnknownMember { .. })
        ));
        assert!(matches!(
            plan_change(&meta, ChangeKind::Add, "n1", 0),
            Err(MetaError::WrongState { .. })
        ));
        assert!(matches!(
            plan_change(&ClusterMeta::default(), ChangeKind::Add, "n4", 0),
            Err(MetaError::NotBootstrapped)
        ));
    }
}
