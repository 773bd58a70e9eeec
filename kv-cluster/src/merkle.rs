//! A Merkle tree over a token range's leaf digests, and the top-down comparison of two.

use kv_node::Digest;

/// Bytes one tree node costs to send: a 64-bit hash and a 64-bit key count.
pub(crate) const NODE_BYTES: u64 = 16;

/// A complete binary tree of digests: `levels[0]` are the leaves (a power of two of them),
/// the last level is the root. A parent's hash mixes its children's in order, so the tree
/// (unlike an XOR of all leaves) says *which* leaf differs.
#[derive(Debug, Clone)]
pub(crate) struct MerkleTree {
    levels: Vec<Vec<Digest>>,
}

impl MerkleTree {
    /// Builds the tree over `leaves`, padded with empty leaves to a power of two.
    pub(crate) fn new(mut leaves: Vec<Digest>) -> Self {
        let n = leaves.len().max(1).next_power_of_two();
        leaves.resize(n, Digest::default());
        let mut levels = vec![leaves];
        while let Some(last) = levels.last().filter(|l| l.len() > 1) {
            let up = last
                .chunks(2)
                .map(|p| Digest {
                    hash: mix(p[0].hash, p[1].hash),
                    keys: p[0].keys + p[1].keys,
                })
                .collect();
            levels.push(up);
        }
        MerkleTree { levels }
    }

    /// The leaves where `self` and `other` (same shape) differ, found top-down: a subtree
    /// whose roots agree is not descended. Also returns how many node pairs were compared
    /// (each costs [`NODE_BYTES`] from either side).
    pub(crate) fn diff(&self, other: &MerkleTree) -> (Vec<usize>, u64) {
        let mut out = Vec::new();
        let mut compared = 0;
        let top = self.levels.len() - 1;
        let mut frontier = vec![0usize];
        for level in (0..=top).rev() {
            let mut next = Vec::new();
            for i in frontier {
                compared += 1;
                if self.levels[level][i] == other.levels[level][i] {
                    continue;
                }
                if level == 0 {
                    out.push(i);
                } else {
                    next.extend([2 * i, 2 * i + 1]);
                }
            }
            frontier = next;
        }
        (out, compared)
    }
}

/// Mixes two child hashes, order-sensitively (splitmix64's finalizer over a rotation).
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a.rotate_left(17) ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Digest> {
        (0..n as u64)
            .map(|i| Digest {
                hash: i * 7 + 1,
                keys: 1,
            })
            .collect()
    }

    #[test]
    fn identical_trees_compare_only_the_root() {
        let a = MerkleTree::new(leaves(64));
        assert_eq!(a.diff(&a.clone()), (vec![], 1));
    }

    #[test]
    fn one_differing_leaf_is_found_along_its_path() {
        let a = MerkleTree::new(leaves(64));
        let mut l = leaves(64);
        l[37].hash ^= 1;
        let (diff, compared) = a.diff(&MerkleTree::new(l));
        assert_eq!(diff, vec![37]);
        // The root, then both children at each of the 6 levels below it.
        assert_eq!(compared, 1 + 2 * 6);
    }

    #[test]
    fn odd_leaf_counts_are_padded() {
        let a = MerkleTree::new(leaves(5));
        let mut l = leaves(5);
        l[4].keys = 9;
        assert_eq!(a.diff(&MerkleTree::new(l)).0, vec![4]);
    }
}
