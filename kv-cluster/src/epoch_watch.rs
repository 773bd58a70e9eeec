//! The installed routing epoch, and a coordinator's refresh-and-retry when a replica refuses
//! its epoch as stale (`docs/membership.md` §3.3).
//!
//! A cluster whose topology comes from outside ([`Cluster::install_topology`]) routes each
//! client operation with the snapshot it loaded when it started. A replica fenced at a newer
//! epoch refuses it ([`Error::StaleEpoch`] with the replica's `current` epoch): the metadata
//! moved on and this coordinator has not installed the step yet. The operation's round then
//! ends early, the coordinator waits (at most [`ClusterOptions::replica_timeout`]) for its
//! installed epoch to reach `current`, and retries the whole operation **once** on the newer
//! routing, with the same version: last-writer-wins makes the second attempt idempotent
//! with whatever the first one left on some replicas. Still refused, or no newer topology in
//! time: [`Error::StaleCoordinator`], naming the replica.
//!
//! The wait is a future ([`EpochWatch::reached`]): the write and read paths are `async` and a
//! server runs them on its runtime's workers, which must never block. An install wakes every
//! waiter; the deadline wakes a waiter run by [`block_on`](crate::block) through its park
//! timeout, and one on a runtime (which has no timer this crate could use: it is free of any
//! async runtime) through the watch's timer thread: one per cluster, started by the first
//! such waiter, sleeping until the earliest deadline, ended with the cluster.
//!
//! An install publishes its epoch *before* it drains the previous routing
//! (`RoutingTable::install`), and the waiting operation lets go of its old snapshot before
//! it waits: the replica's epoch may be more than one step past the operation's, and the
//! install of the step in between drains the very snapshot the operation routed by. Held
//! through the wait, that snapshot would hold the drain until the wait's deadline, and the
//! install of the replica's epoch (which a node's follower starts only after the one
//! before it drained) would never come before it: a cycle that ended only at the
//! deadline, failing the operation and stalling the node's routing steps meanwhile. The
//! retry routes by the snapshot installed then, with the same version, so what the first
//! attempt left on the old routing's replicas is written again where the newer routing
//! puts it.
//!
//! [`Cluster::install_topology`]: crate::Cluster::install_topology
//! [`ClusterOptions::replica_timeout`]: crate::ClusterOptions::replica_timeout

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::routing::Routing;

/// The epoch of the routing installed last, with the operations waiting for it to rise.
#[derive(Debug)]
pub(crate) struct EpochWatch {
    epoch: AtomicU64,
    shared: Arc<Shared>,
}

/// What the watch shares with its timer thread.
#[derive(Debug, Default)]
struct Shared {
    waiters: Mutex<Waiters>,
    /// Signalled when a waiter with an earlier deadline registers, or the watch is dropped.
    timer: Condvar,
}

/// The pending [`Reached`] futures.
#[derive(Debug, Default)]
struct Waiters {
    next_id: u64,
    list: Vec<Waiter>,
    /// Whether the timer thread runs (started on the first waiter polled outside
    /// `block_on`, one per cluster, ended when the watch is dropped).
    timer_running: bool,
    /// The watch is gone: the timer thread ends.
    closed: bool,
}

/// One pending [`Reached`]: its waker, and its deadline if the timer thread must wake it
/// then (a future polled outside `block_on`).
#[derive(Debug)]
struct Waiter {
    id: u64,
    waker: Waker,
    timed: Option<Instant>,
}

impl EpochWatch {
    /// A watch at `epoch`.
    pub(crate) fn new(epoch: u64) -> Self {
        EpochWatch {
            epoch: AtomicU64::new(epoch),
            shared: Arc::default(),
        }
    }

    /// The epoch installed last.
    pub(crate) fn current(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Records that the routing of `epoch` is installed (the epoch never goes down), and
    /// wakes every waiter: each checks its own target (and registers again if it is not
    /// reached).
    pub(crate) fn publish(&self, epoch: u64) {
        self.epoch.fetch_max(epoch, Ordering::AcqRel);
        let woken = std::mem::take(&mut self.shared.waiters.lock().list);
        // Woken outside the lock: a waiter polled at once registers again under it.
        for w in woken {
            w.waker.wake();
        }
    }

    /// A future that is `true` once the installed epoch is at least `epoch`, `false` if
    /// `deadline` passes first.
    pub(crate) fn reached(&self, epoch: u64, deadline: Instant) -> Reached<'_> {
        Reached {
            watch: self,
            epoch,
            deadline,
            id: None,
        }
    }
}

