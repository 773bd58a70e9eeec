//! A write-ahead log: memory-mapped, segmented, append-only, with CRC32C framing, group
//! commit and crash recovery.
//!
//! Use it as the durable log of a state machine: append records from any number of threads,
//! get back an [`Lsn`] that locates each record directly ([`Wal::read`], what a Bitcask-style
//! index needs), iterate from any `Lsn` ([`Wal::iter_from`]), and drop whole old segments once
//! their contents are checkpointed ([`Wal::truncate_before`]).
//!
//! # The design decision that matters
//!
//! Records are written by **copying them into a shared file mapping** of a preallocated
//! segment of fixed size, not with `write(2)`. Appending is then a reservation (one
//! compare-and-swap on an atomic tail, no lock) plus a `memcpy`; the record is in the
//! kernel's page cache the moment the copy ends, so a crash of the process loses nothing, and
//! durability against power loss is a separate, shareable step: one `msync` covers every
//! append published before it (group commit). Concurrent appenders copy in parallel into
//! disjoint reserved ranges; a *published* watermark advances only over contiguous completed
//! ranges, so readers, flushes and recovery never see a record with a hole before it. It is
//! advanced by whichever appender finds the next record complete (a *baton* passed through a
//! ring of completion slots), over every completed record after it, so appenders need not be
//! scheduled in order; a roll-over to a new segment seals the tail, waits for the old
//! segment to be published, and reopens the tail in the new one (the protocol and why it is
//! correct: `src/sequencer.rs`). An append returns only once its record is published (a
//! crash of the process while an earlier appender is still copying must not hide an
//! acknowledged record behind a torn one; `tests/kill_child.rs` checks exactly that). Under
//! `Always`, only the flush leader waits for publication; its followers poll the durable
//! watermark for a few `sched_yield`s, then sleep on the group-commit condvar (polling first
//! halves the cost of a sleep and a wake-up per append, the bottleneck with 64 writers on 2
//! cores). Under a
//! real-time scheduling policy (`SCHED_FIFO`, e.g. `chrt -f`) that polling keeps the cores
//! from the kernel threads that complete the flush's I/O: measured, 64 writers under
//! `chrt -f 10` made 31 K durable appends/s (1 ms per flush) against 266 K/s without it.
//! Run `Always` appenders under the normal policy.
//!
//! Writing through a shared mapping is sound only under these rules, which this crate keeps:
//!
//! - **Preallocate before mapping.** Each segment is allocated in full with
//!   `posix_fallocate` (`fs2::FileExt::allocate`) before it is mapped, never grown with
//!   `set_len` alone: a sparse file turns a full disk into `SIGBUS` on a page fault (LevelDB
//!   #150, h2o #910, cacache-rs #48). A full disk is an error when a segment is created.
//!   Existing segments are allocated again when opened (a copy made with `cp --sparse` has
//!   holes). On copy-on-write filesystems (btrfs, ZFS) `fallocate` does not reserve space for
//!   overwrites, so this protection does not hold there: keep logs on ext4 or XFS.
//! - **Fixed-size maps.** A segment is never truncated or remapped while mapped; its file is
//!   deleted only once nothing else holds it (`truncate_before` skips segments still in use),
//!   and unlinked before it is unmapped, so that a delete that fails leaves it mapped and in
//!   the log.
//! - **`fsync` the directory** after creating (temporary file + rename), or deleting a segment,
//!   and after creating the log's directory (each new level in its parent). The [`durable`]
//!   module does this for every crate of the workspace.
//! - **Pages reach the disk in any order**, so after a power cut the log can have holes, not
//!   just a torn tail. Recovery stops at the first invalid record and never skips a hole to
//!   accept later records; an append is acknowledged under [`SyncPolicy::Always`] only after
//!   a flush that covers it; under every policy a segment is flushed whole before the next
//!   one receives records, so only the newest segment can be torn.
//! - **A failed flush is fatal.** After a failed `msync` Linux may mark the pages clean, so a
//!   retry would report durability that is not there (Rebello et al., USENIX ATC '20): the log
//!   turns *poisoned* and refuses appends until reopened.
//! - **Under `Always`, one page per fault in the segment being appended** (`MADV_RANDOM`).
//!   Readahead fills the page cache with large folios (up to 2 MiB on Linux 6.x), a write
//!   fault through a shared mapping dirties a whole folio, and every flush then writes the
//!   folio back: measured here, 2 MiB written and 0.6 ms per flush of a 100-byte record once a
//!   segment was 30 MiB into a sequential fill, against 10 KiB and 0.09 ms with one-page
//!   folios. Under `Periodic` and `Never` the kernel's large folios stay: appends are cheaper
//!   with them, and a flush a second writes at most a folio more than it must.
//! - **Pages are faulted in ahead of the tail, off the appenders' threads.** An append that
//!   crosses into a new MiB of its segment asks a background thread (`kv-wal-prefault`, one
//!   per log) to fault the MiB after it in, writable (`MADV_POPULATE_WRITE`); the appender
//!   never waits for it, and only the newest request is kept. Otherwise the first write to
//!   each page stalls its appender on a fault (one per 4 KiB under `Always`).
//! - The maps are [`memmap2::MmapRaw`] (`memmap2` >= 0.9.11: RUSTSEC-2026-0186 in
//!   `flush_range` is fixed there): writers use raw pointers into ranges they own, so no
//!   `&mut [u8]` ever aliases another thread's access.
//!
//! Anchors this learned from: fjall's journal (`PersistMode`, poisoning after a failed fsync,
//! batch start/end markers), RocksDB's `wal_recovery_mode` ([`RecoveryMode`]), LevelDB's log
//! format and `fault_injection_test.cc`, and redb's `crash_consistency.rs` (a backend that
//! tracks live versus durable bytes; see this crate's `tests/crash_sim.rs`).
//!
//! # On-disk format (format version 1; 2 for recycled segments)
//!
//! A log is a directory holding a `LOCK` file (held with an exclusive `flock` while open) and
//! segment files named `NNNNNNNNNN.wal`, the segment's sequence number in ten decimal digits
//! (they sort in log order). Sequence numbers are contiguous; the first is 1 unless older
//! segments were deleted. All integers are little-endian.
//!
//! A segment is a file whose size is fixed when it is created (a multiple of 8, recorded in
//! its header; see *Segment sizes* below), preallocated and zero-filled, starting with a
//! 32-byte header:
//!
//! | offset | size | field                                                        |
//! |--------|------|--------------------------------------------------------------|
//! | 0      | 8    | magic `4B 56 57 41 4C 00 0D 0A` (`"KVWAL\0\r\n"`)            |
//! | 8      | 4    | format version, `1`                                          |
//! | 12     | 4    | the segment's size in bytes (the file's length; multiple of 8) |
//! | 16     | 8    | sequence number (`u64`, below 2^32; equals the file name's)  |
//! | 24     | 4    | CRC32C of bytes 0..24                                        |
//! | 28     | 4    | reserved, zero                                               |
//!
//! Records follow from offset 32, each starting at a multiple of 8:
//!
//! | offset | size  | field                                                              |
//! |--------|-------|--------------------------------------------------------------------|
//! | 0      | 4     | `len`: bits 0..=30 payload length; bit 31 `MORE` (see below)       |
//! | 4      | 4     | CRC32C (Castagnoli) of the 4 bytes of `len` followed by the payload |
//! | 8      | len   | payload                                                            |
//! | 8+len  | 0..7  | zero padding to the next multiple of 8                             |
//!
//! - An all-zero 8-byte record header marks the end of the written log in a segment (an
//!   empty payload still has a nonzero CRC). So does having fewer than 8 bytes left.
//! - `MORE` set means the next record belongs to the same batch. A batch is the records up to
//!   and including the first one without `MORE`; it lies within one segment, and recovery
//!   keeps it only if all its records are valid (all or nothing).
//! - A record is valid when its length fits in the segment, its CRC matches and its padding
//!   is zero. The bytes after the last valid record of the newest segment are zero.
//! - An [`Lsn`] is `(sequence number << 32) | offset of the record header`.
//!
//! # Segment sizes
//!
//! Segments of one log differ in size. A new log's first segment is
//! [`WalOptions::initial_segment_size`] (default 1 MiB); each later one is twice the one
//! before it, up to [`WalOptions::segment_size`] (default 64 MiB), and never smaller than
//! the record (or batch) that opens it: a record too large for the doubled size gets a
//! segment of exactly its size (header included), so every record up to
//! `segment_size - 40` bytes fits whatever the log's age.
//!
//! Why: a segment is allocated in full when it is created (the rule above that keeps a full
//! disk from turning into a `SIGBUS`), so a log of fixed 64 MiB segments takes 64 MiB of
//! disk for its first byte, and a three-node store holding two keys would take 193 MiB.
//! Doubling reaches the full size with the seventh segment (after 63 MiB of records), and
//! from there a busy log rolls over once per `segment_size`, as with fixed sizes. Appends do no extra work for it: a
//! reservation reads the active segment's length from the sequencer's tail in any case.
//!
//! The format needs nothing new for this (it stays version 1): every segment's header
//! records its size, which recovery checks against the file's length, so a log of mixed
//! sizes (as is one reopened with another `segment_size`) reads as any other.
//!
//! # Recycled segments (format version 2)
//!
//! With [`WalOptions::recycle_segments`] (off by default; kv-node turns it on with 2), a
//! full-size segment that
//! [`Wal::truncate_before`] drops is renamed to `NNNNNNNNNN.pool` (its last sequence number)
//! instead of being deleted, while the pool has room; the next roll-over to a full-size
//! segment renames a pool file into place as the new segment instead of creating a fresh
//! one (RocksDB's `recycle_log_file_num`). Its pages are often still cached and its blocks
//! already written, so appends into it make the kernel neither allocate nor zero pages.
//!
//! A recycled file still holds the records of its earlier incarnations after whatever the
//! new one writes, with valid checksums; recovery must never take them for new records.
//! A recycled segment therefore says so in its header and frames its records differently:
//!
//! - its header is the one above with **format version `2`** (made durable before the file
//!   is renamed into place); a reader that knows only version 1 refuses it;
//! - each record's checksum field holds the CRC32C above **XORed with the segment's
//!   sequence number**. An earlier incarnation's record stores its CRC XORed with *its*
//!   sequence number (or with nothing, if it was a fresh segment), and a file's sequence
//!   numbers only grow, so an intact leftover never passes for a new record (nor can a
//!   leftover of the same incarnation exist: see the next point). `stored ^ crc` names the
//!   incarnation a leftover was written in, so recovery tells *a clean end at a leftover*
//!   (an earlier incarnation's intact record after a complete batch) from a torn record.
//!   The one sequence number whose mask would turn an empty record's header into the
//!   all-zero end marker (`crc32c([0; 4])`) is never recycled;
//! - bytes after the end of its records are not zero. When the log rolls over from a
//!   recycled segment, and when it is closed, an **end marker** (an all-zero record header)
//!   is written right after the last record, made durable before the next segment can hold
//!   a durable record; a sealed recycled segment ends there (or has fewer than 8 bytes
//!   left). Nonzero bytes after the end are not corruption in a recycled segment;
//! - **recovery never appends to a recycled newest segment**: its torn tail cannot be zeroed
//!   (it would mean zeroing the whole file), and after a power cut the bytes beyond a hole
//!   may be intact records of this very incarnation, which appends of the same lengths in
//!   place would bring back. Recovery writes the end marker at the recovered end and the
//!   log goes on in a new segment (RocksDB never appends to a recovered log file; its
//!   recycled logs could recover such a hole, rocksdb PR 7252, which is why it turns
//!   recycling off under most recovery modes).
//!
//! Only files of exactly `segment_size` bytes are pooled (a young log's smaller segments are
//! deleted); on open, pool files beyond the bound or of another size are deleted. Under
//! [`SyncPolicy::Always`] nothing is pooled. Fresh segments are still written in format
//! version 1, byte for byte as before.
//!
//! Recovery on open scans the segments in order. What it may discard depends on the
//! [`RecoveryMode`]; by default a torn or corrupt tail of the newest segment is zeroed and
//! reported in a [`RecoveryReport`], and anything invalid in an older segment (an invalid
//! record, an incomplete batch, or a nonzero byte after the end marker) is an
//! [`Error::Corrupt`] naming the segment and offset.
//!
//! # Example
//!
//! ```
//! use kv_wal::{Lsn, SyncPolicy, Wal, WalOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let wal = Wal::open(dir.path(), WalOptions::new().sync(SyncPolicy::Always))?;
//! let lsn = wal.append(b"set x = 1")?; // durable when this returns
//! wal.append_batch(&[b"set y = 2", b"set z = 3"])?; // all or nothing after a crash
//! assert_eq!(wal.read(lsn)?, &b"set x = 1"[..]);
//! drop(wal);
//!
//! // Reopening recovers the log; replay it into the state machine.
//! let wal = Wal::open(dir.path(), WalOptions::new())?;
//! let replayed = wal
//!     .iter_from(Lsn::ZERO)
//!     .map(|r| r.map(|r| r.payload)) // `bytes::Bytes`
//!     .collect::<Result<Vec<_>, _>>()?;
//! assert_eq!(replayed.len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

