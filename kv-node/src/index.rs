//! The in-memory index: key -> where its newest record is, partitioned by token.
//!
//! `2^bits` partitions, chosen by the top bits of the key's token, each a hash table
//! ([`Table`], keyed by the token itself, so no key is hashed twice) behind its own
//! `RwLock`. Partitioning by the *top* bits keeps the ring's order: a token range covers a
//! contiguous run of partitions, so range operations visit only the keys in the range plus
//! at most two partial partitions at its edges.

use kv_ring::TokenRange;
use kv_wal::Lsn;
use parking_lot::RwLock;

use crate::Version;
use crate::arena::HugePages;
use crate::table::Table;

/// Where a key's newest record is, and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub version: Version,
    pub lsn: Lsn,
    /// The record's payload length.
    pub len: u32,
    pub tombstone: bool,
    /// A record of the key older than this one may have been logged *after* this one (a
    /// write that lost the race to this one after its lookup, or whose index update this
    /// one overtook). Such a tombstone must not be purged before it is logged again after
    /// everything (compaction copies it instead); moving the record to the head of the log
    /// clears it.
    pub stale_after: bool,
    /// The record is a put with an expiry (format 1). The expiry itself stays in the record:
    /// the entry is one cache line with no room for 8 more bytes (`docs/design.md`, *Expiring
    /// keys*), and what reads it (a value read, compaction's copy) reads the record anyway.
    pub expiring: bool,
}

impl Location {
    /// A placeholder (what an empty slot of a table holds).
    pub const NONE: Location = Location {
        version: Version::ZERO,
        lsn: Lsn::ZERO,
        len: 0,
        tombstone: false,
        stale_after: false,
        expiring: false,
    };

    /// What [`Location::stale_after`] becomes for a newer record at `lsn` replacing this one:
    /// a stale record after this one, or this one itself, may lie after `lsn`.
    pub fn passes_stale_to(&self, lsn: Lsn) -> bool {
        self.stale_after || self.lsn > lsn
    }
}

/// A key as the index stores it.
pub(crate) type Key = smallvec::SmallVec<[u8; 24]>;

/// One cache line (see `table`).
#[repr(align(64))]
pub(crate) struct Entry {
    pub token: u64,
    /// Inline up to 24 bytes: no allocation, and no pointer to chase on a lookup.
    pub key: Key,
    pub loc: Location,
}

/// What [`Index::upsert`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Upsert {
    /// The key was new.
    Inserted,
    /// The key's previous newest record is now dead.
    Replaced(Location),
    /// The index already had a newer (or the same) version, this one: the new record is dead.
    Kept(Location),
}

/// The most keys a hint makes room for ([`Index::reserve_in`]): 2^23 (8.4 M), about 1 GiB of
/// slots whatever the partitioning.
pub(crate) const MAX_RESERVED_KEYS: usize = 1 << 23;

pub(crate) struct Index {
    parts: Box<[RwLock<Table>]>,
    shift: u32,
}

impl Index {
    pub fn new(bits: u32) -> Index {
        let memory = HugePages::default();
        Index {
            parts: (0..1usize << bits)
                .map(|_| RwLock::new(Table::new(memory.clone())))
                .collect(),
            shift: 64 - bits,
        }
    }

    fn part_of(&self, token: u64) -> usize {
        (token >> self.shift) as usize
    }
}

impl Index {
    pub fn get(&self, token: u64, key: &[u8]) -> Option<Location> {
        let part = self.parts[self.part_of(token)].read();
        part.find(token, key).map(|e| e.loc)
    }

    /// [`Index::get`] for many keys: the read locks of all their partitions are taken first
    /// (in partition order, so two batches cannot deadlock; writers hold one partition lock
    /// at a time), then every key's home slot is prefetched, then the lookups run: their
    /// cache misses overlap instead of following one another.
    pub fn get_many(&self, keys: &[(u64, &[u8])]) -> Vec<Option<Location>> {
        let mut parts: Vec<usize> = keys.iter().map(|&(t, _)| self.part_of(t)).collect();
        parts.sort_unstable();
        parts.dedup();
        let guards: Vec<_> = parts.iter().map(|&p| self.parts[p].read()).collect();
        let table = |token: u64| {
            let g = parts
                .binary_search(&self.part_of(token))
                .expect("every key's partition is locked");
            &guards[g]
        };
        for &(token, _) in keys {
            table(token).prefetch(token);
        }
        keys.iter()
            .map(|&(token, key)| table(token).find(token, key).map(|e| e.loc))
            .collect()
    }

