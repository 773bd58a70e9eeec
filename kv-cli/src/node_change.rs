//! The change driver between processes (membership.md §3, step 8 part 2): `KVSTORE ADDNODE
//! id` and `KVSTORE CHANGE`, and the three roles each node plays in a change.
//!
//! - **ADDNODE** plans the change on fresh metadata ([`kv_meta::plan_change`]) and commits
//!   its `StartChange` through the leader.
//! - **Acknowledgements.** Each node's Follower, having installed an epoch and raised its
//!   replica's fence to it, commits `Ack` (node_meta.rs) while a change runs.
//! - **The driver** (a thread on every node; it acts only on the metadata leader, so a new
//!   leader resumes from the committed change): `Pending` -> `BeginStreaming` once every node
//!   of either ring acknowledged the fence of the pending epoch (B1; stricter than a quorum of
//!   each ring and the live losers: a down node holds the change, `waiting_for` names it);
//!   `Streaming` -> `EnterMid` once every task finished; `Mid` -> `EnterFinal` once every
//!   node acknowledged the mid epoch (B2); `Final` -> `FinishChange`.
//! - **Sources.** Every node streams the unfinished tasks it is the source of with a
//!   [`kv_remote::RangeStreamer`] while the change is `Streaming`, read from the committed
//!   change (no `StartTask` request: the committed task list is the instruction, and a restart
//!   or a new leader needs nothing resent); a failed stream starts again from what the
//!   destination reported synced.
//! - **Destinations.** A [`kv_remote::RangeReceiver`] on the replica server imports the
//!   streams and commits each synced checkpoint as the task's `Progress` (proposed through the
//!   leader from a thread of its own; no `TaskProgress` request).
//!
//! - **REMOVENODE** plans the removal the same way; the leaver is the source of every range
//!   it replicates. **CHANGE ABORT** commits `Abort` before `Mid`.
//! - **Cleanup** (node_meta.rs `cleanup_due`): at `Final` each loser drops what it lost
//!   before it acknowledges the final epoch (a leaver hands its hints over instead), and
//!   while `Aborting` each gainer drops what it gained before it acknowledges the abort
//!   epoch; the driver's `FinishChange`/`FinishAbort` wait for every node's acknowledgement.
//! - **Deregistration**: with no change running, the leader takes each `Left` member out of
//!   the raft and deregisters it once it held the entry that made it `Left` (it then shut
//!   itself down), or 30 s after it first saw it `Left`.
//!
//! Not built: `Survivors` sources (a task whose source is down waits). The sources' rate
//! limit is [`crate::node_rate`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kv_meta::{ChangeKind, ClusterMeta, Command, MetaRaft, MetaResponse, Source, Step};

/// How long ADDNODE waits for this node to apply the leader's committed index before it
/// plans: a plan from stale metadata is refused when applied, and a fresh one is not.
const CATCH_UP: Duration = Duration::from_secs(5);

/// Starts the change that adds the `Registered` member `node` (see [`start_change`]).
///
/// # Errors
/// As [`start_change`].
pub async fn add_node(raft: &MetaRaft, node: &str) -> Result<(u64, u64), String> {
    start_change(raft, ChangeKind::Add, node).await
}

/// Starts the change that removes the `Normal` member `node`: the leaver streams every range
/// it replicates to the members that replicate it after the change (see [`start_change`]).
///
/// # Errors
/// As [`start_change`]; also a removal that would leave fewer members than the replication
/// factor.
pub async fn remove_node(raft: &MetaRaft, node: &str) -> Result<(u64, u64), String> {
    start_change(raft, ChangeKind::Remove, node).await
}

/// Reads the leader's committed index, waits until this node applied it, plans the change of
/// `kind` for `node` with [`kv_meta::plan_change`] and proposes the `StartChange` (forwarded
/// to the leader). Returns the change's id (its log index) and the epoch it entered.
///
/// # Errors
/// The planner's refusal (unknown member, wrong state, too few members left, a change in
/// progress), the state machine's refusal, or the raft's unavailability, as a line for the
/// client.
pub async fn start_change(
    raft: &MetaRaft,
    kind: ChangeKind,
    node: &str,
) -> Result<(u64, u64), String> {
    let state = caught_up(raft).await?;
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let plan =
        kv_meta::plan_change(&state.meta, kind, node, started_ms).map_err(|e| e.to_string())?;
    propose_line(raft, plan).await
}

