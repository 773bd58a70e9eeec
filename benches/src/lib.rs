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

/// Ends the process with a message if a phase of a benchmark runs past its time limit, so a
/// store that hangs cannot leave `cargo bench` running forever (sled 0.34 did once here: its
/// two I/O threads spun in `sled::lazy::Lazy::deref` for 15 minutes until killed). Disarmed
/// when dropped.
///
/// ```
/// use std::time::Duration;
/// let dog = benches::Watchdog::start("example phase", Duration::from_secs(60));
/// // ... the phase ...
/// drop(dog); // done in time: nothing happens
/// ```
pub struct Watchdog {
    disarm: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Exit status when a phase overruns (as `timeout(1)`).
    pub const EXIT_CODE: i32 = 124;

    /// Starts watching a phase named `label`: if it is still running after `limit`, prints
    /// which phase overran and exits the process with [`Watchdog::EXIT_CODE`].
    pub fn start(label: impl Into<String>, limit: std::time::Duration) -> Watchdog {
        let label = label.into();
        let (disarm, armed) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-watchdog".into())
            .spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = armed.recv_timeout(limit) {
                    eprintln!(
                        "benchmark watchdog: {label} still running after {limit:?}; \
                         stopping the benchmark"
                    );
                    std::process::exit(Watchdog::EXIT_CODE);
                }
            })
            .expect("spawn the benchmark watchdog");
        Watchdog {
            disarm: Some(disarm),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Dropping the sender wakes the watchdog with `Disconnected`: it returns.
        drop(self.disarm.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

    #[test]
    fn a_disarmed_watchdog_lets_the_process_live() {
        let dog = Watchdog::start("test", std::time::Duration::from_millis(200));
        drop(dog);
        std::thread::sleep(std::time::Duration::from_millis(300));
        // Still here: the watchdog did not exit the process.
    }

    #[test]
    fn a_watchdog_ends_an_overrunning_phase() {
        const CHILD: &str = "BENCHES_WATCHDOG_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let _dog = Watchdog::start("the overrun", std::time::Duration::from_millis(50));
            std::thread::sleep(std::time::Duration::from_secs(30));
            return;
        }
        // Run this same test in a child process, which the watchdog must end.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "--nocapture",
                "tests::a_watchdog_ends_an_overrunning_phase",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(Watchdog::EXIT_CODE));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("the overrun still running"), "{stderr}");
    }
}
