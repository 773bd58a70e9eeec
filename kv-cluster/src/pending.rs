//! Waiting on many replicas at once: what a quorum is made of.
//!
//! Lock order: waiting on a `Collector` or completing a `Deferred` takes no coordinator lock
//! (`docs/design.md`, *Concurrency and lock order*).
//!
//! The coordinator submits an operation to every replica of a key with a `start_*` method of
//! [`Replica`](crate::Replica), passing each a [`Ticket`] from one [`Collector`], then takes
//! answers until it has the `R` or `W` it needs, or the deadline passes.
//!
//! - A replica in this process answers inside `start_*` ([`Started::Done`]): no channel, no
//!   allocation, no thread hop, so the in-process cluster keeps its speed.
//! - A replica across the network calls [`Ticket::defer`], sends its request, returns
//!   [`Started::Deferred`], and completes the [`Deferred`] from whatever thread receives the
//!   peer's answer. The collector's inbox is created only when the first ticket is
//!   deferred.
//! - The coordinator waits on the collector blocking a thread ([`Collector::next`]) or as a
//!   future on an async runtime ([`Collector::wait`]); the write and read paths are written
//!   once, as futures, and the blocking API runs them on the calling thread
//!   (`block.rs`).
//! - A [`Deferred`] dropped without an answer (its request was lost) completes as
//!   [`Error::Dropped`]; an answer that comes after the coordinator stopped waiting is
//!   discarded.
//!
//! # Example
//! ```
//! use std::time::{Duration, Instant};
//! use kv_cluster::pending::{Collector, Started};
//!
//! let collector: Collector<u32> = Collector::new();
//! // Replica 0 answers at once; replica 1 answers later from another thread.
//! let first = Started::Done(Ok(7));
//! let later = collector.ticket(1).defer();
//! std::thread::spawn(move || later.complete(Ok(8)));
//! let mut answers = Vec::new();
//! if let Started::Done(r) = first {
//!     answers.push((0, r?));
//! }
//! let deadline = Instant::now() + Duration::from_secs(5);
//! while let Some((index, r)) = collector.next(deadline) {
//!     answers.push((index, r?));
//! }
//! assert_eq!(answers, vec![(0, 7), (1, 8)]);
//! # Ok::<(), kv_cluster::Error>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// What a `start_*` method of [`Replica`](crate::Replica) did with its [`Ticket`].
#[derive(Debug)]
#[must_use]
pub enum Started<T> {
    /// The answer, given at once (a replica in this process).
    Done(Result<T>),
    /// The ticket was [`defer`](Ticket::defer)red: the answer comes through the
    /// [`Collector`].
    Deferred,
}

/// One replica's answer, with the number the coordinator gave it.
type Answer<T> = (usize, Result<T>);

/// The answers given and not taken yet, and the waiter to wake for the next one.
struct Inbox<T> {
    answers: VecDeque<Answer<T>>,
    waiter: Option<Waker>,
}

/// What a collector shares with its [`Deferred`] answers.
struct Shared<T> {
    inbox: Mutex<Inbox<T>>,
}

/// One operation submitted to many replicas: hands out [`Ticket`]s and collects the answers
/// of those deferred, either blocking ([`next`](Collector::next)) or as a future
/// ([`wait`](Collector::wait)). One coordinator owns it; the answers come from any thread.
pub struct Collector<T> {
    shared: OnceLock<Arc<Shared<T>>>,
    outstanding: AtomicUsize,
}

impl<T> Default for Collector<T> {
    fn default() -> Self {
        Collector {
            shared: OnceLock::new(),
            outstanding: AtomicUsize::new(0),
        }
    }
}

impl<T> fmt::Debug for Collector<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collector")
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

impl<T> Collector<T> {
    /// A collector with nothing submitted yet (allocates nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// The ticket for the replica the caller numbers `index` (its answer comes back with
    /// that number).
    pub fn ticket(&self, index: usize) -> Ticket<'_, T> {
        Ticket {
            collector: self,
            index,
        }
    }

    /// How many deferred answers have not been taken yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// The next deferred answer, blocking the thread until `deadline`; `None` when none is
    /// outstanding or the deadline passed (the answers still missing are then abandoned by
    /// the caller).
    pub fn next(&self, deadline: Instant) -> Option<Answer<T>> {
        crate::block::block_on(self.wait(deadline))
    }

    /// The next deferred answer as a future, for a coordinator on an async runtime: as
    /// [`next`](Collector::next), but it does not block the thread.
    ///
    /// It is woken by answers only, so the deadline is checked each time it is polled: a
    /// caller on a runtime relies on every deferred answer coming in time (an answer, an
    /// error, or the [`Deferred`] dropped), as [`Replica`](crate::Replica)'s contract asks:
    /// a replica across the network times its requests out itself.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use kv_cluster::pending::Collector;
    ///
    /// let collector: Collector<u32> = Collector::new();
    /// let later = collector.ticket(4).defer();
    /// std::thread::spawn(move || later.complete(Ok(8)));
    /// let deadline = Instant::now() + Duration::from_secs(5);
    /// // Any executor drives it; a blocking `next` is this future run to completion.
    /// let (index, answer) = collector.next(deadline).expect("an answer");
    /// assert_eq!((index, answer?), (4, 8));
    /// # Ok::<(), kv_cluster::Error>(())
    /// ```
    pub fn wait(&self, deadline: Instant) -> Next<'_, T> {
        Next {
            collector: self,
            deadline: Some(deadline),
        }
    }

    /// The next deferred answer, with no deadline of the coordinator's own: what the
    /// maintenance paths (hint handoff, repair, catch-up) wait with, since a replica across
    /// the network times their requests out itself (its maintenance timeout) and a dropped
    /// [`Deferred`] answers [`Error::Dropped`]. Reads no clock.
    pub(crate) fn wait_answer(&self) -> Next<'_, T> {
        Next {
            collector: self,
            deadline: None,
        }
    }
}

