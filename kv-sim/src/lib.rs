//! Deterministic simulation of a kvstore cluster on turmoil (`docs/membership.md` §4,
//! issue 23 step 10).
//!
//! [`run`] starts three node hosts (kv-net on turmoil's sockets, kv-remote's
//! `ReplicaServer`, a kv-cluster coordinator through its async API over a `MemoryBackend`
//! kept outside the host, so a crash keeps it), RF 3 at quorum; four client hosts that `SET`
//! and `GET` a small key space with unique values and record the history; a seeded fault
//! generator (partitions, link delays, crash and bounce); and at the end a hint handoff and a
//! repair on every node. [`check`] then checks the history and the replicas.
//!
//! In a run with [`SimConfig::changes`] (odd seeds by default) a fourth host is added to
//! the cluster, and sometimes a member removed after it, while the faults go on: the steps
//! of kv-cli's change driver, taken by whichever node leads kv-meta's raft (every node host
//! runs the real `MetaRaft` over the simulated kv-net, its log kept outside the host), each
//! node installing every epoch's topology its raft applies and fencing its replica, and
//! range streams from each losing replica into kv-remote's `RangeReceiver` on the gaining
//! one; the raft leader and the joiner are crashed too, and property 4 (metadata
//! agreement) is checked. The key design decision: everything the run waits for runs on
//! the hosts' simulated runtimes, never on a thread (kv-cluster's installs drain on the
//! runtime's timer), and a crashed host says nothing on the wire, so that a seed replays
//! exactly, with crashes, changes and clock-skew faults (see the README, determinism, and
//! for what is not simulated); a failing seed prints the command that replays it
//! ([`SimConfig::replay_command`]).
//!
//! ```no_run
//! let report = kv_sim::run(&kv_sim::SimConfig::new(0x5eed))?;
//! assert!(report.violations.is_empty(), "{}", report.describe());
//! # Ok::<(), kv_sim::SimError>(())
//! ```

mod change;
pub mod check;
mod faults;
mod meta;
mod node;
mod proto;
mod raft;
mod stream;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kv_cluster::{Backend, Cluster, ClusterOptions, MemoryBackend};
use kv_meta::{Command, MemberState, NewMember};
use kv_ring::NodeId;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::check::{Held, Kind, Op, Outcome, Property, Replicas, Violation};
use crate::proto::Reply;

/// The cluster id every host announces.
const CLUSTER: u128 = 0x5151;
/// The node hosts (host names are node ids): the first [`INITIAL`] are the static members;
/// the last is the fresh host a run with changes adds ([`JOINER`]).
pub const NODES: [&str; 4] = ["node1", "node2", "node3", "node4"];
/// The static members, `NODES[..INITIAL]`.
pub const INITIAL: usize = 3;
/// The host a membership change adds.
pub const JOINER: &str = "node4";
/// The peer port of every node.
const PEER_PORT: u16 = 7000;
/// The clients' port of every node.
const CLIENT_PORT: u16 = 7100;
/// How long a client waits for an answer before recording `Unknown`.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// A deliberately broken variant, to show the checker bites (test-only in intent; it lives
/// here, not in kv-cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// Coordinators read and write at `One` while the checker assumes quorum.
    OneReplica,
    /// kv-cluster's `testing::Sabotage::SkipPendingDualWrite`: in a change's `Pending` and
    /// `Streaming` steps writes go to the old replicas only (only seeds with a change can
    /// catch it).
    SkipPendingDualWrite,
    /// node2 installs the change's steps with the two rings swapped (reads by the other
    /// ring): a node that mis-applied the metadata. Property 4 must catch it.
    DivergentInstall,
}

