//! The coordinator's clock: minting versions in its own slot, and observing the versions
//! replicas return, bounded.
//!
//! Every version a read returns is observed by the cluster's [`Hlc`](kv_node::Hlc), so this
//! coordinator never mints a version below one it has seen (one minted by another
//! coordinator whose wall clock runs ahead). A version more than [`MAX_SKEW`] ahead of the
//! local wall clock is observed only up to that bound, and counted
//! ([`Cluster::clock_skew_events`]): one replica holding a version from far in the future (a
//! coordinator with a broken clock) must not drag every later version there.
//!
//! # The version lease across restarts
//! `cluster.json` holds a lease above every version this coordinator minted, renewed
//! [`LEASE_WINDOW`] ahead once a window of writes (off the write path, see `lease.rs`). A lease is at most `LEASE_WINDOW` past the
//! HLC, and the HLC at most [`MAX_SKEW`] past the wall clock, so at a reopen a lease more than
//! `LEASE_WINDOW + MAX_SKEW` ahead of the wall clock means the clock stepped back. Reopened:
//! - lease at or behind the wall clock: the clock starts as it is (nothing to wait for);
//! - lease ahead by at most that bound and other coordinators mint versions
//!   ([`ClusterOptions::other_coordinators`](crate::ClusterOptions::other_coordinators)):
//!   the coordinator *waits* until the wall clock passes the lease, as CockroachDB waits
//!   out its maximum offset on restart. `open` does not sleep (a simulation's clock does
//!   not move while a thread sleeps, and a server has replicas to serve meanwhile): writes
//!   are refused with [`Error::LeaseWait`](crate::Error::LeaseWait) until then, checked on
//!   the cold path only, and [`Cluster::lease_wait`] tells the caller how long to wait;
//! - lease ahead by at most that bound, sole coordinator: the clock starts at the lease
//!   (the old behaviour, no wait; ahead of real time by at most the bound, which matters to
//!   nobody when no other coordinator's writes compete);
//! - lease ahead by more (the wall clock stepped back): the clock starts at the lease, so
//!   new versions still beat old ones, and [`Cluster::lease_jumps`] counts it.
//!
//! Restarts therefore never push versions further ahead: a waiting coordinator starts at
//! the wall clock, and quick restarts wait at most the bound each instead of accumulating.

use std::sync::atomic::Ordering;
use std::time::Duration;

use kv_node::Version;

use crate::cluster::Cluster;
use crate::error::Result;

/// How far ahead of the local wall clock an observed version may push the clock.
pub const MAX_SKEW: Duration = Duration::from_secs(5);

/// How far past the version that reaches it the persisted version lease is pushed: one
/// `cluster.json` write (with its `fsync`s) per window of writes, and the longest a restarted
/// coordinator waits (plus [`MAX_SKEW`]) before it mints again.
pub const LEASE_WINDOW: Duration = Duration::from_secs(1);

impl Cluster {
    /// Starts the clock of a cluster being opened from the persisted lease (see the module
    /// docs): waits it out, starts at it, or starts at it and counts a jump.
    pub(crate) fn start_clock(&self) -> Result<()> {
        let lease = Version::new(self.meta.lock().version_lease);
        let now = self.opts.clock.now_millis();
        let ahead = lease.millis().saturating_sub(now);
        let bound = (LEASE_WINDOW + MAX_SKEW).as_millis() as u64;
        if ahead > 0 && ahead <= bound && self.opts.other_coordinators_value() {
            // Nothing is persisted: the old lease stays above every version minted before,
            // and the first version at or above it persists the next (`extend_lease`).
            self.not_before.store(lease.as_u64(), Ordering::Release);
            return Ok(());
        }
        if ahead > bound {
            self.lease_jumps.fetch_add(1, Ordering::Relaxed);
        }
        self.hlc.observe(lease);
        self.extend_lease(self.hlc.now())
    }

    /// How long until this coordinator mints versions again: zero, except right after an
    /// open that waits out the previous run's version lease (with
    /// [`ClusterOptions::other_coordinators`](crate::ClusterOptions::other_coordinators),
    /// at most [`LEASE_WINDOW`] plus [`MAX_SKEW`]). Until then writes are refused with
    /// [`Error::LeaseWait`](crate::Error::LeaseWait); a server waits this long (on the
    /// cluster's clock) before it serves clients. Reads are served meanwhile.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new()
    ///     .backend(Arc::new(MemoryBackend::default()))
    ///     .other_coordinators(true);
    /// let cluster = Cluster::open(dir.path(), opts.clone())?;
    /// assert_eq!(cluster.lease_wait(), Duration::ZERO); // a new cluster has no lease
    /// cluster.put(b"k", b"v")?;
    /// drop(cluster);
    /// let cluster = Cluster::open(dir.path(), opts)?; // restarted at once
    /// let wait = cluster.lease_wait(); // under a second: what is left of the last window
    /// assert!(wait <= kv_cluster::LEASE_WINDOW);
    /// if !wait.is_zero() {
    ///     assert!(cluster.put(b"k", b"w").is_err()); // Error::LeaseWait
    /// }
    /// std::thread::sleep(wait);
    /// cluster.put(b"k", b"w")?;
    /// assert_eq!(cluster.lease_wait(), Duration::ZERO);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lease_wait(&self) -> Duration {
        let floor = self.not_before.load(Ordering::Acquire);
        if floor == 0 {
            return Duration::ZERO;
        }
        // The wall clock, not the HLC: an HLC pushed ahead by versions read may pass the
        // lease sooner, so this is an upper bound.
        let now = self.opts.clock.now_millis();
        Duration::from_millis(Version::new(floor).millis().saturating_sub(now))
    }

    /// How many times this cluster was opened with its wall clock behind the persisted
    /// version lease by more than [`LEASE_WINDOW`] plus [`MAX_SKEW`]: the clock stepped back
    /// across a restart, and versions were started at the lease (ahead of the wall clock) so
    /// that new writes still beat old ones. 0 or 1 per `Cluster` (it counts this open).
    pub fn lease_jumps(&self) -> u64 {
        self.lease_jumps.load(Ordering::Relaxed)
    }

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
