//! The write gate: shared by writers between their append and their index update, exclusive
//! for compaction and `drop_ranges`.

use crossbeam_utils::CachePadded;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// One shard per thread stripe: a writer takes its own thread's shard, whose line stays in
/// its core's cache (a shard picked by key moved between the cores on every other write).
const SHARDS: usize = crate::stripe::STRIPES;

#[derive(Default)]
pub(crate) struct Gate {
    shards: [CachePadded<RwLock<()>>; SHARDS],
}

impl Gate {
    /// Held by a writer (any shard would do: the calling thread's is taken).
    pub fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.shards[crate::stripe::stripe()].read()
    }

    /// Excludes every writer (shards taken in order, so two exclusive holders cannot
    /// deadlock).
    pub fn exclusive(&self) -> Vec<RwLockWriteGuard<'_, ()>> {
        self.shards.iter().map(|s| s.write()).collect()
    }
}