/// Crash faults.
///
/// [`Crashes::Any`] is the default: a restarted coordinator waits out the version lease its
/// previous run persisted before it serves clients (`Cluster::lease_wait`), so its versions
/// do not run ahead of real time. Before kv-cluster did so, every restart pushed a
/// coordinator's versions up to a minute ahead, and properties 1 and 2 failed in every seed
/// where a coordinator restarted; [`Crashes::Replicas`] was the default then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crashes {
    /// No crash faults.
    Off,
    /// node2 and node3 may crash; once one has, clients no longer send it their requests,
    /// and it refuses any still on their way (node1 never crashes, so a coordinator is
    /// always left).
    Replicas,
    /// Any node may crash, and clients keep coordinating through it after its restart (the
    /// default).
    Any,
}

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Everything random in the run comes from it.
    pub seed: u64,
    /// Client hosts.
    pub clients: u32,
    /// Keys the clients share.
    pub keys: u16,
    /// When the fault generator stops and every fault heals.
    pub faults_until: Duration,
    /// When clients stop starting operations.
    pub clients_until: Duration,
    /// When hint handoff and repair run on every node, one after the other.
    pub repair_at: Duration,
    /// Each node's wall clock is off by an amount drawn from `-max_skew..=max_skew`
    /// (milliseconds) at the start. The checker orders two writes in real time only as far
    /// as the clocks allow (see [`check::Clocks`]).
    pub max_skew_ms: u64,
    /// The largest step of a clock-skew fault (milliseconds; 0: none drawn): a node's clock
    /// jumps by up to this much either way for 1–8 s, then back (membership.md §4.3).
    pub skew_step_ms: u64,
    /// Which nodes the fault generator crashes and bounces, and whether clients go on using
    /// a restarted node as their coordinator.
    pub crashes: Crashes,
    /// A broken variant, if any.
    pub sabotage: Option<Sabotage>,
    /// Whether membership changes run: kv-meta's raft on every node, the fresh host `node4`
    /// added at a time drawn from the seed, and in half of these runs a member removed after
    /// it (see the crate's README).
    pub changes: bool,
}

impl SimConfig {
    /// The defaults for `seed`: 4 clients, 16 keys, faults until 45 s, clients until 50 s,
    /// repair at 55 s, any node crashed, membership changes in odd seeds (even seeds run
    /// the static cluster of the first half, exactly as before changes existed).
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            clients: 4,
            keys: 16,
            faults_until: Duration::from_secs(45),
            clients_until: Duration::from_secs(50),
            repair_at: Duration::from_secs(55),
            max_skew_ms: 250,
            skew_step_ms: 10_000,
            crashes: Crashes::Any,
            sabotage: None,
            changes: seed % 2 == 1,
        }
    }
}

impl SimConfig {
    /// The command that replays this run exactly: `one_seed` with the seed and every
    /// setting that differs from [`SimConfig::new`]'s for it (`SIM_CHANGES`, `SIM_CRASHES`,
    /// `SIM_SKEW_MS`, `SIM_SKEW_STEP_MS`, `SIM_SABOTAGE`), with `--cfg tokio_unstable`, without
    /// which turmoil does not seed the hosts' runtimes. The other fields (clients, keys,
    /// times) have no variable: a run that changed them is replayed by its own test.
    ///
    /// # Example
    /// ```
    /// let mut config = kv_sim::SimConfig::new(0x5eed0002);
    /// config.changes = true;
    /// assert_eq!(
    ///     config.replay_command(),
    ///     "RUSTFLAGS=\"--cfg tokio_unstable\" SIM_SEED=0x5eed0002 SIM_CHANGES=1 \
    ///      cargo test -p kv-sim --release -- one_seed --nocapture"
    /// );
    /// ```
    pub fn replay_command(&self) -> String {
        let usual = SimConfig::new(self.seed);
        let mut cmd = format!(
            "RUSTFLAGS=\"--cfg tokio_unstable\" SIM_SEED={:#x}",
            self.seed
        );
        if self.changes != usual.changes {
            let _ = write!(cmd, " SIM_CHANGES={}", u8::from(self.changes));
        }
        if self.crashes != usual.crashes {
            let crashes = match self.crashes {
                Crashes::Off => "off",
                Crashes::Replicas => "replicas",
                Crashes::Any => "any",
            };
            let _ = write!(cmd, " SIM_CRASHES={crashes}");
        }
        if self.max_skew_ms != usual.max_skew_ms {
            let _ = write!(cmd, " SIM_SKEW_MS={}", self.max_skew_ms);
        }
        if self.skew_step_ms != usual.skew_step_ms {
            let _ = write!(cmd, " SIM_SKEW_STEP_MS={}", self.skew_step_ms);
        }
        if let Some(sabotage) = self.sabotage {
            let name = match sabotage {
                Sabotage::OneReplica => "one-replica",
                Sabotage::SkipPendingDualWrite => "skip-pending-dual-write",
                Sabotage::DivergentInstall => "divergent-install",
            };
            let _ = write!(cmd, " SIM_SABOTAGE={name}");
        }
        cmd.push_str(" cargo test -p kv-sim --release -- one_seed --nocapture");
        cmd
    }
}

