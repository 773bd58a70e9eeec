//! Lock-free reservation and in-order publication: the protocol every appender follows.
//!
//! # Reservation
//!
//! `tail` packs a *ticket* (high 32 bits, wrapping) and the next free byte offset in the
//! active segment (low 32 bits), or [`SEALED`] while one appender rolls over to a new
//! segment. An appender reserves `total` bytes with one compare-and-swap from `(t, off)` to
//! `(t + 1, off + total)`: it then owns ticket `t` and bytes `off..off + total` of the active
//! segment, and no other thread writes them. Tickets and offsets grow together, so ticket
//! order is log order.
//!
//! # Completion and publication: a baton
//!
//! `published` is the [`Lsn`] before which every record is complete; `pub_ticket` is the
//! ticket of the first record at or after it. Only the holder of the *baton* writes them, so
//! they never go backwards and never skip an incomplete record. The baton is parked in the
//! completion slot of the first unpublished ticket.
//!
//! `slots` is a ring of [`RING`] words, slot `t % RING` for ticket `t`, each holding a ticket
//! tag and either the record's end offset (*complete*) or [`BATON`]. A slot whose tag is not
//! `t` is *empty* for ticket `t`. At most two threads ever change slot `t % RING` for ticket
//! `t`, each with one compare-and-swap from empty: the owner of ticket `t`, once its bytes are
//! copied, to `(t, end)` (unless it finds the baton already there); and the baton holder, once
//! it has published every ticket before `t`, to `(t, BATON)`. Whoever loses the race learns
//! from the winner's value that both are done: the owner takes the baton, or the holder
//! publishes `t` too and goes on. So the
//! holder publishes a run of consecutive complete records with one store of `published`,
//! then parks the baton at the first incomplete one, whose owner will publish it: an appender
//! descheduled between its reservation and its completion delays the others only until it
//! runs again, and the threads behind it need not run in ticket order.
//!
//! The owner of ticket `t` writes its slot only once ticket `t - RING` is published
//! (`t - pub_ticket < RING`), so a completion is never overwritten before it is published;
//! with fewer than `RING` appenders in flight it never waits.
//!
//! # Roll-over
//!
//! An appender whose record does not fit swaps `(t, off)` for `(t, SEALED)` and becomes the
//! one roller: every other appender finds the tail sealed and waits. No ticket from `t` on
//! exists, so once every record before the seal is published the baton is parked at `t` and
//! nobody publishes. The roller waits for exactly that, flushes and creates the next
//! segment, makes it the active one, then stores `published = (seq + 1, HEADER_LEN)` and
//! reopens the tail at `(t, HEADER_LEN)` of the new segment. The owner of ticket `t` there
//! finds the baton and publishes from the roller's watermark. A failed roll-over stores
//! `(t, off)` back, and the next appender tries again.
//!
//! # Waiting
//!
//! Waiters (for publication, the end of a roll-over, a parked baton, a free slot) spin
//! briefly, then yield, then sleep on a condition variable. A sleeper registers in
//! `sleepers` under the mutex and re-checks its condition before sleeping; whoever changes
//! what it waits for issues a `SeqCst` fence and then looks at `sleepers` (the sleeper
//! issues one between its registration and its check) and, if anyone sleeps, notifies under
//! the mutex. Either the waker sees the sleeper or the sleeper sees the change: no lost
//! wake-up.
//!
//! # Memory ordering
//!
//! An owner's copy of its record happens before its slot CAS (release), which the baton
//! holder reads (acquire) before its `published` store (release), which readers load
//! (acquire): a reader that sees the watermark sees the bytes. The baton's hand-offs go
//! through the slot (release CAS, acquire load), so each holder sees its predecessor's
//! `published`; the roller reads the parked baton the same way and hands its watermark to
//! the next holder through the tail.
//!
//! The unit tests below also run under Miri, which checks for data races and undefined
//! behaviour and lets a relaxed or acquire load see an older value where the memory model
//! allows it: `cargo +nightly miri test -p kv-wal --lib -- sequencer::`, and over 16
//! schedules with `MIRIFLAGS=-Zmiri-many-seeds=0..16` (the many-thread test is smaller under
//! `cfg(miri)`). Result (2026-12-06, nightly Miri 2026-05-19): every test passes under each
//! seed, under Stacked Borrows and under Tree Borrows (`-Zmiri-tree-borrows`). A loom model
//! (`loom_model`, at the bottom) explores every interleaving of a few appends, roll-over and a
//! ring of two slots included: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p
//! kv-wal --release --lib sequencer::loom_model` (run by `.ci/run`).

