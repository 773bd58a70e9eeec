//! The routing snapshot client operations use: which ring(s), which node handles.
//!
//! Lock order: a stripe's `RwLock` is a leaf; `install` writes it under `admin` (`docs/design.md`,
//! *Concurrency and lock order*).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kv_ring::{NodeId, Ring};
use parking_lot::RwLock;

use crate::replica::Replica;

/// Node handles by id.
pub(crate) type NodeMap = HashMap<NodeId, Arc<dyn Replica>, foldhash::fast::RandomState>;

/// An immutable routing state. A client operation clones the `Arc` once and routes with that
/// snapshot from start to end, so it never mixes two rings.
///
/// - **Stable**: `pending` is `None`; reads and writes use `ring`.
/// - **Pending** (a change streaming): writes go to the replicas of `ring` *and* of `pending`
///   (the union), reads use `ring`, so they see every acknowledged write while the new
///   replicas fill up.
/// - **Mid** (an external topology's change, `docs/membership.md` §3.1): `ring` is the new
///   ring and `pending` the old one: reads use the new ring, writes still go to both. The
///   coordinator needs nothing new for it: "write the union, `W` of each set; read `ring`".
///
/// Every operation is tagged with [`epoch`](Routing::epoch).
#[derive(Debug, Clone)]
pub(crate) struct Routing {
    pub(crate) ring: Ring,
    pub(crate) pending: Option<Ring>,
    /// The epoch replica operations carry: `ring`'s own in process; the metadata epoch of an
    /// installed [`Topology`](crate::Topology) (which routes several steps of a change,
    /// each its own epoch, with the same two rings).
    pub(crate) epoch: u64,
    /// Whether `ring` is a change's new ring and `pending` its old one (the `Mid` step): only
    /// which nodes are shown joining or leaving depends on it, routing does not.
    pub(crate) mid: bool,
    pub(crate) nodes: NodeMap,
    /// `ring`'s preference lists resolved to handles, when no change is pending. Built by
    /// [`RoutingTable`] when the routing is installed (leave it `None` elsewhere).
    pub(crate) placement: Option<Arc<Placement>>,
}

/// A key's replica as routed: its id and its handle (`None`: no handle, an unknown node).
pub(crate) type Slot<'r> = (&'r NodeId, Option<&'r Arc<dyn Replica>>);

impl Routing {
    /// A routing without a resolved placement (see [`Routing::placement`]).
    /// Tagged with `ring`'s epoch (the in-process cluster's rule).
    pub(crate) fn new(ring: Ring, pending: Option<Ring>, nodes: NodeMap) -> Self {
        let epoch = ring.epoch();
        Routing::with_epoch(ring, pending, nodes, epoch)
    }

    /// Tagged with `epoch` (an external topology's metadata epoch).
    pub(crate) fn with_epoch(
        ring: Ring,
        pending: Option<Ring>,
        nodes: NodeMap,
        epoch: u64,
    ) -> Self {
        Routing {
            ring,
            pending,
            epoch,
            mid: false,
            nodes,
            placement: None,
        }
    }

    /// The epoch every replica operation routed by this snapshot carries.
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn node(&self, id: &NodeId) -> Option<&Arc<dyn Replica>> {
        self.nodes.get(id)
    }

    /// The `rf` replicas of `token` in `ring`, in preference order, with their handles.
    ///
    /// # Errors
    /// The ring's, for an invalid `rf`.
    #[inline]
    pub(crate) fn replicas(
        &self,
        token: u64,
        rf: usize,
    ) -> kv_ring::Result<smallvec::SmallVec<[Slot<'_>; 4]>> {
        if let Some(p) = &self.placement
            && p.rf == rf
        {
            return Ok(p.replicas(token));
        }
        Ok(self
            .ring
            .preference_list(token, rf)?
            .iter()
            .map(|id| (id, self.nodes.get(id)))
            .collect())
    }
}

/// Token-space slices in a [`Placement`]'s lookup table (4096: 16 KiB).
const BUCKET_BITS: u32 = 12;

