//! The built-in benchmark: `ops` writes, then `ops` reads, from `threads` threads, with
//! latency percentiles (hdrhistogram). Its keys live under [`BENCH_PREFIX`] and are deleted
//! afterwards, so user data and `stats` are unchanged.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use kv_cluster::Cluster;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Zipf};

/// Keys under this prefix belong to the benchmark; user commands may not touch them.
pub const BENCH_PREFIX: &str = "__kvstore_bench__:";

/// `benchmark [ops] [--threads T] [--value-size B] [--distribution uniform|zipf]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchArgs {
    pub ops: usize,
    pub threads: usize,
    pub value_size: usize,
    pub zipf: bool,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            ops: 100_000,
            threads: 1,
            value_size: 100,
            zipf: false,
        }
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    pub args: BenchArgs,
    pub writes: Phase,
    pub reads: Phase,
    /// Reads that found their key (all of them, unless something is wrong).
    pub found: usize,
}

/// One phase (writes or reads).
#[derive(Debug)]
pub struct Phase {
    pub ops: usize,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

impl Phase {
    fn lines(&self, what: &str) -> Vec<String> {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let us = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        vec![
            format!(
                "{what} operations: {} in {}ms ({}us)",
                self.ops,
                self.elapsed.as_millis(),
                self.elapsed.as_micros()
            ),
            format!("{what} throughput: {:.0} ops/sec", self.ops as f64 / secs),
            format!(
                "{what} latency: p50 {:.1}us, p99 {:.1}us, p999 {:.1}us",
                us(0.5),
                us(0.99),
                us(0.999)
            ),
        ]
    }
}

impl Report {
    /// The output lines (the seed's, plus latency percentiles).
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec!["Running benchmark...".to_owned()];
        out.extend(self.writes.lines("Write"));
        out.extend(self.reads.lines("Read"));
        out.push(format!(
            "({} thread{}, {}-byte values, {} reads; {} of {} reads found their key; benchmark keys removed)",
            self.args.threads,
            if self.args.threads == 1 { "" } else { "s" },
            self.args.value_size,
            if self.args.zipf { "zipf-distributed" } else { "uniform" },
            self.found,
            self.reads.ops
        ));
        out
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("{BENCH_PREFIX}{i:012}").into_bytes()
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).context("latency histogram")
}

/// Runs `f(thread, range of key indexes)` on `threads` threads, timing every call of `op`.
fn phase(
    args: BenchArgs,
    op: impl Fn(&mut StdRng, usize) -> anyhow::Result<bool> + Sync,
) -> anyhow::Result<(Phase, usize)> {
    let per = args.ops.div_ceil(args.threads);
    let start = Instant::now();
    let results: Vec<anyhow::Result<(Histogram<u64>, usize)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.threads)
            .map(|t| {
                let op = &op;
                s.spawn(move || {
                    let mut h = histogram()?;
                    let mut rng = StdRng::seed_from_u64(t as u64);
                    let mut hits = 0;
                    for i in (t * per)..((t + 1) * per).min(args.ops) {
                        let t0 = Instant::now();
                        hits += usize::from(op(&mut rng, i)?);
                        h.saturating_record(t0.elapsed().as_nanos().max(1) as u64);
                    }
                    Ok((h, hits))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a benchmark thread panicked")))
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let mut latency = histogram()?;
    let mut hits = 0;
    for r in results {
        let (h, n) = r?;
        latency.add(h).context("merge histograms")?;
        hits += n;
    }
    Ok((
        Phase {
            ops: args.ops,
            elapsed,
            latency,
        },
        hits,
    ))
}

/// Runs the benchmark and removes its keys.
pub fn run(cluster: &Cluster, args: BenchArgs) -> anyhow::Result<Report> {
    let value = vec![b'v'; args.value_size];
    let zipf = Zipf::new(args.ops as f64, 1.0).context("zipf distribution")?;
    let writes = phase(args, |_, i| {
        cluster.put(&key(i), &value)?;
        Ok(true)
    });
    let pick = |rng: &mut StdRng| -> usize {
        if args.zipf {
            // Zipf samples 1..=ops, most often 1.
            (zipf.sample(rng) as usize).clamp(1, args.ops) - 1
        } else {
            rng.random_range(0..args.ops)
        }
    };
    let reads = match &writes {
        Ok(_) => Some(phase(args, |rng, _| {
            Ok(cluster.get(&key(pick(rng)))?.is_some())
        })),
        Err(_) => None,
    };
    // Remove the keys whatever happened above (a failed write may have stored some).
    let cleanup = phase(args, |_, i| {
        cluster.delete(&key(i))?;
        Ok(true)
    });
    let (writes, _) = writes?;
    let (reads, found) = reads.unwrap_or_else(|| Err(anyhow::anyhow!("no reads")))?;
    cleanup.context("remove the benchmark's keys (`del` removes any left)")?;
    Ok(Report {
        args,
        writes,
        reads,
        found,
    })
}
