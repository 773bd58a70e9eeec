//! The synchronisation primitives the sequencer's protocol uses, swappable for loom's.
//!
//! In a normal build these are `std`'s atomics and `parking_lot`'s lock and condition
//! variable. Built with `RUSTFLAGS="--cfg loom"` they are loom's, so the model in
//! `sequencer.rs` (`loom_model`) can explore every interleaving of the reservation,
//! completion, publication and roll-over protocol. Only the sequencer goes through here: the
//! rest of the log (segment maps, group commit) is outside the model.

#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;
#[cfg(not(loom))]
pub(crate) use parking_lot::{Condvar, Mutex};
#[cfg(not(loom))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

#[cfg(loom)]
pub(crate) use self::model::{Condvar, Mutex};

/// loom's `std`-like lock and condition variable behind `parking_lot`'s interface (a guard
/// from `lock`, `wait` on a `&mut` guard), which the sequencer is written against.
#[cfg(loom)]
mod model {
    /// A mutex.
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// Its guard; `None` only inside [`Condvar::wait`].
    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            // The protected value is `()`: nothing a panic could leave half done.
            MutexGuard(Some(self.0.lock().unwrap_or_else(|p| p.into_inner())))
        }
    }

    /// A condition variable.
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            if let Some(g) = guard.0.take() {
                guard.0 = Some(self.0.wait(g).unwrap_or_else(|p| p.into_inner()));
            }
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}
