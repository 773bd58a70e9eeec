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
}

/// One thread's share: `(segment, total, dead)`, ordered by segment. A vector searched from
/// its end rather than a map: almost every count goes to the newest segment (the active one),
/// and a node has tens of segments, not thousands.
type Stripe = CachePadded<Mutex<Vec<(u32, u64, u64)>>>;

/// Per segment `(total, dead)`, striped by thread (see `stripe`): every write adds to the
/// counts of the active segment, and a shared map would bounce between the writers' cores.
/// A thread's stripe is locked only by that thread, except by the rare reader.
#[derive(Default)]
pub(crate) struct Segments {
    stripes: [Stripe; STRIPES],
}

/// The counts of `seq` in a stripe, added if absent.
fn counts(stripe: &mut Vec<(u32, u64, u64)>, seq: u32) -> &mut (u32, u64, u64) {
    let at = match stripe.iter().rposition(|e| e.0 <= seq) {
        Some(i) if stripe[i].0 == seq => i,
        Some(i) => {
            stripe.insert(i + 1, (seq, 0, 0));
            i + 1
        }
        None => {
            stripe.insert(0, (seq, 0, 0));
            0
        }
    };
    &mut stripe[at]
}

impl Segments {
    /// A record of `bytes` (framed) was written to segment `seq`.
    pub fn written(&self, seq: u32, bytes: u64) {
        counts(&mut self.stripes[stripe()].lock(), seq).1 += bytes;
    }

    /// A record of `bytes` (framed) in segment `seq` is no longer needed.
    pub fn dead(&self, seq: u32, bytes: u64) {
        counts(&mut self.stripes[stripe()].lock(), seq).2 += bytes;
    }

    /// Forgets segments below `seq` (deleted).
    pub fn remove_below(&self, seq: u32) {
        for s in &self.stripes {
            s.lock().retain(|e| e.0 >= seq);
        }
    }

    /// Every segment's counts, in order.
    pub fn snapshot(&self) -> Vec<SegmentUsage> {
        let mut sum: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for s in &self.stripes {
            for &(seq, total, dead) in s.lock().iter() {
                let e = sum.entry(seq).or_default();
                e.0 += total;
                e.1 += dead;
            }
        }
        sum.into_iter()
            .map(|(seq, (total, dead))| SegmentUsage {
                seq,
                total,
                dead: dead.min(total),
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
        let usage = |seq, total, dead| SegmentUsage { seq, total, dead };
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
}
