//! The simulation's view of the metadata: each node's handle on its own kv-meta raft
//! ([`Meta`]), the record the run keeps of what every node applied and installed
//! ([`Record`], outside the hosts so a crash keeps it), property 4 over that record
//! ([`agreement`]), and the routing each state decides ([`topology_of`]).
//!
//! The metadata is the real kv-meta `MetaRaft` on every node host (`crate::raft`): a command
//! is proposed through the node's raft, forwarded to the leader as a node process does, and
//! committed by a majority of the voters over the simulated kv-net; each node learns of the
//! result from its own `MetaWatch`, when its raft applies it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kv_cluster::{RingMember, Topology};
use kv_meta::{ClusterMeta, Command, MetaRaft, MetaResponse, Step};
use kv_ring::NodeId;
use parking_lot::Mutex;

use crate::check::{Property, Violation};

/// One node's handle on the metadata: its raft (a proposal goes to the leader from here) and
/// the run's [`Record`].
#[derive(Clone)]
pub(crate) struct Meta {
    pub(crate) raft: MetaRaft,
    pub(crate) record: Arc<Record>,
}

impl Meta {
    /// The state this node has applied.
    pub(crate) fn snapshot(&self) -> ClusterMeta {
        self.raft.watch().borrow().meta.clone()
    }

    /// `f` of the state this node has applied, without copying it.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&ClusterMeta) -> T) -> T {
        f(&self.raft.watch().borrow().meta)
    }

    /// Proposes `cmd` through this node's raft (to the leader, wherever it is) and waits for
    /// it to commit: the state machine's answer, or `None` if no leader committed it within
    /// kv-meta's forwarding window (an election, a partition, a crashed leader: the caller
    /// tries again on a later tick, from what is then applied).
    pub(crate) async fn propose(&self, cmd: Command) -> Option<MetaResponse> {
        let (log_id, answer) = self.raft.propose(cmd.clone()).await.ok()?;
        self.record.step(log_id.index, &cmd, &answer);
        Some(answer)
    }
}

/// What the run keeps of the metadata, shared by every host and kept across their crashes:
/// the routing steps committed, each node's latest applied state, and every topology each
/// node installed (property 4).
#[derive(Debug, Default)]
pub(crate) struct Record {
    inner: Mutex<RecordInner>,
}

#[derive(Debug, Default)]
struct RecordInner {
    /// The routing steps committed, by log index (a step is recorded by whoever proposed
    /// it; keyed by index so that the order is raft's).
    steps: BTreeMap<u64, String>,
    /// Lines the harness adds (a plan refused).
    notes: Vec<String>,
    /// Each node's latest applied state: its last log index and the state.
    applied: BTreeMap<&'static str, (u64, ClusterMeta)>,
    /// Every install: node, the node's start number, epoch, a fingerprint of the routing.
    installs: Vec<Install>,
    /// Every state's invariant breach, if any (a kv-meta defect if not empty).
    broken: Vec<String>,
    /// The node that last saw itself lead the raft (the fault generator's leader).
    leader: Option<&'static str>,
}

/// One topology a node installed.
#[derive(Debug, Clone)]
pub(crate) struct Install {
    pub(crate) node: &'static str,
    /// Which start of the node's process (its installs increase within one).
    pub(crate) start: u32,
    pub(crate) epoch: u64,
    /// A hash of the routing (read ring, extra write ring, mid), equal for equal routings.
    pub(crate) ring: u64,
    pub(crate) at: Duration,
}

impl Record {
    /// Notes a routing command the state machine refused (acks and progress are not: a
    /// stale one is refused by design).
    fn step(&self, index: u64, cmd: &Command, answer: &MetaResponse) {
        if std::env::var_os("SIM_META_DEBUG").is_some() {
            eprintln!("{:?} #{index} {cmd:?} -> {answer:?}", crate::now());
        }
        if matches!(cmd, Command::Ack { .. } | Command::Progress { .. }) {
            return;
        }
        if let MetaResponse::Refused(e) = answer {
            let line = format!(
                "{:?} #{index} refused {}: {e}",
                crate::now(),
                command_name(cmd)
            );
            self.inner.lock().notes.push(line);
        }
    }