/// Why a run could not complete (not a checker finding: those are in [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The simulation failed (a host returned an error, or it ran past its duration).
    #[error("simulation failed: {0}")]
    Turmoil(String),
    /// The metadata could not be bootstrapped (a defect of the harness).
    #[error("metadata bootstrap: {0}")]
    Meta(String),
    /// The run's scratch directory.
    #[error("scratch directory: {0}")]
    Io(#[from] std::io::Error),
    /// A node id (a defect: the ids are constants).
    #[error("node id: {0}")]
    Ring(#[from] kv_ring::Error),
    /// Reading a replica at the end.
    #[error("reading the replicas: {0}")]
    Cluster(#[from] kv_cluster::Error),
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The command that replays the run exactly ([`SimConfig::replay_command`]).
    pub replay: String,
    /// Every client operation.
    pub history: Vec<Op>,
    /// The faults injected, with their simulated times.
    pub faults: Vec<String>,
    /// Each node's answer to the final handoff and repair.
    pub repairs: Vec<String>,
    /// What each replica holds at the end (of each key, its replicas in the final ring).
    pub replicas: Replicas,
    /// The membership changes' steps (the metadata's log) and the streams' ends, with
    /// their simulated times; empty in a run without changes.
    pub changes: Vec<String>,
    /// What the clocks made the coordinators do, with the simulated times: a restarted
    /// coordinator's wait for its version lease (`lease wait`), a start at its lease
    /// because its clock had stepped back too far (`lease jump`).
    pub clock_events: Vec<String>,
    /// The nodes' clocks as set (for the checker's order of writes).
    pub clocks: check::Clocks,
    /// The checker's findings (empty: every property holds).
    pub violations: Vec<Violation>,
    /// A hash of the history, the faults, the repair answers and the replicas: two runs of
    /// one seed must give the same.
    pub trace_hash: u64,
}

impl Report {
    /// The findings with the seed and the command that replays it.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for v in &self.violations {
            let _ = write!(s, "seed={:#x} {v}", self.seed);
        }
        let ok = self
            .history
            .iter()
            .filter(|o| o.outcome == Outcome::Ok)
            .count();
        let _ = writeln!(
            s,
            "seed={:#x}: {} ops ({ok} ok), {} faults, {} change events, {} violations, trace {:#018x}",
            self.seed,
            self.history.len(),
            self.faults.len(),
            self.changes.len(),
            self.violations.len(),
            self.trace_hash
        );
        if !self.violations.is_empty() {
            let _ = writeln!(s, "replay: {}", self.replay);
        }
        s
    }
}

