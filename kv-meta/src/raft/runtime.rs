//! `KvRuntime`: openraft's async runtime, tokio's, with a seedable random number generator
//! (membership.md §2.1).
//!
//! openraft draws each election timeout from `AsyncRuntime::thread_rng()`. With tokio's
//! runtime that is the OS-seeded `rand::thread_rng()`, so two runs of one simulated seed
//! elect at different moments. `KvRuntime` answers a thread-local generator instead, seeded
//! from the OS until [`seed_raft_rng`] seeds it: the simulation seeds it from the run's seed
//! on the thread that runs every host, which makes elections replay.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use rand08::rngs::StdRng;
use rand08::{RngCore, SeedableRng};

thread_local! {
    static RNG: RefCell<StdRng> = RefCell::new(StdRng::from_entropy());
}

/// Seeds this thread's raft generator: every election timeout a raft drawn on this thread
/// from now on follows from `seed`.
///
/// # Example
///
/// ```
/// use openraft::AsyncRuntime;
/// use rand08::RngCore;
///
/// kv_meta::seed_raft_rng(7);
/// let a = kv_meta::KvRuntime::thread_rng().next_u64();
/// kv_meta::seed_raft_rng(7);
/// let b = kv_meta::KvRuntime::thread_rng().next_u64();
/// assert_eq!(a, b);
/// ```
pub fn seed_raft_rng(seed: u64) {
    RNG.with(|r| *r.borrow_mut() = StdRng::seed_from_u64(seed));
}

/// A handle on this thread's raft generator (what [`KvRuntime::thread_rng`] answers).
#[derive(Debug, Clone, Copy, Default)]
pub struct KvRng;

impl RngCore for KvRng {
    fn next_u32(&mut self) -> u32 {
        RNG.with(|r| r.borrow_mut().next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        RNG.with(|r| r.borrow_mut().next_u64())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        RNG.with(|r| r.borrow_mut().fill_bytes(dest));
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand08::Error> {
        RNG.with(|r| r.borrow_mut().try_fill_bytes(dest))
    }
}

/// openraft's tokio runtime, except [`thread_rng`](AsyncRuntime::thread_rng), which answers
/// [`KvRng`] (seedable with [`seed_raft_rng`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KvRuntime;

impl AsyncRuntime for KvRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> =
        <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = KvRng;
    type OneshotSender<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <TokioRuntime as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        KvRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        TokioRuntime::oneshot()
    }
}