    /// Adds `line` to the log (what the driver could not do).
    pub(crate) fn note(&self, line: String) {
        self.inner.lock().notes.push(line);
    }

    /// Notes that `node` applied `meta` up to log `index` (a copy is kept when the index is
    /// new for the node); logs the routing step and checks the state's invariants when the
    /// index is new to the record and the state took a routing step.
    pub(crate) fn applied(&self, node: &'static str, index: u64, meta: &ClusterMeta) {
        let mut inner = self.inner.lock();
        let latest = inner.applied.values().max_by_key(|(i, _)| *i);
        let new_step = latest.is_none_or(|(i, _)| *i < index);
        if new_step {
            // The first node to apply a state logs the routing steps it took (raft's order:
            // every later state extends it).
            let line = latest.and_then(|(_, before)| transition(before, meta));
            // A check rebuilds the rings: once per routing step (acks and progress come by
            // the thousand), and on the final state (`broken`).
            if let Some(line) = line {
                let at = format!("{:?} #{index} epoch {}: {line}", crate::now(), meta.epoch);
                inner.steps.insert(index, at);
                if let Err(e) = meta.check_invariants() {
                    inner
                        .broken
                        .push(format!("{node} at #{index} (epoch {}): {e}", meta.epoch));
                }
            }
        }
        let keep = inner.applied.get(node).is_none_or(|(i, _)| *i < index);
        if keep {
            inner.applied.insert(node, (index, meta.clone()));
        }
    }

    /// Notes that `node` sees itself lead the raft.
    pub(crate) fn set_leader(&self, node: &'static str) {
        self.inner.lock().leader = Some(node);
    }

    /// The node that last saw itself lead the raft.
    pub(crate) fn leader(&self) -> Option<&'static str> {
        self.inner.lock().leader
    }

    /// Notes that `node` installed `topology`.
    pub(crate) fn installed(&self, node: &'static str, start: u32, topology: &Topology) {
        let ring = fingerprint(topology);
        self.inner.lock().installs.push(Install {
            node,
            start,
            epoch: topology.epoch,
            ring,
            at: crate::now(),
        });
    }

    /// The most advanced state any node applied (what an operator asking the cluster
    /// would learn; the clients and the admin pick nodes by it).
    pub(crate) fn latest(&self) -> Option<ClusterMeta> {
        let inner = self.inner.lock();
        inner
            .applied
            .values()
            .max_by_key(|(i, _)| *i)
            .map(|(_, m)| m.clone())
    }

    /// `f` of [`latest`](Record::latest), without copying it.
    pub(crate) fn read_latest<T>(&self, f: impl FnOnce(Option<&ClusterMeta>) -> T) -> T {
        let inner = self.inner.lock();
        f(inner
            .applied
            .values()
            .max_by_key(|(i, _)| *i)
            .map(|(_, m)| m))
    }

    /// Whether every node in `nodes` applied the same last log index.
    pub(crate) fn all_at_same_index(&self, nodes: &[&str]) -> bool {
        let inner = self.inner.lock();
        let mut indexes = nodes.iter().map(|n| inner.applied.get(n).map(|(i, _)| *i));
        let first = indexes.next().flatten();
        first.is_some() && indexes.all(|i| i == first)
    }

    /// The routing steps committed (in log order) and the harness's notes.
    pub(crate) fn log(&self) -> Vec<String> {
        let inner = self.inner.lock();
        let mut log: Vec<String> = inner.steps.values().cloned().collect();
        log.extend(inner.notes.iter().cloned());
        log
    }

    /// Invariants of the state machine found broken in an applied state, or in the latest
    /// (empty: none).
    pub(crate) fn broken(&self) -> Vec<String> {
        let inner = self.inner.lock();
        let mut broken = inner.broken.clone();
        if let Some((i, m)) = inner.applied.values().max_by_key(|(i, _)| *i)
            && let Err(e) = m.check_invariants()
        {
            broken.push(format!("at the end (#{i}): {e}"));
        }
        broken
    }

    /// Property 4 over the record, for the `nodes` that ran.
    pub(crate) fn agreement(&self, nodes: &[&'static str]) -> Vec<Violation> {
        let inner = self.inner.lock();
        agreement(&inner.applied, &inner.installs, nodes)
    }
}

