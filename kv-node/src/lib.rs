//! One storage node: a log-structured hash table (Bitcask-style) on [`kv_wal`], fronted by a
//! [`kv_cache`] cache. Usable alone as an embedded single-node store, and the replica that
//! `kv-cluster` places keys on.
//!
//! ```
//! use kv_node::{Node, NodeOptions};
//! let dir = tempfile::tempdir()?;
//! let node = Node::open(dir.path(), NodeOptions::new())?;
//! node.put(b"user:1001", b"Alice Johnson")?;
//! assert_eq!(node.get(b"user:1001")?.unwrap().0, &b"Alice Johnson"[..]);
//! node.delete(b"user:1001")?;
//! assert_eq!(node.get(b"user:1001")?, None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//!
//! **The log is the data.** Every write appends one record to the node's [`kv_wal::Wal`]
//! (in `dir/wal`); nothing else is ever written but hint files. An in-memory **index** maps
//! each key to its newest record `(version, Lsn, length, tombstone?)`; a read looks the key
//! up and copies the value out of the memory-mapped segment ([`kv_wal::Wal::read`]: no
//! `read` syscall, checksum verified). A [`kv_cache::Cache`] of `(value, version)` sits in
//! front of the index for hot keys (reads take no lock there). A key enters the cache on its
//! second miss within a window, not its first (a TinyLFU-style doorkeeper: a 64 Kibit filter),
//! so a scan or a uniformly random read over a large store does not pay a cache insert and an
//! eviction per read.
//!
//! **Versions, last writer wins.** Every write carries a [`Version`] (hybrid logical clock,
//! assigned by the coordinator, or by the node's own [`Hlc`] for [`Node::put`]). The node
//! keeps the highest version per key; an older or equal one changes nothing and is not
//! written. Deletes are tombstones: versions without a value. That makes every operation
//! idempotent and order-independent, which is what replication, redistribution and repair
//! rely on.
//!
//! **Log records** (the payload of a WAL record; the WAL frames and checksums it), little
//! endian:
//!
//! | kind | layout |
//! |---|---|
//! | put (1), tombstone (2) | `kind: u8 · format: u8 · 0u8 ×2 · key_len: u32 · version: u64 · token: u64 · key · value` (a tombstone has no value bytes) |
//! | drop (3) | `kind: u8 · format: u8 · 0u8 ×2 · n: u32 · n × (start: u64, end: u64)`: every key in these token ranges written *before* this record is forgotten |
//!
//! `format` is the payload format version, `0`, or `1` for a put with an expiry (8 bytes of
//! `expires: u64` between the token and the key: see [`Write::expires`]); a record with any
//! other is refused with [`Error::UnsupportedRecordVersion`]. Byte by byte, with the hint files and the WAL framing
//! around them: `docs/format.md` in the repository.
//!
//! `token = kv_ring::token(key)` is stored so that hint files, recovery and range operations
//! never hash a key again.
//!
//! **Index partitioned by token.** `2^10` partitions by the token's top bits, each a hash
//! table behind its own `RwLock`. Because the top bits keep the ring's order, a token range
//! maps to a run of partitions: [`Node::export`], [`Node::drop_ranges`] and
//! [`Node::count_in_ranges`] cost the keys in the range plus two partial partitions per
//! range, not all keys (see the `node_ranges` benchmark). The tables are open-addressing
//! tables whose slot is the whole 64-byte entry (keys up to 24 bytes inline; `table.rs`), so
//! a random probe is one cache miss (hashbrown's control bytes make it two), and they live
//! in 2 MiB transparent huge pages from a small arena (`arena.rs`): on 4 KiB pages each miss
//! is also a TLB miss.
//!
//! **Concurrency.** Writers append, then update the index (keeping the highest version),
//! holding a *gate* shared (one of 16 cache-padded `RwLock`s, so concurrent writers do not
//! contend on one lock word); many write at once. Compaction and `drop_ranges` take every
//! shard of the gate exclusively for short moments (one copy batch; one drop record), so that they
//! never observe a write between its append and its index update.
//!
//! **Cache coherence.** The cache is filled only with the key's *current* version: the
//! check against the index and the insert happen under the key's index partition read
//! lock, which a writer needs (write) to change the key. After changing the index, a writer
//! replaces the cached entry the same way if the key is cached, or removes it for a
//! tombstone, before it returns. So a reader that filled the cache either did so before the
//! writer's index update (and the writer then sees and replaces its entry) or sees the new
//! version and inserts nothing stale. One more case: a write that finds a *newer* version
//! already in the index (it lost the race, or a replay) changes nothing, but the newer
//! write's writer may not have refreshed the cache yet; so before it returns, it drops a
//! cached version older than its own (and so does a writer whose refresh finds the index
//! already overtaken). Hence once a write has returned, no get returns an older version,
//! and a cache hit is served without consulting the index. (The `coherence` test catches
//! both alternatives: inserting first and re-checking after lets readers see the stale entry
//! in between; and without the drop on a lost race, a get after the loser returned sees the
//! version before it while the winner is preempted between index and cache.)
//!
//! **Compaction** (on demand, or in the background once the dead fraction of the oldest
//! segments passes the threshold): WAL segments can only be deleted oldest first, so
//! compaction takes a prefix of sealed segments, copies the records the index still points
//! at to the head of the log (same payload bytes, so the same version), repoints the index,
//! `sync`s, then deletes the segments and their hint files. A tombstone older than the grace
//! period is dropped instead of copied. That is safe: an older value of its key can only be
//! at an earlier position, so it is in the deleted prefix too, and segments are deleted
//! oldest first. (A write older than the index's version is not appended, and the gate keeps
//! compaction from copying a value past a newer write. But a write that passed its lookup
//! before a newer tombstone landed is appended after it: the writer then logs the tombstone
//! again, after its own record. Where that cannot be (the tombstone reached the index only
//! after such a write did; a crash before the writer logged it again, seen by recovery,
//! which reads the log in order), the index marks the entry (`stale_after`), and
//! compaction copies a marked tombstone to the head instead of purging it, which clears the
//! mark.) Drop records in the prefix
//! only concern records before them, which go with it. A crash at any point leaves either
//! the originals, or originals and copies (recovery prefers the later copy of an equal
//! version), or the copies alone.
//!
//! **Hint files** (`dir/wal/NNNNNNNNNN.hint`, format in the `hint` module): for each sealed
//! segment, the index items of all its records without values, with a checksum and the
//! checksum of the segment's last record. Recovery uses a hint only if it checks out against
//! its segment; otherwise (missing, stale, corrupt, pointing past the segment's end) it
//! scans the segment and writes the hint again later.
//!
//! **Recovery**: the WAL recovers first (torn tail cut, per its recovery mode); then each
//! segment in order, from its hint or by a scan, is folded into the index: the highest
//! version wins, ties go to the later copy, a drop record removes what precedes it. The
//! clock then observes the highest version seen.
//!
//! Limits (`docs/design.md`): keys of 1 to 64 KiB, values up to 16 MiB by default and never
//! more than fits in a segment with the key; a batch must fit in a segment.

