//! One segment: a preallocated file of fixed size, mapped into memory.
//!
//! The rules that make writing through a shared mapping sound (see the crate docs) are kept
//! here: a segment is fully allocated before it is mapped, its size never changes while it is
//! mapped, and its file is deleted only once nothing reads or writes it.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    ptr::NonNull,
};

use memmap2::{Advice, MmapOptions, MmapRaw, UncheckedAdvice};

use crate::{
    Error, Result, durable,
    format::{self, ALIGN, HEADER_LEN},
};

/// The file name of segment `seq`: ten decimal digits, so names sort in sequence order.
pub(crate) fn file_name(seq: u32) -> String {
    format!("{seq:010}.wal")
}

/// Parses a segment file name back into its sequence number.
pub(crate) fn parse_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The file name of a released segment waiting in the recycling pool, named by the sequence
/// number it had last (unique: a sequence number is released once).
pub(crate) fn pool_file_name(seq: u32) -> String {
    format!("{seq:010}.pool")
}

/// Parses a pool file name back into the sequence number it had last.
pub(crate) fn parse_pool_file_name(name: &str) -> Option<u32> {
    parse_file_name(&format!("{}.wal", name.strip_suffix(".pool")?))
}

/// Granularity of `Segment::populate_chunk` (a multiple of every page size).
pub(crate) const POPULATE_CHUNK: usize = 1 << 20;

/// The page size (4 KiB if the system does not say).
fn page_size() -> usize {
    // SAFETY: `sysconf` has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// A mapped segment file.
///
/// Writes go through a raw pointer into the shared mapping: writers own disjoint byte ranges
/// (handed out by the log's reservation), and readers only read ranges that were published,
/// after which nobody writes them again.
pub(crate) struct Segment {
    seq: u32,
    path: PathBuf,
    len: usize,
    /// The mask of its record checksums: 0 for a fresh segment, `format::mask(seq)` for a
    /// recycled one.
    mask: u32,
    base: NonNull<u8>,
    // Declared last: the mapping must outlive every use of `base`.
    map: MmapRaw,
}

// SAFETY: `base` points into `map`, which is `Send + Sync` and lives as long as `self`; the
// ranges accessed through `base` are coordinated by the log (disjoint writes, reads of
// published, immutable ranges), as documented on `write` and `bytes`.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("seq", &self.seq)
            .field("path", &self.path)
            .field("len", &self.len)
            .field("recycled", &(self.mask != 0))
            .finish()
    }
}

/// Allocates every block of the first `size` bytes of `file` (`posix_fallocate`; a no-op for
/// blocks already allocated). Called directly rather than through `fs2`, which reads `errno`
/// where `posix_fallocate` returns its error, and so reports a full disk as "Success".
#[cfg(target_os = "linux")]
fn preallocate(file: &File, size: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `posix_fallocate` only reads its integer arguments; the descriptor is valid for
    // as long as `file` is borrowed.
    let ret = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, libc::off_t::from(size)) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

/// Allocates every block of the first `size` bytes of `file` (`fs2`'s portable
/// `F_PREALLOCATE`/`posix_fallocate`).
#[cfg(not(target_os = "linux"))]
fn preallocate(file: &File, size: u32) -> io::Result<()> {
    fs2::FileExt::allocate(file, u64::from(size))
}

