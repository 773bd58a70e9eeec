//! The write gate: shared by writers between their append and their index update, exclusive
//! for compaction and `drop_ranges`.

use crossbeam_utils::CachePadded;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

const SHARDS: usize = 16;

#[derive(Default)]
pub(crate) struct Gate {
    shards: [CachePadded<RwLock<()>>; SHARDS],
}

impl Gate {
    /// Held by a writer; `token` picks the shard (any would do).
    pub fn shared(&self, token: u64) -> RwLockReadGuard<'_, ()> {
        self.shards[(token >> 60) as usize % SHARDS].read()
    }

    /// Excludes every writer (shards taken in order, so two exclusive holders cannot
    /// deadlock).
    pub fn exclusive(&self) -> Vec<RwLockWriteGuard<'_, ()>> {
        self.shards.iter().map(|s| s.write()).collect()
    }
}
