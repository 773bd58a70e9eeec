//! Counters striped by thread: every writer updates counters (live keys, bytes per log
//! segment, ...), and one shared cache line for them all bounces between the cores on every
//! write. Each thread instead takes one of [`STRIPES`] cache-padded stripes (round robin, at
//! its first use), and a reader sums the stripes: writes stay on the writer's core, reads
//! (stats, compaction's choices) are rare.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// Stripes per counter: more than the threads that usually write at once.
pub(crate) const STRIPES: usize = 16;

/// The calling thread's stripe.
pub(crate) fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    MINE.with(|m| {
        if m.get() == usize::MAX {
            m.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        m.get()
    })
}

/// A signed counter striped by thread.
pub(crate) struct Counter([CachePadded<AtomicI64>; STRIPES]);

impl Default for Counter {
    fn default() -> Self {
        Counter(std::array::from_fn(|_| CachePadded::new(AtomicI64::new(0))))
    }
}

impl Counter {
    pub fn add(&self, n: i64) {
        self.0[stripe()].fetch_add(n, Ordering::Relaxed);
    }

    /// The sum of every stripe (each read once: a snapshot only if no one adds meanwhile).
    pub fn sum(&self) -> i64 {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_add_up() {
        let c = Counter::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        c.add(2);
                    }
                    c.add(-1);
                });
            }
        });
        assert_eq!(c.sum(), 4 * 1999);
    }

    #[test]
    fn a_thread_keeps_its_stripe() {
        assert_eq!(stripe(), stripe());
        assert!(stripe() < STRIPES);
    }
}
