//! Shared helpers for the kvstore benchmarks (workload generators used by several bench targets).
//!
//! The benchmarks themselves live in `benches/benches/<layer>.rs`, one target per layer; run them
//! with `cargo bench -p benches --bench <layer>`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

/// The `i`-th of a sequence of distinct-looking random 16-byte keys (two SplitMix64 outputs):
/// uniformly spread, reproducible, and cheap enough (a few ns) not to matter next to the
/// stores being measured.
pub fn key16(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&splitmix64(i).to_le_bytes());
    k[8..].copy_from_slice(&splitmix64(i ^ 0x6A09_E667_F3BC_C909).to_le_bytes());
    k
}

/// The SplitMix64 finaliser of `x` (a bijection on `u64`).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A tiny deterministic generator for picking keys (SplitMix64 over a counter).
#[derive(Clone, Debug)]
pub struct Picker {
    state: u64,
}

impl Picker {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Picker {
        Picker { state: seed }
    }

    /// A uniformly distributed number in `0..n` (multiply-shift, no modulo bias worth
    /// mentioning for `n` far below 2^64).
    pub fn below(&mut self, n: u64) -> u64 {
        self.state = self.state.wrapping_add(1);
        ((u128::from(splitmix64(self.state)) * u128::from(n)) >> 64) as u64
    }
}

/// A buffer of incompressible bytes from which `value(i)` takes 100-byte values, so that
/// stores that compress (fjall) gain nothing from repetitive values.
#[derive(Clone, Debug)]
pub struct Values {
    buf: Vec<u8>,
}

impl Values {
    /// The value length used by the node benchmarks.
    pub const LEN: usize = 100;

    /// 64 KiB of pseudo-random bytes.
    pub fn new() -> Values {
        let buf = (0..(64u64 << 10) / 8)
            .flat_map(|i| splitmix64(i ^ 0xDEAD_BEEF).to_le_bytes())
            .collect();
        Values { buf }
    }

    /// The 100-byte value of the `i`-th key.
    pub fn value(&self, i: u64) -> &[u8] {
        let start = (splitmix64(i) as usize) % (self.buf.len() - Self::LEN);
        &self.buf[start..start + Self::LEN]
    }
}

impl Default for Values {
    fn default() -> Self {
        Values::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_values_sized() {
        let keys: std::collections::HashSet<[u8; 16]> = (0..10_000).map(key16).collect();
        assert_eq!(keys.len(), 10_000);
        let v = Values::new();
        assert!((0..1000).all(|i| v.value(i).len() == Values::LEN));
        let mut p = Picker::new(1);
        assert!((0..1000).all(|_| p.below(7) < 7));
    }
}