impl Segment {
    /// Creates segment `seq` in `dir`: a temporary file is preallocated, given its header,
    /// `fsync`ed and renamed into place, then the directory is `fsync`ed. A crash at any point
    /// leaves either no segment or a complete, durable, empty one.
    pub(crate) fn create(dir: &Path, seq: u32, size: u32, prefault: bool) -> Result<Segment> {
        let path = dir.join(file_name(seq));
        let tmp = dir.join(format!("{}.tmp", file_name(seq)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io("create segment", &tmp, e))?;
        // posix_fallocate: the blocks exist before the file is mapped, so a full disk is an
        // error here rather than a SIGBUS on a page fault later.
        preallocate(&file, size).map_err(|e| Error::io("preallocate segment", &tmp, e))?;
        file.write_all_at(&format::encode_header(seq, size), 0)
            .map_err(|e| Error::io("write segment header", &tmp, e))?;
        file.sync_all()
            .map_err(|e| Error::io("fsync segment", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename segment", &tmp, e))?;
        durable::sync_dir(dir)?;
        Self::map(file, path, seq, size as usize, 0, prefault)
    }

    /// Makes pool file `pool` (a released segment, see [`Segment::release`]) segment `seq` of
    /// `dir`: its header is rewritten as a recycled segment's (format version 2) and made
    /// durable (`fdatasync`), the file is renamed into place, and the directory is `fsync`ed.
    /// Its size stays what it was; nothing else in it is written: the leftovers of earlier
    /// incarnations stay, told apart by the checksum mask (`format::mask`).
    ///
    /// A crash before the rename is durable leaves a pool file (whatever its header says, a
    /// pool file is never read as a segment); after it, a durable, empty, recycled segment.
    pub(crate) fn recycle(dir: &Path, pool: &Path, seq: u32, prefault: bool) -> Result<Segment> {
        debug_assert!(format::recyclable_seq(seq));
        let path = dir.join(file_name(seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(pool)
            .map_err(|e| Error::io("open pool file", pool, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat pool file", pool, e))?
            .len();
        let size = u32::try_from(len)
            .ok()
            .filter(|&s| s as usize >= HEADER_LEN + 8 && (s as usize).is_multiple_of(ALIGN))
            .filter(|&s| s <= u32::MAX - 7)
            .ok_or_else(|| {
                Error::io(
                    "recycle segment",
                    pool,
                    io::Error::other("pool file of an impossible segment size"),
                )
            })?;
        // A no-op for the blocks a segment always had; allocates a hole a sparse copy made.
        preallocate(&file, size).map_err(|e| Error::io("preallocate segment", pool, e))?;
        let header = format::encode_header_version(seq, size, format::RECYCLED_VERSION);
        file.write_all_at(&header, 0)
            .map_err(|e| Error::io("write segment header", pool, e))?;
        // The header must be durable before the name is: a recycled segment whose header
        // still named its previous incarnation would be refused as misnamed.
        file.sync_data()
            .map_err(|e| Error::io("fsync segment", pool, e))?;
        fs::rename(pool, &path).map_err(|e| Error::io("rename segment", pool, e))?;
        durable::sync_dir(dir)?;
        Self::map(file, path, seq, size as usize, format::mask(seq), prefault)
    }

    /// Renames the segment's file to `pool` (a pool file name in the same directory), then
    /// unmaps it. The caller `fsync`s the directory. As with [`Segment::delete`], a failed
    /// rename hands the segment back, still mapped.
    pub(crate) fn release(self, pool: &Path) -> Result<(), (Segment, Error)> {
        match fs::rename(&self.path, pool) {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = Error::io("release segment to the pool", &self.path, e);
                Err((self, err))
            }
        }
    }

    /// Opens an existing segment file and checks its header, including that the file is as
    /// long as the header says: a shortened older segment would otherwise pass for a complete
    /// one (and the log would go on with later segments after a hole), so it is refused. A
    /// shortened *newest* segment (`short_ok`) is a torn tail: it is extended with zeros to its
    /// size and recovery truncates at the cut. The file is allocated in full before it is
    /// mapped: a copy made with `cp --sparse=always`, `rsync -S` or `tar -S` has holes, and
    /// writing into a hole on a full disk is a SIGBUS.
    pub(crate) fn open(path: &Path, seq: u32, short_ok: bool) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open segment", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat segment", path, e))?
            .len();
        let bad = |reason| Error::BadHeader {
            path: path.to_owned(),
            reason,
        };
        if len < HEADER_LEN as u64 {
            return Err(bad("file shorter than the segment header"));
        }
        if len > u64::from(u32::MAX - 7) {
            // Offsets (and so Lsns) are 32-bit.
            return Err(bad("file of 4 GiB or more"));
        }
        let mut header = [0u8; HEADER_LEN];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| Error::io("read segment header", path, e))?;
        let h = format::decode_header(&header).map_err(bad)?;
        let (found, size) = (h.seq, h.size);
        if found != seq {
            return Err(bad("sequence number does not match the file name"));
        }
        if len > u64::from(size) || (len < u64::from(size) && !short_ok) {
            return Err(bad(
                "file length differs from the segment size in its header",
            ));
        }
        preallocate(&file, size).map_err(|e| Error::io("preallocate segment", path, e))?;
        Self::map(file, path.to_owned(), seq, size as usize, h.mask(), false)
    }

    fn map(
        file: File,
        path: PathBuf,
        seq: u32,
        len: usize,
        mask: u32,
        prefault: bool,
    ) -> Result<Segment> {
        debug_assert!(len.is_multiple_of(ALIGN));
        let mut opts = MmapOptions::new();
        opts.len(len);
        if prefault {
            opts.populate();
        }
        let map = opts
            .map_raw(&file)
            .map_err(|e| Error::io("map segment", &path, e))?;
        let base = NonNull::new(map.as_mut_ptr())
            .ok_or_else(|| Error::io("map segment", &path, io::Error::other("null mapping")))?;
        Ok(Segment {
            seq,
            path,
            len,
            mask,
            base,
            map,
        })
    }

    /// Readies the segment to receive appends at `from` and after, for a log that flushes
    /// after every append (`SyncPolicy::Always`): no readahead, no cached page at or after
    /// `from`'s page, and the first two MiB faulted in (best effort: errors only cost speed).
    ///
    /// Why: a page fault with readahead puts the file in the page cache in *large folios*
    /// (on Linux 6.x they grow with the readahead window, up to 2 MiB), and a write fault
    /// through a shared mapping marks the whole folio dirty. Each flush then writes the whole
    /// folio back, not the few bytes appended: measured on ext4, 1 to 2 MiB written per
    /// `msync` and 0.6 ms per flush instead of 0.06 ms once a segment is 30 MiB into a
    /// sequential fill. `MADV_RANDOM` keeps faults to one page, so a flush writes the dirty
    /// pages only. Pages recovery scanned past the end are dropped so that they too come back
    /// one page at a time. (This discards a `prefault`: one-page folios are the point.)
    ///
    /// The log does not do this under `Periodic` and `Never`: there large folios make the
    /// appends cheaper (a fault and a page-cache insertion per folio, not per page: measured,
    /// single-writer appends of 1 KiB records 0.9 M/s with one-page folios against 1.17 M/s),
    /// and an occasional flush writes at most a folio more than it must.
    pub(crate) fn prepare_for_appends(&self, from: usize) {
        let _ = self.map.advise(Advice::Random);
        let page = page_size();
        let Some(start) = from.checked_next_multiple_of(page) else {
            return;
        };
        if start >= self.len {
            return;
        }
        let len = self.len - start;
        // SAFETY: nothing in `start..` is published or reserved yet (this runs before the
        // segment receives appends), so no reference into it exists; on a shared file
        // mapping MADV_DONTNEED only unmaps the pages (dirty state goes to the page cache),
        // the next access faults the file's contents back in.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, start, len)
        };
        // (`posix_fadvise` is not on every Unix; elsewhere the pages stay cached.)
        #[cfg(target_os = "linux")]
        if let Ok(f) = File::open(&self.path) {
            // SAFETY: a plain syscall on a file descriptor we own; it only evicts clean,
            // unmapped page-cache pages.
            let _ = unsafe {
                libc::posix_fadvise(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    start as libc::off_t,
                    len as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                )
            };
        }
        self.populate_chunk(start / POPULATE_CHUNK);
        self.populate_chunk(start / POPULATE_CHUNK + 1);
    }

    /// Faults chunk `n` (`POPULATE_CHUNK` bytes) of the mapping in, writable, ahead of the
    /// appends (best effort, Linux only). Called by the prefault thread (see `prefault`) and
    /// when a segment is prepared for appends.
    ///
    /// With one-page faults (see `prepare_for_appends`) a write fault per page made single
    /// writer appends of 100 B records a third slower (4.7 M/s instead of 7 M/s); one
    /// `MADV_POPULATE_WRITE` per MiB does the same faults in a kernel loop, ahead of time.
    /// The pages it dirties hold zeros, which is what the file holds there already.
    pub(crate) fn populate_chunk(&self, n: usize) {
        let Some(start) = n.checked_mul(POPULATE_CHUNK) else {
            return;
        };
        if start >= self.len {
            return;
        }
        let len = POPULATE_CHUNK.min(self.len - start);
        #[cfg(target_os = "linux")]
        {
            let _ = self.map.advise_range(Advice::PopulateWrite, start, len);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = len;
    }

    /// The sequence number.
    pub(crate) fn seq(&self) -> u32 {
        self.seq
    }

    /// The mask of its record checksums (0 unless recycled; see `format::mask`).
    pub(crate) fn mask(&self) -> u32 {
        self.mask
    }

    /// Whether the file is a recycled one (format version 2): bytes after the end of its
    /// records may be leftovers of earlier incarnations.
    pub(crate) fn is_recycled(&self) -> bool {
        self.mask != 0
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies `bytes` into the mapping at `offset`.
    ///
    /// # Panics
    ///
    /// If the range is outside the segment (a bug in the caller).
    ///
    /// # Safety
    ///
    /// No other thread may access `offset..offset + bytes.len()` during the call: the range
    /// must have been reserved by the caller and not yet published.
    pub(crate) unsafe fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(offset <= self.len && bytes.len() <= self.len - offset);
        // SAFETY: the range is inside the mapping (checked above) and exclusively ours (the
        // caller's contract); `bytes` cannot overlap the mapping's reserved range because
        // nobody else holds a reference into it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.as_ptr().add(offset),
                bytes.len(),
            );
        }
    }

