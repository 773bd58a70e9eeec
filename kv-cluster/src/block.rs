//! Running the coordinator's futures on the calling thread.
//!
//! The write and read paths are `async` so that a server on an async runtime can wait on
//! remote replicas without blocking a worker thread; the blocking API ([`Cluster::put`],
//! [`Cluster::get`], ...) runs the same futures here. In this process's own cluster every
//! replica answers inside `start_*`, so the future is ready at its first poll: no waker is
//! made, no thread parked, no allocation.
//!
//! A future that waits on a [`Collector`](crate::Collector) records its deadline with
//! [`wake_by`] before it returns `Pending`; [`block_on`] parks the thread until an answer
//! wakes it or that deadline passes, then polls again (the collector's future checks its
//! deadline at each poll).
//!
//! [`Cluster::put`]: crate::Cluster::put
//! [`Cluster::get`]: crate::Cluster::get

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

/// Wakes a thread parked in [`block_on`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// This thread's waker, made once.
    static WAKER: Waker = Waker::from(Arc::new(Unpark(thread::current())));
    /// The earliest deadline a pending future asked to be polled again by.
    static WAKE_BY: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Whether this thread is running [`block_on`] (which honours [`wake_by`]).
    static IN_BLOCK_ON: Cell<bool> = const { Cell::new(false) };
}

/// Whether the caller runs inside [`block_on`], whose park honours [`wake_by`]: a future
/// polled elsewhere (an async runtime's worker) must arrange its own wake at a deadline.
pub(crate) fn in_block_on() -> bool {
    IN_BLOCK_ON.with(Cell::get)
}

/// Restores the thread's [`IN_BLOCK_ON`] when a [`block_on`] returns or unwinds.
struct Entered(bool);

impl Drop for Entered {
    fn drop(&mut self) {
        IN_BLOCK_ON.with(|b| b.set(self.0));
    }
}

/// Asks the thread running [`block_on`] to poll again by `deadline` even if nothing wakes
/// it (a no-op on an async runtime's threads, whose futures are woken by answers).
pub(crate) fn wake_by(deadline: Instant) {
    WAKE_BY.with(|w| {
        w.set(Some(w.get().map_or(deadline, |d| d.min(deadline))));
    });
}

/// Runs `future` to completion on this thread.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let _entered = Entered(IN_BLOCK_ON.with(|b| b.replace(true)));
    let mut future = pin!(future);
    WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            WAKE_BY.with(|w| w.set(None));
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            // A wake that comes between the poll and the park leaves the token set: the park
            // returns at once.
            match WAKE_BY.with(Cell::get) {
                Some(by) => thread::park_timeout(by.saturating_duration_since(Instant::now())),
                None => thread::park(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pending::Collector;

    fn is_send<T: Send>(_: &T) {}

    #[test]
    fn the_async_operations_can_run_on_a_multi_threaded_runtime() -> crate::Result<()> {
        let dir = tempfile::tempdir().map_err(|e| crate::Error::io("tempdir", "/tmp", e))?;
        let cluster = crate::Cluster::open(dir.path(), crate::ClusterOptions::new())?;
        // A future held across `await` by a server task must be `Send`.
        let put = cluster.put_async(b"k", b"v");
        is_send(&put);
        block_on(put)?;
        let get = cluster.get_async(b"k");
        is_send(&get);
        assert_eq!(block_on(get)?.as_deref(), Some(&b"v"[..]));
        let pairs = [(b"a", b"1"), (b"b", b"2")];
        let put_many = cluster.put_many_async(&pairs);
        is_send(&put_many);
        block_on(put_many)?;
        let get_many = cluster.get_many_async(&[b"a", b"b", b"c"]);
        is_send(&get_many);
        let got = block_on(get_many)?;
        assert_eq!(got[1].as_deref(), Some(&b"2"[..]));
        assert_eq!(got[2], None);
        // So must the maintenance futures the node process runs as tasks.
        let catch_up = cluster.catch_up_async("node2");
        is_send(&catch_up);
        assert_eq!(block_on(catch_up)?.hints_applied, 0);
        let repair = cluster.repair_async();
        is_send(&repair);
        assert_eq!(block_on(repair)?.keys_repaired, 0);
        let hand_off = cluster.hand_off_hints_async();
        is_send(&hand_off);
        assert_eq!(block_on(hand_off)?, 0);
        Ok(())
    }

    #[test]
    fn a_ready_future_runs_at_once() {
        assert_eq!(block_on(async { 7 }), 7);
    }

    #[test]
    fn an_answer_from_another_thread_wakes_the_parked_thread() {
        let c: Collector<u32> = Collector::new();
        let d = c.ticket(2).defer();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            d.complete(Ok(5));
        });
        let got = block_on(c.wait(Instant::now() + Duration::from_secs(10)));
        assert_eq!(got.map(|(i, r)| (i, r.unwrap())), Some((2, 5)));
        t.join().unwrap();
    }

    #[test]
    fn the_deadline_ends_a_wait_nothing_answers() {
        let c: Collector<u32> = Collector::new();
        let _d = c.ticket(0).defer();
        let start = Instant::now();
        assert!(block_on(c.wait(start + Duration::from_millis(30))).is_none());
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }
}
