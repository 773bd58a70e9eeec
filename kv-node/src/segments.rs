//! Live and dead bytes per log segment: what compaction decides on.

use std::collections::BTreeMap;

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::stripe::{STRIPES, stripe};

/// Byte counts of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentUsage {
    pub seq: u32,
    /// Framed bytes of every record in the segment.
    pub total: u64,
    /// Framed bytes of records no longer referenced by the index.
    pub dead: u64,
    /// Framed bytes of live records with an expiry (`docs/design.md`, *Expiring keys*).
    pub expiring: u64,
    /// The latest expiry of a record with one ever written to the segment (0: none): once the
    /// clock passes it, `expiring` bytes are all expired.
    pub max_expiry: u64,
}

impl SegmentUsage {
    /// Bytes compaction would reclaim at `now`: the dead ones, and the expiring ones once all
    /// of them expired (then they become tombstones or go: mostly reclaimed).
    pub fn reclaimable(&self, now: u64) -> u64 {
        let expired = if self.expiring > 0 && now >= self.max_expiry {
            self.expiring
        } else {
            0
        };
        (self.dead + expired).min(self.total)
    }
}

/// One segment's counts in one stripe.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    seq: u32,
    total: u64,
    dead: u64,
    /// Added when an expiring record is written, subtracted when it dies: can go below zero
    /// in one stripe (another thread's stripe holds the addition).
    expiring: i64,
    max_expiry: u64,
}

/// One thread's share: counts per segment, ordered by segment. A vector searched from
/// its end rather than a map: almost every count goes to the newest segment (the active one),
/// and a node has tens of segments, not thousands.
type Stripe = CachePadded<Mutex<Vec<Counts>>>;

/// Per segment `(total, dead)`, striped by thread (see `stripe`): every write adds to the
/// counts of the active segment, and a shared map would bounce between the writers' cores.
/// A thread's stripe is locked only by that thread, except by the rare reader.
#[derive(Default)]
pub(crate) struct Segments {
    stripes: [Stripe; STRIPES],
}

/// The counts of `seq` in a stripe, added if absent.
fn counts(stripe: &mut Vec<Counts>, seq: u32) -> &mut Counts {
    let fresh = Counts {
        seq,
        ..Counts::default()
    };
    let at = match stripe.iter().rposition(|e| e.seq <= seq) {
        Some(i) if stripe[i].seq == seq => i,
        Some(i) => {
            stripe.insert(i + 1, fresh);
            i + 1
        }
        None => {
            stripe.insert(0, fresh);
            0
        }
    };
    &mut stripe[at]
}

impl Segments {
    /// A record of `bytes` (framed) was written to segment `seq`.
    pub fn written(&self, seq: u32, bytes: u64) {
        counts(&mut self.stripes[stripe()].lock(), seq).total += bytes;
    }

    /// A record of `bytes` (framed) expiring at `expires` was written to segment `seq` (and
    /// is live).
    pub fn written_expiring(&self, seq: u32, bytes: u64, expires: u64) {
        let mut stripe = self.stripes[stripe()].lock();
        let c = counts(&mut stripe, seq);
        c.total += bytes;
        c.expiring += bytes as i64;
        c.max_expiry = c.max_expiry.max(expires);
    }

    /// A record of `bytes` (framed) in segment `seq` is no longer needed.
    pub fn dead(&self, seq: u32, bytes: u64) {
        counts(&mut self.stripes[stripe()].lock(), seq).dead += bytes;
    }

    /// A record with an expiry, of `bytes` (framed) in segment `seq`, is no longer needed.
    pub fn dead_expiring(&self, seq: u32, bytes: u64) {
        let mut stripe = self.stripes[stripe()].lock();
        let c = counts(&mut stripe, seq);
        c.dead += bytes;
        c.expiring -= bytes as i64;
    }

    /// Forgets segments below `seq` (deleted).
    pub fn remove_below(&self, seq: u32) {
        for s in &self.stripes {
            s.lock().retain(|e| e.seq >= seq);
        }
    }

    /// Every segment's counts, in order.
    pub fn snapshot(&self) -> Vec<SegmentUsage> {
        let mut sum: BTreeMap<u32, Counts> = BTreeMap::new();
        for s in &self.stripes {
            for c in s.lock().iter() {
                let e = sum.entry(c.seq).or_default();
                e.total += c.total;
                e.dead += c.dead;
                e.expiring += c.expiring;
                e.max_expiry = e.max_expiry.max(c.max_expiry);
            }
        }
        sum.into_iter()
            .map(|(seq, c)| SegmentUsage {
                seq,
                total: c.total,
                dead: c.dead.min(c.total),
                expiring: (c.expiring.max(0) as u64).min(c.total),
                max_expiry: c.max_expiry,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_segment() {
        let s = Segments::default();
        s.written(1, 100);
        s.written(1, 50);
        s.dead(1, 100);
        s.written(2, 10);
        // Out of order: a newer segment, then older ones.
        s.written(5, 7);
        s.dead(3, 4);
        s.written(0, 1);
        // Another thread's stripe adds up with this one's.
        std::thread::scope(|t| {
            t.spawn(|| s.written(5, 3));
        });
        let usage = |seq, total, dead| SegmentUsage {
            seq,
            total,
            dead,
            expiring: 0,
            max_expiry: 0,
        };
        assert_eq!(
            s.snapshot(),
            [
                usage(0, 1, 0),
                usage(1, 150, 100),
                usage(2, 10, 0),
                usage(3, 0, 0), // dead bytes never exceed the total
                usage(5, 10, 0),
            ]
        );
        s.remove_below(2);
        let seqs: Vec<u32> = s.snapshot().iter().map(|u| u.seq).collect();
        assert_eq!(seqs, [2, 3, 5]);
        s.remove_below(5);
        assert_eq!(s.snapshot(), [usage(5, 10, 0)]);
    }

    /// Expiring bytes count as reclaimable once the clock passes the segment's latest
    /// expiry, and only while they are live (one that died is in `dead` already).
    #[test]
    fn expiring_bytes_become_reclaimable_after_the_latest_expiry() {
        let s = Segments::default();
        s.written(1, 100);
        s.written_expiring(1, 40, 1_000);
        s.written_expiring(1, 40, 2_000);
        // Dies on another thread: the stripes add up.
        std::thread::scope(|t| {
            t.spawn(|| s.dead_expiring(1, 40));
        });
        let u = s.snapshot()[0];
        assert_eq!(
            (u.total, u.dead, u.expiring, u.max_expiry),
            (180, 40, 40, 2_000)
        );
        assert_eq!(u.reclaimable(1_999), 40);
        assert_eq!(u.reclaimable(2_000), 80);
    }
}
