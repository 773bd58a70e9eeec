//! The routing snapshot client operations use: which ring(s), which node handles.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kv_ring::{NodeId, Ring};

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
#[derive(Debug)]
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
