//! The persisted version lease, and its renewal off the write path.
//!
//! Every version this coordinator hands out is below the lease persisted in `cluster.json`
//! (see `clock.rs` for why). Persisting is a `cluster.json` write with its `fsync`s: a
//! millisecond or more, too long for a write's path and never allowed on a tokio worker. So a
//! version that reaches [`Lease::renew_at`], half a [`LEASE_WINDOW`] before the lease, starts a
//! *renewal* on a short-lived thread: the lease is pushed a window past that version and
//! persisted while writes go on under the old one, which still has half a window left. A
//! write persists inline only when its version reached the lease itself: the first write of
//! a run, a renewal that has not landed in half a window (a stalled disk) or failed (the
//! inline attempt then reports the error to the writer), or renewals switched off
//! ([`ClusterOptions::renew_lease_in_background`](crate::ClusterOptions::renew_lease_in_background),
//! for a deterministic simulation, where a thread's timing is not simulated).
//!
//! The lease stays at most one window past the highest version handed out, as before: what
//! a reopened coordinator waits out is unchanged.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kv_node::Version;
use parking_lot::Mutex;

use crate::clock::LEASE_WINDOW;
use crate::error::Result;
use crate::meta::Meta;

/// The lease as this run persisted it, and its renewal.
pub(crate) struct Lease {
    dir: PathBuf,
    meta: Arc<Mutex<Meta>>,
    /// The persisted lease (raw): every version handed out is below it. 0 until this run has
    /// persisted one (the first mint then takes the inline path).
    current: AtomicU64,
    /// From this raw version on, a mint renews (half a window before `current`; 0 until the
    /// first lease, so that the first mint takes the cold path at all).
    renew_at: AtomicU64,
    /// A renewal thread is running.
    renewing: AtomicBool,
    /// The last renewal thread, joined by [`Lease::join`] so that none outlives its cluster
    /// (a renewal finishing after a reopen would write this run's metadata over the next's).
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Whether renewals run on a thread (else every lease is persisted inline).
    background: bool,
    /// Leases persisted inline, by a write that reached the lease.
    inline: AtomicU64,
    /// Leases persisted by a renewal thread.
    renewed: AtomicU64,
}

impl Lease {
    pub(crate) fn new(dir: PathBuf, meta: Arc<Mutex<Meta>>, background: bool) -> Arc<Lease> {
        Arc::new(Lease {
            dir,
            meta,
            current: AtomicU64::new(0),
            renew_at: AtomicU64::new(0),
            renewing: AtomicBool::new(false),
            thread: Mutex::new(None),
            background,
            inline: AtomicU64::new(0),
            renewed: AtomicU64::new(0),
        })
    }

    /// The raw version from which a mint must look at the lease: the one load on the hot path.
    #[inline]
    pub(crate) fn renew_at(&self) -> u64 {
        self.renew_at.load(Ordering::Acquire)
    }

    /// The persisted lease (raw; 0 before the first).
    #[inline]
    pub(crate) fn current(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// Persists a lease a window past `version` now, on the caller's thread, unless one above
    /// it is persisted already.
    pub(crate) fn persist_inline(&self, version: Version) -> Result<()> {
        self.inline.fetch_add(1, Ordering::Relaxed);
        self.persist(version)
    }

    /// Starts a renewal a window past `version` on its own thread, unless one is running or
    /// renewals are off. Never blocks.
    pub(crate) fn renew(self: &Arc<Self>, version: Version) {
        if !self.background || self.renewing.swap(true, Ordering::AcqRel) {
            return;
        }
        let lease = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("kv-lease".into())
            .spawn(move || {
                // A failure is left to the inline path: the write that reaches the lease
                // persists it itself and reports the error to its caller.
                if lease.persist(version).is_ok() {
                    lease.renewed.fetch_add(1, Ordering::Relaxed);
                }
                lease.renewing.store(false, Ordering::Release);
            });
        match spawned {
            // The previous thread, if any, has finished (`renewing` was clear).
            Ok(handle) => drop(self.thread.lock().replace(handle)),
            // No thread (resource limits): the inline path persists when the lease is reached.
            Err(_) => self.renewing.store(false, Ordering::Release),
        }
    }

    /// Waits for the renewal thread, if one runs (the cluster is closing).
    pub(crate) fn join(&self) {
        let handle = self.thread.lock().take();
        if let Some(handle) = handle {
            // A panic there was already reported on its thread; nothing is left to do.
            let _ = handle.join();
        }
    }

    /// (inline, renewed): leases persisted by writes that reached them, and by renewals.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.inline.load(Ordering::Relaxed),
            self.renewed.load(Ordering::Relaxed),
        )
    }

    fn persist(&self, version: Version) -> Result<()> {
        let mut meta = self.meta.lock();
        if version.as_u64() < self.current().saturating_sub(half_window()) {
            // Another renewal already pushed the lease more than half a window past it.
            return Ok(());
        }
        let window = LEASE_WINDOW.as_millis() as u64;
        let lease = Version::from_parts(version.millis() + window, 0).as_u64();
        if lease <= self.current() {
            return Ok(());
        }
        let mut next = meta.clone();
        next.version_lease = lease.max(meta.version_lease);
        next.store(&self.dir)?;
        *meta = next;
        self.current.store(lease, Ordering::Release);
        self.renew_at
            .store(lease.saturating_sub(half_window()), Ordering::Release);
        Ok(())
    }
}

