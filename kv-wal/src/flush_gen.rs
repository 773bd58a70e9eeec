//! A counter that threads sleep on until it changes: how group-commit followers wait for the
//! flush in progress to end.
//!
//! On Linux it is a futex: one `FUTEX_WAKE` wakes every sleeper at once, and each woken
//! follower checks the durable watermark without taking any lock. (A condition variable with
//! a mutex wakes them one after the other as each releases the mutex; with 64 appenders on 2
//! cores that chain took longer than the flush itself.) Elsewhere, waiting is a
//! `sched_yield`: correct, but it burns a core while a flush is in progress.

use std::sync::atomic::{AtomicU32, Ordering};

/// A generation counter with sleep-until-changed.
pub(crate) struct FlushGen {
    generation: AtomicU32,
}

impl FlushGen {
    pub(crate) fn new() -> FlushGen {
        FlushGen {
            generation: AtomicU32::new(0),
        }
    }

    /// The current generation. Load it *before* checking the condition waited for, then pass
    /// it to [`FlushGen::wait_while`]: a change made after this load is not missed.
    pub(crate) fn current(&self) -> u32 {
        self.generation.load(Ordering::Acquire)
    }

    /// Moves to the next generation and wakes every sleeper. Call it after the changes the
    /// sleepers wait for (its release ordering publishes them to a sleeper that sees the new
    /// generation).
    pub(crate) fn bump_and_wake_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        #[cfg(target_os = "linux")]
        // SAFETY: FUTEX_WAKE only reads the address, which points to a live, aligned
        // `AtomicU32` (it is not even dereferenced if nobody sleeps on it); no other
        // argument is a pointer.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.generation.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                i32::MAX,
            );
        }
    }

    /// Sleeps while the generation is still `seen` (returns at once if it has changed).
    /// May return spuriously: callers recheck their condition and call again.
    pub(crate) fn wait_while(&self, seen: u32) {
        #[cfg(target_os = "linux")]
        // SAFETY: FUTEX_WAIT reads the aligned `AtomicU32` at the address atomically and
        // compares it with `seen`; the timeout pointer is null (no timeout). The atomic
        // outlives the call (borrowed from `self`). Errors (EAGAIN when the value changed,
        // EINTR) are spurious returns, which the callers handle.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.generation.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                seen,
                std::ptr::null::<libc::timespec>(),
            );
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = seen;
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleeper_wakes_when_the_generation_moves() {
        let g = FlushGen::new();
        let seen = g.current();
        std::thread::scope(|s| {
            let sleeper = s.spawn(|| {
                // Bounded: returns once the generation moved (a spurious return loops).
                while g.current() == seen {
                    g.wait_while(seen);
                }
            });
            g.bump_and_wake_all();
            sleeper.join().unwrap();
        });
        // A stale generation does not sleep.
        g.wait_while(seen);
        assert_eq!(g.current(), seen.wrapping_add(1));
    }
}