#![deny(missing_docs)]
#![deny(unsafe_code)]

#[allow(unsafe_code)] // an allocator (see its docs)
mod arena;
mod compaction;
mod digest;
mod doorkeeper;
mod error;
mod gate;
mod hint;
mod index;
mod maintenance;
mod node;
mod options;
mod ranges;
mod record;
mod recovery;
mod segments;
mod stats;
mod stripe;
mod swap;
#[allow(unsafe_code)] // one prefetch hint, the only other unsafe code in the crate
mod table;
mod version;

pub use compaction::CompactionReport;
pub use digest::Digest;
pub use error::{Error, Result};
pub use node::{Node, Versioned};
pub use options::{CacheCapacity, DEFAULT_MAX_VALUE_LEN, MAX_KEY_LEN, NodeOptions};
pub use ranges::Export;
pub use record::{Cell, Record, Write, is_expired};
pub use recovery::RecoveryReport;
pub use stats::{NodeStats, RangeCount};
pub use swap::{Previous, Swapped};
pub use version::{Clock, Hlc, MAX_SLOTS, SystemClock, Version};

/// Re-exported: the token ranges that range operations take.
pub use kv_ring::TokenRange;

/// Re-exported: creating directories and replacing files durably (what the node does for its
/// own directory and hint files), for the crates built on this one.
pub use kv_wal::durable;
