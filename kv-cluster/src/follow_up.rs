//! A write's follow-up: hints for the replicas that fail or time out after the write's
//! consistency level was met.
//!
//! A write returns once `W` replicas acknowledged it; replicas in other processes may still
//! be outstanding then. As Cassandra's write handler does, the write is not forgotten at
//! that point: what is still outstanding is handed, with the [`Collector`] its answers come
//! through, to a task on the caller's tokio runtime ([`FollowUp::spawn`]), which waits for
//! those answers until the write's deadline (`replica_timeout` from the write's start):
//!
//! - a success keeps nothing;
//! - a transport failure ([`is_transport`]: the node restarted, the connection broke, the
//!   replica's own request timeout), a dropped answer, or a failure of a replica the
//!   current routing reports down keeps a hint, as the write path does before it returns;
//! - a refusal of the write's epoch as stale keeps a hint too: the write was acknowledged
//!   at its epoch and is not retried, and no later write carries its value, so without one
//!   the replica lacks it until repair (issue 23: a write acknowledged at `Mid` whose
//!   replica in the new ring already passed the barrier into `Final` was on two of its
//!   three replicas of the final ring). The hint is handed off on the routing of its
//!   delivery, to the key's replicas then if the target no longer is one (`hints.rs`);
//!   other refusals do not (as there: the replica answered, and repair restores it);
//! - a replica still silent at the deadline gets a hint.
//!
//! The caller is not delayed: the task runs after the write returned. Nothing is spawned or
//! allocated when every target answered before the write returned (in-process replicas
//! answer inside `start_*`). A hint store may sync to disk, so on a multi-threaded runtime
//! the store is written on its blocking pool (`spawn_blocking`), never on a worker; on a
//! current-thread runtime (kv-sim's hosts, tests) it is written inline, as the write path
//! itself does, so that a simulation replays exactly.
//!
//! Without a runtime (the blocking API called from a plain thread), the outstanding answers
//! are abandoned, as before this follow-up existed: read repair and anti-entropy restore a
//! replica that missed the write. The task holds the cluster's hint stores and routing
//! table by `Weak` references only: a cluster closed meanwhile keeps nothing open, and the
//! hints the task would have kept are not kept (anti-entropy again).
//!
//! The task reads the current routing when it keeps a hint (to choose its holder), and does
//! not hold a routing snapshot while it waits, so it never delays a routing install's drain.
//! It waits with tokio's timer: the runtime needs its time driver (`enable_time`, as
//! kv-server's, the node process's and turmoil's hosts have); on one without, the task
//! panics at its first wait (tokio contains it) and the answers are abandoned.
//!
//! Lock order: the task takes no coordinator lock; a hint store is opened under
//! `hints.open`, a leaf (`docs/design.md`, *Concurrency and lock order*).
//!
//! A hint kept while a handoff of the same `(holder, target)` store is between its export
//! and the store's deletion is deleted with it (as one a failing write keeps before it
//! returns would be): the window is the handoff's, and repair restores such a write.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Instant;

use kv_node::{Version, Write};
use kv_ring::{NodeId, token};
use smallvec::SmallVec;
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::backend::Backend;
use crate::cluster::Cluster;
use crate::error::Error;
use crate::hints::{HintStores, hint_holder};
use crate::pending::Collector;
use crate::routing::RoutingTable;
use crate::write::is_transport;

/// A write's bytes, owned by the follow-up.
#[derive(Debug)]
pub(crate) struct OwnedWrite {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    version: Version,
    expires: Option<u64>,
}

impl OwnedWrite {
    /// A copy of `w`.
    pub(crate) fn of(w: &Write<'_>) -> OwnedWrite {
        OwnedWrite {
            key: w.key.to_vec(),
            value: w.value.map(<[u8]>::to_vec),
            version: w.version,
            expires: w.expires,
        }
    }

    fn write(&self) -> Write<'_> {
        Write {
            key: &self.key,
            value: self.value.as_deref(),
            version: self.version,
            expires: self.expires,
        }
    }
}

/// One target still outstanding when the write returned.
#[derive(Debug)]
pub(crate) struct Outstanding {
    /// The number its answer comes back with through the collector.
    pub(crate) index: usize,
    pub(crate) target: NodeId,
    /// The writes it was sent, as indexes into [`FollowUp`]'s writes.
    pub(crate) writes: SmallVec<[usize; 1]>,
}

/// What keeping a hint needs, shared with the blocking pool.
struct Keeper {
    hints: Weak<HintStores>,
    routing: Weak<RoutingTable>,
    root: PathBuf,
    backend: Arc<dyn Backend>,
    own_hints: Option<NodeId>,
    rf: usize,
    writes: Vec<OwnedWrite>,
}

