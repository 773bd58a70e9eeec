//! [`NodeOptions`].

use std::sync::Arc;
use std::time::Duration;

use kv_wal::{SyncPolicy, WalOptions};

use crate::version::{Clock, SystemClock};
use crate::{Error, Result};

/// The longest key, 64 KiB (`docs/design.md`, *Limits*).
pub const MAX_KEY_LEN: usize = 64 << 10;
/// The default longest value, 16 MiB (it must also fit in a log segment).
pub const DEFAULT_MAX_VALUE_LEN: usize = 16 << 20;

/// How big the cache in front of the index is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheCapacity {
    /// At most this many entries.
    Entries(u64),
    /// At most this many bytes of keys and values.
    Bytes(u64),
}

/// Options for [`Node::open`](crate::Node::open).
///
/// ```
/// use std::time::Duration;
/// use kv_node::{CacheCapacity, NodeOptions};
/// use kv_wal::SyncPolicy;
/// let opts = NodeOptions::new()
///     .cache_bytes(64 << 20)
///     .sync(SyncPolicy::Always)
///     .tombstone_grace(Duration::from_secs(3600))
///     .compaction_threshold(0.4);
/// assert_eq!(opts.get_cache(), CacheCapacity::Bytes(64 << 20));
/// ```
#[derive(Clone)]
pub struct NodeOptions {
    pub(crate) cache: CacheCapacity,
    pub(crate) wal: WalOptions,
    pub(crate) tombstone_grace: Duration,
    pub(crate) compaction_threshold: f64,
    pub(crate) max_key_len: usize,
    pub(crate) max_value_len: usize,
    pub(crate) background: bool,
    pub(crate) maintenance_interval: Duration,
    pub(crate) index_partition_bits: u32,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) fail_compaction_at: Option<u8>,
    pub(crate) compaction_scan: Option<bool>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            cache: CacheCapacity::Entries(1000),
            // Released WAL segments are reused (see `WalOptions::recycle_segments`): the
            // compaction that drops them is what makes room for new ones, and a reused file
            // spares the kernel allocating and zeroing its pages.
            wal: WalOptions::new().recycle_segments(2),
            tombstone_grace: Duration::from_secs(10 * 24 * 3600),
            compaction_threshold: 0.5,
            max_key_len: MAX_KEY_LEN,
            max_value_len: DEFAULT_MAX_VALUE_LEN,
            background: true,
            maintenance_interval: Duration::from_secs(1),
            index_partition_bits: 10,
            clock: Arc::new(SystemClock),
            fail_compaction_at: None,
            compaction_scan: None,
        }
    }
}

impl std::fmt::Debug for NodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeOptions")
            .field("cache", &self.cache)
            .field("wal", &self.wal)
            .field("tombstone_grace", &self.tombstone_grace)
            .field("compaction_threshold", &self.compaction_threshold)
            .field("max_key_len", &self.max_key_len)
            .field("max_value_len", &self.max_value_len)
            .field("background", &self.background)
            .field("maintenance_interval", &self.maintenance_interval)
            .field("index_partition_bits", &self.index_partition_bits)
            .finish_non_exhaustive()
    }
}

impl NodeOptions {
    /// The defaults: a cache of 1000 entries (the seed's `KVNode("node1", 1000)`), the WAL's
    /// defaults (segments growing from 1 MiB to 64 MiB, `Periodic(1 s)` sync) plus up to 2
    /// released segments kept for reuse (`WalOptions::recycle_segments`; replacing the WAL's
    /// options with [`wal`](NodeOptions::wal) replaces this too), tombstones kept 10 days (Cassandra's
    /// `gc_grace_seconds`), compaction at 50% dead bytes, keys up to 64 KiB, values up to
    /// 16 MiB, a background thread for hint files and compaction every second.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cache at most `n` entries.
    pub fn cache_entries(mut self, n: u64) -> Self {
        self.cache = CacheCapacity::Entries(n);
        self
    }

    /// Cache at most `n` bytes of keys and values.
    pub fn cache_bytes(mut self, n: u64) -> Self {
        self.cache = CacheCapacity::Bytes(n);
        self
    }

    /// All the WAL's options (segment size, sync policy, recovery mode, ...).
    pub fn wal(mut self, wal: WalOptions) -> Self {
        self.wal = wal;
        self
    }

    /// The WAL's sync policy (a shortcut for `wal(wal_options.sync(policy))`).
    pub fn sync(mut self, policy: SyncPolicy) -> Self {
        self.wal = self.wal.sync(policy);
        self
    }

    /// How long a tombstone is kept before compaction may purge it (default 10 days). It must
    /// be longer than any delay in handing a delete to every replica (hints, repair), or a
    /// replica that missed the delete can bring the value back.
    pub fn tombstone_grace(mut self, grace: Duration) -> Self {
        self.tombstone_grace = grace;
        self
    }

    /// Compact once this fraction of the sealed log is dead (default 0.5; in `(0, 1]`).
    pub fn compaction_threshold(mut self, fraction: f64) -> Self {
        self.compaction_threshold = fraction;
        self
    }

