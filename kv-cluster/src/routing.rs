//! The routing snapshot client operations use: which ring(s), which node handles.

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
///
/// Every operation is tagged with `ring`'s epoch.
#[derive(Debug, Clone)]
pub(crate) struct Routing {
    pub(crate) ring: Ring,
    pub(crate) pending: Option<Ring>,
    pub(crate) nodes: NodeMap,
}

impl Routing {
    pub(crate) fn epoch(&self) -> u64 {
        self.ring.epoch()
    }

    pub(crate) fn node(&self, id: &NodeId) -> Option<&Arc<dyn Replica>> {
        self.nodes.get(id)
    }
}

/// Copies of the routing snapshot kept in this many stripes.
const STRIPES: usize = 8;

/// The current routing, striped: each client thread loads its snapshot from its own stripe,
/// which holds its own `Arc` (a separate reference count) behind its own lock, on its own
/// cache line. Threads on different stripes then never write a shared cache line to route
/// an operation (one shared `Arc` cost about 10% of a get with two threads).
pub(crate) struct RoutingTable {
    stripes: Box<[Stripe]>,
}

#[repr(align(128))]
struct Stripe(RwLock<Arc<Routing>>);

impl RoutingTable {
    pub(crate) fn new(routing: Routing) -> Self {
        RoutingTable {
            stripes: (0..STRIPES)
                .map(|_| Stripe(RwLock::new(Arc::new(routing.clone()))))
                .collect(),
        }
    }

    /// This thread's snapshot of the current routing.
    #[inline]
    pub(crate) fn load(&self) -> Arc<Routing> {
        Arc::clone(&self.stripes[stripe()].0.read())
    }

    /// Installs `next` in every stripe, then waits until no operation uses a previous
    /// routing. Operations may mix old and new snapshots while this runs, as they would with
    /// one snapshot while the old one drains; once it returns, none uses the old one.
    pub(crate) fn install(&self, next: Routing) {
        let old: Vec<Arc<Routing>> = self
            .stripes
            .iter()
            .map(|s| std::mem::replace(&mut *s.0.write(), Arc::new(next.clone())))
            .collect();
        for o in old {
            drain(o);
        }
    }
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
