//! Memory for the index's hash tables, in huge pages.
//!
//! A lookup in a large index is a cache miss on the table's slot (see `table`), and on this
//! kind of machine (a VM with nested paging) also a TLB miss: a random read costs about 200 ns
//! on 4 KiB pages and 150 ns on 2 MiB pages (pointer chase over 256 MiB, see `docs/perf-log.md`).
//! The index's tables are many allocations (2^10 partitions by default, tens of KiB each at a
//! million keys), which `malloc` places on 4 KiB pages, and Linux's transparent huge pages
//! are usually enabled only on request (`madvise`). So the tables come from here instead: chunks of
//! anonymous memory mapped with `memmap2` and advised `MADV_HUGEPAGE`, carved into blocks.
//!
//! Blocks are sized in 64-byte units and aligned to 64 (a cache line, which a table's slot
//! is). The arena keeps its free memory as address-ordered extents, coalesced on free, and
//! allocates best fit. That matters for hash tables: a table that grows allocates one of twice
//! the size and frees the old one, and since the partitions grow roughly together, nobody asks
//! for the old size again; but two neighbouring freed blocks of one size merge into a block
//! for the next. (Exact-size free lists, tried first, kept every outgrown block: 44% more
//! memory than `malloc` at 1 M keys.) Memory goes back to the system only when the index is
//! dropped. If a mapping fails, the allocation falls back to the global allocator (and its
//! block is freed there: a block is the arena's exactly when its address lies in one of the
//! chunks).
//!
//! Allocation and deallocation take the arena's mutex: they happen only when a table grows,
//! never on a lookup.
//!
//! The unsafe code here is checked under Miri (which skips the `madvise`):
//! `cargo +nightly miri test -p kv-node --lib -- arena::` finds no undefined behaviour
//! (2026-12-06, nightly Miri 2026-05-19).

use std::alloc::Layout;
use std::collections::{BTreeMap, BTreeSet};
use std::ptr::NonNull;
use std::sync::Arc;

use allocator_api2::alloc::{AllocError, Allocator, Global};
use memmap2::MmapMut;
use parking_lot::Mutex;

/// Size of one chunk of huge-page memory (16 huge pages; small under Miri, which models
/// every byte).
const CHUNK: usize = if cfg!(miri) { 1 << 16 } else { 32 << 20 };
/// Block granularity and alignment.
const UNIT: usize = 64;

/// A cheaply cloned handle to a shared arena; the allocator every index table uses.
#[derive(Clone, Default)]
pub(crate) struct HugePages(Arc<Mutex<Arena>>);

#[derive(Default)]
struct Arena {
    /// Every chunk mapped so far; never unmapped before the arena is dropped. Not faulted in
    /// ahead: that makes every node hold a whole 32 MiB chunk from its first write, against
    /// ~3 MiB with pages taken as the tables touch them.
    chunks: Vec<MmapMut>,
    /// Free extents: start address -> length. Never two adjacent ones (they are merged).
    by_addr: BTreeMap<usize, usize>,
    /// The same extents by (length, start), for best fit.
    by_size: BTreeSet<(usize, usize)>,
}

impl Arena {
    fn owns(&self, ptr: NonNull<u8>) -> bool {
        let p = ptr.as_ptr().addr();
        self.chunks.iter().any(|c| {
            let start = c.as_ptr().addr();
            (start..start + c.len()).contains(&p)
        })
    }

    /// A block of `size` bytes (a multiple of `UNIT`), or `None` if no memory could be mapped.
    fn take(&mut self, size: usize) -> Option<usize> {
        if let Some(addr) = self.carve(size) {
            return Some(addr);
        }
        self.map_chunk(size.next_multiple_of(CHUNK))?;
        self.carve(size)
    }

