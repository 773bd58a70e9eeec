//! Range digests for anti-entropy: order-independent hashes of what a node holds in a token
//! range, split into leaves, so two replicas compare a few hashes instead of their keys.

use kv_ring::TokenRange;

use crate::Node;
use crate::index::Location;

/// The digest of one leaf (an equal share of a token range).
///
/// ```
/// # let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
/// use kv_node::{Node, NodeOptions, TokenRange, Version};
/// let x = Node::open(a.path(), NodeOptions::new())?;
/// let y = Node::open(b.path(), NodeOptions::new())?;
/// for n in [&x, &y] {
///     n.apply(b"k", Some(b"v"), Version::new(7))?;
/// }
/// assert_eq!(x.digests(TokenRange::FULL, 16), y.digests(TokenRange::FULL, 16));
/// y.apply(b"k", None, Version::new(8))?; // a delete x has not seen
/// assert_ne!(x.digests(TokenRange::FULL, 16), y.digests(TokenRange::FULL, 16));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Digest {
    /// XOR of a 64-bit hash of every `(key, version, tombstone?)` in the leaf: independent of
    /// the order keys were written or scanned in.
    pub hash: u64,
    /// Keys and tombstones in the leaf.
    pub keys: u64,
}

impl Digest {
    /// The hash one entry contributes to its leaf: the key's token (already a hash of the
    /// key) mixed with its version and whether it is a tombstone (splitmix64's finalizer).
    /// Public so that a replica without an index can compute the same digests.
    ///
    /// ```
    /// use kv_node::{Digest, Version};
    /// let a = Digest::entry_hash(kv_ring::token(b"k"), Version::new(1), false);
    /// assert_ne!(a, Digest::entry_hash(kv_ring::token(b"k"), Version::new(1), true));
    /// ```
    pub fn entry_hash(token: u64, version: crate::Version, tombstone: bool) -> u64 {
        let mut z = token
            ^ version.as_u64().wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ u64::from(tombstone).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn entry_hash(token: u64, loc: &Location) -> u64 {
    Digest::entry_hash(token, loc.version, loc.tombstone)
}

/// Which of `leaves` equal parts of `range` holds `token` (which must lie in `range`).
pub(crate) fn leaf_of(range: TokenRange, leaves: u32, token: u64) -> usize {
    // Offset within (start, end]: 0 for start + 1.
    let offset = u128::from(token.wrapping_sub(range.start).wrapping_sub(1));
    ((offset * u128::from(leaves)) / range.len()) as usize
}

impl Node {
    /// Splits `range` into `leaves` equal token ranges and digests what this node holds in
    /// each (values and tombstones, by key and version; not the value bytes: equal versions
    /// are the same write). Two replicas whose digests match hold the same writes there;
    /// comparing them costs `16 * leaves` bytes, not a key scan over the wire. Costs a pass
    /// over the keys in `range` (index only, no value is read).
    ///
    /// `leaves` is clamped to `1..=65536`.
    pub fn digests(&self, range: TokenRange, leaves: u32) -> Vec<Digest> {
        let leaves = leaves.clamp(1, 1 << 16);
        let mut out = vec![Digest::default(); leaves as usize];
        let ranges = [range];
        let inner = &*self.inner;
        // An expired value digests as the tombstone it stands for, so that a replica that
        // holds it and one whose compaction turned it into one agree (`docs/design.md`,
        // *Expiring keys*). Its expiry is in its record, read after the partition's lock is
        // released.
        let mut expiring = Vec::new();
        let now = inner.now_millis();
        for part in inner.index.partitions_for(&ranges) {
            inner.index.scan_partition(part, &ranges, |e| {
                if e.loc.expiring {
                    expiring.push((e.token, e.loc));
                    return;
                }
                let d = &mut out[leaf_of(range, leaves, e.token)];
                d.hash ^= entry_hash(e.token, &e.loc);
                d.keys += 1;
            });
            for (token, loc) in expiring.drain(..) {
                // A record compaction moved since the scan: taken as unexpired (the digests
                // then differ for a round at most, and a repair of the leaf changes nothing).
                let expired = inner
                    .wal
                    .read_with(loc.lsn, crate::record::expires_of)
                    .is_ok_and(|e| e.is_ok_and(|e| crate::is_expired(e, now)));
                let d = &mut out[leaf_of(range, leaves, token)];
                d.hash ^= Digest::entry_hash(token, loc.version, expired);
                d.keys += 1;
            }
        }
        out
    }

    /// The token range of leaf `i` of `range` split in `leaves` (as [`Node::digests`] splits
    /// it), to export only a leaf whose digests differ.
    ///
    /// ```
    /// use kv_node::{Node, TokenRange};
    /// let r = TokenRange::new(0, 1000);
    /// assert_eq!(Node::leaf_range(r, 4, 0), TokenRange::new(0, 250));
    /// assert_eq!(Node::leaf_range(r, 4, 3), TokenRange::new(750, 1000));
    /// ```
    pub fn leaf_range(range: TokenRange, leaves: u32, i: u32) -> TokenRange {
        let leaves = leaves.clamp(1, 1 << 16);
        let len = range.len();
        let at = |k: u32| -> u64 {
            // Leaf k covers offsets [ceil(k*len/leaves), ceil((k+1)*len/leaves)).
            let off = (u128::from(k) * len).div_ceil(u128::from(leaves));
            range.start.wrapping_add(off as u64)
        };
        TokenRange {
            start: at(i),
            end: if i + 1 >= leaves {
                range.end
            } else {
                at(i + 1)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_partition_the_range_exactly() {
        for range in [
            TokenRange::new(0, 1000),
            TokenRange::new(u64::MAX - 10, 20),
            TokenRange::FULL,
            TokenRange::new(5, 6),
        ] {
            for leaves in [1u32, 3, 7, 16] {
                for probe in [1u64, 2, 3, 9, 250, 999, 1000, 10, 15, 20] {
                    let token = range.start.wrapping_add(probe);
                    if !range.contains(token) {
                        continue;
                    }
                    let i = leaf_of(range, leaves, token);
                    assert!(i < leaves as usize);
                    assert!(
                        Node::leaf_range(range, leaves, i as u32).contains(token),
                        "{range:?} {leaves} {token} -> {i}"
                    );
                }
            }
        }
    }
}