/// The simulated time since the start, as every host sees it.
pub(crate) fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Runs one seed and checks it.
///
/// # Errors
///
/// [`SimError`] if the simulation cannot run to its end.
pub fn run(config: &SimConfig) -> Result<Report, SimError> {
    let scratch = tempfile::tempdir()?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(600))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(faults::BASE_LATENCY_MS))
        .rng_seed(config.seed)
        .build();

    let hosts: &'static [&'static str] = if config.changes {
        &NODES
    } else {
        &NODES[..INITIAL]
    };
    // openraft draws its election timeouts on this thread, which runs every host.
    kv_meta::seed_raft_rng(config.seed);
    let meta = if config.changes {
        Some(Arc::new(raft::RaftDisks::new(bootstrap(scratch.path())?)))
    } else {
        None
    };
    let record = meta.as_ref().map(|m| Arc::clone(&m.record));
    let stream_log: node::StreamLog = Arc::default();
    let links: node::Links = Arc::default();
    let time: node::GlobalTime = Arc::default();
    let clock_log: node::ClockLog = Arc::default();
    let mut skews: Vec<node::Skew> = Vec::new();
    let disks: Vec<node::Disk> = hosts
        .iter()
        .map(|id| node::Disk {
            backend: Arc::new(MemoryBackend::default()),
            dir: scratch.path().join(id),
        })
        .collect();
    for (index, disk) in disks.iter().enumerate() {
        let seed = rng.random();
        let max = i64::try_from(config.max_skew_ms).unwrap_or(i64::MAX);
        let skew = Arc::new(std::sync::atomic::AtomicI64::new(
            rng.random_range(-max..=max),
        ));
        skews.push(Arc::clone(&skew));
        let cfg = node::NodeConfig {
            index,
            seed,
            skew,
            time: Arc::clone(&time),
            clock_log: Arc::clone(&clock_log),
            disk: disk.clone(),
            sabotage: config.sabotage,
            starts: Arc::default(),
            coordinate_after_restart: config.crashes == Crashes::Any,
            meta: meta.clone(),
            stream_log: Arc::clone(&stream_log),
            links: Arc::clone(&links),
        };
        sim.host(hosts[index], move || node::run(cfg.clone()));
    }

    // The driver stops, and the admin stops waiting for a change, here.
    let give_up_at = config.repair_at + Duration::from_secs(60);
    if let Some(meta) = &meta {
        let mut schedule = change::Schedule::draw(
            &mut rng,
            config.faults_until.saturating_sub(Duration::from_secs(5)),
            give_up_at,
        );
        if config.crashes == Crashes::Replicas {
            schedule.keep = Some(NODES[0]);
        }
        let record = Arc::clone(&meta.record);
        sim.client("driver", async move {
            change::operate(record, schedule).await;
            Ok(())
        });
    }

    let history = Arc::new(Mutex::new(Vec::new()));
    // The nodes that restarted, which clients stop coordinating through (Crashes::Replicas).
    let restarted: Restarted = Arc::default();
    for client in 0..config.clients {
        let history = Arc::clone(&history);
        let restarted = Arc::clone(&restarted);
        let seed: u64 = rng.random();
        let (keys, until) = (config.keys, config.clients_until);
        let meta = record.clone();
        sim.client(format!("client{client}"), async move {
            run_client(client, seed, keys, until, history, restarted, meta).await;
            Ok(())
        });
    }
    let repairs = Arc::new(Mutex::new(Vec::new()));
    {
        let repairs = Arc::clone(&repairs);
        let at = config.repair_at;
        let meta = record.clone();
        sim.client("admin", async move {
            tokio::time::sleep(at.saturating_sub(now())).await;
            // A change still running is waited for: repair runs on the final ring; and
            // every node's raft is caught up, so that property 4 compares final states.
            while let Some(m) = &meta {
                let done = m.read_latest(|m| m.is_some_and(|m| m.change.is_none()))
                    && m.all_at_same_index(hosts);
                if done || now() >= give_up_at {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let members = match &meta {
                Some(m) => serving(m, &[MemberState::Normal]),
                None => NODES[..INITIAL].to_vec(),
            };
            for node in members {
                let answer = call(node, "REPAIR".to_string(), Duration::from_secs(120)).await;
                repairs.lock().push(format!("{node}: {answer:?}"));
            }
            Ok(())
        });
    }

    let mut faults = faults::Faults::new(
        rng.random(),
        config,
        Arc::clone(&restarted),
        hosts,
        (0..config.clients)
            .map(|c| format!("client{c}"))
            .chain(["admin".to_string()])
            .chain(meta.as_ref().map(|_| "driver".to_string()))
            .collect(),
        skews,
        Arc::clone(&links),
    );
    let mut change_crash = None;
    if let Some(record) = &record {
        let leader = Arc::clone(record);
        faults = faults.with_leader(Box::new(move || leader.leader()));
        change_crash = ChangeCrash::draw(&mut rng);
    }
    loop {
        time.store(sim.elapsed().as_millis() as u64, Ordering::Relaxed);
        faults.tick(&mut sim);
        if let (Some(crash), Some(record)) = (&mut change_crash, &record) {
            crash.tick(&mut sim, &mut faults, record);
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(SimError::Turmoil(e.to_string())),
        }
    }
    drop(sim);

    let mut violations = Vec::new();
    let mut changes = Vec::new();
    // Each key's replicas: every static member, or the final ring's preference list.
    let mut replica_sets: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    match &meta {
        None => {
            for key in 0..config.keys {
                replica_sets.insert(key, NODES[..INITIAL].to_vec());
            }
        }
        Some(meta) => {
            let meta = &meta.record;
            changes = meta.log();
            changes.extend(std::mem::take(&mut *stream_log.lock()));
            let last = meta
                .latest()
                .ok_or_else(|| SimError::Meta("no node applied any metadata".into()))?;
            violations.extend(meta.agreement(hosts));
            if let Some(c) = &last.change {
                violations.push(Violation {
                    property: Property::ChangeCompletes,
                    key: 0,
                    message: format!(
                        "change {} ({} {}) still at step {} when the run ended",
                        c.id, c.kind, c.node, c.step
                    ),
                    ops: Vec::new(),
                });
            }
            for broken in meta.broken() {
                violations.push(Violation {
                    property: Property::ChangeCompletes,
                    key: 0,
                    message: format!("metadata invariant broken {broken}"),
                    ops: Vec::new(),
                });
            }
            let ring = last.ring().map_err(SimError::Meta)?;
            let rf = last.replication_factor as usize;
            for key in 0..config.keys {
                let ids: Vec<&str> = ring
                    .replicas_for_key(key_name(key).as_bytes(), rf)?
                    .iter()
                    .filter_map(|id| NODES.iter().copied().find(|n| *n == id.as_str()))
                    .collect();
                replica_sets.insert(key, ids);
            }
        }
    }
    let mut replicas: Replicas = Vec::new();
    for (id, disk) in hosts.iter().zip(&disks) {
        let node: NodeId = id.parse()?;
        let replica = disk.backend.open(&node, &disk.dir.join(id))?;
        let mut held = BTreeMap::new();
        for (key, set) in &replica_sets {
            if !set.contains(id) {
                continue;
            }
            let cell = replica.read(u64::MAX, key_name(*key).as_bytes())?;
            let h: Held = cell.map(|c| {
                (
                    c.value.map(|v| String::from_utf8_lossy(&v).into_owned()),
                    c.version.as_u64(),
                )
            });
            held.insert(*key, h);
        }
        replicas.push((id.to_string(), held));
    }
    let history = std::mem::take(&mut *history.lock());
    let repairs = std::mem::take(&mut *repairs.lock());
    let faults::FaultLog {
        log: faults,
        mut impaired,
        steps,
    } = faults.into_log();
    let mut clocks = check::Clocks::default();
    for (node, at, offset) in &steps {
        clocks.step(node, *at, *offset);
    }
    let mut clock_events = Vec::new();
    for event in std::mem::take(&mut *clock_log.lock()) {
        match event {
            node::ClockEvent::LeaseWait(node, from, to) => {
                clock_events.push(format!("{to:?} {node} lease wait from {from:?}"));
                // A node waiting out its lease serves no client: impaired, as a crash is.
                impaired.push((node.to_string(), from, to));
            }
            node::ClockEvent::LeaseJump(node, at) => {
                clock_events.push(format!("{at:?} {node} lease jump"));
            }
        }
    }
    violations.extend(check::check(&history, &replicas, &clocks));
    violations.extend(check::availability(
        &history,
        &impaired,
        Duration::from_secs(5),
        config.clients_until,
    ));
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(format!("{history:?}{faults:?}{repairs:?}{replicas:?}{clock_events:?}").as_bytes());
    if !changes.is_empty() {
        h.update(format!("{changes:?}").as_bytes());
    }
    Ok(Report {
        seed: config.seed,
        replay: config.replay_command(),
        history,
        faults,
        repairs,
        replicas,
        changes,
        clock_events,
        clocks,
        violations,
        trace_hash: h.digest(),
    })
}

/// The bootstrap of the metadata raft: the static ring the node hosts open (kv-cli's static
/// bootstrap: `BootstrapAt` with exactly the tokens and epoch of that ring, so the first
/// topology the nodes install is the ring they routed by).
fn bootstrap(scratch: &std::path::Path) -> Result<Command, SimError> {
    let cluster = Cluster::open(
        scratch.join("bootstrap"),
        ClusterOptions::new().backend(Arc::new(MemoryBackend::default())),
    )?;
    let ring = cluster.ring();
    let mut members = Vec::new();
    for id in &NODES[..INITIAL] {
        let tokens = ring
            .tokens_of(id)
            .ok_or_else(|| SimError::Meta(format!("{id} is not in the static ring")))?;
        members.push(NewMember {
            id: id.to_string(),
            cluster_addr: format!("{id}:{PEER_PORT}"),
            client_addr: format!("{id}:{CLIENT_PORT}"),
            weight: ring.weight_of(id).unwrap_or(1.0),
            tokens: tokens.to_vec(),
        });
    }
    let boot = Command::BootstrapAt {
        uuid: CLUSTER,
        name: "sim".to_string(),
        rf: u32::try_from(cluster.replication_factor()).unwrap_or(u32::MAX),
        vnodes: kv_cluster::DEFAULT_VNODES,
        members,
        epoch: cluster.topology_epoch(),
    };
    Ok(boot)
}

/// The members whose state is one of `states`, in id order, in the most advanced state any
/// node applied (the static members before any did).
fn serving(meta: &meta::Record, states: &[MemberState]) -> Vec<&'static str> {
    meta.read_latest(|m| {
        let Some(m) = m else {
            return NODES[..INITIAL].to_vec();
        };
        NODES
            .iter()
            .copied()
            .filter(|id| {
                m.members
                    .get(*id)
                    .is_some_and(|mm| states.contains(&mm.state))
            })
            .collect()
    })
}

