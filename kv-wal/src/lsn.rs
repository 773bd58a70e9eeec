//! Log sequence numbers: where a record lives.

use std::fmt;

/// A log sequence number: the position of a record in the log.
///
/// It packs the segment's sequence number (high 32 bits) and the record's byte offset within
/// that segment (low 32 bits), so [`Wal::read`](crate::Wal::read) finds a record without an
/// index, and `Lsn`s order the same way the records were appended. An `Lsn` stays valid across
/// reopen until [`Wal::truncate_before`](crate::Wal::truncate_before) removes its segment.
///
/// # Example
///
/// ```
/// use kv_wal::Lsn;
///
/// let lsn = Lsn::new(3, 4096);
/// assert_eq!((lsn.segment(), lsn.offset()), (3, 4096));
/// assert!(Lsn::new(3, 8) < Lsn::new(4, 0));
/// assert_eq!(Lsn::from_u64(lsn.as_u64()), lsn);
/// assert_eq!(lsn.to_string(), "3:4096");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(u64);

impl Lsn {
    /// The smallest `Lsn`: iterating from it starts at the oldest record still in the log.
    pub const ZERO: Lsn = Lsn(0);

    /// The `Lsn` of byte `offset` of segment `segment`.
    pub const fn new(segment: u32, offset: u32) -> Lsn {
        Lsn(((segment as u64) << 32) | offset as u64)
    }

    /// The segment's sequence number.
    pub const fn segment(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The byte offset within the segment.
    pub const fn offset(self) -> u32 {
        self.0 as u32
    }

    /// The packed form (for storing in an index).
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Rebuilds an `Lsn` from [`Lsn::as_u64`].
    pub const fn from_u64(v: u64) -> Lsn {
        Lsn(v)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.segment(), self.offset())
    }
}
