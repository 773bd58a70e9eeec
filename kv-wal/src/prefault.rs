//! Faulting the log's pages in ahead of the appends, on a background thread.
//!
//! The first write to a page of a mapped segment takes a page fault (the kernel finds or
//! reads the page, maps it, and on a shared file mapping makes it writable). Appenders
//! crossing into a new `POPULATE_CHUNK` of the segment ask for the chunk after it; the
//! prefault thread runs `MADV_POPULATE_WRITE` on it, so the appends that follow find their
//! pages mapped. Only the newest request counts: an appender never waits for this, and a
//! request the thread has not reached yet is simply replaced.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::Thread;

/// The newest request, and the thread that serves it.
#[derive(Default)]
pub(crate) struct Prefault {
    /// `(seq << 32 | chunk) + 1`; 0 when there is nothing to do.
    want: AtomicU64,
    thread: OnceLock<Thread>,
}

impl Prefault {
    /// Registers the thread that serves requests (once, when it starts).
    pub(crate) fn serve_from(&self, thread: Thread) {
        let _ = self.thread.set(thread);
    }

    /// Asks for chunk `chunk` of segment `seq` to be faulted in.
    pub(crate) fn request(&self, seq: u32, chunk: usize) {
        let packed = ((u64::from(seq) << 32) | chunk as u64).wrapping_add(1);
        self.want.store(packed, Ordering::Release);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// Takes the pending request, if any: `(seq, chunk)`.
    pub(crate) fn take(&self) -> Option<(u32, usize)> {
        match self.want.swap(0, Ordering::Acquire) {
            0 => None,
            p => {
                let p = p - 1;
                Some(((p >> 32) as u32, (p & u64::from(u32::MAX)) as usize))
            }
        }
    }

    /// Wakes the serving thread (to see that the log is closing).
    pub(crate) fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_request_replaces_older_ones() {
        let p = Prefault::default();
        assert_eq!(p.take(), None);
        p.request(7, 3);
        p.request(9, 0);
        assert_eq!(p.take(), Some((9, 0)));
        assert_eq!(p.take(), None);
        p.request(u32::MAX, 63);
        assert_eq!(p.take(), Some((u32::MAX, 63)));
    }
}
