//! Reading little-endian integers out of byte slices, bounds-checked: what every parser of
//! the project's binary formats (WAL segments, the node's log payloads and hint files) needs.
//!
//! Each reader returns `None` when the field runs past the end of the slice (or its offset
//! overflows), never panics, so a parser of untrusted bytes turns a short input into an error
//! of its own with `ok_or`.
//!
//! ```
//! use kv_wal::le;
//! let bytes = [1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
//! assert_eq!(le::u32_at(&bytes, 0), Some(1));
//! assert_eq!(le::u64_at(&bytes, 4), Some(2));
//! assert_eq!(le::u64_at(&bytes, 5), None); // runs past the end
//! ```

/// The `N` bytes at `at`, if they are all inside `bytes`.
#[inline]
fn array_at<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// The little-endian `u32` at byte offset `at`, or `None` if it is not all inside `bytes`.
///
/// ```
/// assert_eq!(kv_wal::le::u32_at(&[0xff, 0x78, 0x56, 0x34, 0x12], 1), Some(0x1234_5678));
/// assert_eq!(kv_wal::le::u32_at(&[0; 3], 0), None);
/// ```
#[inline]
pub fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    array_at(bytes, at).map(u32::from_le_bytes)
}

/// The little-endian `u64` at byte offset `at`, or `None` if it is not all inside `bytes`.
///
/// ```
/// assert_eq!(kv_wal::le::u64_at(&7u64.to_le_bytes(), 0), Some(7));
/// assert_eq!(kv_wal::le::u64_at(&[0; 8], usize::MAX), None);
/// ```
#[inline]
pub fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    array_at(bytes, at).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_past_the_end_is_none() {
        let b: Vec<u8> = (0..16).collect();
        for at in 0..=20 {
            assert_eq!(u32_at(&b, at).is_some(), at + 4 <= 16, "{at}");
            assert_eq!(u64_at(&b, at).is_some(), at + 8 <= 16, "{at}");
        }
        assert_eq!(u32_at(&b, usize::MAX - 1), None);
        assert_eq!(
            u64_at(&b, 8),
            Some(u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]))
        );
    }
}