/// `ring`'s preference list of every vnode, resolved once per routing to node handles: a
/// client operation finds its replicas with one binary search, without walking the ring or
/// hashing node ids (done per operation, both are about 6% of a quorum get).
#[derive(Debug)]
pub(crate) struct Placement {
    rf: usize,
    /// Each vnode's end token, ascending (a token belongs to the first end at or above it,
    /// wrapping to the first).
    ends: Vec<u64>,
    /// For each of `2^BUCKET_BITS` equal slices of the token space, the first vnode whose end
    /// is at or above the slice's start: a lookup starts there and steps past the few ends
    /// below its token (about vnodes / 2^BUCKET_BITS), instead of a binary search with a
    /// mispredicted branch per level.
    buckets: Vec<u32>,
    /// `rf` indices into `members` per vnode.
    replicas: Vec<u32>,
    members: Vec<(NodeId, Option<Arc<dyn Replica>>)>,
}

impl Placement {
    fn build(ring: &Ring, nodes: &NodeMap, rf: usize) -> kv_ring::Result<Placement> {
        let members: Vec<(NodeId, Option<Arc<dyn Replica>>)> = ring
            .nodes()
            .map(|id| (id.clone(), nodes.get(id).cloned()))
            .collect();
        let mut ends = Vec::with_capacity(ring.ranges().len());
        let mut replicas = Vec::with_capacity(ring.ranges().len() * rf);
        for v in ring.ranges() {
            ends.push(v.range.end);
            for id in ring.preference_list(v.range.end, rf)?.iter() {
                let at = members.iter().position(|(m, _)| m == id).unwrap_or(0);
                replicas.push(at as u32);
            }
        }
        let buckets = (0..1u64 << BUCKET_BITS)
            .map(|b| ends.partition_point(|&e| e < b << (64 - BUCKET_BITS)) as u32)
            .collect();
        Ok(Placement {
            rf,
            ends,
            buckets,
            replicas,
            members,
        })
    }

    /// The vnode `token` belongs to.
    #[inline]
    fn vnode(&self, token: u64) -> usize {
        let mut i = self.buckets[(token >> (64 - BUCKET_BITS)) as usize] as usize;
        while i < self.ends.len() && self.ends[i] < token {
            i += 1;
        }
        if i == self.ends.len() { 0 } else { i }
    }

    #[inline]
    fn replicas(&self, token: u64) -> smallvec::SmallVec<[Slot<'_>; 4]> {
        let i = self.vnode(token);
        self.replicas[i * self.rf..(i + 1) * self.rf]
            .iter()
            .map(|&m| {
                let (id, node) = &self.members[m as usize];
                (id, node.as_ref())
            })
            .collect()
    }
}

/// Copies of the routing snapshot kept in this many stripes.
const STRIPES: usize = 8;

/// The current routing, striped: each client thread loads its snapshot from its own stripe,
/// which holds its own `Arc` (a separate reference count) behind its own lock, on its own
/// cache line. Threads on different stripes then never write a shared cache line to route
/// an operation (one shared `Arc` costs about 10% of a get with two threads).
pub(crate) struct RoutingTable {
    stripes: Box<[Stripe]>,
    rf: usize,
}

#[repr(align(128))]
struct Stripe(RwLock<Arc<Routing>>);

impl RoutingTable {
    /// The table for a cluster with replication factor `rf`, routing with `routing`.
    pub(crate) fn new(routing: Routing, rf: usize) -> Self {
        let routing = resolved(routing, rf);
        RoutingTable {
            stripes: (0..STRIPES)
                .map(|_| Stripe(RwLock::new(Arc::new(routing.clone()))))
                .collect(),
            rf,
        }
    }

    /// This thread's snapshot of the current routing.
    #[inline]
    pub(crate) fn load(&self) -> Arc<Routing> {
        Arc::clone(&self.stripes[stripe()].0.read())
    }