/// This node's metadata once it applied what the leader had committed when asked: a plan
/// from stale metadata is refused when applied, and a fresh one is not.
async fn caught_up(raft: &MetaRaft) -> Result<Arc<kv_meta::MetaSnapshot>, String> {
    let index = raft.read_index().await.map_err(|e| e.to_string())?;
    raft.wait_applied(index, CATCH_UP)
        .await
        .map_err(|e| e.to_string())?;
    Ok(raft.watch().borrow().clone())
}

async fn propose_line(raft: &MetaRaft, cmd: Command) -> Result<(u64, u64), String> {
    match raft.propose(cmd).await {
        Ok((log_id, MetaResponse::Ok { epoch })) => Ok((log_id.index, epoch)),
        Ok((_, MetaResponse::Refused(e))) => Err(format!("refused: {e}")),
        Err(e) => Err(e.to_string()),
    }
}

/// `KVSTORE CHANGE ABORT`: aborts the change in progress if it is still `Pending` or
/// `Streaming` (reads never left the old ring, so it holds every acknowledged write); the
/// driver then waits for every node to fence the abort epoch (the gainers drop what they
/// received first) and commits `FinishAbort`. Returns the change and the abort epoch.
///
/// # Errors
/// No change in progress; a change at `Mid` or later (only forward from there: reads already
/// use the new ring); the raft's unavailability.
pub async fn abort(raft: &MetaRaft) -> Result<(u64, u64), String> {
    let state = caught_up(raft).await?;
    let Some(c) = &state.meta.change else {
        return Err("no change in progress".to_owned());
    };
    match c.step {
        Step::Pending | Step::Streaming => {}
        Step::Aborting => return Err(format!("change {} is already aborting", c.id)),
        step => {
            return Err(format!(
                "change {} is at step {step}: an abort is possible only before mid (reads \
                 already use the new ring); it can only finish",
                c.id
            ));
        }
    }
    propose_line(raft, Command::Abort { change: c.id }).await
}

/// `KVSTORE CHANGE`: `change:none`, or the change's id, kind, node, step, epoch, tasks
/// finished of all, keys and bytes copied, what it waits for, and one line per task.
pub fn report(meta: &ClusterMeta) -> Vec<String> {
    let Some(c) = &meta.change else {
        return vec!["change:none".to_owned(), format!("epoch:{}", meta.epoch)];
    };
    let done = c.tasks.len() - c.unfinished();
    let keys: u64 = c.tasks.iter().map(|t| t.keys).sum();
    let bytes: u64 = c.tasks.iter().map(|t| t.bytes).sum();
    let mut out = vec![
        format!("change:{}", c.id),
        format!("kind:{}", c.kind),
        format!("node:{}", c.node),
        format!("step:{}", c.step),
        format!("epoch:{}", meta.epoch),
        format!("tasks_done:{done}/{}", c.tasks.len()),
        format!("keys_copied:{keys}"),
        format!("bytes_copied:{bytes}"),
        // No driver walks the change yet: say so rather than name a barrier nobody runs.
        // The driver's view: only the metadata leader's driver waits for anything.
        format!("waiting_for:{}", waiting()),
    ];
    if let Some(e) = &c.error {
        out.push(format!("error:{}", e.replace(['\r', '\n'], " ")));
    }
    out.extend(c.tasks.iter().map(|t| {
        let from = match &t.from {
            Source::Node(n) => n.clone(),
            Source::Survivors => "survivors".to_owned(),
        };
        format!(
            "task:{} {from}->{} ranges:{} keys:{} finished:{}",
            t.id,
            t.to,
            t.ranges.len(),
            t.keys,
            u8::from(t.finished)
        )
    }));
    out
}

/// `INFO cluster`'s lines on the change between processes: `kvstore_change_in_progress:` the
/// kind and node, or `none`; during a change also its id, step, epoch, tasks finished, keys and
/// bytes copied and what this node's driver waits for (empty off the metadata leader).
pub fn info_lines(meta: &ClusterMeta) -> Vec<String> {
    let Some(c) = &meta.change else {
        return vec!["kvstore_change_in_progress:none".to_owned()];
    };
    let mut out = vec![format!("kvstore_change_in_progress:{} {}", c.kind, c.node)];
    out.extend(report(meta).into_iter().filter_map(|line| {
        let (field, value) = line.split_once(':')?;
        let field = match field {
            "change" => "id",
            "step" | "epoch" | "tasks_done" | "keys_copied" | "bytes_copied" | "waiting_for"
            | "error" => field,
            _ => return None,
        };
        Some(format!("kvstore_change_{field}:{value}"))
    }));
    out
}