/// The routing steps from `before` to `after`, for the log: a change started, its step
/// taken, or its end (several in one line when one applied batch holds several).
fn transition(before: &ClusterMeta, after: &ClusterMeta) -> Option<String> {
    let mut steps = Vec::new();
    match (&before.change, &after.change) {
        (Some(b), Some(a)) if b.id == a.id => {
            if b.step != a.step {
                steps.push(step_name(a.step).to_string());
            }
        }
        (b, a) => {
            if b.is_some() {
                steps.push("finish".to_string());
            }
            if let Some(a) = a {
                steps.push(format!("start {} {}", a.kind, a.node));
                if a.step != Step::Pending {
                    steps.push(step_name(a.step).to_string());
                }
            }
        }
    }
    (!steps.is_empty()).then(|| steps.join(", "))
}

/// The command that takes a change to `step`, as the log names it.
fn step_name(step: Step) -> &'static str {
    match step {
        Step::Pending => "pending",
        Step::Streaming => "begin-streaming",
        Step::Mid => "enter-mid",
        Step::Final => "enter-final",
        Step::Aborting => "abort",
    }
}

/// A hash of `t`'s routing: which members (with their tokens) read and write, and the step.
fn fingerprint(t: &Topology) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut ring = |members: &[RingMember]| {
        for m in members {
            h.update(m.id.as_str().as_bytes());
            for token in &m.tokens {
                h.update(&token.to_le_bytes());
            }
            h.update(&m.weight.to_le_bytes());
            h.update(b";");
        }
        h.update(b"|");
    };
    ring(&t.read);
    ring(t.extra_write.as_deref().unwrap_or(&[]));
    h.update(&[u8::from(t.mid)]);
    h.digest()
}

/// Property 4, metadata agreement (membership.md §4.5): every node in `nodes` applied the
/// same `ClusterMeta` at the end; each node's installed epochs increase within one start of
/// its process (a restart may install again the epoch it had, never an older one); no two
/// installs of one epoch, by any nodes, routed differently.
pub(crate) fn agreement(
    applied: &BTreeMap<&'static str, (u64, ClusterMeta)>,
    installs: &[Install],
    nodes: &[&'static str],
) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut violation = |message: String| {
        found.push(Violation {
            property: Property::MetadataAgreement,
            key: 0,
            message,
            ops: Vec::new(),
        });
    };
    let mut reference: Option<(&str, u64, &ClusterMeta)> = None;
    for node in nodes {
        match (applied.get(node), reference) {
            (None, _) => violation(format!("{node} applied no metadata")),
            (Some((i, m)), None) => reference = Some((node, *i, m)),
            (Some((i, m)), Some((first, fi, fm))) => {
                if m != fm {
                    violation(format!(
                        "{node} ended at #{i} (epoch {}), {first} at #{fi} (epoch {}): the applied \
                         states differ",
                        m.epoch, fm.epoch
                    ));
                }
            }
        }
    }
    let mut last: BTreeMap<&str, (u32, u64)> = BTreeMap::new();
    let mut rings: BTreeMap<u64, (&str, u64, Duration)> = BTreeMap::new();
    for i in installs {
        if let Some(&(start, epoch)) = last.get(i.node) {
            let backwards = if start == i.start {
                i.epoch <= epoch
            } else {
                i.epoch < epoch
            };
            if backwards {
                violation(format!(
                    "{} installed epoch {} at {:?} after epoch {epoch}",
                    i.node, i.epoch, i.at
                ));
            }
        }
        last.insert(i.node, (i.start, i.epoch));
        match rings.get(&i.epoch) {
            Some(&(other, ring, at)) if ring != i.ring => violation(format!(
                "epoch {}: {} installed a routing at {:?} that differs from {other}'s at {at:?}",
                i.epoch, i.node, i.at
            )),
            Some(_) => {}
            None => {
                rings.insert(i.epoch, (i.node, i.ring, i.at));
            }
        }
    }
    found
}

