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
//! Not built: cleanup of the moved ranges on the losers (their extra copies are not read:
//! reads route by the new ring; whether background repair ever looks at them is not checked
//! here); `Survivors`
//! sources (a task whose source is down waits); aborts' cleanup; a stream rate limit.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kv_meta::{ChangeKind, ClusterMeta, Command, MetaRaft, MetaResponse, Source, Step};

/// How long ADDNODE waits for this node to apply the leader's committed index before it
/// plans: a plan from stale metadata is refused when applied, and a fresh one is not.
const CATCH_UP: Duration = Duration::from_secs(5);

/// Starts the change that adds the `Registered` member `node`: reads the leader's committed
/// index, waits until this node applied it, plans with [`kv_meta::plan_change`] and proposes
/// the `StartChange` (forwarded to the leader). Returns the change's id (its log index) and
/// the epoch it entered.
///
/// # Errors
/// The planner's refusal (unknown member, not `Registered`, a change in progress), the state
/// machine's refusal, or the raft's unavailability, as a line for the client.
pub async fn add_node(raft: &MetaRaft, node: &str) -> Result<(u64, u64), String> {
    let index = raft.read_index().await.map_err(|e| e.to_string())?;
    raft.wait_applied(index, CATCH_UP)
        .await
        .map_err(|e| e.to_string())?;
    let state = raft.watch().borrow().clone();
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let plan = kv_meta::plan_change(&state.meta, ChangeKind::Add, node, started_ms)
        .map_err(|e| e.to_string())?;
    match raft.propose(plan).await {
        Ok((log_id, MetaResponse::Ok { epoch })) => Ok((log_id.index, epoch)),
        Ok((_, MetaResponse::Refused(e))) => Err(format!("refused: {e}")),
        Err(e) => Err(e.to_string()),
    }
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

/// How often the driver looks at the committed change.
const TICK: Duration = Duration::from_millis(200);

/// After a stream that ended well, how long its task's committed progress may stand still
/// before the source streams it again (its destination's reports were lost).
const RESTREAM_STALL: Duration = Duration::from_secs(10);

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
                for cmd in rx {
                    for attempt in 0..20u64 {
                        match reporter.1.block_on(reporter.0.propose(cmd.clone())) {
                            Ok(_) => break,
                            Err(e) => {
                                eprintln!("kvstore: change: progress not committed yet: {e}");
                                std::thread::sleep(Duration::from_millis(100 * (attempt + 1)));
                            }
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
        let streamer = Arc::new(kv_remote::RangeStreamer::new(
            Arc::clone(&self.replica),
            Arc::clone(&self.peers),
            Arc::new(kv_cluster::RateLimiter::unlimited()),
        ));
        std::thread::Builder::new()
            .name("kvstore-change".into())
            .spawn(move || {
                let running: Arc<std::sync::Mutex<BTreeSet<(u64, u32)>>> = Arc::default();
                while !stop.load(Ordering::Relaxed) {
                    self.tick(&streamer, &running);
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
    ) {
        let state = self.raft.watch().borrow().clone();
        let meta = &state.meta;
        let Some(c) = &meta.change else {
            set_waiting(String::new());
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
            // Cleanup of the moved ranges on the losers is not built: their extra copies are
            // never read (reads route by the new ring) and repair ignores them.
            Step::Final => Some(Command::FinishChange { change: c.id }),
            Step::Aborting => {
                set_waiting("an abort's cleanup (not built)".to_owned());
                None
            }
        };
        if next.is_some() {
            set_waiting(String::new());
        }
        if let Some(Err(e)) = next.map(|cmd| self.propose(cmd)) {
            set_waiting(format!("the metadata: {e}"));
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
            let raft = self.raft.clone();
            let spawned = std::thread::Builder::new()
                .name("kvstore-stream".into())
                .spawn(move || {
                    if let Err(e) = streamer.stream(&task) {
                        eprintln!(
                            "kvstore: change {} task {}: stream to {} failed (retried): {e}",
                            key.0, key.1, task.destination
                        );
                        std::thread::sleep(Duration::from_secs(1));
                    } else {
                        // Streamed and synced; the destination commits each range's end as
                        // its own `Progress` entry, from one queue. Streaming the task again
                        // before they land only queues hundreds of duplicates ahead of every
                        // other task's (a restarted source then waited ~75 s behind them):
                        // wait until the task is finished, or its progress stalls
                        // `RESTREAM_STALL` (the reports were lost).
                        let progress = || {
                            let state = raft.watch().borrow().clone();
                            let c = state.meta.change.as_ref().filter(|c| c.id == key.0)?;
                            let t = c.tasks.iter().find(|t| t.id == key.1 && !t.finished)?;
                            Some(t.done_through.clone())
                        };
                        let (mut last, mut moved) = (progress(), std::time::Instant::now());
                        while last.is_some() && moved.elapsed() < RESTREAM_STALL {
                            std::thread::sleep(TICK);
                            let now = progress();
                            if now != last {
                                (last, moved) = (now, std::time::Instant::now());
                            }
                        }
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
        // A second add while one runs is refused by the planner.
        let e = kv_meta::plan_change(&meta, ChangeKind::Add, "n4", 0).unwrap_err();
        assert!(e.to_string().contains("change"), "{e}");
    }
}
