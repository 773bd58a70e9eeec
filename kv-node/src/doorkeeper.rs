//! Cache admission: a key enters the cache on its second miss within a window, not its first
//! (TinyLFU's "doorkeeper"). A uniformly random read over a store much larger than the cache
//! then costs no cache insert (with an eviction) per read, while a key read twice gets cached.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits in the filter: 2^16 (8 KiB).
const BITS: usize = 1 << 16;
/// The filter is cleared after this many first misses, so it forgets old keys.
const WINDOW: u64 = (BITS / 4) as u64;

pub(crate) struct Doorkeeper {
    bits: Box<[AtomicU64]>,
    marked: AtomicU64,
}

impl Default for Doorkeeper {
    fn default() -> Self {
        Doorkeeper {
            bits: (0..BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            marked: AtomicU64::new(0),
        }
    }
}

impl Doorkeeper {
    /// Whether a key that just missed the cache should be inserted: true if it was seen (by
    /// its token) since the last reset; otherwise remembers it and says no.
    pub fn admit(&self, token: u64) -> bool {
        // Mix the token: its top bits also choose the index partition.
        let h = token.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - 16);
        let (word, bit) = ((h / 64) as usize, 1u64 << (h % 64));
        if self.bits[word].load(Ordering::Relaxed) & bit != 0 {
            return true;
        }
        self.bits[word].fetch_or(bit, Ordering::Relaxed);
        if self.marked.fetch_add(1, Ordering::Relaxed) + 1 >= WINDOW {
            self.marked.store(0, Ordering::Relaxed);
            for w in self.bits.iter() {
                w.store(0, Ordering::Relaxed);
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_on_the_second_miss() {
        let d = Doorkeeper::default();
        assert!(!d.admit(42));
        assert!(d.admit(42));
        assert!(!d.admit(7));
    }

    #[test]
    fn forgets_after_a_window() {
        let d = Doorkeeper::default();
        assert!(!d.admit(1));
        for t in 2..=WINDOW {
            d.admit(t.wrapping_mul(0xDEAD_BEEF_1234_5677));
        }
        assert!(!d.admit(1), "cleared after the window");
    }
}