    /// Maps a new chunk of `len` bytes and adds it to the free extents.
    fn map_chunk(&mut self, len: usize) -> Option<()> {
        let mut map = MmapMut::map_anon(len).ok()?;
        #[cfg(all(target_os = "linux", not(miri)))]
        {
            // Best effort: without huge pages the memory is still good.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        // Exposed, so that blocks carved from it can be turned back into pointers.
        let addr = map.as_mut_ptr().expose_provenance();
        self.chunks.push(map);
        // The kernel often maps the new chunk right next to an older one: `give` then merges
        // it with a free extent there, so what is free is looked up again, never assumed.
        self.give(addr, len);
        Some(())
    }

    /// Takes `size` bytes from the start of the smallest free extent that holds them.
    fn carve(&mut self, size: usize) -> Option<usize> {
        let (len, addr) = self.by_size.range((size, 0)..).next().copied()?;
        self.remove(addr, len);
        if len > size {
            self.insert(addr + size, len - size);
        }
        Some(addr)
    }

    /// Returns `[addr, addr + len)` to the free extents, merged with its neighbours.
    fn give(&mut self, mut addr: usize, mut len: usize) {
        if let Some((&prev, &prev_len)) = self.by_addr.range(..addr).next_back()
            && prev + prev_len == addr
        {
            self.remove(prev, prev_len);
            addr = prev;
            len += prev_len;
        }
        if let Some(&next_len) = self.by_addr.get(&(addr + len)) {
            self.remove(addr + len, next_len);
            len += next_len;
        }
        self.insert(addr, len);
    }

    fn insert(&mut self, addr: usize, len: usize) {
        self.by_addr.insert(addr, len);
        self.by_size.insert((len, addr));
    }

    fn remove(&mut self, addr: usize, len: usize) {
        self.by_addr.remove(&addr);
        self.by_size.remove(&(len, addr));
    }

    /// Bytes held in free extents.
    #[cfg(test)]
    fn free_bytes(&self) -> usize {
        self.by_addr.values().sum()
    }
}

fn block_size(layout: Layout) -> usize {
    layout.size().max(1).next_multiple_of(UNIT)
}

// SAFETY: a block handed out is `block_size(layout)` bytes (at least `layout.size()`), aligned
// to `UNIT` (64; chunks are page-aligned and every extent boundary is a multiple of `UNIT`; a
// larger alignment goes to `Global`), and belongs to exactly one allocation until it is
// deallocated: free extents hold only memory never handed out or given back, and an extent
// leaves them before any of it is handed out. Chunks stay mapped (and
// so blocks stay valid) until the last clone of the handle is dropped, and a table (its
// `Vec`) holds a clone for as long as it holds memory.
unsafe impl Allocator for HugePages {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.align() > UNIT {
            return Global.allocate(layout);
        }
        let size = block_size(layout);
        let block = self.0.lock().take(size);
        match block.and_then(|a| NonNull::new(std::ptr::with_exposed_provenance_mut::<u8>(a))) {
            Some(ptr) => Ok(NonNull::slice_from_raw_parts(ptr, size)),
            None => Global.allocate(layout),
        }
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        let mut arena = self.0.lock();
        if layout.align() <= UNIT && arena.owns(ptr) {
            arena.give(ptr.as_ptr().addr(), block_size(layout));
        } else {
            drop(arena);
            // SAFETY: not the arena's, so `Global.allocate` gave it, with this layout (the
            // caller's contract).
            unsafe { Global.deallocate(ptr, layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use hashbrown::HashTable;

    use super::*;

    #[test]
    fn blocks_are_aligned_distinct_and_reused() {
        let a = HugePages::default();
        let l = Layout::from_size_align(100, 16).unwrap();
        let x = a.allocate(l).unwrap();
        let y = a.allocate(l).unwrap();
        assert_eq!(x.len(), 128);
        assert_eq!(x.cast::<u8>().as_ptr() as usize % UNIT, 0);
        assert_ne!(x.cast::<u8>(), y.cast::<u8>());
        // SAFETY: allocated above with `l`, not freed yet.
        unsafe { a.deallocate(x.cast(), l) };
        let z = a.allocate(l).unwrap();
        assert_eq!(z.cast::<u8>(), x.cast::<u8>(), "a freed block is reused");
        // SAFETY: as above.
        unsafe {
            a.deallocate(y.cast(), l);
            a.deallocate(z.cast(), l);
        }
    }

    #[test]
    fn neighbouring_free_blocks_merge() {
        let a = HugePages::default();
        let l = Layout::from_size_align(64, 16).unwrap();
        let blocks: Vec<_> = (0..4)
            .map(|_| a.allocate(l).unwrap().cast::<u8>())
            .collect();
        // SAFETY: allocated above with `l`, each freed once.
        unsafe {
            a.deallocate(blocks[1], l);
            a.deallocate(blocks[2], l);
        }
        let two = Layout::from_size_align(128, 16).unwrap();
        let p = a.allocate(two).unwrap().cast::<u8>();
        assert_eq!(p, blocks[1], "blocks 1 and 2 merged; best fit takes them");
        // SAFETY: as above.
        unsafe {
            a.deallocate(p, two);
            a.deallocate(blocks[0], l);
            a.deallocate(blocks[3], l);
        }
        let arena = a.0.lock();
        assert_eq!(arena.free_bytes(), CHUNK, "everything back, in one extent");
        assert_eq!(arena.by_addr.len(), 1);
    }

    /// The two maps describe the same extents, and no two extents touch.
    fn assert_consistent(arena: &Arena) {
        let from_addr: BTreeSet<(usize, usize)> =
            arena.by_addr.iter().map(|(&a, &l)| (l, a)).collect();
        assert_eq!(from_addr, arena.by_size);
        let extents: Vec<_> = arena.by_addr.iter().collect();
        for w in extents.windows(2) {
            assert!(w[0].0 + w[0].1 < *w[1].0, "adjacent or overlapping: {w:?}");
        }
    }

    /// A new chunk can land right below a free extent of an older one (mmap maps downwards)
    /// and merge with it. The block carved from it must then be gone from both maps: it was
    /// not (the merged extent stayed in `by_size`), and a later allocation got the same block
    /// again, which corrupted the index of a node under a cluster's redistribution.
    #[test]
    fn a_chunk_merged_with_a_free_neighbour_is_carved_once() {
        let mut arena = Arena::default();
        let older = 1 << 30;
        arena.give(older, CHUNK); // an older chunk, all free (no memory behind: not touched)
        arena.give(older - 2 * CHUNK, 2 * CHUNK); // what `map_chunk` adds, right below
        assert_consistent(&arena);
        let a = arena.carve(2 * CHUNK).unwrap();
        assert_consistent(&arena);
        let b = arena.carve(CHUNK).unwrap();
        assert_consistent(&arena);
        assert!(
            a + 2 * CHUNK <= b || b + CHUNK <= a,
            "{a:#x} and {b:#x} overlap"
        );
        assert_eq!(
            arena.carve(UNIT),
            None,
            "all three chunks' worth handed out"
        );
    }

    /// The same through real mappings: a freed chunk, then a larger request (a new chunk,
    /// often mapped next to the first), then one more; no two live blocks overlap.
    #[test]
    fn blocks_from_neighbouring_chunks_never_overlap() {
        let a = HugePages::default();
        let half = Layout::from_size_align(CHUNK / 2, 64).unwrap();
        let x = a.allocate(half).unwrap();
        // SAFETY: allocated above with `half`.
        unsafe { a.deallocate(x.cast(), half) };
        let sizes = [2 * CHUNK, CHUNK, CHUNK / 2, CHUNK];
        let layouts: Vec<_> = sizes
            .iter()
            .map(|&s| Layout::from_size_align(s, 64).unwrap())
            .collect();
        let blocks: Vec<_> = layouts.iter().map(|&l| a.allocate(l).unwrap()).collect();
        let spans: Vec<_> = blocks
            .iter()
            .map(|b| (b.cast::<u8>().as_ptr().addr(), b.len()))
            .collect();
        for (i, &(p, l)) in spans.iter().enumerate() {
            for &(q, m) in &spans[i + 1..] {
                assert!(
                    p + l <= q || q + m <= p,
                    "{p:#x}+{l} and {q:#x}+{m} overlap"
                );
            }
        }
        assert_consistent(&a.0.lock());
        for (b, l) in blocks.into_iter().zip(layouts) {
            // SAFETY: allocated above with `l`, freed once.
            unsafe { a.deallocate(b.cast(), l) };
        }
        assert_consistent(&a.0.lock());
    }

    #[test]
    fn large_and_overaligned_requests_work() {
        let a = HugePages::default();
        let big = Layout::from_size_align(CHUNK + 1, 64).unwrap();
        let p = a.allocate(big).unwrap();
        assert!(p.len() > CHUNK);
        let odd = Layout::from_size_align(64, 4096).unwrap();
        let q = a.allocate(odd).unwrap();
        assert_eq!(q.cast::<u8>().as_ptr() as usize % 4096, 0);
        // SAFETY: allocated above with these layouts.
        unsafe {
            // The memory is writable end to end.
            p.cast::<u8>().as_ptr().add(CHUNK).write(1);
            a.deallocate(p.cast(), big);
            a.deallocate(q.cast(), odd);
        }
    }

    /// A table that grows through many sizes, is cleared and refilled: every value survives.
    #[test]
    fn hash_tables_live_in_it() {
        const N: u64 = if cfg!(miri) { 2_000 } else { 50_000 };
        let a = HugePages::default();
        let mut tables: Vec<HashTable<(u64, u64), HugePages>> =
            (0..64).map(|_| HashTable::new_in(a.clone())).collect();
        for round in 0..2u64 {
            for i in 0..N {
                let t = &mut tables[(i % 64) as usize];
                t.insert_unique(i, (i, i ^ round), |e| e.0);
            }
            for i in 0..N {
                let t = &tables[(i % 64) as usize];
                assert_eq!(t.find(i, |e| e.0 == i), Some(&(i, i ^ round)));
            }
            for t in &mut tables {
                t.clear();
                t.shrink_to_fit(|e| e.0);
            }
        }
        drop(tables);
        assert_eq!(Arc::strong_count(&a.0), 1);
        let arena = a.0.lock();
        let mapped: usize = arena.chunks.iter().map(|c| c.len()).sum();
        assert_eq!(arena.free_bytes(), mapped, "every block came back");
    }
}
