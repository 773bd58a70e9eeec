//! The server's counters for `INFO stats` and `INFO commandstats`.
//!
//! A connection counts in its own [`LocalStats`] (plain integers, no sharing) and adds them to
//! the shared [`Stats`] once per batch: the hot path takes no lock and touches no shared
//! cache line per command.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Samples kept for `instantaneous_ops_per_sec` (Redis's `STATS_METRIC_SAMPLES`).
const SAMPLES: usize = 16;

/// Buckets of a latency histogram: exact below 8 ns, then 8 per power of two (12.5%).
const BUCKETS: usize = 8 + 61 * 8;

/// The histogram bucket of a latency of `nanos`.
fn bucket(nanos: u64) -> usize {
    if nanos < 8 {
        return nanos as usize;
    }
    let e = 63 - nanos.leading_zeros() as usize; // >= 3
    let sub = ((nanos >> (e - 3)) & 7) as usize;
    8 + (e - 3) * 8 + sub
}

/// The highest latency, in nanoseconds, that falls in bucket `i`.
fn bucket_top(i: usize) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let e = (i - 8) / 8 + 3;
    let sub = ((i - 8) % 8) as u128;
    let top = ((9 + sub) << (e - 3)) - 1;
    u64::try_from(top).unwrap_or(u64::MAX)
}

/// One command's shared counters.
#[derive(Debug)]
struct CommandStats {
    calls: AtomicU64,
    nanos: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    /// Latency histogram (`INFO latencystats`).
    latency: Box<[AtomicU64]>,
}

impl Default for CommandStats {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// The server-wide counters.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) started: Instant,
    pub(crate) connections_received: AtomicU64,
    pub(crate) rejected_connections: AtomicU64,
    keyspace_hits: AtomicU64,
    keyspace_misses: AtomicU64,
    commands: Box<[CommandStats]>,
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

/// What `INFO commandstats` shows of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommandCounts {
    pub(crate) calls: u64,
    pub(crate) usec: u64,
    pub(crate) rejected: u64,
    pub(crate) failed: u64,
}