/// What the change driver of this process waits for now (shown by `KVSTORE CHANGE`; empty on
/// a node that does not lead the metadata raft).
static WAITING: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn set_waiting(what: String) {
    if let Ok(mut w) = WAITING.lock() {
        *w = what;
    }
}

fn waiting() -> String {
    WAITING.lock().map(|w| w.clone()).unwrap_or_default()
}

/// How long the leader waits for a `Left` member to hold the entry that made it `Left` before
/// it deregisters it anyway (it is down: it will not learn it from the log).
const LEFT_GRACE: Duration = Duration::from_secs(30);

/// This process's own replica, set when its change roles start: `KVSTORE CHANGE` shows how
/// many keys it holds (`local_keys`), which shows a loser's cleanup.
static LOCAL: std::sync::OnceLock<Arc<dyn kv_cluster::Replica>> = std::sync::OnceLock::new();

/// The live keys this process's own replica holds (all ranges, from its counters), once its
/// change roles started.
pub fn local_keys() -> Option<u64> {
    LOCAL.get()?.held().ok().map(|c| c.live)
}

/// How many progress reports a destination proposes at once.
const PROGRESS_WAVE: usize = 16;

/// How often the driver looks at the committed change.
const TICK: Duration = Duration::from_millis(200);

/// The pieces of a node process the change's three roles need: the leader's driver, a
/// task's source (a [`kv_remote::RangeStreamer`] of the local replica) and a task's destination (a
/// [`kv_remote::RangeReceiver`] on the replica server, reporting progress through the metadata).
pub struct ChangeRoles {
    /// The node's metadata raft.
    pub raft: MetaRaft,
    /// The runtime the raft runs on.
    pub runtime: tokio::runtime::Handle,
    /// This node's own replica.
    pub replica: Arc<dyn kv_cluster::Replica>,
    /// The node's transport to its peers.
    pub peers: Arc<kv_remote::ReplicaPeers>,
    /// The node's id.
    pub me: String,
    /// `--stream-rate`: its streams' rate until one is committed (node_rate.rs).
    pub stream_rate: kv_cluster::StreamRate,
}

/// The local replica as a stream's import target.
struct Import(Arc<dyn kv_cluster::Replica>);

impl kv_remote::ImportTarget for Import {
    fn import_chunk(
        &self,
        epoch: u64,
        records: &[kv_cluster::Record],
    ) -> kv_cluster::Result<usize> {
        self.0.import(epoch, records)
    }

    fn sync_imported(&self) -> kv_cluster::Result<()> {
        self.0.sync()
    }
}

