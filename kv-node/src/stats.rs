//! [`NodeStats`] and [`RangeCount`].

use std::time::Duration;

/// Counts of keys, bytes, segments and cache activity: see [`Node::stats`](crate::Node::stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Keys with a value.
    pub live_keys: u64,
    /// Deleted keys whose tombstone is still kept.
    pub tombstones: u64,
    /// Keys whose value has an expiry (a TTL), expired or not: an expired one counts (here
    /// and in `live_keys`) until compaction turns it into a tombstone or drops it
    /// (`docs/design.md`, *Expiring keys*).
    pub expiring_keys: u64,
    /// Log bytes (framed records) the index points at, tombstones included.
    pub live_bytes: u64,
    /// Log bytes no longer needed: superseded, dropped or purged records (compaction reclaims
    /// them).
    pub dead_bytes: u64,
    /// Log segments on disk.
    pub segments: usize,
    /// Entries in the cache.
    pub cache_entries: usize,
    /// Cache hits since the node was opened.
    pub cache_hits: u64,
    /// Cache misses since the node was opened.
    pub cache_misses: u64,
    /// Entries the cache evicted to make room.
    pub cache_evictions: u64,
    /// How long the last recovery (at open) took.
    pub last_recovery: Duration,
    /// Compactions that copied or deleted anything since the node was opened.
    pub compactions: u64,
    /// Hint files written since the node was opened.
    pub hints_written: u64,
    /// The error of the background thread's last pass (hint files, compaction), if it failed;
    /// cleared by a pass that succeeds.
    pub last_maintenance_error: Option<String>,
    /// When the log's last flush that made writes durable finished (`None` before the first
    /// since the node was opened): see [`kv_wal::Wal::last_flush`].
    pub last_flush: Option<std::time::SystemTime>,
}

/// What lies in some token ranges: see [`Node::count_in_ranges`](crate::Node::count_in_ranges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeCount {
    /// Keys with a value.
    pub live: u64,
    /// Tombstones.
    pub tombstones: u64,
    /// Log bytes (framed records) of both.
    pub live_bytes: u64,
}