impl Stats {
    /// Counters for `commands` commands (indexed as the command table).
    pub(crate) fn new(commands: usize) -> Self {
        Self {
            started: Instant::now(),
            connections_received: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            keyspace_hits: AtomicU64::new(0),
            keyspace_misses: AtomicU64::new(0),
            commands: (0..commands).map(|_| CommandStats::default()).collect(),
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES + 1)),
        }
    }

    /// Adds a connection's counts and clears them.
    pub(crate) fn merge(&self, local: &mut LocalStats) {
        if !local.dirty {
            return;
        }
        for (shared, l) in self.commands.iter().zip(local.commands.iter_mut()) {
            if *l == LocalCommand::default() {
                continue;
            }
            shared.calls.fetch_add(l.calls, Ordering::Relaxed);
            shared.nanos.fetch_add(l.nanos, Ordering::Relaxed);
            shared.rejected.fetch_add(l.rejected, Ordering::Relaxed);
            shared.failed.fetch_add(l.failed, Ordering::Relaxed);
            *l = LocalCommand::default();
        }
        for (i, b, n) in local.latencies.drain(..) {
            if let Some(slot) = self.commands.get(i).and_then(|c| c.latency.get(b)) {
                slot.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.keyspace_hits.fetch_add(local.hits, Ordering::Relaxed);
        self.keyspace_misses
            .fetch_add(local.misses, Ordering::Relaxed);
        local.hits = 0;
        local.misses = 0;
        local.dirty = false;
    }

    /// Command `i`'s counts.
    pub(crate) fn command(&self, i: usize) -> Option<CommandCounts> {
        let c = self.commands.get(i)?;
        Some(CommandCounts {
            calls: c.calls.load(Ordering::Relaxed),
            usec: c.nanos.load(Ordering::Relaxed) / 1000,
            rejected: c.rejected.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        })
    }

    /// Command `i`'s latency percentiles in microseconds (`p` in percent), or `None` before
    /// its first call.
    pub(crate) fn percentiles(&self, i: usize, ps: &[f64]) -> Option<Vec<f64>> {
        let c = self.commands.get(i)?;
        let counts: Vec<u64> = c
            .latency
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        Some(
            ps.iter()
                .map(|p| {
                    let target = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
                    let mut seen = 0;
                    let i = counts
                        .iter()
                        .position(|&n| {
                            seen += n;
                            seen >= target
                        })
                        .unwrap_or(BUCKETS - 1);
                    bucket_top(i) as f64 / 1000.0
                })
                .collect(),
        )
    }

    /// Commands executed (rejected ones not counted, as Redis's `total_commands_processed`).
    pub(crate) fn total_commands(&self) -> u64 {
        self.commands
            .iter()
            .map(|c| c.calls.load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn keyspace_hits(&self) -> u64 {
        self.keyspace_hits.load(Ordering::Relaxed)
    }

    pub(crate) fn keyspace_misses(&self) -> u64 {
        self.keyspace_misses.load(Ordering::Relaxed)
    }

    /// Records a sample of the command total (the server does every 100 ms, as Redis's
    /// `serverCron`).
    pub(crate) fn sample(&self, now: Instant) {
        let total = self.total_commands();
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.push_back((now, total));
        while samples.len() > SAMPLES + 1 {
            samples.pop_front();
        }
    }

    /// Commands per second over the last samples (`instantaneous_ops_per_sec`).
    pub(crate) fn ops_per_sec(&self) -> u64 {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let (Some(first), Some(last)) = (samples.front(), samples.back()) else {
            return 0;
        };
        let dt = last.0.duration_since(first.0);
        if dt < Duration::from_millis(1) {
            return 0;
        }
        let ops = last.1.saturating_sub(first.1) as f64 / dt.as_secs_f64();
        ops.round() as u64
    }
}

/// One command's counts on one connection since the last merge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LocalCommand {
    calls: u64,
    nanos: u64,
    rejected: u64,
    failed: u64,
}

/// A connection's counts since the last merge.
#[derive(Debug)]
pub(crate) struct LocalStats {
    commands: Vec<LocalCommand>,
    /// `(command, latency bucket, calls)` since the last merge.
    latencies: Vec<(usize, usize, u64)>,
    hits: u64,
    misses: u64,
    dirty: bool,
}

impl LocalStats {
    pub(crate) fn new(commands: usize) -> Self {
        Self {
            commands: vec![LocalCommand::default(); commands],
            latencies: Vec::new(),
            hits: 0,
            misses: 0,
            dirty: false,
        }
    }

    /// `calls` executions of command `i` that took `elapsed` in all, `failed` of them
    /// answering an error. Commands executed together (a run of `GET`s) each count the
    /// run's mean latency.
    pub(crate) fn called(&mut self, i: usize, calls: u64, elapsed: Duration, failed: u64) {
        if calls == 0 {
            return;
        }
        if let Some(c) = self.commands.get_mut(i) {
            let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            c.calls += calls;
            c.nanos += nanos;
            c.failed += failed;
            self.latencies.push((i, bucket(nanos / calls), calls));
            self.dirty = true;
        }
    }

    /// Command `i` refused before it ran (arity, authentication).
    pub(crate) fn rejected(&mut self, i: usize) {
        if let Some(c) = self.commands.get_mut(i) {
            c.rejected += 1;
            self.dirty = true;
        }
    }

    /// Key lookups that found (`hits`) or missed their key.
    pub(crate) fn lookups(&mut self, hits: u64, misses: u64) {
        self.hits += hits;
        self.misses += misses;
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_latency_within_an_eighth() {
        for v in [
            0,
            1,
            7,
            8,
            9,
            15,
            16,
            17,
            1000,
            123_456,
            u64::MAX / 3,
            u64::MAX,
        ] {
            let b = bucket(v);
            assert!(b < BUCKETS, "{v}");
            assert!(bucket_top(b) >= v, "{v}");
            assert!(bucket_top(b) - v <= v / 8, "{v}");
            assert!(b == 0 || bucket_top(b - 1) < v, "{v}");
        }
    }

    #[test]
    fn local_counts_merge_into_the_shared_ones_once() {
        let stats = Stats::new(2);
        let mut local = LocalStats::new(2);
        local.called(1, 3, Duration::from_micros(30), 1);
        local.rejected(1);
        local.lookups(2, 1);
        stats.merge(&mut local);
        stats.merge(&mut local);
        assert_eq!(
            stats.command(1),
            Some(CommandCounts {
                calls: 3,
                usec: 30,
                rejected: 1,
                failed: 1
            })
        );
        assert_eq!(stats.total_commands(), 3);
        // 3 calls of 10 us each.
        let p = stats.percentiles(1, &[50.0]).unwrap();
        assert!((10.0..11.3).contains(&p[0]), "{p:?}");
        assert_eq!(stats.percentiles(0, &[50.0]), None);
        assert_eq!((stats.keyspace_hits(), stats.keyspace_misses()), (2, 1));
    }
}
