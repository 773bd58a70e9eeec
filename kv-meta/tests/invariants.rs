//! Any sequence of commands, valid or not, keeps the state machine's invariants: at most one
//! change, unique slots, an epoch that never decreases, raft ids never reused, every ring's
//! tokens valid (`ClusterMeta::check_invariants`), and a refused command changes nothing.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use kv_meta::{ChangeKind, ClusterMeta, Command, MetaResponse, RateLimit, Source};
use proptest::prelude::*;

/// An abstract command; `to_command` makes it concrete against the current state, mostly
/// valid, sometimes not (a stale change id, a node in the wrong state).
#[derive(Debug, Clone)]
enum Op {
    Register(u8),
    StartAdd(u8),
    StartRemove(u8),
    Begin,
    Progress {
        task: u8,
        range: u8,
        quarter: u8,
    },
    FinishTasks,
    EnterMid,
    EnterFinal,
    Finish,
    Abort,
    FinishAbort,
    Survivors(u8),
    Ack(u8, u8),
    Deregister(u8),
    Rate(u64),
    /// A step command naming the change before the current one (a deposed driver's).
    Stale(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<u8>().prop_map(Op::Register),
        3 => any::<u8>().prop_map(Op::StartAdd),
        2 => any::<u8>().prop_map(Op::StartRemove),
        3 => Just(Op::Begin),
        4 => (any::<u8>(), any::<u8>(), 0..=4u8)
            .prop_map(|(task, range, quarter)| Op::Progress { task, range, quarter }),
        3 => Just(Op::FinishTasks),
        3 => Just(Op::EnterMid),
        3 => Just(Op::EnterFinal),
        3 => Just(Op::Finish),
        1 => Just(Op::Abort),
        2 => Just(Op::FinishAbort),
        1 => any::<u8>().prop_map(Op::Survivors),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(n, e)| Op::Ack(n, e)),
        2 => any::<u8>().prop_map(Op::Deregister),
        1 => any::<u64>().prop_map(Op::Rate),
        1 => any::<u8>().prop_map(Op::Stale),
    ]
}

/// Node names come from a small pool so that registrations collide and removed names return.
fn name(i: u8) -> String {
    format!("n{}", i % 9 + 1)
}

fn change_id(meta: &ClusterMeta) -> u64 {
    meta.change.as_ref().map_or(1, |c| c.id)
}

