//! Versions and the hybrid logical clock that assigns them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The version of a write: a hybrid logical clock value, 48 bits of milliseconds since the
/// Unix epoch and 16 bits below them (`docs/design.md`, *Versions*). An [`Hlc`] fills those
/// 16 bits with a 10-bit counter and the 6-bit slot of the coordinator that minted the
/// version, so two coordinators never mint the same version; the order is the order of
/// the `u64`.
///
/// Replicas keep the highest version per key (last writer wins); two writes with the same
/// version are the same write.
///
/// ```
/// use kv_node::Version;
/// let v = Version::from_parts(1_700_000_000_000, 7);
/// assert_eq!(v.millis(), 1_700_000_000_000);
/// assert_eq!(v.counter(), 7);
/// assert!(Version::from_parts(1, 0) > Version::from_parts(0, u16::MAX));
/// assert_eq!(Version::new(v.as_u64()), v);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(u64);

impl Version {
    /// The smallest version; every write has a larger one.
    pub const ZERO: Version = Version(0);

    /// [`Node::apply`](crate::Node::apply) and its batch forms refuse versions at or past
    /// this one ([`Error::VersionTooLarge`](crate::Error::VersionTooLarge)): a version from
    /// elsewhere near `u64::MAX` would push the node's clock to its end, where it has no
    /// newer version to give. It lies in the year 6429 (2^47 milliseconds), so a clock
    /// pushed up to it still has 2^63 versions to go.
    ///
    /// ```
    /// use kv_node::Version;
    /// assert!(Version::from_parts(4_102_444_800_000, 0) < Version::LIMIT); // 2100-01-01
    /// assert_eq!(Version::LIMIT.millis(), 1 << 47);
    /// ```
    pub const LIMIT: Version = Version(1 << 63);

    /// Wraps a raw `u64` (as stored on disk or sent over the wire).
    pub const fn new(raw: u64) -> Version {
        Version(raw)
    }

    /// The raw `u64`.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Builds a version from milliseconds since the Unix epoch (the low 48 bits are kept)
    /// and a counter.
    pub const fn from_parts(millis: u64, counter: u16) -> Version {
        Version(((millis & MILLIS_MASK) << 16) | counter as u64)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn millis(self) -> u64 {
        self.0 >> 16
    }

    /// The 16 bits below the milliseconds: the counter within the millisecond and the
    /// coordinator's slot ([`Version::slot`]) together.
    pub const fn counter(self) -> u16 {
        self.0 as u16
    }

    /// The slot of the coordinator that minted the version (its low 6 bits; see [`Hlc`]).
    ///
    /// ```
    /// use kv_node::{Hlc, SystemClock};
    /// let hlc = Hlc::with_slot(std::sync::Arc::new(SystemClock), 5)?;
    /// assert_eq!(hlc.now().slot(), 5);
    /// # Ok::<(), kv_node::Error>(())
    /// ```
    pub const fn slot(self) -> u8 {
        (self.0 & SLOT_MASK) as u8
    }
}

const MILLIS_MASK: u64 = (1 << 48) - 1;

/// Bits of a version that name the coordinator that minted it.
const SLOT_BITS: u32 = 6;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

/// How many coordinators can mint versions side by side: slots `0..MAX_SLOTS`.
pub const MAX_SLOTS: u8 = 1 << SLOT_BITS;

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.millis(), self.counter())
    }
}

/// A source of wall-clock time, behind a trait so tests can skew it.
///
/// ```
/// use kv_node::{Clock, SystemClock};
/// assert!(SystemClock.now_millis() > 1_600_000_000_000);
/// ```
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A hybrid logical clock: versions that follow wall-clock time but never go backwards and
/// never repeat, even when the wall clock stalls or steps back, and across threads.
///
/// Each clock has a *slot* (`0..MAX_SLOTS`, 0 by default), the low 6 bits of every version it
/// mints: clocks with different slots never mint the same version, so coordinators in
/// different processes, each with its own slot, never give two different writes one version.
/// Within a millisecond a clock mints 1,024 versions; past that it borrows the next
/// millisecond (as it does when the wall clock stalls).
///
/// ```
/// use kv_node::Hlc;
/// let hlc = Hlc::new();
/// let a = hlc.now();
/// let b = hlc.now();
/// assert!(b > a);
/// // A version seen from another clock pushes this one past it.
/// let far = kv_node::Version::from_parts(a.millis() + 60_000, 3);
/// hlc.observe(far);
/// assert!(hlc.now() > far);
/// ```
pub struct Hlc {
    last: AtomicU64,
    clock: Arc<dyn Clock>,
    slot: u64,
}

impl Hlc {
    /// A clock on the system's wall clock.
    pub fn new() -> Hlc {
        Hlc::with_clock(Arc::new(SystemClock))
    }

