//! Tokens (positions on the ring) and ranges of them.

use std::fmt;

/// The ring position of a key: `xxh3_64(key)` with seed 0.
///
/// This function is part of kvstore's on-disk contract (storage nodes index and range-scan keys by
/// token): it never changes without a format version bump.
///
/// # Example
/// ```
/// assert_eq!(kv_ring::token(b"user:1001"), kv_ring::token(b"user:1001"));
/// assert_ne!(kv_ring::token(b"user:1001"), kv_ring::token(b"user:1002"));
/// ```
#[inline]
pub fn token(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// A range of tokens on the ring, `(start, end]`: exclusive start, inclusive end, walking
/// clockwise (upwards, wrapping from `u64::MAX` to `0`).
///
/// This is the range a virtual node at token `end` owns when the previous virtual node sits at
/// `start`. A range with `start == end` is the whole ring.
///
/// # Example
/// ```
/// use kv_ring::TokenRange;
///
/// let r = TokenRange::new(10, 20);
/// assert!(!r.contains(10) && r.contains(11) && r.contains(20) && !r.contains(21));
///
/// let wrapping = TokenRange::new(u64::MAX - 1, 5);
/// assert!(wrapping.contains(u64::MAX) && wrapping.contains(0) && !wrapping.contains(6));
/// assert_eq!(wrapping.len(), 7);
/// assert!(TokenRange::FULL.contains(42));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenRange {
    /// The exclusive lower bound.
    pub start: u64,
    /// The inclusive upper bound.
    pub end: u64,
}

impl TokenRange {
    /// The whole ring.
    pub const FULL: TokenRange = TokenRange { start: 0, end: 0 };

    /// The range `(start, end]`; `start == end` is the whole ring (normalised to
    /// [`FULL`](TokenRange::FULL), so that all whole-ring ranges compare equal).
    pub const fn new(start: u64, end: u64) -> Self {
        if start == end {
            Self::FULL
        } else {
            TokenRange { start, end }
        }
    }

    /// Whether `token` lies in the range.
    #[inline]
    pub const fn contains(&self, token: u64) -> bool {
        if self.start < self.end {
            self.start < token && token <= self.end
        } else if self.start > self.end {
            token > self.start || token <= self.end
        } else {
            true
        }
    }

    /// Whether the range is the whole ring.
    pub const fn is_full(&self) -> bool {
        self.start == self.end
    }

    /// The number of tokens in the range (`2^64` for the whole ring).
    pub const fn len(&self) -> u128 {
        if self.start == self.end {
            1u128 << 64
        } else {
            self.end.wrapping_sub(self.start) as u128
        }
    }

    /// Never true: a range holds at least one token. Present for API symmetry with `len`.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// The fraction of the token space the range covers, in `(0, 1]`.
    pub fn fraction(&self) -> f64 {
        self.len() as f64 / TOKEN_SPACE
    }
}

/// The size of the token space, `2^64`, as a float.
pub(crate) const TOKEN_SPACE: f64 = 18_446_744_073_709_551_616.0;

impl fmt::Debug for TokenRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:#018x}, {:#018x}]", self.start, self.end)
    }
}

impl fmt::Display for TokenRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_xxh3_64_seed_0() {
        // Pinned values: the token is part of the on-disk format and must never drift.
        assert_eq!(token(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(token(b""), xxhash_rust::xxh3::xxh3_64_with_seed(b"", 0));
        assert_eq!(token(b"hello"), xxhash_rust::xxh3::xxh3_64(b"hello"));
    }

    #[test]
    fn range_edges() {
        let r = TokenRange::new(5, 5);
        assert_eq!(r, TokenRange::FULL);
        assert!(r.is_full() && r.contains(0) && r.contains(u64::MAX));
        assert_eq!(r.len(), 1 << 64);
        assert_eq!(TokenRange::new(0, u64::MAX).len(), u64::MAX as u128);
        assert!(!TokenRange::new(0, u64::MAX).contains(0));
        assert!(TokenRange::new(u64::MAX, 0).contains(0));
        assert_eq!(TokenRange::new(u64::MAX, 0).len(), 1);
        assert!((TokenRange::FULL.fraction() - 1.0).abs() < 1e-12);
    }
}
