//! One partition of the index: an open-addressing hash table whose slots hold whole entries.
//!
//! hashbrown keeps a table's control bytes apart from its entries, so a lookup in a table
//! larger than the CPU's caches is two dependent cache misses: the control group, then the
//! entry. Here a slot *is* the entry (64 bytes, one cache line: token, inline key, location),
//! found by linear probing from the home slot its token picks, so a lookup is one miss (plus
//! the next line, which the CPU's adjacent-line prefetcher usually has in flight, when the
//! key sits past its home). And the home slot is known before the probe starts, so a
//! multi-get can prefetch every key's slot first and overlap the misses.
//!
//! - An empty slot is an entry with an empty key (keys are never empty: `Error::EmptyKey`).
//! - The home slot is given by the top bits of `token * φ` (Fibonacci hashing): all tokens of
//!   a partition share their own top bits, the product's depend on every bit.
//! - A table is at most 3/4 full, and doubles when an insert would pass that: a lookup that
//!   misses probes 0.5 (1 + 1/(1-a)^2) slots on average (8.5 at a = 3/4, 2.5 at the 3/8 just
//!   after a doubling), one that hits 0.5 (1 + 1/(1-a)) (2.5 and 1.3); the slots of a probe
//!   are consecutive lines.
//! - Removal shifts the later entries of the run back (Knuth's Algorithm R), so no deleted
//!   markers accumulate and lookups never slow down with churn.

use allocator_api2::vec::Vec;

use crate::arena::HugePages;
use crate::index::{Entry, Key, Location};

/// Fewest slots of a table that has any.
const MIN_SLOTS: usize = 8;

/// The multiplier of Fibonacci hashing (2^64 / φ).
const PHI: u64 = 0x9E37_79B9_7F4A_7C15;

pub(crate) struct Table {
    /// A power of two of them, or none.
    slots: Vec<Entry, HugePages>,
    len: usize,
    /// `64 - log2(slots.len())`: a token's home slot is `(token * PHI) >> shift`.
    shift: u32,
    /// Slots the next growth makes at least ([`Table::reserve`]); 0 once reached.
    reserved: usize,
}

impl Entry {
    fn empty() -> Entry {
        Entry {
            token: 0,
            key: Key::new(),
            loc: Location::NONE,
        }
    }

    fn is_empty(&self) -> bool {
        self.key.is_empty()
    }
}

/// Slots for `n` entries at most 3/4 full.
fn slots_for(n: usize) -> usize {
    (n.saturating_mul(4).div_ceil(3))
        .max(MIN_SLOTS)
        .next_power_of_two()
}

