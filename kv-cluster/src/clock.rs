//! The coordinator's clock: minting versions in its own slot, and observing the versions
//! replicas return, bounded.
//!
//! Every version a read returns is observed by the cluster's [`Hlc`](kv_node::Hlc), so this
//! coordinator never mints a version below one it has seen (one minted by another
//! coordinator whose wall clock runs ahead). A version more than [`MAX_SKEW`] ahead of the
//! local wall clock is observed only up to that bound, and counted
//! ([`Cluster::clock_skew_events`]): one replica holding a version from far in the future (a
//! coordinator with a broken clock) must not drag every later version there.

use std::sync::atomic::Ordering;
use std::time::Duration;

use kv_node::Version;

use crate::cluster::Cluster;

/// How far ahead of the local wall clock an observed version may push the clock.
pub const MAX_SKEW: Duration = Duration::from_secs(5);

impl Cluster {
    /// Observes `seen`, a version a replica returned, bounded by [`MAX_SKEW`].
    ///
    /// The bound is cached (`skew_bound`, a raw version) from an earlier reading of the wall
    /// clock: a cached bound is never above the true one, so a version at or below it is
    /// observed without reading the clock (the common case costs one load more than
    /// `Hlc::observe`). Above it, the clock is read and the bound refreshed.
    #[inline]
    pub(crate) fn observe(&self, seen: Version) {
        if seen.as_u64() <= self.skew_bound.load(Ordering::Relaxed) {
            self.hlc.observe(seen);
        } else {
            self.observe_slow(seen);
        }
    }

    #[cold]
    fn observe_slow(&self, seen: Version) {
        let limit = self.opts.clock.now_millis() + MAX_SKEW.as_millis() as u64;
        let bound = Version::from_parts(limit, u16::MAX);
        self.skew_bound.fetch_max(bound.as_u64(), Ordering::Relaxed);
        if seen <= bound {
            self.hlc.observe(seen);
        } else {
            self.skew_events.fetch_add(1, Ordering::Relaxed);
            self.hlc.observe(bound);
        }
    }

    /// How many versions returned by replicas were more than [`MAX_SKEW`] ahead of this
    /// coordinator's wall clock (each observed only up to that bound) since the cluster was
    /// opened: a non-zero count means some coordinator's clock runs ahead.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// cluster.put(b"k", b"v")?;
    /// cluster.get(b"k")?;
    /// assert_eq!(cluster.clock_skew_events(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clock_skew_events(&self) -> u64 {
        self.skew_events.load(Ordering::Relaxed)
    }
}
