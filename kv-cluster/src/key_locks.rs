//! Striped per-key locks that serialize the writes reporting what they replaced
//! ([`Cluster::swap`](crate::Cluster::swap) and its kin) on one key within this coordinator.
//!
//! Two such writes racing on a key with versions `a < b` can interleave so that `a` is applied
//! on one replica only (where `b` arrived later) and is older than `b` everywhere else: `a`
//! then reports what it replaced while `b`, which never saw `a`, reports the same record.
//! Retrying `a` with a newer version instead leaves `a`'s first record on that replica, where a
//! third write can report it although no client was ever told of it. Serializing them per key
//! rules both out: a reporting write mints its version and reaches its replicas while no other
//! reporting write of the key is in flight from this coordinator, so it sees the previous one
//! on every replica that acknowledged both.
//!
//! Lock order: a stripe is taken with no other lock held (never under `admin`) and before the leaf
//! locks; it is the one coordinator lock held while waiting on replicas (`docs/design.md`,
//! *Concurrency and lock order*).

use parking_lot::{Mutex, MutexGuard};

/// How many stripes: two keys share a lock with probability 1/1024.
const STRIPES: usize = 1024;

/// A fixed set of mutexes, one chosen per key by its token.
pub(crate) struct KeyLocks {
    stripes: Box<[Mutex<()>]>,
}

impl KeyLocks {
    pub(crate) fn new() -> KeyLocks {
        KeyLocks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Locks the stripe of the key with this token until the guard drops.
    pub(crate) fn lock(&self, token: u64) -> MutexGuard<'_, ()> {
        // The token is a hash already: its low bits are as good as any.
        self.stripes[(token % STRIPES as u64) as usize].lock()
    }
}

impl std::fmt::Debug for KeyLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLocks")
            .field("stripes", &self.stripes.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_is_held_by_one_writer_at_a_time() {
        let locks = KeyLocks::new();
        let held = locks.lock(7);
        assert!(locks.stripes[7].try_lock().is_none());
        assert!(locks.stripes[8].try_lock().is_some());
        drop(held);
        assert!(locks.stripes[7].try_lock().is_some());
    }
}