impl Table {
    pub fn new(memory: HugePages) -> Table {
        Table {
            slots: Vec::new_in(memory),
            len: 0,
            shift: 64,
            reserved: 0,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Slots, empty or not, and the slots the next growth will make at least.
    #[cfg(test)]
    pub fn capacity(&self) -> (usize, usize) {
        (self.slots.len(), self.reserved)
    }

    /// The key's entry.
    pub fn find(&self, token: u64, key: &[u8]) -> Option<&Entry> {
        self.position(token, key).ok().map(|i| &self.slots[i])
    }

    /// The key's entry, to change its location (not its key or token).
    pub fn find_mut(&mut self, token: u64, key: &[u8]) -> Option<&mut Entry> {
        self.position(token, key).ok().map(|i| &mut self.slots[i])
    }

    /// Asks the CPU to load the key's home slot, where its probe starts (a hint).
    pub fn prefetch(&self, token: u64) {
        if self.slots.is_empty() {
            return;
        }
        let at = &self.slots[self.home(token)] as *const Entry;
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            // SAFETY: `_mm_prefetch` needs SSE, which every x86-64 CPU has; it reads nothing
            // the program can observe and never faults. The address is a live slot anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = at;
    }

    /// Adds an entry whose key the table does not hold (the caller looked), growing the table
    /// if it would pass 3/4 full.
    pub fn insert_new(&mut self, entry: Entry) {
        debug_assert!(!entry.is_empty() && self.find(entry.token, &entry.key).is_none());
        if slots_for(self.len + 1) > self.slots.len() {
            self.grow_to(slots_for(self.len + 1).max(self.reserved));
        }
        self.place(entry);
        self.len += 1;
    }

    /// Removes the key's entry if `pred` accepts it; returns it.
    pub fn remove_if(
        &mut self,
        token: u64,
        key: &[u8],
        pred: impl FnOnce(&Entry) -> bool,
    ) -> Option<Entry> {
        let at = self.position(token, key).ok()?;
        if !pred(&self.slots[at]) {
            return None;
        }
        let removed = std::mem::replace(&mut self.slots[at], Entry::empty());
        self.len -= 1;
        self.close_gap(at);
        Some(removed)
    }

    /// Keeps only the entries `keep` accepts (it sees each entry once).
    ///
    /// In place, in one pass: the scan starts just after a slot that is empty to begin
    /// with (no probe crosses it) and goes once around. It empties each entry `keep`
    /// rejects, and moves each one it keeps back to the first empty slot of its probe, if
    /// removals opened one: every slot from the entry's home up to it has been scanned
    /// already, so an entry only moves to a slot the scan has passed, and every kept entry
    /// stays reachable from its home without crossing an empty slot. A table left less than a
    /// quarter of the size a fresh one would be is rebuilt smaller, to give memory back.
    pub fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        if self.len == 0 {
            return;
        }
        let n = self.slots.len();
        let mask = n - 1;
        // There is one: the table is never full.
        let Some(start) = self.slots.iter().position(Entry::is_empty) else {
            return;
        };
        let mut i = start;
        for _ in 1..n {
            i = (i + 1) & mask;
            if self.slots[i].is_empty() {
                continue;
            }
            if !keep(&self.slots[i]) {
                self.slots[i] = Entry::empty();
                self.len -= 1;
                continue;
            }
            let mut j = self.home(self.slots[i].token);
            while j != i && !self.slots[j].is_empty() {
                j = (j + 1) & mask;
            }
            if j != i {
                self.slots.swap(i, j);
            }
        }
        if self.len == 0 {
            let memory = self.slots.allocator().clone();
            self.slots = Vec::new_in(memory);
            self.shift = 64;
        } else if slots_for(self.len) * 4 <= n {
            self.grow_to(slots_for(self.len));
        }
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().filter(|e| !e.is_empty())
    }

    /// Makes room for `additional` more entries: the next time the table grows, it grows
    /// to hold them all, so it grows (and rehashes) once rather than doubling again and
    /// again. Lazily: the memory is taken (and zeroed by the kernel) by the insert that
    /// needs it, on the thread that inserts, and a table no key arrives in takes none.
    pub fn reserve(&mut self, additional: usize) {
        let want = slots_for(self.len.saturating_add(additional));
        if want > self.slots.len() {
            self.reserved = self.reserved.max(want);
        }
    }

    fn home(&self, token: u64) -> usize {
        (token.wrapping_mul(PHI) >> self.shift) as usize
    }

    /// `Ok(slot)` of the key, or `Err(slot)`: the empty slot that ends its probe (`Err(0)`
    /// for a table without slots).
    fn position(&self, token: u64, key: &[u8]) -> Result<usize, usize> {
        if self.slots.is_empty() {
            return Err(0);
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(token);
        // Ends: the table is never full, so the probe meets an empty slot.
        loop {
            let e = &self.slots[i];
            if e.is_empty() {
                return Err(i);
            }
            if e.token == token && *e.key == *key {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Puts an entry in the first empty slot of its probe (there is room; `len` is the
    /// caller's).
    fn place(&mut self, entry: Entry) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(entry.token);
        while !self.slots[i].is_empty() {
            i = (i + 1) & mask;
        }
        self.slots[i] = entry;
    }

    /// Moves every entry into a table of `slots` slots (a power of two).
    fn grow_to(&mut self, slots: usize) {
        let mut fresh = Vec::with_capacity_in(slots, self.slots.allocator().clone());
        fresh.resize_with(slots, Entry::empty);
        let old = std::mem::replace(&mut self.slots, fresh);
        self.shift = 64 - slots.trailing_zeros();
        if slots >= self.reserved {
            self.reserved = 0;
        }
        for e in old.into_iter().filter(|e| !e.is_empty()) {
            self.place(e);
        }
    }

    /// After slot `gap` was emptied: moves back each later entry of the run that may sit
    /// there (its home is not cyclically within `(gap, here]`), so every entry stays
    /// reachable from its home without crossing an empty slot.
    fn close_gap(&mut self, mut gap: usize) {
        let mask = self.slots.len() - 1;
        let mut i = gap;
        loop {
            i = (i + 1) & mask;
            if self.slots[i].is_empty() {
                return;
            }
            let home = self.home(self.slots[i].token);
            let stays = if gap <= i {
                gap < home && home <= i
            } else {
                gap < home || home <= i
            };
            if !stays {
                self.slots.swap(gap, i);
                gap = i;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::Version;

    fn entry(token: u64, key: &[u8], v: u64) -> Entry {
        Entry {
            token,
            key: Key::from_slice(key),
            loc: Location {
                version: Version::new(v),
                ..Location::NONE
            },
        }
    }

    #[test]
    fn slots_keep_a_quarter_free() {
        assert_eq!(slots_for(0), 8);
        assert_eq!(slots_for(6), 8);
        assert_eq!(slots_for(7), 16);
        assert_eq!(slots_for(768), 1024);
        assert_eq!(slots_for(769), 2048);
    }

    #[test]
    fn an_entry_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Entry>(), 64);
    }

    /// Tokens that all share a home slot (the hard case for removal): a run wraps around
    /// the end of the table and entries removed from its middle leave the others reachable.
    #[test]
    fn colliding_runs_survive_removal_across_the_wrap() {
        let mut t = Table::new(HugePages::default());
        t.grow_to(8);
        // Tokens whose home is the last slot: the run wraps to slots 0, 1, ...
        let homes_last: std::vec::Vec<u64> = (1..u64::MAX)
            .filter(|&tok| t.home(tok) == 7)
            .take(5)
            .collect();
        for (i, &tok) in homes_last.iter().enumerate() {
            t.insert_new(entry(tok, &[i as u8 + 1], i as u64));
        }
        assert_eq!(t.slots.len(), 8, "no growth: 5 of 8");
        let removed = t.remove_if(homes_last[1], &[2], |_| true).unwrap();
        assert_eq!(removed.loc.version, Version::new(1));
        for (i, &tok) in homes_last.iter().enumerate() {
            assert_eq!(t.find(tok, &[i as u8 + 1]).is_some(), i != 1, "{i}");
        }
        assert_eq!(t.len(), 4);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8, u8),
        Remove(u8),
        RetainOdd,
        Reserve(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => any::<u8>().prop_map(Op::Remove),
            1 => Just(Op::RetainOdd),
            1 => any::<u8>().prop_map(Op::Reserve),
        ]
    }

    /// Under Miri (`table` is one of the two modules with unsafe code) a shorter run.
    const MAX_OPS: usize = if cfg!(miri) { 40 } else { 400 };

    proptest! {
        // Under Miri also fewer cases, and no failure file: its isolation refuses the file
        // access (`getcwd`) that persisting a failure needs.
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 8 } else { ProptestConfig::default().cases },
            failure_persistence: if cfg!(miri) {
                None
            } else {
                ProptestConfig::default().failure_persistence
            },
            ..ProptestConfig::default()
        })]

        /// The table against a `HashMap`, with few distinct tokens (so many keys share a
        /// token and runs collide), through inserts, removals, retains and growth.
        #[test]
        fn behaves_as_a_map(ops in proptest::collection::vec(op(), 1..MAX_OPS)) {
            let token = |k: u8| u64::from(k % 16).wrapping_mul(0x1234_5678_9ABC_DEF1);
            let mut t = Table::new(HugePages::default());
            let mut model: HashMap<u8, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => match t.find_mut(token(k), &[k]) {
                        Some(e) => {
                            e.loc.version = Version::new(u64::from(v));
                            model.insert(k, u64::from(v));
                        }
                        None => {
                            t.insert_new(entry(token(k), &[k], u64::from(v)));
                            model.insert(k, u64::from(v));
                        }
                    },
                    Op::Remove(k) => {
                        let got = t.remove_if(token(k), &[k], |_| true);
                        prop_assert_eq!(got.map(|e| e.loc.version.as_u64()), model.remove(&k));
                    }
                    Op::RetainOdd => {
                        let mut seen: HashMap<u8, usize> = HashMap::new();
                        t.retain(|e| {
                            *seen.entry(e.key[0]).or_default() += 1;
                            e.key[0] % 2 == 1
                        });
                        // Each entry seen once, and every one.
                        prop_assert!(seen.values().all(|&n| n == 1), "{:?}", seen);
                        prop_assert_eq!(seen.len(), model.len());
                        model.retain(|k, _| k % 2 == 1);
                    }
                    Op::Reserve(n) => t.reserve(usize::from(n)),
                }
                prop_assert_eq!(t.len(), model.len());
                prop_assert!(t.len() * 4 <= t.slots.len() * 3 || t.slots.is_empty());
                for k in 0..=255u8 {
                    let got = t.find(token(k), &[k]).map(|e| e.loc.version.as_u64());
                    prop_assert_eq!(got, model.get(&k).copied(), "key {}", k);
                }
                prop_assert_eq!(t.iter().count(), model.len());
            }
        }
    }
}