fn to_commands(meta: &ClusterMeta, op: &Op) -> Vec<Command> {
    let id = change_id(meta);
    match op {
        Op::Register(i) => vec![register_cmd(&name(*i))],
        Op::StartAdd(i) | Op::StartRemove(i) => {
            let kind = if matches!(op, Op::StartAdd(_)) {
                ChangeKind::Add
            } else {
                ChangeKind::Remove
            };
            let node = name(*i);
            let ring = meta.ring().expect("the ring in force rebuilds");
            // Only plans kv-ring can make: adding a ring member or removing a stranger is
            // the state machine's to refuse, with another plan's members.
            let plannable = match kind {
                ChangeKind::Add => !ring.contains(&node),
                ChangeKind::Remove => ring.contains(&node) && ring.len() > 1,
            };
            if plannable {
                vec![start_change_cmd(meta, kind, &node)]
            } else {
                vec![Command::StartChange {
                    kind,
                    node,
                    to_members: meta.ring_members(),
                    tasks: Vec::new(),
                    started_ms: 0,
                }]
            }
        }
        Op::Begin => vec![Command::BeginStreaming { change: id }],
        Op::Progress {
            task,
            range,
            quarter,
        } => {
            let Some(c) = &meta.change else { return vec![] };
            let Some(t) = c.tasks.get(*task as usize % c.tasks.len().max(1)) else {
                return vec![];
            };
            let r = *range as usize % t.ranges.len();
            let (start, end) = t.ranges[r];
            let span = end.wrapping_sub(start);
            let done_through = if *quarter == 4 {
                end
            } else {
                start.wrapping_add(span / 4 * u64::from(*quarter))
            };
            vec![Command::Progress {
                change: id,
                task: t.id,
                range: r as u32,
                done_through,
                keys: u64::from(*quarter),
                bytes: 0,
            }]
        }
        Op::FinishTasks if meta.change.is_some() => finish_all_tasks(meta),
        Op::FinishTasks => vec![],
        Op::EnterMid => vec![Command::EnterMid { change: id }],
        Op::EnterFinal => vec![Command::EnterFinal { change: id }],
        Op::Finish => vec![Command::FinishChange { change: id }],
        Op::Abort => vec![Command::Abort { change: id }],
        Op::FinishAbort => vec![Command::FinishAbort { change: id }],
        Op::Survivors(t) => vec![Command::TaskSource {
            change: id,
            task: u32::from(*t % 4),
            from: Source::Survivors,
        }],
        Op::Ack(n, e) => vec![Command::Ack {
            node: name(*n),
            epoch: u64::from(*e % 8),
        }],
        Op::Deregister(n) => vec![Command::Deregister { id: name(*n) }],
        Op::Rate(r) => vec![Command::SetStreamRate {
            rate: RateLimit {
                keys_per_sec: *r,
                bytes_per_sec: r / 2,
            },
        }],
        Op::Stale(s) => {
            let stale = id.saturating_sub(1);
            vec![match s % 4 {
                0 => Command::BeginStreaming { change: stale },
                1 => Command::EnterMid { change: stale },
                2 => Command::EnterFinal { change: stale },
                _ => Command::FinishChange { change: stale },
            }]
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_command_sequence_keeps_the_invariants(
        n in 1usize..=5,
        rf in 1u32..=3,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let rf = rf.min(n as u32);
        let mut meta = cluster(n, rf);
        let mut index = 2;
        let mut ever: BTreeSet<u64> = meta.members.values().map(|m| m.raft_id).collect();
        for op in &ops {
            for cmd in to_commands(&meta, op) {
                let before = meta.clone();
                let response = meta.apply(index, &cmd);
                index += 1;
                match &response {
                    MetaResponse::Refused(_) => prop_assert_eq!(&meta, &before, "refused {:?} changed the state", cmd),
                    MetaResponse::Ok { epoch } => prop_assert_eq!(*epoch, meta.epoch),
                }
                if let Err(broken) = meta.check_invariants() {
                    return Err(TestCaseError::fail(format!("after {cmd:?} ({response:?}): {broken}")));
                }
                prop_assert!(meta.epoch >= before.epoch, "the epoch went back");
                prop_assert!(meta.next_raft_id >= before.next_raft_id);
                let old: BTreeMap<&String, u64> = before.members.iter().map(|(k, m)| (k, m.raft_id)).collect();
                for (id, m) in &meta.members {
                    if old.get(id) != Some(&m.raft_id) {
                        prop_assert!(ever.insert(m.raft_id), "raft id {} reused for {}", m.raft_id, id);
                    }
                }
            }
        }
    }
}

/// The generator reaches every step: a fixed walk through a whole add and a whole removal.
#[test]
fn the_walk_the_generator_takes_reaches_final() {
    let mut meta = cluster(3, 3);
    let mut index = 2;
    let walk = [
        Op::Register(3),
        Op::StartAdd(3),
        Op::Begin,
        Op::FinishTasks,
        Op::EnterMid,
        Op::EnterFinal,
        Op::Finish,
        Op::StartRemove(0),
        Op::Begin,
        Op::FinishTasks,
        Op::EnterMid,
        Op::EnterFinal,
        Op::Finish,
        Op::Deregister(0),
    ];
    for op in &walk {
        for cmd in to_commands(&meta, op) {
            let r = meta.apply(index, &cmd);
            assert!(r.is_ok(), "{cmd:?}: {r:?}");
            index += 1;
        }
    }
    assert_eq!(meta.epoch, 7);
    assert!(!meta.members.contains_key("n1"));
    assert_eq!(meta.ring_members().len(), 3);
    meta.check_invariants().unwrap();
}