impl ChangeRoles {
    /// Sets the destination's receiver on `server` and starts the thread that drives the
    /// change (when this node leads) and runs the stream tasks this node is the source of,
    /// until `stop` is set.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn start(
        self,
        server: &kv_remote::ReplicaServer,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        // Progress goes to the leader in order, from a thread of its own: the receiver's
        // callback runs on the stream's thread and only hands it over.
        let (tx, rx) = std::sync::mpsc::channel::<Command>();
        let reporter = (self.raft.clone(), self.runtime.clone());
        std::thread::Builder::new()
            .name("kvstore-progress".into())
            .spawn(move || {
                let mut last_refusal = String::new();
                while let Ok(first) = rx.recv() {
                    // Everything queued meanwhile, the latest report per range only.
                    let mut queued: Vec<Command> = Vec::new();
                    for cmd in std::iter::once(first).chain(rx.try_iter()) {
                        let key = |c: &Command| match c {
                            Command::Progress {
                                change,
                                task,
                                range,
                                ..
                            } => Some((*change, *task, *range)),
                            _ => None,
                        };
                        let k = key(&cmd);
                        if k.is_some()
                            && let Some(slot) = queued.iter_mut().find(|q| key(q) == k)
                        {
                            *slot = cmd;
                        } else {
                            queued.push(cmd);
                        }
                    }
                    let applied = reporter.0.status().applied;
                    let meta = reporter.0.watch().borrow().meta.clone();
                    queued.retain(|cmd| progress_news(&meta, applied, cmd));
                    // The batch's reports name distinct ranges: proposed all at once, raft
                    // commits them together (one at a time, a loaded debug build commits
                    // fewer than ten a second); what failed is retried in order.
                    for attempt in 0..20u64 {
                        if queued.is_empty() {
                            break;
                        }
                        let outcomes = reporter.1.block_on(async {
                            let mut all = Vec::with_capacity(queued.len());
                            // A few dozen at a time: each is a request forwarded to the
                            // leader, and a flood of them is refused on the way.
                            for (n, wave) in queued.chunks(PROGRESS_WAVE).enumerate() {
                                let mut set = tokio::task::JoinSet::new();
                                for (i, cmd) in wave.iter().enumerate() {
                                    let (raft, cmd) = (reporter.0.clone(), cmd.clone());
                                    let i = n * PROGRESS_WAVE + i;
                                    set.spawn(async move { (i, raft.propose(cmd).await) });
                                }
                                all.extend(set.join_all().await);
                            }
                            all
                        });
                        let mut failed = BTreeSet::new();
                        for (i, outcome) in outcomes {
                            match outcome {
                                Ok((_, MetaResponse::Refused(e))) => {
                                    // Stale reports are normal (a change that ended); say
                                    // why once, not once per range.
                                    let text = e.to_string();
                                    if text != last_refusal {
                                        eprintln!("kvstore: change: progress refused: {text}");
                                        last_refusal = text;
                                    }
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    if failed.is_empty() {
                                        eprintln!(
                                            "kvstore: change: progress not committed yet: {e}"
                                        );
                                    }
                                    failed.insert(i);
                                }
                            }
                        }
                        let mut i = 0;
                        queued.retain(|_| {
                            i += 1;
                            failed.contains(&(i - 1))
                        });
                        if !queued.is_empty() {
                            std::thread::sleep(Duration::from_millis(100 * (attempt + 1)));
                        }
                    }
                }
            })?;
        let watch = self.raft.clone();
        let receiver = kv_remote::RangeReceiver::new(
            Arc::new(Import(Arc::clone(&self.replica))),
            move |r: &kv_remote::StreamReport<'_>| {
                let kv_remote::StreamEvent::Checkpoint {
                    range,
                    done_through,
                } = r.event
                else {
                    return;
                };
                let state = watch.watch().borrow().clone();
                let Some(c) = state
                    .meta
                    .change
                    .as_ref()
                    .filter(|c| c.id == r.header.change)
                else {
                    return;
                };
                let Some(task) = c.tasks.iter().find(|t| u64::from(t.id) == r.header.task) else {
                    return;
                };
                let Some(index) = task
                    .ranges
                    .iter()
                    .position(|&(s, e)| s == range.start && e == range.end)
                else {
                    return;
                };
                let _ = tx.send(Command::Progress {
                    change: c.id,
                    task: task.id,
                    range: u32::try_from(index).unwrap_or(u32::MAX),
                    done_through,
                    keys: r.keys,
                    bytes: 0,
                });
            },
        );
        server.set_range_receiver(Some(Arc::new(receiver)));
        let _ = LOCAL.set(Arc::clone(&self.replica));
        let streamer = Arc::new(kv_remote::RangeStreamer::new(
            Arc::clone(&self.replica),
            Arc::clone(&self.peers),
            crate::node_rate::limiter(&self.raft, &self.runtime, self.stream_rate),
        ));
        std::thread::Builder::new()
            .name("kvstore-change".into())
            .spawn(move || {
                let running: Arc<std::sync::Mutex<BTreeSet<(u64, u32)>>> = Arc::default();
                let mut left = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    self.tick(&streamer, &running, &mut left);
                    std::thread::sleep(TICK);
                }
            })
    }

    fn propose(&self, cmd: Command) -> Result<(), String> {
        match self.runtime.block_on(self.raft.propose(cmd)) {
            Ok((_, MetaResponse::Ok { .. })) => Ok(()),
            Ok((_, MetaResponse::Refused(e))) => Err(format!("refused: {e}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// One look at the committed change: acknowledge this node's fence, start the streams it
    /// is the source of, and, on the leader, take the next step whose barrier holds.
    fn tick(
        &self,
        streamer: &Arc<kv_remote::RangeStreamer>,
        running: &Arc<std::sync::Mutex<BTreeSet<(u64, u32)>>>,
        left: &mut BTreeMap<String, (u64, Instant, bool)>,
    ) {
        let state = self.raft.watch().borrow().clone();
        let meta = &state.meta;
        let Some(c) = &meta.change else {
            set_waiting(String::new());
            self.deregister_left(meta, left);
            return;
        };
        if c.step == Step::Streaming {
            self.start_streams(meta, c, streamer, running);
        }
        let status = self.raft.status();
        if status.leader != Some(status.raft_id) {
            set_waiting(String::new());
            return;
        }
        // Every node of either ring must have fenced the step's epoch: stricter than a quorum
        // of each and the live losers (a down node holds the change; say whom it waits for).
        let fenced = |epoch: u64| -> Vec<String> {
            let mut ids: BTreeSet<&str> = c.from_members.iter().map(|m| m.id.as_str()).collect();
            ids.extend(c.to_members.iter().map(|m| m.id.as_str()));
            ids.into_iter()
                .filter(|id| meta.acks.get(*id).copied().unwrap_or(0) < epoch)
                .map(str::to_owned)
                .collect()
        };
        let next = match c.step {
            Step::Pending => {
                let missing = fenced(c.step_epochs[0]);
                if missing.is_empty() {
                    Some(Command::BeginStreaming { change: c.id })
                } else {
                    set_waiting(format!(
                        "B1: the fence of epoch {} on {}",
                        c.step_epochs[0],
                        missing.join(",")
                    ));
                    None
                }
            }
            Step::Streaming => {
                if c.unfinished() == 0 {
                    Some(Command::EnterMid { change: c.id })
                } else {
                    set_waiting(format!("streams: {} task(s) unfinished", c.unfinished()));
                    None
                }
            }
            Step::Mid => {
                let missing = fenced(c.step_epochs[1]);
                if missing.is_empty() {
                    Some(Command::EnterFinal { change: c.id })
                } else {
                    set_waiting(format!(
                        "B2: the fence of epoch {} on {}",
                        c.step_epochs[1],
                        missing.join(",")
                    ));
                    None
                }
            }
            // Every node acknowledges the final epoch once fenced there and, a loser, once
            // it dropped what it lost (a leaver: handed its hints over): node_meta.rs
            // `cleanup_due`. A loser that is down holds the change until it returns.
            Step::Final => {
                let missing = fenced(c.step_epochs[2]);
                if missing.is_empty() {
                    Some(Command::FinishChange { change: c.id })
                } else {
                    set_waiting(format!(
                        "cleanup: the fence of epoch {} and the moved ranges dropped on {}",
                        c.step_epochs[2],
                        missing.join(",")
                    ));
                    None
                }
            }
            // The same at the abort epoch (the current one): the gainers drop what they got.
            Step::Aborting => {
                let missing = fenced(meta.epoch);
                if missing.is_empty() {
                    Some(Command::FinishAbort { change: c.id })
                } else {
                    set_waiting(format!(
                        "abort: the fence of epoch {} and the received ranges dropped on {}",
                        meta.epoch,
                        missing.join(",")
                    ));
                    None
                }
            }
        };
        if next.is_some() {
            set_waiting(String::new());
        }
        if let Some(Err(e)) = next.map(|cmd| self.propose(cmd)) {
            set_waiting(format!("the metadata: {e}"));
        }
    }

    /// On the leader, with no change running: takes each `Left` member out of the raft and
    /// commits its `Deregister` once that is safe, i.e. once it holds the entry that made it
    /// `Left` (so it saw itself leave and shut down), or [`LEFT_GRACE`] after the leader first
    /// saw it `Left` (a leaver that is down never learns it from this cluster: restarted, it
    /// finds itself no member and is refused by the others). `left` remembers, per member,
    /// the applied index and the time the leader first saw it `Left`, and whether it was seen
    /// holding that index.
    fn deregister_left(
        &self,
        meta: &ClusterMeta,
        left: &mut BTreeMap<String, (u64, Instant, bool)>,
    ) {
        let status = self.raft.status();
        if status.leader != Some(status.raft_id) {
            left.clear();
            return;
        }
        left.retain(|id, _| meta.members.contains_key(id));
        for (id, m) in &meta.members {
            if m.state != kv_meta::MemberState::Left || m.raft_id == status.raft_id {
                // The leader that left hands the lead over itself (node_meta.rs
                // `hand_over_leadership`); the next leader deregisters it.
                continue;
            }
            let seen = left
                .entry(id.clone())
                .or_insert((status.applied, Instant::now(), false));
            // Once seen to hold it, it stays safe (taking it out of the raft ends the
            // replication metrics that showed it).
            seen.2 |= self
                .raft
                .matched_index(m.raft_id)
                .is_some_and(|i| i >= seen.0);
            let (seen_at, since, holds) = *seen;
            if !holds && since.elapsed() < LEFT_GRACE {
                set_waiting(format!(
                    "deregister {id}: until it holds index {seen_at} (or {}s pass)",
                    LEFT_GRACE.as_secs()
                ));
                continue;
            }
            let peers = Arc::clone(&self.peers);
            let is_up =
                move |node: &str| peers.status().iter().any(|p| p.node_id == node && p.alive);
            let retired =
                self.runtime
                    .block_on(self.raft.retire(m.raft_id, kv_meta::MAX_VOTERS, &is_up));
            match retired {
                Ok(true) => match self.propose(Command::Deregister { id: id.clone() }) {
                    Ok(()) => {
                        eprintln!("kvstore: change: {id} left the cluster and is deregistered");
                        set_waiting(String::new());
                    }
                    Err(e) => set_waiting(format!("deregister {id}: {e}")),
                },
                Ok(false) => set_waiting(format!("deregister {id}: taking it out of the raft")),
                Err(e) => set_waiting(format!("deregister {id}: the raft: {e}")),
            }
        }
    }

    /// Starts, each on a thread of its own, the unfinished tasks this node is the source of
    /// that do not run yet; a failed stream is started again on a later tick, from what the
    /// destination reported synced.
    fn start_streams(
        &self,
        meta: &ClusterMeta,
        c: &kv_meta::Change,
        streamer: &Arc<kv_remote::RangeStreamer>,
        running: &Arc<std::sync::Mutex<BTreeSet<(u64, u32)>>>,
    ) {
        let term = self.raft.status().term;
        for t in &c.tasks {
            if t.finished || t.from != Source::Node(self.me.clone()) {
                continue;
            }
            let Ok(mut r) = running.lock() else { return };
            if !r.insert((c.id, t.id)) {
                continue;
            }
            drop(r);
            let task = kv_remote::StreamTask {
                header: kv_remote::StreamHeader {
                    change: c.id,
                    task: u64::from(t.id),
                    term,
                    epoch: meta.epoch,
                },
                destination: t.to.clone(),
                ranges: t
                    .ranges
                    .iter()
                    .zip(&t.done_through)
                    .map(|(&(start, end), &done_through)| kv_remote::StreamRange {
                        range: kv_ring::TokenRange { start, end },
                        done_through,
                    })
                    .collect(),
            };
            let (streamer, held, key) = (Arc::clone(streamer), Arc::clone(running), (c.id, t.id));
            let watch = self.raft.watch();
            let spawned = std::thread::Builder::new()
                .name("kvstore-stream".into())
                .spawn(move || {
                    match streamer.stream(&task) {
                        Err(e) => {
                            eprintln!(
                                "kvstore: change {} task {}: stream to {} failed (retried): {e}",
                                key.0, key.1, task.destination
                            );
                            std::thread::sleep(Duration::from_secs(1));
                        }
                        // Streamed and synced: the destination's progress reports may still
                        // be on their way to the leader. Starting again now would copy it
                        // all again and queue every report twice; wait for them first.
                        Ok(_) => wait_committed(&watch, key, COMMIT_WAIT),
                    }
                    if let Ok(mut r) = held.lock() {
                        r.remove(&key);
                    }
                });
            if let (Err(_), Ok(mut r)) = (spawned, running.lock()) {
                r.remove(&(c.id, t.id));
            }
        }
    }
}

/// How long a source whose stream ended waits for the task's committed progress to move
/// before it streams it again (a destination that lost its progress reports: it was killed
/// after it synced the last chunk, its reports still queued in memory). The stream again
/// starts from the committed progress, so only the ranges whose reports were lost are sent
/// twice; 10 s outlasts an election and the reporter's retries, and a killed destination
/// costs 10 s rather than 30 s (cluster_change_faults.rs saw the change stand still 20 to
/// 30 s after the restart, the streams done and unreported).
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Waits until task `key` of the committed change is finished or the change is no longer
/// streaming, at most `limit` after the task's committed progress last moved.
fn wait_committed(watch: &kv_meta::MetaWatch, (change, task): (u64, u32), limit: Duration) {
    let mut deadline = std::time::Instant::now() + limit;
    let mut recorded = 0usize;
    while std::time::Instant::now() < deadline {
        let state = watch.borrow().clone();
        let done = state.meta.change.as_ref().is_none_or(|c| {
            c.id != change
                || c.step != Step::Streaming
                || c.tasks.iter().any(|t| t.id == task && t.finished)
        });
        if done {
            return;
        }
        // Reports still being committed: the limit counts from the last one.
        let now = state
            .meta
            .change
            .iter()
            .flat_map(|c| c.tasks.iter().filter(|t| t.id == task))
            .map(|t| t.done_through.iter().flatten().count())
            .sum();
        if now != recorded {
            recorded = now;
            deadline = std::time::Instant::now() + limit;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let state = watch.borrow().clone();
    let behind: Vec<String> = state
        .meta
        .change
        .iter()
        .flat_map(|c| c.tasks.iter().filter(|t| t.id == task))
        .flat_map(|t| {
            t.ranges
                .iter()
                .zip(&t.done_through)
                .enumerate()
                .filter(|(_, (r, d))| **d != Some(r.1))
                .map(|(i, (r, d))| format!("{i}:({:#x},{:#x}]@{d:x?}", r.0, r.1))
        })
        .take(3)
        .collect();
    eprintln!(
        "kvstore: change {change} task {task}: streamed, but not committed finished within \
         {limit:?} (ranges behind: {}): streaming it again",
        behind.join(" ")
    );
}

/// Whether `cmd`, a destination's `Progress`, still tells the leader something, judged on
/// this node's metadata `meta` (applied through log index `applied`): its change is the
/// one streaming, its task is unfinished and the range's recorded progress is not this
/// report's. A change this node has not applied yet, or has not seen streaming yet (its
/// metadata lags the source's), counts as news: dropping those reports would lose them.
/// Reports that fail this are dropped before they cost a log entry.
fn progress_news(meta: &ClusterMeta, applied: u64, cmd: &Command) -> bool {
    let Command::Progress {
        change,
        task,
        range,
        done_through,
        ..
    } = cmd
    else {
        return true;
    };
    let Some(c) = meta.change.as_ref().filter(|c| c.id == *change) else {
        // Not started here yet (the change's id is its log index), or over.
        return applied < *change;
    };
    match c.step {
        Step::Pending => return true,
        Step::Streaming => {}
        Step::Mid | Step::Final | Step::Aborting => return false,
    }
    c.tasks.iter().any(|t| {
        t.id == *task
            && !t.finished
            && t.done_through
                .get(*range as usize)
                .is_some_and(|d| *d != Some(*done_through))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_meta::{Command, NewMember};

    /// Three members of rf 3 at epoch 3, and `n4` registered (joined, not in the ring).
    fn with_a_joiner() -> ClusterMeta {
        // The planner rebuilds rings from the metadata's vnodes: the tokens are a real ring's.
        let options = kv_ring::RingOptions::default()
            .vnodes(16)
            .unwrap()
            .placement(kv_ring::Placement::Balanced {
                replication_factor: 3,
            });
        let ring = kv_ring::Ring::with_nodes(options, ["n1", "n2", "n3"]).unwrap();
        let members = (1..=3u64)
            .map(|i| NewMember {
                id: format!("n{i}"),
                cluster_addr: format!("127.0.0.1:1700{i}"),
                client_addr: format!("127.0.0.1:700{i}"),
                weight: 1.0,
                tokens: ring.tokens_of(format!("n{i}").as_str()).unwrap().to_vec(),
            })
            .collect();
        let boot = Command::BootstrapAt {
            uuid: 9,
            name: "t".into(),
            rf: 3,
            vnodes: 16,
            members,
            epoch: 3,
        };
        let mut meta = ClusterMeta::default();
        assert_eq!(meta.apply(1, &boot), MetaResponse::Ok { epoch: 3 });
        let register = Command::Register {
            id: "n4".into(),
            cluster_addr: "127.0.0.1:17004".into(),
            client_addr: "127.0.0.1:7004".into(),
        };
        assert!(meta.apply(2, &register).is_ok());
        meta
    }

    #[test]
    fn no_change_is_none_and_a_started_add_shows_its_step_and_tasks() {
        let mut meta = with_a_joiner();
        assert_eq!(report(&meta), ["change:none", "epoch:3"]);
        assert_eq!(info_lines(&meta), ["kvstore_change_in_progress:none"]);
        let plan = kv_meta::plan_change(&meta, ChangeKind::Add, "n4", 0).unwrap();
        assert_eq!(meta.apply(3, &plan), MetaResponse::Ok { epoch: 4 });
        let lines = report(&meta);
        let tasks = meta.change.as_ref().unwrap().tasks.len();
        assert!(tasks > 0, "an add moves ranges");
        assert_eq!(
            lines[..8],
            [
                "change:3".to_owned(),
                "kind:add".to_owned(),
                "node:n4".to_owned(),
                "step:pending".to_owned(),
                "epoch:4".to_owned(),
                format!("tasks_done:0/{tasks}"),
                "keys_copied:0".to_owned(),
                "bytes_copied:0".to_owned(),
            ]
        );
        let task_lines: Vec<&String> = lines.iter().filter(|l| l.starts_with("task:")).collect();
        assert_eq!(task_lines.len(), tasks);
        assert!(
            task_lines
                .iter()
                .all(|l| l.contains("->n4 ") && l.ends_with("finished:0")),
            "{task_lines:?}"
        );
        let info = info_lines(&meta);
        assert_eq!(
            info[..4],
            [
                "kvstore_change_in_progress:add n4".to_owned(),
                "kvstore_change_id:3".to_owned(),
                "kvstore_change_step:pending".to_owned(),
                "kvstore_change_epoch:4".to_owned(),
            ]
        );
        assert!(
            info.contains(&format!("kvstore_change_tasks_done:0/{tasks}")),
            "{info:?}"
        );
        assert!(info.iter().all(|l| !l.contains("task:")), "{info:?}");
        // A second add while one runs is refused by the planner.
        let e = kv_meta::plan_change(&meta, ChangeKind::Add, "n4", 0).unwrap_err();
        assert!(e.to_string().contains("change"), "{e}");
    }

    /// Reports that tell the leader nothing are dropped before they cost a log entry; a
    /// report this node cannot judge yet (its metadata lags) is kept.
    #[test]
    fn stale_and_repeated_progress_is_dropped_and_unknown_progress_kept() {
        let mut meta = with_a_joiner();
        let plan = kv_meta::plan_change(&meta, ChangeKind::Add, "n4", 0).unwrap();
        let progress = |range: u32, done_through: u64| Command::Progress {
            change: 3,
            task: 0,
            range,
            done_through,
            keys: 1,
            bytes: 0,
        };
        // Not applied here yet (applied index 2 < the change's id 3): kept.
        assert!(progress_news(&meta, 2, &progress(0, 1)));
        assert_eq!(meta.apply(3, &plan), MetaResponse::Ok { epoch: 4 });
        let (start, end) = meta.change.as_ref().unwrap().tasks[0].ranges[0];
        // Pending here while the source already streams: kept.
        assert!(progress_news(&meta, 3, &progress(0, end)));
        assert!(
            meta.apply(4, &Command::BeginStreaming { change: 3 })
                .is_ok()
        );
        assert!(progress_news(&meta, 4, &progress(0, end)));
        assert!(meta.apply(5, &progress(0, end)).is_ok());
        // The same report again, or for another change: dropped.
        assert!(!progress_news(&meta, 5, &progress(0, end)));
        let other = Command::Progress {
            change: 2,
            task: 0,
            range: 0,
            done_through: start.wrapping_add(1),
            keys: 1,
            bytes: 0,
        };
        assert!(!progress_news(&meta, 5, &other));
        // Any other command is not judged.
        assert!(progress_news(
            &meta,
            5,
            &Command::BeginStreaming { change: 3 }
        ));
    }

    /// At `Final` the losers owe a drop of what they lost, the joiner nothing; while
    /// aborting the joiner owes a drop of what it gained.
    #[test]
    fn cleanup_is_owed_by_the_losers_at_final_and_by_the_joiner_when_aborting() {
        let mut meta = with_a_joiner();
        let plan = kv_meta::plan_change(&meta, ChangeKind::Add, "n4", 0).unwrap();
        assert!(meta.apply(3, &plan).is_ok());
        let mut aborted = meta.clone();
        assert!(aborted.apply(4, &Command::Abort { change: 3 }).is_ok());
        let work = crate::node_meta::cleanup_due(&aborted, "n4")
            .unwrap()
            .unwrap();
        assert_eq!((work.change, work.epoch, work.leaver), (3, 5, false));
        assert!(!work.drop.is_empty());
        assert_eq!(crate::node_meta::cleanup_due(&aborted, "n1").unwrap(), None);
        // To Final, every task marked finished (the progress is not what this tests).
        assert!(
            meta.apply(4, &Command::BeginStreaming { change: 3 })
                .is_ok()
        );
        for t in &mut meta.change.as_mut().unwrap().tasks {
            t.finished = true;
        }
        assert!(meta.apply(5, &Command::EnterMid { change: 3 }).is_ok());
        assert_eq!(
            crate::node_meta::cleanup_due(&meta, "n1").unwrap(),
            None,
            "not at final"
        );
        assert!(meta.apply(6, &Command::EnterFinal { change: 3 }).is_ok());
        assert_eq!(crate::node_meta::cleanup_due(&meta, "n4").unwrap(), None);
        for id in ["n1", "n2", "n3"] {
            let work = crate::node_meta::cleanup_due(&meta, id).unwrap().unwrap();
            assert_eq!((work.epoch, work.leaver), (6, false), "{id}");
            let streamed: Vec<(u64, u64)> = meta
                .change
                .as_ref()
                .unwrap()
                .tasks
                .iter()
                .filter(|t| t.from == Source::Node(id.to_owned()))
                .flat_map(|t| t.ranges.clone())
                .collect();
            assert_eq!(work.drop, streamed, "{id} drops what it streamed");
        }
    }
}
