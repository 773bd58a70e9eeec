//! The simulation's metadata service: one kv-meta [`ClusterMeta`] shared by every host, an
//! idealized consensus (`docs/membership.md` §4; the real kv-meta raft is not run here).
//!
//! Every command goes through the real state machine ([`ClusterMeta::apply`], with its
//! refusals and invariants) at the next log index, atomically: what a committed raft entry
//! is, without elections, lost proposals or a leader to crash. What is simulated is
//! *when* each node learns of it: a node's follower ([`crate::node`]) looks at the service
//! every 20–200 ms (drawn per host from the seed), so nodes install each epoch at different
//! times, and a crashed node learns nothing until it is bounced. The service itself is
//! reachable by every live host (partitions do not cut it off).

use std::fmt::Write as _;
use std::sync::Arc;

use kv_cluster::{RingMember, Topology};
use kv_meta::{ClusterMeta, Command, MetaResponse, Step};
use kv_ring::NodeId;
use parking_lot::Mutex;

/// The shared metadata, as a handle every host and the driver hold.
pub(crate) type Meta = Arc<MetaService>;

/// The state machine and its log.
#[derive(Debug)]
pub(crate) struct MetaService {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    meta: ClusterMeta,
    /// The last log index applied.
    index: u64,
    /// The routing steps taken, with their simulated times (part of the trace).
    log: Vec<String>,
    /// Every state's invariant breach, if any (a kv-meta defect if not empty).
    broken: Vec<String>,
}

impl MetaService {
    /// The service after `bootstrap` (a `BootstrapAt` of the static ring).
    pub(crate) fn new(bootstrap: &Command) -> Result<Meta, String> {
        let mut meta = ClusterMeta::default();
        match meta.apply(1, bootstrap) {
            MetaResponse::Ok { .. } => {}
            MetaResponse::Refused(e) => return Err(e.to_string()),
        }
        Ok(Arc::new(MetaService {
            inner: Mutex::new(Inner {
                meta,
                index: 1,
                log: Vec::new(),
                broken: Vec::new(),
            }),
        }))
    }

    /// The applied state now.
    pub(crate) fn snapshot(&self) -> ClusterMeta {
        self.inner.lock().meta.clone()
    }

    /// Commits `cmd` at the next index; the state machine's answer.
    pub(crate) fn propose(&self, cmd: &Command) -> MetaResponse {
        let mut inner = self.inner.lock();
        inner.index += 1;
        let index = inner.index;
        let before = inner.meta.epoch;
        let answer = inner.meta.apply(index, cmd);
        let routing_step = !matches!(cmd, Command::Ack { .. } | Command::Progress { .. });
        if std::env::var_os("SIM_META_DEBUG").is_some() {
            eprintln!("{:?} #{index} {cmd:?}", crate::now());
        }
        if routing_step || inner.meta.epoch != before {
            let mut line = format!("{:?} #{index} epoch {}: ", crate::now(), inner.meta.epoch);
            match (&answer, cmd) {
                (MetaResponse::Refused(e), _) => {
                    let _ = write!(line, "refused {}: {e}", command_name(cmd));
                }
                (_, Command::StartChange { kind, node, .. }) => {
                    let _ = write!(line, "start {kind} {node}");
                }
                _ => line.push_str(command_name(cmd)),
            }
            inner.log.push(line);
        }
        // Progress and acknowledgements come by the thousand (one per range of a task) and
        // a check rebuilds the rings: those are covered by the next step's check and the
        // final one (`broken`).
        if routing_step && let Err(e) = inner.meta.check_invariants() {
            let e = format!("after #{index} ({}): {e}", command_name(cmd));
            inner.broken.push(e);
        }
        answer
    }

    /// `f` of the applied state now, without copying it.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&ClusterMeta) -> T) -> T {
        f(&self.inner.lock().meta)
    }

    /// Adds `line` to the log (what the driver could not do).
    pub(crate) fn note(&self, line: String) {
        self.inner.lock().log.push(line);
    }

    /// The routing steps taken, in order.
    pub(crate) fn log(&self) -> Vec<String> {
        self.inner.lock().log.clone()
    }

    /// Invariants of the state machine found broken after a routing step or now, at the
    /// end (empty: none).
    pub(crate) fn broken(&self) -> Vec<String> {
        let inner = self.inner.lock();
        let mut broken = inner.broken.clone();
        if let Err(e) = inner.meta.check_invariants() {
            broken.push(format!("at the end (#{}): {e}", inner.index));
        }
        broken
    }
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
