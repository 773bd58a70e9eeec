//! Live and dead bytes per log segment: what compaction decides on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

#[derive(Default)]
struct Usage {
    /// Framed bytes of every record in the segment.
    total: AtomicU64,
    /// Framed bytes of records no longer referenced by the index.
    dead: AtomicU64,
}

/// Byte counts of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentUsage {
    pub seq: u32,
    pub total: u64,
    pub dead: u64,
}

#[derive(Default)]
pub(crate) struct Segments {
    map: RwLock<BTreeMap<u32, Usage>>,
}

impl Segments {
    fn add(&self, seq: u32, bytes: u64, field: impl Fn(&Usage) -> &AtomicU64) {
        if let Some(u) = self.map.read().get(&seq) {
            field(u).fetch_add(bytes, Ordering::Relaxed);
            return;
        }
        let mut map = self.map.write();
        field(map.entry(seq).or_default()).fetch_add(bytes, Ordering::Relaxed);
    }

    /// A record of `bytes` (framed) was written to segment `seq`.
    pub fn written(&self, seq: u32, bytes: u64) {
        self.add(seq, bytes, |u| &u.total);
    }

    /// A record of `bytes` (framed) in segment `seq` is no longer needed.
    pub fn dead(&self, seq: u32, bytes: u64) {
        self.add(seq, bytes, |u| &u.dead);
    }

    /// Forgets segments below `seq` (deleted).
    pub fn remove_below(&self, seq: u32) {
        let mut map = self.map.write();
        *map = map.split_off(&seq);
    }

    pub fn snapshot(&self) -> Vec<SegmentUsage> {
        self.map
            .read()
            .iter()
            .map(|(&seq, u)| SegmentUsage {
                seq,
                total: u.total.load(Ordering::Relaxed),
                dead: u
                    .dead
                    .load(Ordering::Relaxed)
                    .min(u.total.load(Ordering::Relaxed)),
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