use crate::Lsn;
use crate::shim::{
    AtomicU32, AtomicU64, AtomicUsize, Condvar, Mutex, Ordering::*, fence, spin_loop, yield_now,
};

/// The offset in `tail` while a roll-over is in progress (no segment is that long: offsets
/// are below `u32::MAX - 7`).
const SEALED: u32 = u32::MAX;

/// The value of a slot's low half holding the baton (not an offset, as [`SEALED`]).
const BATON: u32 = u32::MAX;

/// Completion slots: at most this many appends can be complete but unpublished behind one
/// that is not. A power of two.
#[cfg(not(loom))]
pub(crate) const RING: usize = 256;
/// Two under loom, so that a model of a few appends wraps around the ring.
#[cfg(loom)]
pub(crate) const RING: usize = 2;

/// Busy-wait iterations before a waiter starts yielding. A record is a `memcpy` away from
/// complete, so the wait is usually over here.
#[cfg(not(loom))]
const SPINS: usize = 64;
/// None under loom: spinning only re-reads what the yield and sleep paths re-read too, and
/// every extra read multiplies the interleavings to explore.
#[cfg(loom)]
const SPINS: usize = 0;
/// `sched_yield`s before a waiter sleeps. On an oversubscribed machine the thread being
/// waited for needs the CPU; yielding hands it over without the cost of a sleep and a wake-up.
#[cfg(not(loom))]
const YIELDS: usize = 32;
/// One under loom (the yield path, without the cost of many).
#[cfg(loom)]
const YIELDS: usize = 1;

/// Keeps a hot atomic on its own cache lines (two: adjacent-line prefetch).
#[repr(align(128))]
struct Padded<T>(T);

/// A ticket and an offset (or [`SEALED`] / [`BATON`]), packed.
fn pack(ticket: u32, low: u32) -> u64 {
    (u64::from(ticket) << 32) | u64::from(low)
}

/// The ticket and the low half of a packed word.
fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

struct TailLine {
    word: AtomicU64,
    /// The active segment's length. Changed only by a roll-over, before it reopens the tail.
    seg_len: AtomicUsize,
}

struct PublicationLine {
    /// An `Lsn`: every record before it is complete. Written by the baton holder only.
    published: AtomicU64,
    /// The ticket of the first unpublished record. Written by the baton holder only.
    ticket: AtomicU32,
}

/// The outcome of one reservation attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// `start..start + total` and ticket `ticket` belong to the caller.
    Reserved { ticket: u32, start: usize },
    /// The caller must roll over: the tail is sealed at `at` with ticket `ticket`.
    Roll { ticket: u32, at: usize },
    /// Another appender is rolling over: wait with [`Sequencer::wait_unsealed`].
    Sealed,
    /// The tail moved under us: try again.
    Retry,
}