    /// Zeroes `offset..offset + len`.
    ///
    /// # Safety
    ///
    /// As for [`Segment::write`].
    pub(crate) unsafe fn zero(&self, offset: usize, len: usize) {
        assert!(offset <= self.len && len <= self.len - offset);
        // SAFETY: in bounds (checked above) and exclusively ours (the caller's contract).
        unsafe { std::ptr::write_bytes(self.base.as_ptr().add(offset), 0, len) };
    }

    /// The first `len` bytes of the segment.
    ///
    /// # Panics
    ///
    /// If `len` exceeds the segment (a bug in the caller).
    ///
    /// # Safety
    ///
    /// Nobody may write `0..len` while the slice lives: the range must be published (or the
    /// caller must have exclusive access, as recovery does).
    pub(crate) unsafe fn bytes(&self, len: usize) -> &[u8] {
        assert!(len <= self.len);
        // SAFETY: in bounds; the mapping lives as long as `self`; no concurrent writes to the
        // range (the caller's contract).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), len) }
    }

    /// Asks the CPU to start loading the 193 bytes at `offset` into its caches, so the four
    /// cache lines a record of up to 193 bytes can span (a hint: no effect on what anything
    /// reads, and none at all off x86-64). An offset past the end is ignored.
    pub(crate) fn prefetch(&self, offset: usize) {
        #[cfg(target_arch = "x86_64")]
        self.prefetch_lines::<{ std::arch::x86_64::_MM_HINT_T0 }>(offset);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = offset;
    }