    /// Asks the CPU to load the key's home slot (a hint; nothing if a writer holds the
    /// partition): a writer calls it before its append, so the slot's cache miss overlaps
    /// the append instead of stalling the index update after it.
    pub fn prefetch(&self, token: u64) {
        if let Some(part) = self.parts[self.part_of(token)].try_read() {
            part.prefetch(token);
        }
    }

    /// Runs `f` on the key's location while holding its partition's read lock, so no writer
    /// can change the key meanwhile (used to fill the cache only with the current version).
    pub fn with_location<R>(
        &self,
        token: u64,
        key: &[u8],
        f: impl FnOnce(Option<&Location>) -> R,
    ) -> R {
        let part = self.parts[self.part_of(token)].read();
        f(part.find(token, key).map(|e| &e.loc))
    }

    /// Makes room for about `n` keys in all (recovery, from the hint files' sizes), so the
    /// tables do not rehash as they fill.
    pub fn reserve(&self, n: usize) {
        let per = n / self.parts.len();
        if per > 0 {
            for p in self.parts.iter() {
                p.write().reserve(per + per / 8);
            }
        }
    }

    /// Makes room for about `n` more keys whose tokens lie in `ranges` (an import about to
    /// arrive), each partition in proportion to the share of the ranges' tokens it covers,
    /// so the tables do not rehash as they fill and no partition outside the ranges grows.
    ///
    /// `n` is an estimate from outside (a coordinator's), taken up to [`MAX_RESERVED_KEYS`],
    /// so an absurd estimate cannot make the first insert into each partition allocate
    /// memory the keys will never need (or more than the machine has). A larger import still
    /// arrives whole; its tables then grow as they fill.
    pub fn reserve_in(&self, ranges: &[TokenRange], n: usize) {
        let n = n.min(MAX_RESERVED_KEYS);
        // Each range as half-open spans of u128 tokens: `[start + 1, end + 1)`.
        let mut spans: Vec<(u128, u128)> = Vec::new();
        for r in ranges {
            let (start, end) = (u128::from(r.start) + 1, u128::from(r.end) + 1);
            if r.is_full() {
                spans.push((0, 1 << 64));
            } else if r.start < r.end {
                spans.push((start, end));
            } else {
                spans.push((start, 1 << 64));
                spans.push((0, end));
            }
        }
        let total: u128 = spans.iter().map(|(a, b)| b - a).sum();
        if total == 0 || n == 0 {
            return;
        }
        let width = 1u128 << self.shift;
        for part in self.partitions_for(ranges) {
            let (lo, hi) = (part as u128 * width, (part as u128 + 1) * width);
            let covered: u128 = spans
                .iter()
                .map(|&(a, b)| b.min(hi).saturating_sub(a.max(lo)))
                .sum();
            // Exact in u128: n < 2^64 and covered <= 2^64.
            let share = (n as u128 * covered / total) as usize;
            if share > 0 {
                self.parts[part]
                    .write()
                    .reserve(share.saturating_add(share / 8));
            }
        }
    }

    /// Last writer wins: stores `loc` if its version is higher than the key's current one
    /// (or equal, when `replace_equal`: recovery lets a later copy of the same write win).
    pub fn upsert(&self, token: u64, key: &[u8], loc: Location, replace_equal: bool) -> Upsert {
        let mut part = self.parts[self.part_of(token)].write();
        match part.find_mut(token, key) {
            Some(e) => {
                let newer = loc.version > e.loc.version
                    || (replace_equal && loc.version == e.loc.version && loc.lsn > e.loc.lsn);
                if newer {
                    let loc = Location {
                        stale_after: e.loc.passes_stale_to(loc.lsn),
                        ..loc
                    };
                    Upsert::Replaced(std::mem::replace(&mut e.loc, loc))
                } else {
                    // An older record logged after the key's current one.
                    e.loc.stale_after |= loc.lsn > e.loc.lsn;
                    Upsert::Kept(e.loc)
                }
            }
            None => {
                part.insert_new(Entry {
                    token,
                    key: Key::from_slice(key),
                    loc,
                });
                Upsert::Inserted
            }
        }
    }