/// Half a [`LEASE_WINDOW`], as a raw version difference.
fn half_window() -> u64 {
    Version::from_parts(LEASE_WINDOW.as_millis() as u64 / 2, 0).as_u64()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{Clock, Cluster, ClusterOptions, MemoryBackend};

    /// A clock the test sets.
    #[derive(Default)]
    struct Manual(AtomicU64);

    impl Clock for Manual {
        fn now_millis(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    const T: u64 = 1_800_000_000_000;

    fn open(dir: &std::path::Path, clock: &Arc<Manual>, background: bool) -> Cluster {
        let opts = ClusterOptions::new()
            .backend(Arc::new(MemoryBackend::default()))
            .clock(Arc::clone(clock) as Arc<dyn Clock>)
            .renew_lease_in_background(background);
        Cluster::open(dir, opts).unwrap()
    }

    fn persisted(dir: &std::path::Path) -> u64 {
        Meta::load(dir).unwrap().unwrap().version_lease
    }

    /// Waits (bounded) until no renewal thread runs.
    fn settle(cluster: &Cluster) {
        let start = Instant::now();
        while cluster.lease.renewing.load(Ordering::Acquire) {
            assert!(start.elapsed() < Duration::from_secs(10), "renewal stuck");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn writes_past_half_a_window_renew_off_the_write_path() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(Manual::default());
        clock.0.store(T, Ordering::Relaxed);
        let cluster = open(dir.path(), &clock, true);
        cluster.put(b"k", b"first").unwrap();
        // The first write of a run persists inline: there is no lease yet.
        assert_eq!(cluster.lease.counts(), (1, 0));
        let first = persisted(dir.path());
        assert_eq!(Version::new(first).millis(), T + 1000);

        let mut highest = Version::new(0);
        for step in 1..=20u64 {
            // 300 ms a step: every second step passes half a window.
            clock.0.store(T + step * 300, Ordering::Relaxed);
            highest = highest.max(cluster.put(b"k", &step.to_be_bytes()).unwrap());
            settle(&cluster);
            let lease = persisted(dir.path());
            assert!(
                lease > highest.as_u64(),
                "lease {lease} <= version {highest}"
            );
            assert!(
                Version::new(lease).millis() <= highest.millis() + 1000,
                "lease more than a window ahead"
            );
        }
        let (inline, renewed) = cluster.lease.counts();
        assert_eq!(inline, 1, "a write waited for a lease after the first");
        assert!(renewed >= 5, "{renewed} renewals over 6 s of writes");
    }

    #[test]
    fn without_renewals_the_write_that_reaches_the_lease_persists_it() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(Manual::default());
        clock.0.store(T, Ordering::Relaxed);
        let cluster = open(dir.path(), &clock, false);
        for step in 0..=20u64 {
            clock.0.store(T + step * 300, Ordering::Relaxed);
            let v = cluster.put(b"k", &step.to_be_bytes()).unwrap();
            assert!(persisted(dir.path()) > v.as_u64());
        }
        let (inline, renewed) = cluster.lease.counts();
        assert_eq!(renewed, 0);
        // 6 s of writes, a lease a second: the first and then one each time the clock passes
        // the lease (300 ms steps: every fourth step).
        assert!((5..=8).contains(&inline), "{inline} inline leases");
    }

    #[test]
    fn a_renewal_that_fails_leaves_the_error_to_the_write_that_reaches_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(Manual::default());
        clock.0.store(T, Ordering::Relaxed);
        let cluster = open(dir.path(), &clock, true);
        cluster.put(b"k", b"v").unwrap();
        // cluster.json cannot be replaced: its directory is read-only... unless root, which
        // ignores permissions; a directory in the file's place fails for anyone.
        let file = dir.path().join(crate::meta::FILE_NAME);
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        std::fs::write(file.join("x"), b"keeps the directory non-empty").unwrap();
        clock.0.store(T + 600, Ordering::Relaxed);
        cluster.put(b"k", b"renewal fails").unwrap();
        settle(&cluster);
        assert_eq!(cluster.lease.counts(), (1, 0));
        clock.0.store(T + 1000, Ordering::Relaxed);
        let err = cluster.put(b"k", b"reaches the lease").unwrap_err();
        assert!(matches!(err, crate::Error::Io { .. }), "{err:?}");
    }
}
