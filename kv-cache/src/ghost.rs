//! S3-FIFO's ghost queue: the hashes of entries recently evicted from the small queue.

use std::collections::{HashMap, VecDeque};

/// A bounded FIFO set of 64-bit hashes.
///
/// A key whose hash is here was evicted recently after a single stay in the small queue; if it
/// comes back, it goes straight to the main queue. Only hashes are kept (no keys or values), so a
/// collision merely admits an entry to the main queue early.
pub(crate) struct Ghost {
    /// Insertion order, with the sequence number each push was given.
    order: VecDeque<(u64, u64)>,
    /// Hash -> sequence number of its latest push.
    members: HashMap<u64, u64, foldhash::fast::FixedState>,
    next_seq: u64,
    capacity: usize,
}

impl Ghost {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::new(),
            members: HashMap::with_hasher(foldhash::fast::FixedState::default()),
            next_seq: 0,
            capacity,
        }
    }

    pub(crate) fn push(&mut self, hash: u64) {
        if self.capacity == 0 {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.members.insert(hash, seq);
        self.order.push_back((hash, seq));
        while self.members.len() > self.capacity || self.order.len() > 2 * self.capacity {
            let Some((old, old_seq)) = self.order.pop_front() else {
                break;
            };
            // Only the latest push of a hash owns its membership.
            if self.members.get(&old) == Some(&old_seq) {
                self.members.remove(&old);
            }
        }
    }

    /// Removes `hash` if present and says whether it was.
    pub(crate) fn take(&mut self, hash: u64) -> bool {
        self.members.remove(&hash).is_some()
    }

    pub(crate) fn clear(&mut self) {
        self.order.clear();
        self.members.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_hashes() {
        let mut ghost = Ghost::new(3);
        for hash in 0..5 {
            ghost.push(hash);
        }
        assert_eq!(ghost.len(), 3);
        assert!(!ghost.take(0));
        assert!(!ghost.take(1));
        assert!(ghost.take(4));
        assert!(!ghost.take(4), "take removes");
    }

    #[test]
    fn a_repushed_hash_survives_its_old_slot() {
        let mut ghost = Ghost::new(2);
        ghost.push(7);
        ghost.push(8);
        ghost.push(7); // 7 is now the newest
        ghost.push(9); // evicts 8, not 7
        assert!(ghost.take(7));
        assert!(!ghost.take(8));
        assert!(ghost.take(9));
    }

    #[test]
    fn zero_capacity_holds_nothing() {
        let mut ghost = Ghost::new(0);
        ghost.push(1);
        assert!(!ghost.take(1));
        ghost.clear();
        assert_eq!(ghost.len(), 0);
    }
}