    /// Points the key at `to` if it still points at `from` (compaction moved the record).
    pub fn relocate(&self, token: u64, key: &[u8], from: Lsn, to: Lsn) -> bool {
        let mut part = self.parts[self.part_of(token)].write();
        match part.find_mut(token, key) {
            Some(e) if e.loc.lsn == from => {
                // At the head of the log, after every record there is.
                e.loc.lsn = to;
                e.loc.stale_after = false;
                true
            }
            _ => false,
        }
    }

    /// Turns the key's expired value at `from` into the tombstone at `to` of `len` bytes (its
    /// version unchanged), if the key still points at `from`; returns what it was.
    pub fn convert_expired(
        &self,
        token: u64,
        key: &[u8],
        from: Lsn,
        to: Lsn,
        len: u32,
    ) -> Option<Location> {
        let mut part = self.parts[self.part_of(token)].write();
        match part.find_mut(token, key) {
            Some(e) if e.loc.lsn == from => {
                let old = e.loc;
                // At the head of the log, after every record there is (as `relocate`).
                e.loc = Location {
                    lsn: to,
                    len,
                    tombstone: true,
                    stale_after: false,
                    expiring: false,
                    ..old
                };
                Some(old)
            }
            _ => None,
        }
    }

    /// Points the key's tombstone of `version` at `to` if it is logged before `to` (a copy
    /// written after a stale record of the key); returns where it was.
    pub fn advance_tombstone(
        &self,
        token: u64,
        key: &[u8],
        version: Version,
        to: Lsn,
    ) -> Option<Lsn> {
        let mut part = self.parts[self.part_of(token)].write();
        match part.find_mut(token, key) {
            Some(e) if e.loc.tombstone && e.loc.version == version && e.loc.lsn < to => {
                e.loc.stale_after = false;
                Some(std::mem::replace(&mut e.loc.lsn, to))
            }
            _ => None,
        }
    }

    /// Removes the key's tombstone if it still points at `at` and no older record of the key
    /// is known to be logged after it; returns what was removed.
    pub fn remove_purged(&self, token: u64, key: &[u8], at: Lsn) -> Option<Location> {
        let mut part = self.parts[self.part_of(token)].write();
        part.remove_if(token, key, |e| e.loc.lsn == at && !e.loc.stale_after)
            .map(|e| e.loc)
    }

    /// Removes the key if it still points at `at`; returns what was removed.
    pub fn remove_at(&self, token: u64, key: &[u8], at: Lsn) -> Option<Location> {
        let mut part = self.parts[self.part_of(token)].write();
        part.remove_if(token, key, |e| e.loc.lsn == at)
            .map(|e| e.loc)
    }

    /// The partitions that can hold tokens of `ranges`, in order, each once.
    pub fn partitions_for(&self, ranges: &[TokenRange]) -> Vec<usize> {
        let last = self.parts.len() - 1;
        let mut marks = vec![false; self.parts.len()];
        let mut mark = |from: usize, to: usize| marks[from..=to].iter_mut().for_each(|m| *m = true);
        for r in ranges {
            if r.is_full() {
                mark(0, last);
            } else if r.start < r.end {
                mark(self.part_of(r.start + 1), self.part_of(r.end));
            } else {
                if r.start < u64::MAX {
                    mark(self.part_of(r.start + 1), last);
                }
                mark(0, self.part_of(r.end));
            }
        }
        marks
            .iter()
            .enumerate()
            .filter_map(|(i, &m)| m.then_some(i))
            .collect()
    }

    /// Calls `f` on every entry of partition `part` whose token lies in `ranges` (under the
    /// partition's read lock: keep `f` short).
    pub fn scan_partition(&self, part: usize, ranges: &[TokenRange], mut f: impl FnMut(&Entry)) {
        let part = self.parts[part].read();
        for e in part.iter() {
            if ranges.iter().any(|r| r.contains(e.token)) {
                f(e);
            }
        }
    }