pub mod durable;
mod error;
mod format;
mod iter;
pub mod le;
mod lsn;
mod options;
mod pool;
mod prefault;
mod recovery;
mod segment;
mod sequencer;
mod shim;
mod wal;

pub use error::{Error, Result};
pub use iter::{Record, WalIter};
pub use lsn::Lsn;
pub use options::{FlushEvent, FlushHook, RecoveryMode, SyncPolicy, WalOptions};
pub use recovery::{RecoveryReport, Truncation};
pub use wal::Wal;

/// The byte layout constants, for tools and tests that build or inspect segment files.
pub mod layout {
    /// Bytes of the segment header; the first record starts at this offset.
    pub const HEADER_LEN: usize = crate::format::HEADER_LEN;
    /// Bytes of a record header (`len | crc`).
    pub const RECORD_HEADER_LEN: usize = crate::format::RECORD_HEADER_LEN;
    /// The format version of a fresh segment (this crate reads it and
    /// [`RECYCLED_FORMAT_VERSION`]).
    pub const FORMAT_VERSION: u32 = crate::format::FORMAT_VERSION;

    /// The 32-byte header of segment `seq`, a file of `size` bytes (magic, version, size,
    /// sequence number, checksum).
    ///
    /// ```
    /// let h = kv_wal::layout::segment_header(1, 4096);
    /// assert_eq!(&h[..5], b"KVWAL");
    /// ```
    pub fn segment_header(seq: u32, size: u32) -> [u8; HEADER_LEN] {
        crate::format::encode_header(seq, size)
    }