/// The crash of the raft leader or the joiner at a point of the add, drawn in a quarter of
/// the runs with a change (membership.md §4.4): once the add reaches `step`, `delay` later.
#[derive(Debug)]
struct ChangeCrash {
    leader: bool,
    step: kv_meta::Step,
    delay: Duration,
    down: Duration,
    /// When the step was seen.
    seen: Option<Duration>,
    done: bool,
}

impl ChangeCrash {
    fn draw(rng: &mut StdRng) -> Option<ChangeCrash> {
        if !rng.random_bool(0.25) {
            return None;
        }
        let steps = [
            kv_meta::Step::Pending,
            kv_meta::Step::Streaming,
            kv_meta::Step::Mid,
        ];
        Some(ChangeCrash {
            leader: rng.random_bool(0.5),
            step: steps[rng.random_range(0..steps.len())],
            delay: Duration::from_millis(rng.random_range(0..500)),
            down: Duration::from_millis(rng.random_range(0..6000)),
            seen: None,
            done: false,
        })
    }

    fn tick(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        faults: &mut faults::Faults,
        record: &meta::Record,
    ) {
        if self.done {
            return;
        }
        let now = sim.elapsed();
        let at_step = record.read_latest(|m| {
            m.and_then(|m| m.change.as_ref())
                .is_some_and(|c| c.kind == kv_meta::ChangeKind::Add && c.step == self.step)
        });
        if self.seen.is_none() {
            if at_step {
                self.seen = Some(now);
            }
            return;
        }
        if self.seen.is_some_and(|seen| now < seen + self.delay) {
            return;
        }
        let target = if self.leader {
            record.leader()
        } else {
            Some(JOINER)
        };
        let what = if self.leader { "leader" } else { "joiner" };
        if let Some(node) = target
            && faults.crash_now(
                sim,
                node,
                self.down,
                &format!("the {what} in the add's {:?} step", self.step),
            )
        {
            self.done = true;
        } else if !at_step {
            // The step passed while another crash was on: no crash this run.
            self.done = true;
        }
    }
}