impl Keeper {
    /// Keeps `writes` (indexes) as hints for `target`, on the holder the current routing
    /// picks; returns how many were kept. A hint that cannot be stored is not fatal:
    /// anti-entropy repairs what it misses.
    fn keep(&self, target: &NodeId, writes: &[usize]) -> usize {
        let Some(routing) = self.routing.upgrade().map(|t| t.load()) else {
            return 0;
        };
        let holders: SmallVec<[(usize, NodeId); 1]> = writes
            .iter()
            .filter_map(|&w| {
                let t = token(&self.writes[w].key);
                hint_holder(&routing, self.own_hints.as_ref(), self.rf, target, t).map(|h| (w, h))
            })
            .collect();
        // Not held while the stores are written: an install's drain waits for no hint.
        drop(routing);
        let Some(hints) = self.hints.upgrade() else {
            return 0;
        };
        holders
            .iter()
            .filter(|(w, holder)| {
                hints
                    .store(&self.root, self.backend.as_ref(), holder, target)
                    .and_then(|store| store.apply(0, self.writes[*w].write()))
                    .is_ok()
            })
            .count()
    }

    /// Whether the current routing reports `target` down (or routes it no more).
    fn is_down(&self, target: &NodeId) -> bool {
        self.routing
            .upgrade()
            .is_some_and(|t| t.load().node(target).is_none_or(|n| n.is_down()))
    }
}

/// The part of a write still outstanding once its level was met.
pub(crate) struct FollowUp<T> {
    collector: Collector<T>,
    outstanding: SmallVec<[Outstanding; 2]>,
    keeper: Keeper,
    /// When the write's deadline passes (`replica_timeout` from its start).
    deadline: Instant,
}

impl<T: Send + 'static> FollowUp<T> {
    /// Follows `outstanding` up on the caller's tokio runtime, if there is one (else the
    /// answers are abandoned, see the module doc). `collector` is the write's, whose
    /// tickets were all handed out; `writes` are the write's writes, which `outstanding`
    /// index.
    pub(crate) fn spawn(
        cluster: &Cluster,
        collector: Collector<T>,
        outstanding: SmallVec<[Outstanding; 2]>,
        writes: Vec<OwnedWrite>,
        deadline: Instant,
    ) {
        let Ok(runtime) = Handle::try_current() else {
            return;
        };
        let follow_up = FollowUp {
            collector,
            outstanding,
            keeper: Keeper {
                hints: Arc::downgrade(&cluster.hints),
                routing: Arc::downgrade(&cluster.routing),
                root: cluster.dir.clone(),
                backend: Arc::clone(&cluster.opts.backend),
                own_hints: cluster.opts.own_hints.clone(),
                rf: cluster.rf,
                writes,
            },
            deadline,
        };
        let inline = runtime.runtime_flavor() == RuntimeFlavor::CurrentThread;
        drop(runtime.spawn(follow_up.run(inline)));
    }

    /// Waits for the outstanding answers until the deadline, keeping hints as the module
    /// doc says; `inline`: the hint stores are written on the task's own thread.
    async fn run(self, inline: bool) {
        let FollowUp {
            collector,
            mut outstanding,
            keeper,
            deadline,
        } = self;
        let keeper = Arc::new(keeper);
        let left = deadline.saturating_duration_since(Instant::now());
        let until = tokio::time::Instant::now() + left;
        let mut missed: SmallVec<[Outstanding; 2]> = SmallVec::new();
        loop {
            match tokio::time::timeout_at(until, collector.wait_answer()).await {
                Ok(Some((index, answer))) => {
                    let Some(at) = outstanding.iter().position(|o| o.index == index) else {
                        continue;
                    };
                    let o = outstanding.swap_remove(at);
                    if let Err(e) = answer
                        && (matches!(e, Error::StaleEpoch { .. })
                            || is_transport(&e)
                            || keeper.is_down(&o.target))
                    {
                        missed.push(o);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // Still silent at the deadline: each gets a hint.
                    missed.append(&mut outstanding);
                    break;
                }
            }
            if !missed.is_empty() {
                keep(&keeper, std::mem::take(&mut missed), inline).await;
            }
        }
        if !missed.is_empty() {
            keep(&keeper, missed, inline).await;
        }
    }
}

/// Keeps the hints of `missed` with `keeper`: inline, or on the runtime's blocking pool.
async fn keep(keeper: &Arc<Keeper>, missed: SmallVec<[Outstanding; 2]>, inline: bool) {
    let work = {
        let keeper = Arc::clone(keeper);
        move || {
            for o in &missed {
                keeper.keep(&o.target, &o.writes);
            }
        }
    };
    if inline {
        work();
    } else {
        // A join error (the runtime shutting down) loses the hints: anti-entropy then.
        let _ = tokio::task::spawn_blocking(work).await;
    }
}
