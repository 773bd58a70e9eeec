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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kv_meta::{ChangeKind, NewMember};

    /// The service over three members of a real ring, with `node4` registered and its add
    /// started.
    fn adding() -> (Meta, u64) {
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
        let meta = MetaService::new(&boot).unwrap();
        let register = Command::Register {
            id: "node4".into(),
            cluster_addr: "node4:1".into(),
            client_addr: "node4:2".into(),
        };
        assert!(matches!(meta.propose(&register), MetaResponse::Ok { .. }));
        let plan = kv_meta::plan_change(&meta.snapshot(), ChangeKind::Add, "node4", 0).unwrap();
        assert_eq!(meta.propose(&plan), MetaResponse::Ok { epoch: 6 });
        let id = meta.read(|m| m.change.as_ref().map(|c| c.id)).unwrap();
        (meta, id)
    }

    fn ids(members: &[RingMember]) -> Vec<String> {
        members.iter().map(|m| m.id.to_string()).collect()
    }

    #[test]
    fn each_step_routes_as_kv_cli_does() {
        let (meta, change) = adding();
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
        let tasks = meta.read(|m| m.change.clone()).unwrap().tasks;
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
        assert!(meta.broken().is_empty(), "{:?}", meta.broken());
        // The log names each routing step, and no ack or progress.
        let log = meta.log();
        assert!(
            log.iter().any(|l| l.ends_with("start add node4")),
            "{log:?}"
        );
        assert!(log.iter().any(|l| l.ends_with("enter-mid")), "{log:?}");
        assert!(!log.iter().any(|l| l.contains("progress")), "{log:?}");
    }
}