impl Drop for EpochWatch {
    fn drop(&mut self) {
        self.shared.waiters.lock().closed = true;
        self.shared.timer.notify_all();
    }
}

/// The timer thread: wakes each timed waiter at its deadline (it is then removed; its
/// future, polled, reports the deadline), sleeping until the earliest one.
fn run_timer(shared: &Shared) {
    let mut waiters = shared.waiters.lock();
    loop {
        if waiters.closed {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        waiters.list.retain_mut(|w| match w.timed {
            Some(at) if at <= now => {
                due.push(w.waker.clone());
                false
            }
            _ => true,
        });
        if !due.is_empty() {
            drop(waiters);
            for w in due {
                w.wake();
            }
            waiters = shared.waiters.lock();
            continue;
        }
        match waiters.list.iter().filter_map(|w| w.timed).min() {
            Some(at) => {
                shared.timer.wait_until(&mut waiters, at);
            }
            None => shared.timer.wait(&mut waiters),
        }
    }
}

/// The future of [`EpochWatch::reached`].
#[derive(Debug)]
#[must_use = "a future does nothing unless polled"]
pub(crate) struct Reached<'w> {
    watch: &'w EpochWatch,
    epoch: u64,
    deadline: Instant,
    /// This future's place among the waiters, once it registered.
    id: Option<u64>,
}

impl Future for Reached<'_> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        if self.watch.current() >= self.epoch {
            return Poll::Ready(true);
        }
        if Instant::now() >= self.deadline {
            return Poll::Ready(false);
        }
        // `block_on` parks until the deadline itself (`wake_by`); elsewhere (an async
        // runtime's worker, which must not block) the timer thread wakes the future then.
        let timed = (!crate::block::in_block_on()).then_some(self.deadline);
        let shared = &self.watch.shared;
        let mut waiters = shared.waiters.lock();
        let id = match self.id {
            Some(id) => id,
            None => {
                waiters.next_id += 1;
                waiters.next_id
            }
        };
        match waiters.list.iter_mut().find(|w| w.id == id) {
            Some(w) => {
                if !w.waker.will_wake(cx.waker()) {
                    w.waker = cx.waker().clone();
                }
                w.timed = timed;
            }
            None => waiters.list.push(Waiter {
                id,
                waker: cx.waker().clone(),
                timed,
            }),
        }
        if timed.is_some() {
            if !waiters.timer_running {
                let thread = Arc::clone(shared);
                // If no thread can be started, only an install wakes the future: it then
                // reports the deadline late. The next timed waiter tries again.
                waiters.timer_running = std::thread::Builder::new()
                    .name("kv-epoch-timer".into())
                    .spawn(move || run_timer(&thread))
                    .is_ok();
            }
            shared.timer.notify_all();
        }
        drop(waiters);
        self.id = Some(id);
        // A publish between the check above and the registration woke nobody: check again.
        if self.watch.current() >= self.epoch {
            return Poll::Ready(true);
        }
        crate::block::wake_by(self.deadline);
        Poll::Pending
    }
}

impl Drop for Reached<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.watch.shared.waiters.lock().list.retain(|w| w.id != id);
        }
    }
}

/// The replica's epoch of a stale refusal.
pub(crate) fn stale(e: &Error) -> Option<u64> {
    match e {
        Error::StaleEpoch { current, .. } => Some(*current),
        _ => None,
    }
}

impl Cluster {
    /// Whether the topology comes from outside: stale refusals are then retried after a
    /// refresh (see the module docs).
    #[inline]
    pub(crate) fn is_external(&self) -> bool {
        self.external.load(Ordering::Acquire)
    }

    /// Whether replica error `e` ends an operation's round early: a stale refusal, on a
    /// cluster whose topology comes from outside (in process the drain makes it impossible,
    /// and it stays an ordinary replica failure there).
    #[inline]
    pub(crate) fn ends_round(&self, e: &Error) -> bool {
        matches!(e, Error::StaleEpoch { .. }) && self.is_external()
    }