    /// Removes every entry of partition `part` in `ranges` whose record is before `before`;
    /// calls `f` on each removed entry.
    pub fn drop_in_partition(
        &self,
        part: usize,
        ranges: &[TokenRange],
        before: Lsn,
        mut f: impl FnMut(&Entry),
    ) {
        let mut part = self.parts[part].write();
        part.retain(|e| {
            let drop = e.loc.lsn < before && ranges.iter().any(|r| r.contains(e.token));
            if drop {
                f(e);
            }
            !drop
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(version: u64, lsn: u64) -> Location {
        Location {
            version: Version::new(version),
            lsn: Lsn::from_u64(lsn),
            len: 10,
            tombstone: false,
            stale_after: false,
            expiring: false,
        }
    }

    #[test]
    fn upsert_keeps_the_highest_version() {
        let ix = Index::new(4);
        assert_eq!(ix.upsert(5, b"k", loc(2, 100), false), Upsert::Inserted);
        // An older record logged after the current one: the entry remembers it.
        let flagged = Location {
            stale_after: true,
            ..loc(2, 100)
        };
        assert_eq!(
            ix.upsert(5, b"k", loc(1, 200), false),
            Upsert::Kept(flagged)
        );
        assert_eq!(
            ix.upsert(5, b"k", loc(2, 300), false),
            Upsert::Kept(flagged)
        );
        assert_eq!(ix.get(5, b"k"), Some(flagged));
        let flag = |l: Location| Location {
            stale_after: true,
            ..l
        };
        assert_eq!(
            ix.upsert(5, b"k", loc(2, 300), true),
            Upsert::Replaced(flagged)
        );
        // The replacement inherits the mark, and a record logged before the one it replaces
        // gets it too (300 lies after 50).
        assert_eq!(
            ix.upsert(5, b"k", loc(3, 50), false),
            Upsert::Replaced(flag(loc(2, 300)))
        );
        assert_eq!(ix.get(5, b"k"), Some(flag(loc(3, 50))));
        // Moving it to the head clears the mark.
        assert!(ix.relocate(5, b"k", Lsn::from_u64(50), Lsn::from_u64(900)));
        assert_eq!(ix.get(5, b"k"), Some(loc(3, 900)));
        // Same token, other key: a separate entry.
        assert_eq!(ix.upsert(5, b"j", loc(1, 1), false), Upsert::Inserted);
        assert_eq!(
            ix.upsert(5, b"j", loc(2, 2), false),
            Upsert::Replaced(loc(1, 1))
        );
        assert_eq!(ix.get(5, b"j"), Some(loc(2, 2)));
    }

    /// The flag for expiring records fits in the padding: an entry is still one cache line.
    #[test]
    fn an_entry_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Entry>(), 64);
        assert_eq!(std::mem::size_of::<Location>(), 24);
    }

    #[test]
    fn an_expired_value_becomes_a_tombstone_only_where_it_still_is() {
        let ix = Index::new(4);
        ix.upsert(
            1,
            b"k",
            Location {
                expiring: true,
                ..loc(4, 100)
            },
            false,
        );
        assert_eq!(
            ix.convert_expired(1, b"k", Lsn::from_u64(99), Lsn::from_u64(500), 9),
            None
        );
        let old = ix.convert_expired(1, b"k", Lsn::from_u64(100), Lsn::from_u64(500), 9);
        assert!(old.unwrap().expiring);
        let now = ix.get(1, b"k").unwrap();
        assert_eq!(
            (now.version, now.lsn, now.len),
            (Version::new(4), Lsn::from_u64(500), 9)
        );
        assert!(now.tombstone && !now.expiring && !now.stale_after);
    }

    #[test]
    fn relocate_and_remove_only_at_the_expected_place() {
        let ix = Index::new(4);
        ix.upsert(1, b"k", loc(1, 100), false);
        assert!(!ix.relocate(1, b"k", Lsn::from_u64(99), Lsn::from_u64(500)));
        assert!(ix.relocate(1, b"k", Lsn::from_u64(100), Lsn::from_u64(500)));
        assert_eq!(ix.get(1, b"k").unwrap().lsn, Lsn::from_u64(500));
        assert_eq!(ix.remove_at(1, b"k", Lsn::from_u64(100)), None);
        assert!(ix.remove_at(1, b"k", Lsn::from_u64(500)).is_some());
        assert_eq!(ix.get(1, b"k"), None);
    }

    #[test]
    fn reserve_in_sizes_exactly_the_partitions_of_the_ranges_once() {
        let ix = Index::new(4); // 16 partitions of 2^60 tokens
        let p = 1u64 << 60;
        // Partitions 2 and 3 whole, half of 5, and a range wrapping from 15 into 0.
        let ranges = [
            TokenRange::new(2 * p - 1, 4 * p - 1),
            TokenRange::new(5 * p + p / 2, 6 * p - 1),
            TokenRange::new(15 * p - 1, p / 2 - 1),
        ];
        // 4 partitions' worth of tokens: 1,000 keys per whole partition.
        ix.reserve_in(&ranges, 4_000);
        let capacity = |part: usize| ix.parts[part].read().capacity();
        // Lazily: nothing is allocated yet, each partition knows what to grow to.
        let mut targets = [0; 16];
        for (part, target) in targets.iter_mut().enumerate() {
            let (slots, reserved) = capacity(part);
            assert_eq!(slots, 0);
            match part {
                2 | 3 | 15 => assert!(reserved >= 1_000 * 4 / 3, "partition {part}: {reserved}"),
                0 | 5 => assert!(reserved >= 500 * 4 / 3, "partition {part}: {reserved}"),
                _ => assert_eq!(reserved, 0, "partition {part} is outside the ranges"),
            }
            *target = reserved;
        }
        // Keys spread evenly over the ranges: the first one into a partition grows it to its
        // target, and it does not grow again as the rest arrive.
        let spread = |part: u64, from: u64, count: u64| {
            (0..count).map(move |i| (part * p + from + i * (p / 2 / count), part as usize))
        };
        let tokens = spread(2, 0, 1_000)
            .chain(spread(3, 0, 1_000))
            .chain(spread(15, 0, 1_000))
            .chain(spread(5, p / 2 + 1, 500))
            .chain(spread(0, 0, 500));
        for (i, (token, part)) in tokens.enumerate() {
            ix.upsert(token, &i.to_le_bytes(), loc(1, 8 * i as u64 + 8), false);
            assert_eq!(capacity(part), (targets[part], 0), "partition {part}");
        }
        // An absurd estimate is taken up to the bound (and does not overflow): each partition
        // makes room for a sixteenth of it, an eighth over, at most 3/4 full: 2^20 slots.
        let wild = Index::new(4);
        wild.reserve_in(&[TokenRange::FULL], usize::MAX);
        for part in wild.parts.iter() {
            assert_eq!(part.read().capacity(), (0, MAX_RESERVED_KEYS / 8));
        }
        // Nothing to reserve for an empty range list or no keys.
        let fresh = Index::new(4);
        fresh.reserve_in(&[], 1_000);
        fresh.reserve_in(&ranges, 0);
        assert!(fresh.parts.iter().all(|t| t.read().capacity() == (0, 0)));
    }

    #[test]
    fn partitions_for_ranges_cover_exactly_their_tokens() {
        let ix = Index::new(4); // 16 partitions of 2^60 tokens
        let p = 1u64 << 60;
        assert_eq!(ix.partitions_for(&[TokenRange::FULL]).len(), 16);
        assert_eq!(ix.partitions_for(&[TokenRange::new(0, p - 1)]), vec![0]);
        assert_eq!(ix.partitions_for(&[TokenRange::new(p - 1, p)]), vec![1]);
        assert_eq!(
            ix.partitions_for(&[TokenRange::new(p, 3 * p)]),
            vec![1, 2, 3]
        );
        // Wrapping: (15.5p, MAX] and [0, p/2].
        assert_eq!(
            ix.partitions_for(&[TokenRange::new(15 * p + p / 2, p / 2)]),
            vec![0, 15]
        );
        assert_eq!(ix.partitions_for(&[TokenRange::new(u64::MAX, 5)]), vec![0]);
        // Overlapping ranges visit a partition once.
        assert_eq!(
            ix.partitions_for(&[TokenRange::new(0, 2 * p), TokenRange::new(p, 2 * p)]),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn drop_removes_only_older_records_in_range() {
        let ix = Index::new(4);
        ix.upsert(10, b"old", loc(1, 100), false);
        ix.upsert(11, b"new", loc(1, 900), false);
        ix.upsert(u64::MAX, b"out", loc(1, 100), false);
        let mut dropped = Vec::new();
        for part in ix.partitions_for(&[TokenRange::new(0, 20)]) {
            ix.drop_in_partition(part, &[TokenRange::new(0, 20)], Lsn::from_u64(500), |e| {
                dropped.push(e.key.to_vec())
            });
        }
        assert_eq!(dropped, vec![b"old".to_vec()]);
        assert!(ix.get(11, b"new").is_some() && ix.get(u64::MAX, b"out").is_some());
    }
}