/// The future of [`Collector::wait`].
#[derive(Debug)]
#[must_use = "a future does nothing unless polled"]
pub struct Next<'c, T> {
    collector: &'c Collector<T>,
    /// `None`: until an answer comes ([`Collector::wait_answer`]).
    deadline: Option<Instant>,
}

impl<T> Future for Next<'_, T> {
    type Output = Option<Answer<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let c = self.collector;
        if c.outstanding() == 0 {
            return Poll::Ready(None);
        }
        let Some(shared) = c.shared.get() else {
            return Poll::Ready(None);
        };
        let mut inbox = shared.inbox.lock();
        if let Some(answer) = inbox.answers.pop_front() {
            c.outstanding.fetch_sub(1, Ordering::Relaxed);
            return Poll::Ready(Some(answer));
        }
        if let Some(deadline) = self.deadline
            && Instant::now() >= deadline
        {
            return Poll::Ready(None);
        }
        match &mut inbox.waiter {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        drop(inbox);
        if let Some(deadline) = self.deadline {
            crate::block::wake_by(deadline);
        }
        Poll::Pending
    }
}

/// The right to answer one replica's part of an operation, given to a `start_*` method of
/// [`Replica`](crate::Replica). Answer at once by returning [`Started::Done`], or later by
/// [`defer`](Ticket::defer)ring it.
#[derive(Debug)]
pub struct Ticket<'c, T> {
    collector: &'c Collector<T>,
    index: usize,
}

impl<T> Ticket<'_, T> {
    /// The number the coordinator gave this replica.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Turns the ticket into a [`Deferred`] answer that can be completed from any thread
    /// (the caller then returns [`Started::Deferred`]).
    pub fn defer(self) -> Deferred<T> {
        let shared = self.collector.shared.get_or_init(|| {
            Arc::new(Shared {
                inbox: Mutex::new(Inbox {
                    answers: VecDeque::new(),
                    waiter: None,
                }),
            })
        });
        self.collector.outstanding.fetch_add(1, Ordering::Relaxed);
        Deferred {
            shared: Some(Arc::clone(shared)),
            index: self.index,
        }
    }
}

/// An answer to come, completed once from any thread ([`complete`](Deferred::complete)).
/// Dropped without an answer, it completes as [`Error::Dropped`].
pub struct Deferred<T> {
    shared: Option<Arc<Shared<T>>>,
    index: usize,
}

impl<T> fmt::Debug for Deferred<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferred")
            .field("index", &self.index)
            .finish()
    }
}

impl<T> Deferred<T> {
    /// Gives the answer (discarded if the coordinator stopped waiting).
    pub fn complete(mut self, answer: Result<T>) {
        self.give(answer);
    }

    fn give(&mut self, answer: Result<T>) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let waiter = {
            let mut inbox = shared.inbox.lock();
            inbox.answers.push_back((self.index, answer));
            inbox.waiter.take()
        };
        // Woken outside the lock: the waiter takes it at once.
        if let Some(w) = waiter {
            w.wake();
        }
    }
}

impl<T> Drop for Deferred<T> {
    fn drop(&mut self) {
        self.give(Err(Error::Dropped));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn nothing_deferred_allocates_no_channel_and_waits_for_nothing() {
        let c: Collector<u8> = Collector::new();
        let _ticket = c.ticket(0);
        assert!(c.shared.get().is_none());
        assert!(c.next(soon()).is_none());
    }

    #[test]
    fn a_dropped_deferred_answers_dropped() {
        let c: Collector<u8> = Collector::new();
        drop(c.ticket(3).defer());
        let (index, answer) = c.next(soon()).unwrap();
        assert_eq!(index, 3);
        assert!(matches!(answer, Err(Error::Dropped)));
        assert_eq!(c.outstanding(), 0);
    }

    #[test]
    fn the_deadline_ends_the_wait_for_a_missing_answer() {
        let c: Collector<u8> = Collector::new();
        let d = c.ticket(0).defer();
        let start = Instant::now();
        assert!(c.next(start + Duration::from_millis(20)).is_none());
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(c.outstanding(), 1);
        d.complete(Ok(1));
        assert_eq!(c.next(soon()).map(|(i, r)| (i, r.unwrap())), Some((0, 1)));
    }

    #[test]
    fn answers_arrive_in_the_order_given_with_their_index() {
        let c: Collector<usize> = Collector::new();
        let ds: Vec<_> = (0..3).map(|i| c.ticket(i).defer()).collect();
        for d in ds.into_iter().rev() {
            let i = d.index;
            std::thread::spawn(move || d.complete(Ok(i * 10)))
                .join()
                .unwrap();
        }
        let got: Vec<_> = std::iter::from_fn(|| c.next(soon()))
            .map(|(i, r)| (i, r.unwrap()))
            .collect();
        assert_eq!(got, vec![(2, 20), (1, 10), (0, 0)]);
    }
}
