//! The streaming rate limit: one token bucket per process, shared by its streams
//! (`docs/membership.md` §3.4), in keys/s and bytes/s at once.
//!
//! The bucket lends: a stream takes what it is about to send (the bucket may go below zero)
//! and is told how long to wait until the debt is repaid, so a chunk larger than the burst
//! still goes, and the average over any long run is the rate. The bucket starts empty and
//! holds at most a tenth of a second of credit ([`BURST`]), so an idle stream cannot save
//! up a burst that the foreground would feel. Waiting is the caller's: [`RateLimiter::pace`]
//! sleeps the thread (the in-process change's copy threads), an async stream sleeps on its
//! runtime's timer for what [`RateLimiter::reserve`] returns.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::options::RateLimit;

/// The most credit the bucket saves up, as time at the current rate.
pub const BURST: Duration = Duration::from_millis(100);

/// A streaming rate: either limit, both, or neither (`None`: unlimited).
///
/// # Example
/// ```
/// use kv_cluster::{RateLimit, StreamRate};
///
/// let r = StreamRate::from(Some(RateLimit::KeysPerSec(50_000)));
/// assert_eq!(r, StreamRate { keys_per_sec: Some(50_000), bytes_per_sec: None });
/// assert!(StreamRate::UNLIMITED.is_unlimited());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamRate {
    /// At most this many records per second (`Some(0)` counts as unlimited).
    pub keys_per_sec: Option<u64>,
    /// At most this many key and value bytes per second (`Some(0)` counts as unlimited).
    pub bytes_per_sec: Option<u64>,
}

impl StreamRate {
    /// No limit.
    pub const UNLIMITED: StreamRate = StreamRate {
        keys_per_sec: None,
        bytes_per_sec: None,
    };

    /// Whether neither limit applies.
    pub fn is_unlimited(&self) -> bool {
        self.keys_per_sec.unwrap_or(0) == 0 && self.bytes_per_sec.unwrap_or(0) == 0
    }
}

impl From<Option<RateLimit>> for StreamRate {
    fn from(limit: Option<RateLimit>) -> Self {
        match limit {
            None => StreamRate::UNLIMITED,
            Some(RateLimit::KeysPerSec(k)) => StreamRate {
                keys_per_sec: Some(k),
                bytes_per_sec: None,
            },
            Some(RateLimit::BytesPerSec(b)) => StreamRate {
                keys_per_sec: None,
                bytes_per_sec: Some(b),
            },
        }
    }
}

/// A token bucket on keys/s and bytes/s, shared (`Arc`) by every stream of a process; the
/// rate may change while streams run ([`set_rate`](RateLimiter::set_rate): a committed
/// `SetStreamRate`), taking effect at each stream's next chunk.
///
/// Thread-safe; [`reserve`](RateLimiter::reserve) never blocks (a leaf mutex held for a few
/// arithmetic operations).
///
/// # Example
/// ```
/// use std::time::Duration;
/// use kv_cluster::{RateLimiter, StreamRate};
///
/// let limiter = RateLimiter::new(StreamRate { keys_per_sec: Some(1_000), bytes_per_sec: None });
/// // 500 keys at 1,000 keys/s from an empty bucket: wait about half a second.
/// let wait = limiter.reserve(500, 0);
/// assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
/// assert_eq!(RateLimiter::unlimited().reserve(1 << 40, 1 << 40), Duration::ZERO);
/// ```
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    rate: StreamRate,
    keys: Bucket,
    bytes: Bucket,
}

/// One bucket's credit (negative: debt) as of `at`.
#[derive(Debug)]
struct Bucket {
    credit: f64,
    at: Instant,
}

impl Bucket {
    fn empty() -> Bucket {
        Bucket {
            credit: 0.0,
            at: Instant::now(),
        }
    }

    /// Refills at `rate` per second up to the burst, takes `amount`, and returns how long
    /// until the debt (if any) is repaid.
    fn take(&mut self, rate: Option<u64>, amount: u64, now: Instant) -> Duration {
        let Some(rate) = rate.filter(|&r| r > 0) else {
            return Duration::ZERO;
        };
        let rate = rate as f64;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.credit = (self.credit + elapsed * rate).min(rate * BURST.as_secs_f64());
        self.credit -= amount as f64;
        if self.credit >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.credit / rate)
        }
    }
}

impl RateLimiter {
    /// A limiter at `rate`, its buckets empty.
    pub fn new(rate: StreamRate) -> RateLimiter {
        RateLimiter {
            state: Mutex::new(Buckets {
                rate,
                keys: Bucket::empty(),
                bytes: Bucket::empty(),
            }),
        }
    }

    /// A limiter that never asks to wait.
    pub fn unlimited() -> RateLimiter {
        RateLimiter::new(StreamRate::UNLIMITED)
    }

    /// The rate now.
    pub fn rate(&self) -> StreamRate {
        self.state.lock().rate
    }

    /// Changes the rate from the next [`reserve`](RateLimiter::reserve) on; credit and debt
    /// carry over (a debt taken at the old rate is repaid at the new one).
    pub fn set_rate(&self, rate: StreamRate) {
        self.state.lock().rate = rate;
    }

    /// Takes `keys` records and `bytes` bytes about to be (or just) sent, and returns how
    /// long the caller waits before sending more: zero while the buckets hold credit.
    pub fn reserve(&self, keys: u64, bytes: u64) -> Duration {
        let now = Instant::now();
        let mut s = self.state.lock();
        let rate = s.rate;
        let k = s.keys.take(rate.keys_per_sec, keys, now);
        let b = s.bytes.take(rate.bytes_per_sec, bytes, now);
        k.max(b)
    }

    /// [`reserve`](RateLimiter::reserve), then sleeps the thread that long: for threads that
    /// may block, never for an async runtime's workers.
    pub fn pace(&self, keys: u64, bytes: u64) {
        let wait = self.reserve(keys, bytes);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over a bounded run the rate stays within a few percent: the bucket lends but its
    /// debt is repaid in time, and saves no more than the burst.
    #[test]
    fn paces_to_the_rate_on_both_limits() {
        let limiter = RateLimiter::new(StreamRate {
            keys_per_sec: Some(100_000),
            bytes_per_sec: Some(1_000_000),
        });
        let start = Instant::now();
        // 200 batches of 100 keys / 2,000 bytes: the byte limit (500 batches/s) binds.
        for _ in 0..200 {
            limiter.pace(100, 2_000);
        }
        let took = start.elapsed().as_secs_f64();
        assert!(
            (0.38..0.6).contains(&took),
            "400 ms of bytes took {took:.3} s"
        );
    }

    #[test]
    fn credit_is_capped_at_the_burst_and_rate_changes_apply() {
        let limiter = RateLimiter::new(StreamRate {
            keys_per_sec: Some(10_000),
            bytes_per_sec: None,
        });
        std::thread::sleep(Duration::from_millis(300));
        // At most 100 ms (1,000 keys) saved: 3,000 keys owe about 200 ms.
        let wait = limiter.reserve(3_000, 0);
        assert!(wait >= Duration::from_millis(180), "{wait:?}");
        limiter.set_rate(StreamRate::UNLIMITED);
        assert_eq!(limiter.reserve(1_000_000, 0), Duration::ZERO);
        assert!(limiter.rate().is_unlimited());
    }
}