/// Reservation, completion and publication (see the module docs).
pub(crate) struct Sequencer {
    /// Read together by every reservation, so on one cache line.
    tail: Padded<TailLine>,
    /// Written together by every publication, so on one cache line.
    publication: Padded<PublicationLine>,
    slots: Box<[AtomicU64]>,
    sleepers: Padded<AtomicUsize>,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Sequencer {
    /// A sequencer for a segment of `seg_len` bytes whose next record goes at `end`, with
    /// ticket 0.
    pub(crate) fn new(end: Lsn, seg_len: usize) -> Sequencer {
        // The baton starts parked at ticket 0. Slot `i` otherwise holds ticket `i - RING`, its
        // previous occupant, complete (and so published: nothing before ticket 0 is pending).
        let slots = (0..RING)
            .map(|i| {
                let word = if i == 0 {
                    pack(0, BATON)
                } else {
                    pack((i as u32).wrapping_sub(RING as u32), 0)
                };
                AtomicU64::new(word)
            })
            .collect();
        Sequencer {
            tail: Padded(TailLine {
                word: AtomicU64::new(pack(0, end.offset())),
                seg_len: AtomicUsize::new(seg_len),
            }),
            publication: Padded(PublicationLine {
                published: AtomicU64::new(end.as_u64()),
                ticket: AtomicU32::new(0),
            }),
            slots,
            sleepers: Padded(AtomicUsize::new(0)),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    /// Every record before this is complete: readers, flushes and `read` stop here.
    pub(crate) fn published(&self) -> Lsn {
        Lsn::from_u64(self.publication.0.published.load(Acquire))
    }

    /// One attempt to reserve `total` bytes in the active segment.
    ///
    /// On [`Claim::Reserved`] the active segment is the one the tail was last reopened in
    /// (the roller makes it the active one before reopening the tail, and replaces it only
    /// after this reservation is published).
    pub(crate) fn claim(&self, total: usize) -> Claim {
        let cur = self.tail.0.word.load(Acquire);
        let (ticket, off) = unpack(cur);
        if off == SEALED {
            return Claim::Sealed;
        }
        // Loaded after the tail: if the CAS below succeeds the tail did not change since, so
        // this is the length of our segment. (Unless a roll-over in between sealed an empty
        // segment at `HEADER_LEN` and reopened the tail at the same word: a roll-over from an
        // empty segment happens only for a record that does not fit it, and makes the new
        // segment larger, so a record that fit the old length fits the new segment too; and a
        // spurious roll-over only leaves an empty segment, which recovery accepts.)
        let seg_len = self.tail.0.seg_len.load(Acquire);
        let off = off as usize;
        let (next, claim) = match seg_len.checked_sub(off) {
            Some(room) if total <= room => (
                pack(ticket.wrapping_add(1), (off + total) as u32),
                Claim::Reserved { ticket, start: off },
            ),
            Some(_) => (pack(ticket, SEALED), Claim::Roll { ticket, at: off }),
            // A length from after a roll-over with a tail from before it: the CAS would fail.
            None => return Claim::Retry,
        };
        match self
            .tail
            .0
            .word
            .compare_exchange(cur, next, AcqRel, Relaxed)
        {
            Ok(_) => claim,
            Err(_) => Claim::Retry,
        }
    }

    /// Waits until the tail is no longer sealed (a roll-over has ended, well or not).
    pub(crate) fn wait_unsealed(&self) {
        self.wait_until(|| unpack(self.tail.0.word.load(Acquire)).1 != SEALED);
    }

    /// Marks ticket `ticket`, ending at offset `end` of the active segment, complete; if the
    /// baton is parked there, publishes it and every completed record after it.
    pub(crate) fn complete(&self, ticket: u32, end: usize) {
        // Slot `ticket % RING` is free once ticket `ticket - RING` is published.
        let free = || ticket.wrapping_sub(self.publication.0.ticket.load(Acquire)) < RING as u32;
        if !free() {
            self.wait_until(free);
        }
        let slot = &self.slots[ticket as usize % RING];
        let cur = slot.load(Acquire);
        let baton = unpack(cur).0 == ticket
            || slot
                .compare_exchange(cur, pack(ticket, end as u32), AcqRel, Acquire)
                .is_err();
        if baton {
            // The previous holder parked it here (the only other change this slot can see).
            debug_assert_eq!(slot.load(Relaxed), pack(ticket, BATON));
            self.carry_baton(ticket, end as u32);
        }
    }

    /// With the baton at `ticket`, complete and ending at `end`: publishes it and the
    /// complete records after it, then parks the baton at the first incomplete one.
    fn carry_baton(&self, ticket: u32, end: u32) {
        // Our segment: a roll-over changes it only while the baton is parked.
        let seg = self.publication.0.published.load(Relaxed) & !u64::from(u32::MAX);
        let mut end = end;
        let mut next = ticket.wrapping_add(1);
        loop {
            let slot = &self.slots[next as usize % RING];
            let cur = slot.load(Acquire);
            let (t, low) = unpack(cur);
            if t == next {
                // Complete (only the holder parks, so it is not the baton).
                end = low;
                next = next.wrapping_add(1);
                continue;
            }
            // Publish the run, then offer the baton to `next`'s owner.
            self.publication.0.ticket.store(next, Release);
            self.publication
                .0
                .published
                .store(seg | u64::from(end), Release);
            match slot.compare_exchange(cur, pack(next, BATON), AcqRel, Acquire) {
                Ok(_) => break,
                Err(now) => {
                    // It completed meanwhile: it is ours to publish.
                    end = unpack(now).1;
                    next = next.wrapping_add(1);
                }
            }
        }
        self.wake();
    }

    /// Returns once every record before `end` is published.
    pub(crate) fn wait_published(&self, end: Lsn) {
        let end = end.as_u64();
        self.wait_until(|| self.publication.0.published.load(Acquire) >= end);
    }

    /// For a roller that sealed the tail at `(ticket, at)` of segment `seq`: returns once
    /// every record before the seal is published and the baton is parked at `ticket`, so
    /// that nobody publishes any more.
    pub(crate) fn wait_sealed_segment_published(&self, ticket: u32) {
        let slot = &self.slots[ticket as usize % RING];
        self.wait_until(|| slot.load(Acquire) == pack(ticket, BATON));
    }

    /// Ends a roll-over: the tail, sealed at ticket `ticket` by [`Claim::Roll`], reopens at
    /// `first`, the first record offset of the new segment of `seg_len` bytes, which every
    /// reader may look at from now on. The caller has made the new segment the active one
    /// and waited with [`Sequencer::wait_sealed_segment_published`].
    pub(crate) fn start_segment(&self, ticket: u32, first: Lsn, seg_len: usize) {
        debug_assert_eq!(self.publication.0.ticket.load(Relaxed), ticket);
        self.publication.0.published.store(first.as_u64(), Release);
        self.tail.0.seg_len.store(seg_len, Release);
        self.tail
            .0
            .word
            .store(pack(ticket, first.offset()), Release);
        self.wake();
    }

    /// Ends a failed roll-over: the tail, sealed at `(ticket, at)`, reopens unchanged, so
    /// that the next appender tries again.
    pub(crate) fn unseal(&self, ticket: u32, at: usize) {
        self.tail.0.word.store(pack(ticket, at as u32), Release);
        self.wake();
    }

    /// Wakes the sleepers, if any, after a change they may be waiting for.
    fn wake(&self) {
        // Pairs with the fence in `wait_until`: either we see the sleeper or it sees our
        // change.
        fence(SeqCst);
        if self.sleepers.0.load(Relaxed) > 0 {
            let _guard = self.lock.lock();
            self.cv.notify_all();
        }
    }

    /// Spins, yields, then sleeps until `done()`, which must read only what is changed
    /// before a call to `wake`.
    #[cfg_attr(loom, allow(clippy::reversed_empty_ranges))] // SPINS is 0 under loom
    fn wait_until(&self, done: impl Fn() -> bool) {
        for _ in 0..SPINS {
            if done() {
                return;
            }
            spin_loop();
        }
        for _ in 0..YIELDS {
            if done() {
                return;
            }
            yield_now();
        }
        let mut guard = self.lock.lock();
        self.sleepers.0.fetch_add(1, Relaxed);
        // Pairs with the fence in `wake`.
        fence(SeqCst);
        while !done() {
            self.cv.wait(&mut guard);
        }
        self.sleepers.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const SEG: usize = 4096;

    fn reserve(s: &Sequencer, total: usize) -> (u32, usize) {
        match s.claim(total) {
            Claim::Reserved { ticket, start } => (ticket, start),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn out_of_order_completions_publish_in_order() {
        let s = Sequencer::new(Lsn::new(1, 32), SEG);
        let (ta, a) = reserve(&s, 16);
        let (tb, b) = reserve(&s, 24);
        assert_eq!((ta, a, tb, b), (0, 32, 1, 48));
        // The later record completes first: nothing is published past the hole.
        s.complete(tb, b + 24);
        assert_eq!(s.published(), Lsn::new(1, 32));
        // The hole fills: both are published at once.
        s.complete(ta, a + 16);
        assert_eq!(s.published(), Lsn::new(1, 72));
        // The baton waits at the next ticket.
        let (tc, c) = reserve(&s, 8);
        s.complete(tc, c + 8);
        assert_eq!(s.published(), Lsn::new(1, 80));
    }

    #[test]
    fn a_record_that_does_not_fit_seals_the_tail_for_one_roller() {
        let s = Sequencer::new(Lsn::new(1, 32), SEG);
        let (t, a) = reserve(&s, SEG - 40);
        assert_eq!(
            s.claim(16),
            Claim::Roll {
                ticket: 1,
                at: SEG - 8
            }
        );
        assert_eq!(s.claim(8), Claim::Sealed);
        s.complete(t, a + SEG - 40);
        s.wait_sealed_segment_published(1);
        assert_eq!(s.published(), Lsn::new(1, (SEG - 8) as u32));
        s.start_segment(1, Lsn::new(2, 32), 2 * SEG);
        assert_eq!(s.published(), Lsn::new(2, 32));
        let (t, b) = reserve(&s, SEG + 8);
        assert_eq!((t, b), (1, 32));
        s.complete(t, b + SEG + 8);
        assert_eq!(s.published(), Lsn::new(2, 32 + SEG as u32 + 8));
    }

    #[test]
    fn a_failed_roll_over_reopens_the_tail() {
        let s = Sequencer::new(Lsn::new(1, 32), SEG);
        let Claim::Roll { ticket, at } = s.claim(SEG) else {
            panic!("expected a roll-over");
        };
        s.unseal(ticket, at);
        assert_eq!(reserve(&s, 16), (0, 32));
    }

    /// Guards the ring: a completion more than `RING` tickets ahead of the oldest unpublished
    /// one waits for its slot instead of overwriting a completion not yet published.
    #[test]
    fn a_completion_a_ring_ahead_waits_for_its_slot() {
        let s = Sequencer::new(Lsn::new(1, 32), SEG);
        let tickets: Vec<_> = (0..=RING).map(|_| reserve(&s, 8)).collect();
        let s = &s;
        std::thread::scope(|sc| {
            // The last one shares slot 0 with the first: it must wait.
            let (t, start) = tickets[RING];
            let late = sc.spawn(move || s.complete(t, start + 8));
            for &(t, start) in tickets[1..RING].iter().rev() {
                s.complete(t, start + 8);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(!late.is_finished());
            assert_eq!(s.published(), Lsn::new(1, 32));
            s.complete(tickets[0].0, tickets[0].1 + 8);
            late.join().unwrap();
        });
        assert_eq!(s.published(), Lsn::new(1, 32 + 8 * (RING as u32 + 1)));
    }

    #[test]
    fn many_threads_publish_every_record_in_order() {
        // Fewer under Miri, which interprets every step: still enough for completions to
        // overtake each other and for waiters to park.
        const THREADS: usize = if cfg!(miri) { 4 } else { 8 };
        const EACH: usize = if cfg!(miri) { 100 } else { 2000 };
        let seg = 32 + THREADS * EACH * 8;
        let s = Sequencer::new(Lsn::new(1, 32), seg);
        std::thread::scope(|sc| {
            for _ in 0..THREADS {
                sc.spawn(|| {
                    for _ in 0..EACH {
                        let (t, start) = loop {
                            if let Claim::Reserved { ticket, start } = s.claim(8) {
                                break (ticket, start);
                            }
                        };
                        s.complete(t, start + 8);
                        s.wait_published(Lsn::new(1, (start + 8) as u32));
                    }
                });
            }
        });
        assert_eq!(s.published(), Lsn::new(1, seg as u32));
    }
}

/// Model checks of the protocol with loom: every interleaving (up to `LOOM_MAX_PREEMPTIONS`
/// preemptions) of two appenders, over a ring of two completion slots, so that a third
/// ticket waits for the first one's slot. A record's bytes are a loom cell written by its
/// owner before its completion and read by whoever sees it published: loom reports a read not
/// ordered after the write (a watermark published before the bytes) as a data race.
///
/// Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom
/// cargo test -p kv-wal --release --lib sequencer::loom_model` (in `.ci/run`).
#[cfg(all(test, loom))]
mod loom_model {
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU32;
    use loom::thread;

    use super::*;

    const HEADER: u32 = 32;
    /// Every record is one 8-byte frame.
    const REC: usize = 8;

    /// The log being modelled: the sequencer, the active segment's number (the log's
    /// `active_ptr`), and one cell per record position, `SLOTS` per segment.
    struct Log<const SLOTS: usize> {
        seq: Sequencer,
        active: AtomicU32,
        cells: Vec<UnsafeCell<u32>>,
    }

    impl<const SLOTS: usize> Log<SLOTS> {
        fn new(segments: usize) -> Arc<Self> {
            Arc::new(Log {
                seq: Sequencer::new(Lsn::new(1, HEADER), Self::seg_len()),
                active: AtomicU32::new(1),
                cells: (0..segments * SLOTS).map(|_| UnsafeCell::new(0)).collect(),
            })
        }

        fn seg_len() -> usize {
            HEADER as usize + SLOTS * REC
        }

        fn cell(&self, segment: u32, offset: usize) -> &UnsafeCell<u32> {
            &self.cells[(segment as usize - 1) * SLOTS + (offset - HEADER as usize) / REC]
        }

        /// One append, as `Wal::append` does it: reserve (rolling over when the record does
        /// not fit), write, complete, wait for publication. Returns where it went.
        fn append(&self, mark: u32) -> Lsn {
            let (ticket, segment, start) = loop {
                match self.seq.claim(REC) {
                    Claim::Reserved { ticket, start } => {
                        break (ticket, self.active.load(Acquire), start);
                    }
                    Claim::Retry => yield_now(),
                    Claim::Sealed => self.seq.wait_unsealed(),
                    Claim::Roll { ticket, at: _ } => {
                        self.seq.wait_sealed_segment_published(ticket);
                        let next = self.active.load(Relaxed) + 1;
                        self.active.store(next, Release);
                        self.seq
                            .start_segment(ticket, Lsn::new(next, HEADER), Self::seg_len());
                    }
                }
            };
            self.cell(segment, start).with_mut(|p| {
                // SAFETY: the reservation makes the record ours alone until its completion
                // (what the model checks: loom reports any access not ordered with this one).
                unsafe { *p = mark }
            });
            self.seq.complete(ticket, start + REC);
            let end = Lsn::new(segment, (start + REC) as u32);
            self.seq.wait_published(end);
            assert!(self.seq.published() >= end);
            Lsn::new(segment, start as u32)
        }

        /// Reads every record below the published watermark (as a reader or a flush does).
        fn read_published(&self) -> Vec<u32> {
            let published = self.seq.published();
            let mut out = Vec::new();
            for segment in 1..=published.segment() {
                let end = if segment == published.segment() {
                    published.offset() as usize
                } else {
                    Self::seg_len()
                };
                for offset in (HEADER as usize..end).step_by(REC) {
                    let v = self.cell(segment, offset).with(|p| {
                        // SAFETY: published, so its owner wrote it before and nobody writes
                        // it again (what the model checks, as above).
                        unsafe { *p }
                    });
                    assert_ne!(v, 0, "a published record without its bytes");
                    out.push(v);
                }
            }
            out
        }
    }

    /// Three appends by two threads in one segment: the third ticket waits for the first's
    /// slot; a reader racing them sees whole records only; all end up published, in order.
    #[test]
    fn appends_publish_in_order_with_their_bytes() {
        loom::model(|| {
            let log = Log::<4>::new(1);
            let a = {
                let log = Arc::clone(&log);
                thread::spawn(move || [log.append(1), log.append(2)])
            };
            let b = {
                let log = Arc::clone(&log);
                thread::spawn(move || log.append(3))
            };
            let reader = {
                let log = Arc::clone(&log);
                thread::spawn(move || log.read_published())
            };
            let seen = reader.join().unwrap();
            let [a1, a2] = a.join().unwrap();
            let b1 = b.join().unwrap();
            assert!(a1 < a2);
            assert!(seen.len() <= 3);
            let mut all = log.read_published();
            assert_eq!(log.seq.published(), Lsn::new(1, HEADER + 3 * REC as u32));
            assert_eq!(all.len(), 3);
            let mut lsns = [a1, a2, b1];
            lsns.sort();
            assert_eq!(lsns[0], Lsn::new(1, HEADER));
            all.sort();
            assert_eq!(all, [1, 2, 3]);
        });
    }

    /// A segment with room for two records and three appends: exactly one roll-over, while
    /// the other appender finds the tail sealed or its record fitting; every record is
    /// published once, the third in the new segment.
    #[test]
    fn a_roll_over_races_an_append() {
        loom::model(|| {
            let log = Log::<2>::new(2);
            let a = {
                let log = Arc::clone(&log);
                thread::spawn(move || [log.append(1), log.append(2)])
            };
            let b = {
                let log = Arc::clone(&log);
                thread::spawn(move || log.append(3))
            };
            let [a1, a2] = a.join().unwrap();
            let b1 = b.join().unwrap();
            assert!(a1 < a2);
            assert_eq!(log.seq.published(), Lsn::new(2, HEADER + REC as u32));
            let mut lsns = [a1, a2, b1];
            lsns.sort();
            assert_eq!(
                lsns,
                [
                    Lsn::new(1, HEADER),
                    Lsn::new(1, HEADER + REC as u32),
                    Lsn::new(2, HEADER)
                ]
            );
            let mut all = log.read_published();
            all.sort();
            assert_eq!(all, [1, 2, 3]);
        });
    }
}
