//! The change driver of the simulation: when to start a membership change, and the steps
//! of one, as kv-cli's driver takes them (`node_change.rs`, membership.md §3.1–3.2), on a
//! task instead of a thread (threads cannot run in turmoil).
//!
//! Each run with changes adds the fresh host `node4` (registered, then `StartChange` of an
//! add) at a time drawn from the seed; with probability ½ a member drawn then is removed
//! after the add is done, if there is time before the faults stop. At most one change runs
//! at a time (the state machine refuses a second). The steps: `Pending` -> `BeginStreaming`
//! once every node of either ring acknowledged the pending epoch's fence (B1, kv-cli's rule:
//! stricter than a quorum of each ring); `Streaming` -> `EnterMid` once every task is
//! finished (the destinations' progress); `Mid` -> `EnterFinal` once every node of either
//! ring acknowledged the mid epoch (B2); `Final` -> `FinishChange` (cleanup of the moved
//! ranges is not built in kv-cli either). No step times out: a crashed node holds the
//! change until it is bounced, as in kv-cli.

use std::collections::BTreeSet;
use std::time::Duration;

use kv_meta::{ChangeKind, Command, MemberState, Step};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::meta::Meta;
use crate::{JOINER, now};

/// How often the driver looks at the metadata (kv-cli's `TICK`).
const TICK: Duration = Duration::from_millis(200);

/// When the changes of a run start.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    /// When the add of [`JOINER`] starts.
    pub(crate) add_at: Duration,
    /// Whether a member is removed after the add, and how long after it is done.
    pub(crate) remove_after: Option<Duration>,
    /// No change starts after this.
    pub(crate) start_until: Duration,
    /// The driver stops here (a change still running then is reported stuck).
    pub(crate) give_up_at: Duration,
    /// Draws the member to remove.
    pub(crate) seed: u64,
    /// Members that may not be removed (the coordinator restarted clients fall back to).
    pub(crate) keep: Option<&'static str>,
}

impl Schedule {
    /// A schedule drawn from `rng`: the add between 4 and 20 s, a removal in half the runs,
    /// 1-8 s after the add is done; no change starts after `start_until`.
    pub(crate) fn draw(rng: &mut StdRng, start_until: Duration, give_up_at: Duration) -> Schedule {
        Schedule {
            add_at: Duration::from_millis(rng.random_range(4_000..20_000)),
            remove_after: rng
                .random_bool(0.5)
                .then(|| Duration::from_millis(rng.random_range(1_000..8_000))),
            start_until,
            give_up_at,
            seed: rng.random(),
            keep: None,
        }
    }
}

/// Runs the schedule's changes to their end (or to `give_up_at`).
pub(crate) async fn drive(meta: Meta, schedule: Schedule) {
    let mut rng = StdRng::seed_from_u64(schedule.seed);
    let mut added = false;
    let mut remove_at: Option<Duration> = None;
    let mut removed = false;
    loop {
        tokio::time::sleep(TICK).await;
        let now = now();
        if now >= schedule.give_up_at {
            return;
        }
        let m = meta.snapshot();
        let Some(c) = &m.change else {
            let starting = now < schedule.start_until;
            if !added {
                if now >= schedule.add_at && starting {
                    added = true;
                    start(&meta, ChangeKind::Add, JOINER, now);
                } else if !starting {
                    return;
                }
                continue;
            }
            let Some(after) = schedule.remove_after.filter(|_| !removed) else {
                return;
            };
            let at = *remove_at.get_or_insert(now + after);
            if now >= at {
                removed = true;
                if !starting {
                    return;
                }
                let normal: Vec<&String> = m
                    .members
                    .iter()
                    .filter(|(id, mm)| {
                        mm.state == MemberState::Normal && Some(id.as_str()) != schedule.keep
                    })
                    .map(|(id, _)| id)
                    .collect();
                if normal.is_empty() {
                    return;
                }
                let victim = normal[rng.random_range(0..normal.len())].clone();
                start(&meta, ChangeKind::Remove, &victim, now);
            }
            continue;
        };
        // Every node of either ring must have fenced the step's epoch.
        let fenced = |epoch: u64| -> bool {
            let mut ids: BTreeSet<&str> = c.from_members.iter().map(|m| m.id.as_str()).collect();
            ids.extend(c.to_members.iter().map(|m| m.id.as_str()));
            ids.into_iter()
                .all(|id| m.acks.get(id).copied().unwrap_or(0) >= epoch)
        };
        let next = match c.step {
            Step::Pending if fenced(c.step_epochs[0]) => {
                Some(Command::BeginStreaming { change: c.id })
            }
            Step::Streaming if c.unfinished() == 0 => Some(Command::EnterMid { change: c.id }),
            Step::Mid if fenced(c.step_epochs[1]) => Some(Command::EnterFinal { change: c.id }),
            Step::Final => Some(Command::FinishChange { change: c.id }),
            _ => None,
        };
        if let Some(cmd) = next {
            let _ = meta.propose(&cmd);
        }
    }
}

/// Registers the joiner (for an add) and commits the change's `StartChange`, planned by
/// kv-meta's planner on the current state.
fn start(meta: &Meta, kind: ChangeKind, node: &str, now: Duration) {
    if kind == ChangeKind::Add {
        let _ = meta.propose(&Command::Register {
            id: node.to_string(),
            cluster_addr: format!("{node}:{}", crate::PEER_PORT),
            client_addr: format!("{node}:{}", crate::CLIENT_PORT),
        });
    }
    let state = meta.snapshot();
    let started_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
    match kv_meta::plan_change(&state, kind, node, started_ms) {
        // A refusal by the state machine is in the service's log.
        Ok(plan) => {
            let _ = meta.propose(&plan);
        }
        Err(e) => meta.note(format!("{now:?} plan {kind} {node} refused: {e}")),
    }
}
