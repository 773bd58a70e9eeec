//! The synchronisation primitives the cache's protocol uses, swappable for loom's.
//!
//! Built normally, these are `std` atomics and a `parking_lot` mutex. Built with
//! `RUSTFLAGS="--cfg crossbeam_loom"`, they are loom's, so `tests/loom.rs` can explore every
//! interleaving of the insert/publish/remove/reclaim protocol (crossbeam-epoch swaps its own
//! atomics under the same cfg). The idea is quick_cache's `src/shim.rs`.
//!
//! Statistics counters are deliberately *not* here: they carry no synchronisation, so modelling
//! them would only enlarge loom's state space.

#[cfg(crossbeam_loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(crossbeam_loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

/// A mutual-exclusion lock with `parking_lot`'s infallible `lock()` API.
#[derive(Debug)]
pub(crate) struct Mutex<T> {
    #[cfg(not(crossbeam_loom))]
    inner: parking_lot::Mutex<T>,
    #[cfg(crossbeam_loom)]
    inner: loom::sync::Mutex<T>,
}

/// The guard `Mutex::lock` returns.
#[cfg(not(crossbeam_loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
/// The guard `Mutex::lock` returns.
#[cfg(crossbeam_loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(not(crossbeam_loom))]
            inner: parking_lot::Mutex::new(value),
            #[cfg(crossbeam_loom)]
            inner: loom::sync::Mutex::new(value),
        }
    }

    #[cfg(not(crossbeam_loom))]
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.inner.lock()
    }

    #[cfg(crossbeam_loom)]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        // A panic while holding a shard lock leaves the shard consistent (every mutation is
        // completed before the next can panic), so poisoning is ignored like parking_lot does.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Mutable access without locking (the caller holds `&mut self`).
    pub(crate) fn get_mut(&mut self) -> &mut T {
        #[cfg(not(crossbeam_loom))]
        {
            self.inner.get_mut()
        }
        #[cfg(crossbeam_loom)]
        {
            self.inner
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}