    /// The format version of a recycled segment (see
    /// [`WalOptions::recycle_segments`](crate::WalOptions::recycle_segments)).
    pub const RECYCLED_FORMAT_VERSION: u32 = crate::format::RECYCLED_VERSION;

    /// The 32-byte header of segment `seq` made from a recycled file of `size` bytes: as
    /// [`segment_header`], with format version 2.
    ///
    /// ```
    /// let h = kv_wal::layout::recycled_segment_header(5, 4096);
    /// assert_eq!(h[8..12], 2u32.to_le_bytes());
    /// ```
    pub fn recycled_segment_header(seq: u32, size: u32) -> [u8; HEADER_LEN] {
        crate::format::encode_header_version(seq, size, crate::format::RECYCLED_VERSION)
    }

    /// The value XORed into the checksum field of every record of recycled segment `seq`
    /// (the sequence number itself; fresh segments use no mask).
    ///
    /// ```
    /// assert_eq!(kv_wal::layout::checksum_mask(7), 7);
    /// ```
    pub fn checksum_mask(seq: u32) -> u32 {
        crate::format::mask(seq)
    }

    /// A record as it is laid out in a segment: header, payload and zero padding. `more` marks
    /// a record followed by more records of the same batch.
    ///
    /// # Panics
    ///
    /// If the payload is 2 GiB or longer.
    ///
    /// ```
    /// let r = kv_wal::layout::encode_record(b"abc", false);
    /// assert_eq!(r.len(), 16);
    /// ```
    pub fn encode_record(payload: &[u8], more: bool) -> Vec<u8> {
        assert!(
            payload.len() <= crate::format::MAX_PAYLOAD,
            "payload too large"
        );
        let mut v = crate::format::record_header(payload, more).to_vec();
        v.extend_from_slice(payload);
        v.resize(frame_len(payload.len()), 0);
        v
    }

    /// Bytes a record with a `payload_len`-byte payload occupies (header and padding included).
    ///
    /// ```
    /// assert_eq!(kv_wal::layout::frame_len(100), 112);
    /// ```
    pub fn frame_len(payload_len: usize) -> usize {
        crate::format::frame_len(payload_len).unwrap_or(usize::MAX)
    }
}