    /// The longest value accepted (default 16 MiB). A value must also fit in a log segment
    /// with its key.
    pub fn max_value_len(mut self, bytes: usize) -> Self {
        self.max_value_len = bytes;
        self
    }

    /// The longest key accepted (default and maximum 64 KiB).
    pub fn max_key_len(mut self, bytes: usize) -> Self {
        self.max_key_len = bytes;
        self
    }

    /// Whether a background thread writes hint files for sealed segments and compacts when
    /// the threshold is passed (default `true`). Without it, call
    /// [`Node::write_hints`](crate::Node::write_hints) and [`Node::compact`](crate::Node::compact).
    pub fn background(mut self, yes: bool) -> Self {
        self.background = yes;
        self
    }

    /// How often the background thread looks for work (default 1 s).
    pub fn maintenance_interval(mut self, every: Duration) -> Self {
        self.maintenance_interval = every;
        self
    }

    /// The index is split into `2^bits` partitions by the top bits of the key's token
    /// (default 10: 1,024). More partitions make range operations more exact (a range costs
    /// its keys plus up to two partial partitions), fewer keep the partitions' locks and
    /// table headers (48 bytes each) in the CPU's cache: every write and read touches one.
    /// Measured with a million keys on one thread, 2^14 partitions put 0.8-1.0 M keys/s and
    /// 2^10 1.1-1.4 M/s. Past ~100 million keys, raise it so that a partition's rehash (which
    /// blocks that partition) stays short. In `4..=20`.
    pub fn index_partition_bits(mut self, bits: u32) -> Self {
        self.index_partition_bits = bits;
        self
    }

    /// The wall clock used for the versions of [`Node::put`](crate::Node::put) and
    /// [`Node::delete`](crate::Node::delete) and for the tombstone grace period (tests skew it).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Fault injection for tests: compaction stops with an error at `step` (1: after its
    /// first copy batch, 2: after every copy but before the sync, 3: after the sync but before
    /// deleting segments, 4: after deleting segments but before deleting their hint files),
    /// as if the process died there. Not for production use.
    #[doc(hidden)]
    pub fn fail_compaction_at(mut self, step: u8) -> Self {
        self.fail_compaction_at = Some(step);
        self
    }

    /// For tests: how compaction finds the live records of the segments it compacts.
    /// `Some(true)`: by a pass over the index; `Some(false)`: by reading the segments;
    /// `None` (the default): whichever its cost estimate says is cheaper.
    #[doc(hidden)]
    pub fn compaction_scan(mut self, from_index: Option<bool>) -> Self {
        self.compaction_scan = from_index;
        self
    }

    /// The cache capacity.
    pub fn get_cache(&self) -> CacheCapacity {
        self.cache
    }

    /// The WAL options.
    pub fn get_wal(&self) -> &WalOptions {
        &self.wal
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let t = self.compaction_threshold;
        if !(t > 0.0 && t <= 1.0) {
            return Err(Error::InvalidOptions {
                reason: "compaction_threshold must be in (0, 1]",
            });
        }
        if self.max_key_len == 0 || self.max_key_len > MAX_KEY_LEN {
            return Err(Error::InvalidOptions {
                reason: "max_key_len must be in 1..=65536",
            });
        }
        if !(4..=20).contains(&self.index_partition_bits) {
            return Err(Error::InvalidOptions {
                reason: "index_partition_bits must be in 4..=20",
            });
        }
        if self.maintenance_interval.is_zero() {
            return Err(Error::InvalidOptions {
                reason: "maintenance_interval must be nonzero",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
impl NodeOptions {
    /// What the crate's unit tests use: 8 KiB segments (tests seal and compact many), no
    /// sync, no background thread (tests call `compact` and `write_hints` themselves).
    pub(crate) fn small() -> NodeOptions {
        NodeOptions::new()
            .wal(
                WalOptions::new()
                    .segment_size(8 << 10)
                    .sync(SyncPolicy::Never),
            )
            .background(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_as_documented() {
        let o = NodeOptions::new();
        assert_eq!(o.cache, CacheCapacity::Entries(1000));
        assert_eq!(o.max_key_len, 65536);
        assert_eq!(o.max_value_len, 16 << 20);
        assert!(o.background);
        assert_eq!(o.wal.get_recycle_segments(), 2);
        assert!(o.validate().is_ok());
    }

    #[test]
    fn bad_options_are_refused() {
        for o in [
            NodeOptions::new().compaction_threshold(0.0),
            NodeOptions::new().compaction_threshold(1.5),
            NodeOptions::new().compaction_threshold(f64::NAN),
            NodeOptions::new().max_key_len(0),
            NodeOptions::new().max_key_len(65537),
            NodeOptions::new().index_partition_bits(3),
            NodeOptions::new().index_partition_bits(21),
            NodeOptions::new().maintenance_interval(Duration::ZERO),
        ] {
            assert!(
                matches!(o.validate(), Err(Error::InvalidOptions { .. })),
                "{o:?}"
            );
        }
    }
}