    /// Installs `next` in every stripe, calls `installed` (every new operation now loads
    /// `next`), then waits until no operation uses a previous routing. Operations may mix old
    /// and new snapshots while this runs, as they would with one snapshot while the old one
    /// drains; once it returns, none uses the old one.
    ///
    /// `installed` runs before the drain because an operation waiting for this routing (a
    /// coordinator told by a replica that its epoch is stale, `epoch_watch.rs`) still holds
    /// its old snapshot: it must be able to retry on the new one, and finish, for the drain
    /// to end.
    pub(crate) fn install(&self, next: Routing, installed: impl FnOnce()) {
        for o in self.swap(next, installed) {
            drain(o);
        }
    }

    /// The first half of [`install`](RoutingTable::install): installs `next` in every stripe
    /// and calls `installed`, returning the previous snapshots for the caller to drain (with
    /// [`drain`] on a thread that may block, with [`Drained`] on an async runtime).
    pub(crate) fn swap(&self, next: Routing, installed: impl FnOnce()) -> Vec<Arc<Routing>> {
        let next = resolved(next, self.rf);
        let old: Vec<Arc<Routing>> = self
            .stripes
            .iter()
            .map(|s| std::mem::replace(&mut *s.0.write(), Arc::new(next.clone())))
            .collect();
        installed();
        old
    }
}

/// `routing` with its placement resolved for `rf` (none while a change is pending: then
/// operations look up both rings).
fn resolved(mut routing: Routing, rf: usize) -> Routing {
    routing.placement = match routing.pending {
        None => Placement::build(&routing.ring, &routing.nodes, rf)
            .ok()
            .map(Arc::new),
        Some(_) => None,
    };
    routing
}