    /// After an operation failed with `e`: if `e` is a stale refusal on an external
    /// topology, waits for the installed epoch to reach the replica's and returns the
    /// routing to retry on; else gives `e` back. The caller holds no routing snapshot while
    /// it awaits this (see the module docs: an install's drain would wait for it).
    ///
    /// # Errors
    /// `e` itself when it is not such a refusal; [`Error::StaleCoordinator`] when the
    /// epoch is not installed within the replica timeout.
    pub(crate) async fn refresh(&self, e: Error) -> Result<(Arc<Routing>, Instant)> {
        if !self.is_external() {
            return Err(e);
        }
        let Error::StaleEpoch { node, current, .. } = e else {
            return Err(e);
        };
        let started = Instant::now();
        let deadline = started + self.opts.replica_timeout;
        if !self.epochs.reached(current, deadline).await {
            return Err(Error::StaleCoordinator {
                node,
                current,
                installed: self.epochs.current(),
                waited: started.elapsed(),
            });
        }
        self.stale_retries.fetch_add(1, Ordering::Relaxed);
        Ok((self.routing(), started))
    }

    /// The outcome of the one retry after a refresh begun at `started`: refused as stale
    /// again, it becomes [`Error::StaleCoordinator`] (no second retry).
    pub(crate) fn retried<T>(&self, outcome: Result<T>, started: Instant) -> Result<T> {
        outcome.map_err(|e| match e {
            Error::StaleEpoch { node, current, .. } if self.is_external() => {
                Error::StaleCoordinator {
                    node,
                    current,
                    installed: self.epochs.current(),
                    waited: started.elapsed(),
                }
            }
            e => e,
        })
    }

    /// How many client operations were retried after a replica refused their epoch as stale
    /// and the newer topology was installed (see
    /// [`install_topology`](Cluster::install_topology)). Always 0 in process.
    pub fn stale_retries(&self) -> u64 {
        self.stale_retries.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::block::block_on;

    #[test]
    fn a_publish_from_another_thread_ends_the_wait() {
        let watch = Arc::new(EpochWatch::new(3));
        let w = Arc::clone(&watch);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.publish(4);
            std::thread::sleep(Duration::from_millis(20));
            w.publish(5);
        });
        let start = Instant::now();
        assert!(block_on(watch.reached(5, start + Duration::from_secs(10))));
        assert!(start.elapsed() >= Duration::from_millis(40));
        assert!(watch.shared.waiters.lock().list.is_empty(), "deregistered");
        t.join().unwrap();
    }

    #[test]
    fn the_deadline_ends_a_wait_nothing_publishes() {
        let watch = EpochWatch::new(3);
        let start = Instant::now();
        assert!(!block_on(
            watch.reached(4, start + Duration::from_millis(30))
        ));
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert!(block_on(watch.reached(3, start)), "already there");
    }

    /// On a runtime's worker (here: a thread polling by hand, not `block_on`) nothing parks
    /// with a timeout: the watch's one timer thread wakes each waiter at its own deadline.
    #[test]
    fn the_timer_wakes_waiters_polled_outside_block_on_at_their_deadlines() {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let watch = EpochWatch::new(1);
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let start = Instant::now();
        let mut futs: Vec<_> = [90u64, 30, 60]
            .iter()
            .map(|ms| Box::pin(watch.reached(2, start + Duration::from_millis(*ms))))
            .collect();
        let mut done: Vec<Option<Duration>> = vec![None; futs.len()];
        while done.iter().any(Option::is_none) {
            for (f, d) in futs.iter_mut().zip(done.iter_mut()) {
                if d.is_none()
                    && let Poll::Ready(reached) = f.as_mut().poll(&mut cx)
                {
                    assert!(!reached);
                    *d = Some(start.elapsed());
                }
            }
            if done.iter().all(Option::is_some) {
                break;
            }
            // Far longer than any deadline: only a wake ends it early.
            std::thread::park_timeout(Duration::from_secs(10));
        }
        for (d, ms) in done.iter().zip([90u64, 30, 60]) {
            let d = d.unwrap();
            assert!(d >= Duration::from_millis(ms), "{d:?}");
            assert!(d < Duration::from_secs(5), "woken by the timer: {d:?}");
        }
        assert!(watch.shared.waiters.lock().timer_running);
        // A publish still wakes a timed waiter at once.
        let mut f = Box::pin(watch.reached(2, Instant::now() + Duration::from_secs(30)));
        assert!(f.as_mut().poll(&mut cx).is_pending());
        watch.publish(2);
        assert_eq!(f.as_mut().poll(&mut cx), Poll::Ready(true));
    }

    #[test]
    fn the_epoch_never_goes_down() {
        let watch = EpochWatch::new(7);
        watch.publish(5);
        assert_eq!(watch.current(), 7);
    }
}
