//! The storage node's types, as the coordinator sees them.
//!
//! TEMPORARY: a stand-in for `kv-node`'s public types (same names and semantics) until that
//! crate lands on main; then this module becomes `pub use kv_node::{..}`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// A write's version: a hybrid logical clock reading (48 bits of milliseconds, 16 of counter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(u64);

impl Version {
    /// The version below every write.
    pub const ZERO: Version = Version(0);
    /// A version from its raw value.
    pub const fn new(raw: u64) -> Version {
        Version(raw)
    }
    /// The raw value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// A version from milliseconds and a counter.
    pub const fn from_parts(millis: u64, counter: u16) -> Version {
        Version(((millis & ((1 << 48) - 1)) << 16) | counter as u64)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 >> 16, self.0 as u16)
    }
}

/// A source of wall-clock milliseconds.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A hybrid logical clock: strictly increasing versions across threads.
pub struct Hlc {
    last: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl Hlc {
    /// A clock over the system clock.
    pub fn new() -> Hlc {
        Hlc::with_clock(Arc::new(SystemClock))
    }
    /// A clock over `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Hlc {
        Hlc {
            last: AtomicU64::new(0),
            clock,
        }
    }
    /// The next version.
    pub fn now(&self) -> Version {
        let wall = Version::from_parts(self.clock.now_millis(), 0).as_u64();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = wall.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Version(next),
                Err(seen) => last = seen,
            }
        }
    }
    /// Moves the clock past `seen`.
    pub fn observe(&self, seen: Version) {
        self.last.fetch_max(seen.as_u64(), Ordering::AcqRel);
    }
}

impl Default for Hlc {
    fn default() -> Self {
        Hlc::new()
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hlc").finish_non_exhaustive()
    }
}

/// One key's state as exported: a value or a tombstone, with its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The key.
    pub key: Bytes,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// The version.
    pub version: Version,
}

/// One write of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value; `None` is a delete.
    pub value: Option<&'a [u8]>,
    /// The version.
    pub version: Version,
}

/// What a node holds in some token ranges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeCount {
    /// Live keys.
    pub live: u64,
    /// Tombstones.
    pub tombstones: u64,
    /// Bytes of live keys and values.
    pub live_bytes: u64,
}

/// A storage node's error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NodeError(pub String);
