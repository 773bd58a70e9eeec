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

/// One thread's share: segment -> `(total, dead)`.
type Stripe = CachePadded<Mutex<BTreeMap<u32, (u64, u64)>>>;

/// Per segment `(total, dead)`, striped by thread (see `stripe`): every write adds to the
/// counts of the active segment, and a shared map would bounce between the writers' cores.
/// A thread's stripe is locked only by that thread, except by the rare reader.
#[derive(Default)]
pub(crate) struct Segments {
    stripes: [Stripe; STRIPES],
}

impl Segments {
    /// A record of `bytes` (framed) was written to segment `seq`.
    pub fn written(&self, seq: u32, bytes: u64) {
        self.stripes[stripe()].lock().entry(seq).or_default().0 += bytes;
    }

    /// A record of `bytes` (framed) in segment `seq` is no longer needed.
    pub fn dead(&self, seq: u32, bytes: u64) {
        self.stripes[stripe()].lock().entry(seq).or_default().1 += bytes;
    }

    /// Forgets segments below `seq` (deleted).
    pub fn remove_below(&self, seq: u32) {
        for s in &self.stripes {
            let mut map = s.lock();
            *map = map.split_off(&seq);
        }
    }

    /// Every segment's counts, in order.
    pub fn snapshot(&self) -> Vec<SegmentUsage> {
        let mut sum: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for s in &self.stripes {
            for (&seq, &(total, dead)) in s.lock().iter() {
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
        s.remove_below(2);
        assert_eq!(
            s.snapshot(),
            vec![SegmentUsage {
                seq: 2,
                total: 10,
                dead: 0
            }]
        );
    }
}