    /// A clock on the given time source, slot 0.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Hlc {
        Hlc {
            last: AtomicU64::new(0),
            clock,
            slot: 0,
        }
    }

    /// A clock on the given time source minting versions in `slot` (see [`Hlc`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`](crate::Error::InvalidOptions) if `slot >= MAX_SLOTS`.
    pub fn with_slot(clock: Arc<dyn Clock>, slot: u8) -> crate::Result<Hlc> {
        if slot >= MAX_SLOTS {
            return Err(crate::Error::InvalidOptions {
                reason: "a clock's slot must be below MAX_SLOTS (64)",
            });
        }
        Ok(Hlc {
            slot: u64::from(slot),
            ..Hlc::with_clock(clock)
        })
    }

    /// The slot of the versions this clock mints.
    pub fn slot(&self) -> u8 {
        self.slot as u8
    }

    /// A new version, larger than every version this clock returned or observed, with this
    /// clock's slot in its low bits.
    pub fn now(&self) -> Version {
        let wall = Version::from_parts(self.clock.now_millis(), 0).as_u64() | self.slot;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            // The next counter above `last`, in this clock's slot. Saturates at `u64::MAX`,
            // which only a version past `Version::LIMIT` reaches.
            let after = match (last >> SLOT_BITS) + 1 {
                c if c < 1 << (64 - SLOT_BITS) => (c << SLOT_BITS) | self.slot,
                _ => u64::MAX,
            };
            let next = wall.max(after);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Version(next),
                Err(seen) => last = seen,
            }
        }
    }

    /// Records a version seen elsewhere (a replica's, a recovered one), so later versions
    /// from this clock are larger. (A clock that observed `u64::MAX` stays there: see
    /// [`Version::LIMIT`], which a node enforces on what it observes.)
    pub fn observe(&self, seen: Version) {
        self.observe_newer(seen);
    }

    /// [`Hlc::observe`], and whether `seen` is newer than every version this clock returned
    /// or observed before. A store that observes the version of every write it applies
    /// learns, without looking, that it holds nothing as new for the key.
    ///
    /// ```
    /// let hlc = kv_node::Hlc::new();
    /// let v = hlc.now();
    /// assert!(!hlc.observe_newer(v)); // returned already
    /// let later = kv_node::Version::from_parts(v.millis() + 1000, 0);
    /// assert!(hlc.observe_newer(later));
    /// assert!(!hlc.observe_newer(later));
    /// ```
    pub fn observe_newer(&self, seen: Version) -> bool {
        // Read first: a plain load keeps the line shared between the cores when the version
        // is not newer, instead of bouncing it.
        seen.as_u64() > self.last.load(Ordering::Relaxed)
            && self.last.fetch_max(seen.as_u64(), Ordering::AcqRel) < seen.as_u64()
    }
}

impl Default for Hlc {
    fn default() -> Self {
        Hlc::new()
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hlc")
            .field("last", &Version(self.last.load(Ordering::Relaxed)))
            .field("slot", &self.slot)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Frozen(u64);
    impl Clock for Frozen {
        fn now_millis(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn a_stalled_clock_still_gives_increasing_versions() {
        let hlc = Hlc::with_clock(Arc::new(Frozen(1000)));
        let a = hlc.now();
        let b = hlc.now();
        assert_eq!(a, Version::from_parts(1000, 0));
        assert_eq!(b, Version::from_parts(1000, 64));
    }

    #[test]
    fn a_clock_stepping_back_does_not_go_backwards() {
        let hlc = Hlc::with_clock(Arc::new(Frozen(500)));
        hlc.observe(Version::from_parts(2000, 9));
        assert_eq!(hlc.now(), Version::from_parts(2000, 64));
    }

    #[test]
    fn clocks_in_different_slots_never_mint_the_same_version() {
        let clocks: Vec<Arc<Hlc>> = (0..MAX_SLOTS)
            .map(|slot| Arc::new(Hlc::with_slot(Arc::new(Frozen(7)), slot).unwrap()))
            .collect();
        let mut all = Vec::new();
        // Each clock also observes the others' versions as it goes, as coordinators observe
        // what replicas answer.
        for round in 0..3000 {
            for (i, hlc) in clocks.iter().enumerate() {
                let v = hlc.now();
                assert_eq!(v.slot() as usize, i);
                if round % 3 == 0 {
                    clocks[(i + 1) % clocks.len()].observe(v);
                }
                all.push(v);
            }
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn a_slot_out_of_range_is_refused() {
        assert!(matches!(
            Hlc::with_slot(Arc::new(SystemClock), MAX_SLOTS),
            Err(crate::Error::InvalidOptions { .. })
        ));
    }

    #[test]
    fn a_clock_minting_past_1024_a_millisecond_borrows_the_next() {
        let hlc = Hlc::with_slot(Arc::new(Frozen(10)), 3).unwrap();
        let last = (0..1025).map(|_| hlc.now()).last().unwrap();
        assert_eq!(last, Version::from_parts(11, 3));
    }

    #[test]
    fn versions_are_unique_across_threads() {
        let hlc = Arc::new(Hlc::with_clock(Arc::new(Frozen(7))));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let hlc = Arc::clone(&hlc);
                std::thread::spawn(move || (0..1000).map(|_| hlc.now()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<Version> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4000);
    }
}