/// Which nodes crashed (indexes into [`NODES`]), shared by the fault generator and the
/// clients.
pub(crate) type Restarted = Arc<Mutex<[bool; NODES.len()]>>;

/// The name of key `i`.
fn key_name(i: u16) -> String {
    format!("k{i:02}")
}

/// One client: `SET` (a unique value) or `GET` a random key at a random node, until `until`.
async fn run_client(
    client: u32,
    seed: u64,
    keys: u16,
    until: Duration,
    history: Arc<Mutex<Vec<Op>>>,
    restarted: Restarted,
    meta: Option<Arc<meta::Record>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seq = 0u64;
    while now() < until {
        // Any member that coordinates: a joiner from its change's start, a leaver until it
        // has left.
        let nodes = match &meta {
            Some(m) => serving(
                m,
                &[
                    MemberState::Normal,
                    MemberState::Joining,
                    MemberState::Leaving,
                ],
            ),
            None => NODES[..INITIAL].to_vec(),
        };
        let mut node = nodes[rng.random_range(0..nodes.len().max(1))];
        if restarted.lock()[NODES.iter().position(|n| *n == node).unwrap_or(0)] {
            node = NODES[0];
        }
        let key = rng.random_range(0..keys);
        let set = rng.random_bool(0.5);
        let (kind, value, line) = if set {
            seq += 1;
            let value = format!("c{client}-{seq}");
            let line = format!("SET {} {value}", key_name(key));
            (Kind::Set, Some(value), line)
        } else {
            (Kind::Get, None, format!("GET {}", key_name(key)))
        };
        let invoke = now();
        let answer = call(node, line, OP_TIMEOUT).await;
        let complete = now();
        let mut version = None;
        let (outcome, value) = match (kind, answer) {
            (_, Answer::NotSent) => (Outcome::Err, value),
            (_, Answer::Lost) => (Outcome::Unknown, value),
            (Kind::Set, Answer::Reply(Reply::Ok(v))) => {
                version = v;
                (Outcome::Ok, value)
            }
            (Kind::Get, Answer::Reply(Reply::Val(v))) => (Outcome::Ok, Some(v)),
            (Kind::Get, Answer::Reply(Reply::Nil)) => (Outcome::Ok, None),
            (_, Answer::Reply(_)) => (Outcome::Err, value),
        };
        history.lock().push(Op {
            client,
            node: node.to_string(),
            version,
            kind,
            key,
            value,
            invoke,
            complete,
            outcome,
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..50))).await;
    }
}

/// How a request ended.
#[derive(Debug)]
enum Answer {
    /// Not connected: the request never left.
    NotSent,
    /// Sent, and no answer (in time).
    Lost,
    /// Answered.
    Reply(Reply),
}

/// Sends `line` to `node`'s client port, waiting up to `timeout`.
async fn call(node: &str, line: String, timeout: Duration) -> Answer {
    let addr = SocketAddr::new(turmoil::lookup(node), CLIENT_PORT);
    let connect = tokio::time::timeout(timeout, turmoil::net::TcpStream::connect(addr));
    let stream = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) | Err(_) => return Answer::NotSent,
    };
    let exchange = async {
        let (rd, mut wr) = stream.into_split();
        wr.write_all(format!("{line}\n").as_bytes()).await?;
        let mut reply = String::new();
        let mut rd = BufReader::new(tokio::io::AsyncReadExt::take(rd, proto::MAX_LINE as u64));
        if rd.read_line(&mut reply).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        Ok::<_, std::io::Error>(Reply::parse(&reply))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(reply)) => Answer::Reply(reply),
        Ok(Err(_)) | Err(_) => Answer::Lost,
    }
}