/// This thread's stripe, dealt round-robin on first use.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// Waits until no client operation still holds `old` (ours is then the only reference).
///
/// After a new routing is installed, this is the barrier that makes a phase change safe:
/// streaming starts only once every write routed without the new replicas has finished, and
/// cleanup only once every operation routed by the old ring has.
pub(crate) fn drain(mut old: Arc<Routing>) {
    let mut spins = 0u32;
    loop {
        match Arc::try_unwrap(old) {
            Ok(_) => return,
            Err(still_shared) => old = still_shared,
        }
        spins += 1;
        if spins < 64 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// The drain of [`drain`] as a future that never blocks the thread polling it: an async
/// runtime's worker must keep running other tasks, among them the very operations that hold
/// the old snapshots (on a one-worker runtime a blocking drain would wait for itself).
///
/// An `Arc` says nothing when its last other holder drops it, so something must look again.
/// The future hands the snapshots to a short-lived thread that runs the blocking [`drain`]
/// (yield, then 100 µs sleeps) and wakes the future when it is done; installs are rare
/// (one per routing step), so a thread each costs nothing that matters. If no thread can
/// be started the future polls weak references instead: it wakes itself and returns
/// `Pending`, so the runtime runs every other ready task before it looks again.
///
/// [`Drained::on_timer`] looks on the runtime's timer instead, holding weak references only
/// (`ClusterOptions::drain_on_timer`, for simulations): a thread would drop the last
/// snapshot and wake the install at moments the machine decides, not simulated time, and a
/// self-waking future would keep a paused-clock runtime from ever going idle (its clock
/// then never advances).
pub(crate) struct Drained {
    state: DrainState,
}

enum DrainState {
    /// Not polled yet: the snapshots to drain.
    Start(Vec<Arc<Routing>>),
    /// A thread drains them; `done` is set, and the waker woken, when it has.
    Thread(Arc<parking_lot::Mutex<DrainShared>>),
    /// No thread could be started: polled until nobody holds the snapshots.
    Poll(Vec<std::sync::Weak<Routing>>),
    /// Looked at on the runtime's timer: the weak snapshots and the next look.
    Timer(
        Vec<std::sync::Weak<Routing>>,
        std::pin::Pin<Box<tokio::time::Sleep>>,
    ),
    /// Finished.
    Done,
}

/// How often [`Drained::on_timer`] looks again.
const DRAIN_TICK: Duration = Duration::from_millis(1);

#[derive(Default)]
struct DrainShared {
    done: bool,
    waker: Option<std::task::Waker>,
}

impl Drained {
    /// A future that completes once no one but it holds any of `old`.
    pub(crate) fn new(old: Vec<Arc<Routing>>) -> Drained {
        Drained {
            state: DrainState::Start(old),
        }
    }

    /// The same, looking every [`DRAIN_TICK`] on the timer of the runtime it is polled on
    /// (which must have its time driver), with no thread and no strong reference: dropped
    /// after its first poll, it keeps nothing of `old` alive. Made and polled only on a
    /// runtime (the install checks); tokio panics if that runtime has no time driver.
    pub(crate) fn on_timer(old: Vec<Arc<Routing>>) -> Drained {
        let watched = old.iter().map(Arc::downgrade).collect();
        Drained {
            state: DrainState::Timer(watched, Box::pin(tokio::time::sleep(Duration::ZERO))),
        }
    }
}

impl std::future::Future for Drained {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        use std::task::Poll;
        loop {
            match std::mem::replace(&mut self.state, DrainState::Done) {
                DrainState::Start(old) => {
                    let watched: Vec<std::sync::Weak<Routing>> =
                        old.iter().map(Arc::downgrade).collect();
                    let shared = Arc::new(parking_lot::Mutex::new(DrainShared {
                        done: false,
                        waker: Some(cx.waker().clone()),
                    }));
                    let theirs = Arc::clone(&shared);
                    let spawned =
                        std::thread::Builder::new()
                            .name("kv-drain".into())
                            .spawn(move || {
                                for o in old {
                                    drain(o);
                                }
                                let waker = {
                                    let mut s = theirs.lock();
                                    s.done = true;
                                    s.waker.take()
                                };
                                if let Some(w) = waker {
                                    w.wake();
                                }
                            });
                    self.state = match spawned {
                        Ok(_) => DrainState::Thread(shared),
                        // The closure, and our references in it, are gone: the snapshots are
                        // drained once nobody holds them at all.
                        Err(_) => DrainState::Poll(watched),
                    };
                }
                DrainState::Thread(shared) => {
                    let mut s = shared.lock();
                    if s.done {
                        return Poll::Ready(());
                    }
                    s.waker = Some(cx.waker().clone());
                    drop(s);
                    self.state = DrainState::Thread(shared);
                    return Poll::Pending;
                }
                DrainState::Poll(mut old) => {
                    old.retain(|o| o.strong_count() > 0);
                    if old.is_empty() {
                        return Poll::Ready(());
                    }
                    self.state = DrainState::Poll(old);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                DrainState::Timer(mut old, mut next) => {
                    old.retain(|o| o.strong_count() > 0);
                    if old.is_empty() {
                        return Poll::Ready(());
                    }
                    loop {
                        if next.as_mut().poll(cx).is_pending() {
                            break;
                        }
                        next.as_mut()
                            .reset(tokio::time::Instant::now() + DRAIN_TICK);
                    }
                    self.state = DrainState::Timer(old, next);
                    return Poll::Pending;
                }
                DrainState::Done => return Poll::Ready(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_ring::RingOptions;

    /// The resolved placement agrees with the ring's own preference lists, at vnode ends,
    /// next to them, and at the ends of the token space.
    #[test]
    fn placement_matches_the_ring() {
        let ring = Ring::with_nodes(RingOptions::default(), ["a", "b", "c", "d"]).unwrap();
        let nodes = NodeMap::default();
        for rf in 1..=3 {
            let p = Placement::build(&ring, &nodes, rf).unwrap();
            let mut tokens = vec![0, 1, u64::MAX - 1, u64::MAX];
            for v in ring.ranges() {
                let e = v.range.end;
                tokens.extend([e.wrapping_sub(1), e, e.wrapping_add(1)]);
            }
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..10_000 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                tokens.push(x);
            }
            for t in tokens {
                let want: Vec<&NodeId> = ring.preference_list(t, rf).unwrap().iter().collect();
                let got: Vec<&NodeId> = p.replicas(t).iter().map(|(id, _)| *id).collect();
                assert_eq!(got, want, "token {t:#x}, rf {rf}");
            }
        }
    }
}