    /// Asks the CPU to fetch the 256 bytes at `offset` for writing (`PREFETCHW` where the
    /// build targets it, an ordinary prefetch otherwise; a hint, as [`Segment::prefetch`]):
    /// where the next appends will write.
    ///
    /// Why: an append's completion is a locked compare-and-swap, which waits until the
    /// record's stores have left the store buffer; with the record's lines not in the cache
    /// that wait is a memory latency per append (perf, 3-replica node writes on one thread:
    /// `Sequencer::complete` 9.5% of the samples, 2.8% with this prefetch).
    pub(crate) fn prefetch_for_write(&self, offset: usize) {
        #[cfg(target_arch = "x86_64")]
        self.prefetch_lines::<{ std::arch::x86_64::_MM_HINT_ET0 }>(offset);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = offset;
    }

    /// Prefetches the four cache lines from `offset` with hint `HINT` (past the end: none).
    #[cfg(target_arch = "x86_64")]
    fn prefetch_lines<const HINT: i32>(&self, offset: usize) {
        if offset >= self.len {
            return;
        }
        let at = self.base.as_ptr().wrapping_add(offset);
        for line in 0..4 {
            // SAFETY: `_mm_prefetch` needs SSE, which every x86-64 CPU has. A prefetch reads
            // nothing the program can observe and never faults, whatever the address; this
            // one lies inside the mapping or just past it.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<HINT>(at.wrapping_add(64 * line).cast::<i8>())
            };
        }
    }

    /// `msync(MS_SYNC)` of `offset..offset + len` (rounded out to pages).
    pub(crate) fn flush(&self, offset: usize, len: usize) -> io::Result<()> {
        self.map.flush_range(offset, len)
    }

    /// `fdatasync` of the whole file (used once per segment on open).
    pub(crate) fn sync_file(&self) -> Result<()> {
        self.map
            .flush()
            .map_err(|e| Error::io("fsync segment", &self.path, e))
    }

    /// Deletes the segment's file, then unmaps it. The caller `fsync`s the directory.
    ///
    /// Unlinking first (an unlinked file lives on while it is mapped) means a failed delete
    /// hands the segment back, still mapped, for the caller to keep tracking.
    pub(crate) fn delete(self) -> Result<(), (Segment, Error)> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = Error::io("delete segment", &self.path, e);
                Err((self, err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_sort() {
        assert_eq!(file_name(7), "0000000007.wal");
        assert_eq!(parse_file_name(&file_name(u32::MAX)), Some(u32::MAX));
        assert_eq!(parse_file_name("7.wal"), None);
        assert_eq!(parse_file_name("0000000007.wal.tmp"), None);
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn create_then_open() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(dir.path(), 3, 4096, true).unwrap();
        assert_eq!((seg.seq(), seg.len()), (3, 4096));
        // SAFETY: this test owns the segment.
        unsafe { seg.write(HEADER_LEN, b"abc") };
        seg.flush(0, 4096).unwrap();
        drop(seg);
        let seg = Segment::open(&dir.path().join(file_name(3)), 3, false).unwrap();
        // SAFETY: this test owns the segment.
        assert_eq!(unsafe { &seg.bytes(HEADER_LEN + 3)[HEADER_LEN..] }, b"abc");
        assert!(Segment::open(&dir.path().join(file_name(3)), 4, false).is_err());
        assert!(seg.delete().is_ok());
        assert!(!dir.path().join(file_name(3)).exists());
    }
}
