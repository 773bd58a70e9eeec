//! The changes of the simulation: when the operator starts a membership change (host
//! `driver`, [`operate`]), and the steps of one, taken by the raft leader's driver as kv-cli's
//! driver takes them (`node_change.rs`, membership.md §3.1–3.2; [`drive_steps`], on every
//! node host, acting while its raft leads: it takes over after a leader crash), on tasks
//! instead of threads (threads cannot run in turmoil).
//!
//! Each run with changes adds the fresh host `node4` (it registers itself with `Join` when
//! it starts; the operator sends `ADDNODE node4` to a node, which plans the change on its
//! applied state and proposes it through its raft) at a time drawn from the seed; with
//! probability ½ a member drawn then is removed (`REMOVENODE`) after the add is done, if
//! there is time before the faults stop. At most one change runs at a time (the state
//! machine refuses a second). The steps: `Pending` -> `BeginStreaming`
//! once every node of either ring acknowledged the pending epoch's fence (B1, kv-cli's rule:
//! stricter than a quorum of each ring); `Streaming` -> `EnterMid` once every task is
//! finished (the destinations' progress); `Mid` -> `EnterFinal` once every node of either
//! ring acknowledged the mid epoch (B2); `Final` -> `FinishChange` (cleanup of the moved
//! ranges is not built in kv-cli either). No step times out: a crashed node holds the
//! change until it is bounced, as in kv-cli.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kv_meta::{ChangeKind, ClusterMeta, Command, MemberState, MetaResponse, Step};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::meta::{Meta, Record};
use crate::{Answer, INITIAL, JOINER, NODES, call, now};

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

/// The operator: sends `ADDNODE` and `REMOVENODE` at the schedule's times to a node (the
/// static members in turn), judging what happened by the most advanced metadata any node
/// applied ([`Record::latest`]): an answer lost on the way may still have started the change.
pub(crate) async fn operate(record: Arc<Record>, schedule: Schedule) {
    let mut rng = StdRng::seed_from_u64(schedule.seed);
    let mut remove_at: Option<Duration> = None;
    let mut victim: Option<String> = None;
    let mut asks = 0usize;
    loop {
        tokio::time::sleep(TICK).await;
        let now = now();
        if now >= schedule.give_up_at {
            return;
        }
        let Some(m) = record.latest() else {
            continue;
        };
        if m.change.is_some() {
            continue;
        }
        let state = |id: &str| m.members.get(id).map(|mm| mm.state);
        let starting = now < schedule.start_until;
        let line = match state(JOINER) {
            // Not joined yet, or not added yet.
            None => continue,
            Some(MemberState::Registered) if now >= schedule.add_at && starting => {
                format!("ADDNODE {JOINER}")
            }
            Some(MemberState::Registered) if !starting => return,
            Some(MemberState::Registered) => continue,
            Some(_) => {
                // The add is done (or a removal ran): remove a member once, if drawn.
                let Some(after) = schedule.remove_after else {
                    return;
                };
                let removing = m
                    .members
                    .values()
                    .any(|mm| matches!(mm.state, MemberState::Leaving | MemberState::Left));
                if removing {
                    return;
                }
                let at = *remove_at.get_or_insert(now + after);
                if now < at {
                    continue;
                }
                if !starting {
                    return;
                }
                let node = match &victim {
                    Some(v) => v.clone(),
                    None => {
                        let normal: Vec<&String> = m
                            .members
                            .iter()
                            .filter(|(id, mm)| {
                                mm.state == MemberState::Normal
                                    && Some(id.as_str()) != schedule.keep
                            })
                            .map(|(id, _)| id)
                            .collect();
                        if normal.is_empty() {
                            return;
                        }
                        let v = normal[rng.random_range(0..normal.len())].clone();
                        victim = Some(v.clone());
                        v
                    }
                };
                format!("REMOVENODE {node}")
            }
        };
        let node = NODES[asks % INITIAL];
        asks += 1;
        let answer = call(node, line.clone(), Duration::from_secs(10)).await;
        if !matches!(answer, Answer::Reply(crate::proto::Reply::Ok(_))) {
            record.note(format!("{:?} {line} via {node}: {answer:?}", now));
        }
    }
}

/// Plans a change of `kind` for `node` on the state `meta` applied and proposes it (the
/// node's side of `ADDNODE`/`REMOVENODE`): the state machine's epoch, or why not.
pub(crate) async fn start(meta: &Meta, kind: ChangeKind, node: &str) -> Result<u64, String> {
    let state = meta.snapshot();
    let started_ms = u64::try_from(now().as_millis()).unwrap_or(u64::MAX);
    let plan = kv_meta::plan_change(&state, kind, node, started_ms).map_err(|e| e.to_string())?;
    match meta.propose(plan).await {
        Some(MetaResponse::Ok { epoch }) => Ok(epoch),
        Some(MetaResponse::Refused(e)) => Err(e.to_string()),
        None => Err("no metadata leader committed it".to_string()),
    }
}

/// The change driver on one node host: every [`TICK`], if this node's raft is the leader, the
/// next step of the change in progress (as applied here), proposed through raft. Every node
/// runs one; only the leader's acts, so a new leader takes over where the crashed one left
/// the change (its steps are all in the replicated state).
pub(crate) async fn drive_steps(meta: Meta) {
    loop {
        tokio::time::sleep(TICK).await;
        let raft_id = meta.raft.raft_id();
        if std::env::var_os("SIM_RAFT_DEBUG").is_some() {
            let m = meta.raft.raft().metrics().borrow().clone();
            eprintln!(
                "{:?} raft {raft_id}: {:?} term {} leader {:?} last {:?} applied {:?} {:?} {:?}",
                now(),
                m.state,
                m.current_term,
                m.current_leader,
                m.last_log_index,
                m.last_applied.map(|l| l.index),
                m.membership_config.membership(),
                m.millis_since_quorum_ack
            );
        }
        let leads = meta.raft.raft().metrics().borrow().current_leader == Some(raft_id);
        if !leads {
            continue;
        }
        let next = meta.read(next_step);
        if let Some(cmd) = next {
            let _ = meta.propose(cmd).await;
        }
    }
}

/// The step the driver takes next in `m`'s change, if one is due.
fn next_step(m: &ClusterMeta) -> Option<Command> {
    let c = m.change.as_ref()?;
    // Every node of either ring must have fenced the step's epoch.
    let fenced = |epoch: u64| -> bool {
        let mut ids: BTreeSet<&str> = c.from_members.iter().map(|m| m.id.as_str()).collect();
        ids.extend(c.to_members.iter().map(|m| m.id.as_str()));
        ids.into_iter()
            .all(|id| m.acks.get(id).copied().unwrap_or(0) >= epoch)
    };
    match c.step {
        Step::Pending if fenced(c.step_epochs[0]) => Some(Command::BeginStreaming { change: c.id }),
        Step::Streaming if c.unfinished() == 0 => Some(Command::EnterMid { change: c.id }),
        Step::Mid if fenced(c.step_epochs[1]) => Some(Command::EnterFinal { change: c.id }),
        Step::Final => Some(Command::FinishChange { change: c.id }),
        _ => None,
    }
}
