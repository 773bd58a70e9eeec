//! The admin gate: one administrative operation at a time, awaited or blocked on.
//!
//! Lock order: the gate is `admin` in `docs/design.md`'s *Concurrency and lock order*; its
//! inner `state` mutex is a leaf, held only to flip the flag and take the wakers (never
//! across a wait, an await or a node call).
//!
//! Membership changes, failing and recovering nodes, catch-ups and repairs each run alone
//! (they swap node handles or rely on which nodes are up). Catch-up, hint handoff and repair
//! also have `async` forms that wait on remote replicas at `await` points, and a
//! `std`/`parking_lot` guard must not be held across an `await`: a second task on the same
//! worker that blocked on the mutex would never let the first one finish, and the guard is
//! not `Send`. So the admin lock is a flag with a list of wakers instead of a mutex:
//! [`Gate::acquire`] is a future whose [`GateGuard`] is `Send` and may be held across
//! `await`s; [`Gate::lock`] is that future run on the calling thread ([`block_on`]), for the
//! blocking paths. A release wakes every waiter (there are few: administrative operations),
//! so a waiter whose future was dropped after its wake costs nothing and loses no wake.
//!
//! [`block_on`]: crate::block::block_on

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// A lock for the administrative operations, usable from blocking and async code.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    held: bool,
    waiters: Vec<Waker>,
}

impl Gate {
    /// A future that completes with the gate held.
    pub(crate) fn acquire(&self) -> Acquire<'_> {
        Acquire { gate: self }
    }

    /// Holds the gate, blocking the thread until it is free.
    pub(crate) fn lock(&self) -> GateGuard<'_> {
        crate::block::block_on(self.acquire())
    }

    /// Whether an administrative operation holds the gate now (a diagnostic for tests).
    #[cfg(test)]
    pub(crate) fn is_held(&self) -> bool {
        self.state.lock().held
    }
}

/// The future of [`Gate::acquire`].
#[must_use = "a future does nothing unless polled"]
pub(crate) struct Acquire<'g> {
    gate: &'g Gate,
}

impl<'g> Future for Acquire<'g> {
    type Output = GateGuard<'g>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let gate = self.gate;
        let mut state = gate.state.lock();
        if !state.held {
            state.held = true;
            return Poll::Ready(GateGuard { gate });
        }
        if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            state.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The gate held; released (and every waiter woken) when dropped.
#[derive(Debug)]
pub(crate) struct GateGuard<'g> {
    gate: &'g Gate,
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        let waiters = {
            let mut state = self.gate.state.lock();
            state.held = false;
            std::mem::take(&mut state.waiters)
        };
        // Woken outside the lock: each takes it at once to try the flag.
        for w in waiters {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn is_send<T: Send>(_: &T) {}

    #[test]
    fn a_blocked_locker_gets_the_gate_when_it_is_released() {
        let gate = Arc::new(Gate::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let guard = gate.lock();
        is_send(&guard);
        let (g, i) = (Arc::clone(&gate), Arc::clone(&inside));
        let t = std::thread::spawn(move || {
            let _g = g.lock();
            i.fetch_add(1, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(inside.load(Ordering::SeqCst), 0, "entered while held");
        drop(guard);
        t.join().unwrap();
        assert_eq!(inside.load(Ordering::SeqCst), 1);
        assert!(!gate.is_held());
    }

    #[test]
    fn holders_never_overlap() {
        let gate = Arc::new(Gate::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (g, i) = (Arc::clone(&gate), Arc::clone(&inside));
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let _g = g.lock();
                        assert_eq!(i.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                        i.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_task_waiting_for_the_gate_leaves_its_worker_free() {
        let gate = Arc::new(Gate::default());
        let first = gate.acquire().await;
        let g = Arc::clone(&gate);
        let waiter = tokio::spawn(async move {
            let _g = g.acquire().await;
        });
        // The waiter is parked as a task, not a thread: this task runs meanwhile.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(!gate.is_held());
    }
}