/// A command's name for the log.
fn command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::Bootstrap { .. } | Command::BootstrapAt { .. } => "bootstrap",
        Command::Register { .. } => "register",
        Command::StartChange { .. } => "start",
        Command::BeginStreaming { .. } => "begin-streaming",
        Command::Progress { .. } => "progress",
        Command::TaskSource { .. } => "task-source",
        Command::EnterMid { .. } => "enter-mid",
        Command::EnterFinal { .. } => "enter-final",
        Command::FinishChange { .. } => "finish",
        Command::Abort { .. } => "abort",
        Command::FinishAbort { .. } => "finish-abort",
        Command::SetStreamRate { .. } => "stream-rate",
        Command::Ack { .. } => "ack",
        Command::Deregister { .. } => "deregister",
    }
}

/// kv-meta's ring members as kv-cluster's.
fn ring_members(members: &[kv_meta::RingMember]) -> Result<Vec<RingMember>, kv_ring::Error> {
    members
        .iter()
        .map(|m| {
            Ok(RingMember {
                id: NodeId::new(&m.id)?,
                weight: m.weight,
                tokens: m.tokens.clone(),
            })
        })
        .collect()
}

/// The routing `meta` decides, as kv-cli's follower builds it (`node_meta.rs`,
/// `topology_of`; membership.md §3.1): the ring in force when stable or `Final`; old for
/// reads and new for writes too in `Pending`/`Streaming`; new for reads and old for writes
/// too in `Mid`; back on the old ring while `Aborting`.
pub(crate) fn topology_of(meta: &ClusterMeta) -> Result<Option<Topology>, kv_ring::Error> {
    if !meta.is_bootstrapped() {
        return Ok(None);
    }
    let (read, extra_write, mid) = match &meta.change {
        Some(c) if matches!(c.step, Step::Pending | Step::Streaming) => (
            ring_members(&c.from_members)?,
            Some(ring_members(&c.to_members)?),
            false,
        ),
        Some(c) if c.step == Step::Mid => (
            ring_members(&c.to_members)?,
            Some(ring_members(&c.from_members)?),
            true,
        ),
        Some(c) if c.step == Step::Aborting => (ring_members(&c.from_members)?, None, false),
        _ => (ring_members(&meta.ring_members())?, None, false),
    };
    let mut slots = std::collections::BTreeMap::new();
    for (id, m) in &meta.members {
        slots.insert(NodeId::new(id)?, m.slot);
    }
    Ok(Some(Topology {
        epoch: meta.epoch,
        read,
        extra_write,
        mid,
        slots,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kv_meta::{ChangeKind, NewMember};

    /// A state machine that numbers its entries, as raft does.
    struct Machine(ClusterMeta, u64);

    impl Machine {
        fn propose(&mut self, cmd: &Command) -> MetaResponse {
            self.1 += 1;
            self.0.apply(self.1, cmd)
        }
        fn snapshot(&self) -> ClusterMeta {
            self.0.clone()
        }
    }

    /// Three members of a real ring, with `node4` registered and its add started.
    fn adding() -> (Machine, u64) {
        let ring = kv_ring::Ring::with_nodes(
            kv_ring::RingOptions::default().placement(kv_ring::Placement::Balanced {
                replication_factor: 3,
            }),
            ["node1", "node2", "node3"],
        )
        .unwrap();
        let members = ["node1", "node2", "node3"]
            .iter()
            .map(|id| NewMember {
                id: id.to_string(),
                cluster_addr: format!("{id}:1"),
                client_addr: format!("{id}:2"),
                weight: 1.0,
                tokens: ring.tokens_of(id).unwrap().to_vec(),
            })
            .collect();
        let boot = Command::BootstrapAt {
            uuid: 1,
            name: "t".into(),
            rf: 3,
            vnodes: kv_ring::DEFAULT_VNODES,
            members,
            epoch: 5,
        };
        let mut meta = Machine(ClusterMeta::default(), 0);
        assert!(matches!(meta.propose(&boot), MetaResponse::Ok { .. }));
        let register = Command::Register {
            id: "node4".into(),
            cluster_addr: "node4:1".into(),
            client_addr: "node4:2".into(),
        };
        assert!(matches!(meta.propose(&register), MetaResponse::Ok { .. }));
        let plan = kv_meta::plan_change(&meta.snapshot(), ChangeKind::Add, "node4", 0).unwrap();
        assert_eq!(meta.propose(&plan), MetaResponse::Ok { epoch: 6 });
        let id = meta.0.change.as_ref().map(|c| c.id).unwrap();
        (meta, id)
    }

    fn ids(members: &[RingMember]) -> Vec<String> {
        members.iter().map(|m| m.id.to_string()).collect()
    }

    #[test]
    fn each_step_routes_as_kv_cli_does() {
        let (mut meta, change) = adding();
        let t = topology_of(&meta.snapshot()).unwrap().unwrap();
        assert_eq!(t.epoch, 6);
        assert_eq!(ids(&t.read), ["node1", "node2", "node3"]);
        assert_eq!(
            ids(t.extra_write.as_ref().unwrap()),
            ["node1", "node2", "node3", "node4"]
        );
        assert!(!t.mid);
        // B1 is the driver's business; the state machine takes the step regardless.
        let _ = meta.propose(&Command::BeginStreaming { change });
        // Every task finished, as the destination would report it.
        let tasks = meta.0.change.clone().unwrap().tasks;
        for task in &tasks {
            for (i, &(_, end)) in task.ranges.iter().enumerate() {
                let _ = meta.propose(&Command::Progress {
                    change,
                    task: task.id,
                    range: i as u32,
                    done_through: end,
                    keys: 0,
                    bytes: 0,
                });
            }
        }
        assert_eq!(
            meta.propose(&Command::EnterMid { change }),
            MetaResponse::Ok { epoch: 7 }
        );
        let t = topology_of(&meta.snapshot()).unwrap().unwrap();
        assert_eq!(ids(&t.read), ["node1", "node2", "node3", "node4"]);
        assert_eq!(
            ids(t.extra_write.as_ref().unwrap()),
            ["node1", "node2", "node3"]
        );
        assert!(t.mid);
        let _ = meta.propose(&Command::EnterFinal { change });
        let _ = meta.propose(&Command::FinishChange { change });
        let t = topology_of(&meta.snapshot()).unwrap().unwrap();
        assert_eq!((t.epoch, t.extra_write.is_none()), (8, true));
        assert_eq!(ids(&t.read), ["node1", "node2", "node3", "node4"]);
        assert!(meta.0.check_invariants().is_ok());
    }

    fn install(node: &'static str, start: u32, epoch: u64, ring: u64) -> Install {
        let at = Duration::from_millis(epoch);
        Install {
            node,
            start,
            epoch,
            ring,
            at,
        }
    }

    #[test]
    fn agreement_holds_and_bites() {
        let (meta, _) = adding();
        let state = meta.snapshot();
        let mut applied = BTreeMap::new();
        applied.insert("node1", (9, state.clone()));
        applied.insert("node2", (9, state.clone()));
        let good = vec![
            install("node1", 1, 5, 50),
            install("node2", 1, 5, 50),
            install("node1", 1, 6, 60),
            // A restart installs again the epoch it had.
            install("node1", 2, 6, 60),
        ];
        assert!(agreement(&applied, &good, &["node1", "node2"]).is_empty());
        // Another ring at epoch 6.
        let mut bad = good.clone();
        bad.push(install("node2", 1, 6, 61));
        let found = agreement(&applied, &bad, &["node1", "node2"]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].property, Property::MetadataAgreement);
        // An epoch going back within one start.
        let mut bad = good.clone();
        bad.push(install("node1", 2, 5, 50));
        assert_eq!(agreement(&applied, &bad, &["node1", "node2"]).len(), 1);
        // A different applied state, and a node that applied nothing.
        let mut other = state.clone();
        other.epoch += 1;
        applied.insert("node2", (9, other));
        assert_eq!(
            agreement(&applied, &good, &["node1", "node2", "node3"]).len(),
            2
        );
    }
}
