//! `kv-wal` benchmarks: appends of 100 B and 1 KiB records from 1, 4, 16 and 64 writer threads
//! under each sync policy (`Always`, `Periodic(1 s)`, `Never`), and, in the same run, the two
//! references they are judged against:
//!
//! - the naive baseline: one thread, `write` + `fdatasync` per record on an ordinary file;
//! - the physical limit: the disk's sequential write bandwidth (1 MiB `write`s, then one
//!   `fdatasync`), reported in bytes/s.
//!
//! The log lives in a temporary directory under `KV_WAL_BENCH_DIR` (default: the system temp
//! dir). Use a directory on the real disk, not tmpfs, or the `fsync` numbers mean nothing.
//!
//! Also `wal_append_always_deep`: one writer appending 100 B records under `Always` 40 MiB
//! into a segment that was filled sequentially, where a flush writes whole 2 MiB page cache
//! folios unless the segment is advised `MADV_RANDOM` (see the `kv-wal` crate docs).
//!
//! Do not run the `Always` group under a real-time policy (`chrt -f`): waiting appenders poll
//! with `sched_yield`, which then starves the kernel threads that complete each flush, and
//! 64 writers measure 10x slower (see the `kv-wal` crate docs).
//!
//! Also `wal_segments_periodic`: one writer appending under `Periodic(1 s)` (the server's
//! default) through many full-size 16 MiB segments, dropping every sealed segment as soon as
//! the log rolls over (as a compaction that keeps up does), so that each new segment is one
//! the log creates (or, with `WalOptions::recycle_segments`, takes from its pool). At the end
//! of each row it prints the process's minor page faults per MiB appended and its CPU time
//! (all threads: appender, flusher, prefaulter) per append, from `getrusage`.
//!
//! Run: `cargo bench -p benches --bench wal`. With `WAL_BENCH_TRACE=1` every sample of the
//! multi-writer groups prints its own rate and segment, which shows trends within a run, and
//! the flushes it took (counted by a flush hook, installed only then): flushes per second and
//! records per flush are what group commit under `Always` is about.

use std::{
    fs::OpenOptions,
    hint::black_box,
    io::Write,
    path::PathBuf,
    sync::{
        Arc, Barrier,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kv_wal::{SyncPolicy, Wal, WalOptions};

const SIZES: [usize; 2] = [100, 1024];
const THREADS: [u64; 4] = [1, 4, 16, 64];

fn bench_root() -> PathBuf {
    std::env::var_os("KV_WAL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(bench_root()).expect("temporary directory for the WAL benchmark")
}

fn policy_name(p: SyncPolicy) -> &'static str {
    match p {
        SyncPolicy::Always => "always",
        SyncPolicy::Periodic(_) => "periodic_1s",
        _ => "never",
    }
}

/// Flushes of the log being measured, counted by a flush hook when tracing.
static FLUSHES: AtomicU64 = AtomicU64::new(0);

fn tracing() -> bool {
    std::env::var_os("WAL_BENCH_TRACE").is_some()
}

/// The options of the logs under test: with a flush-counting hook when tracing.
fn options(policy: SyncPolicy) -> WalOptions {
    let opts = WalOptions::new().sync(policy);
    if tracing() {
        opts.flush_hook(Arc::new(|_ev: &kv_wal::FlushEvent<'_>| {
            FLUSHES.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }))
    } else {
        opts
    }
}

/// At least this many appends per thread in each sample, so that a sample is never dominated
/// by starting the threads.
const MIN_PER_THREAD: u64 = 1000;

/// Runs at least `iters` appends spread over `threads` threads and returns the time `iters`
/// of them took (the threads are spawned first; the clock starts at the barrier that releases
/// them, so thread start-up is not measured).
fn run_appends(wal: &Wal, payload: &[u8], threads: u64, iters: u64) -> Duration {
    let per = iters.div_ceil(threads).max(MIN_PER_THREAD);
    let flushes_before = FLUSHES.load(Ordering::Relaxed);
    let barrier = Barrier::new(threads as usize + 1);
    let elapsed = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..per {
                    black_box(wal.append(payload).expect("append"));
                }
            });
        }
        // The clock starts before the main thread's own barrier wait: once the barrier opens
        // the main thread may be descheduled for a long time while the writers run.
        let start = Instant::now();
        barrier.wait();
        // Leaving the scope joins every thread.
        start
    })
    .elapsed();
    if tracing() {
        let flushes = FLUSHES.load(Ordering::Relaxed) - flushes_before;
        eprintln!(
            "sample: {} appends by {threads} threads in {elapsed:?} = {:.0}/s, segment {}, \
             {flushes} flushes = {:.0}/s, {:.1} appends per flush",
            per * threads,
            (per * threads) as f64 / elapsed.as_secs_f64(),
            wal.end_lsn().segment(),
            flushes as f64 / elapsed.as_secs_f64(),
            (per * threads) as f64 / flushes.max(1) as f64,
        );
    }
    // Keep the disk footprint bounded: drop every segment but the active one.
    wal.truncate_before(wal.end_lsn()).expect("truncate_before");
    // Scale to the `iters` appends criterion asked for.
    elapsed.mul_f64(iters as f64 / (per * threads) as f64)
}

fn appends(c: &mut Criterion) {
    for policy in [
        SyncPolicy::Always,
        SyncPolicy::Periodic(Duration::from_secs(1)),
        SyncPolicy::Never,
    ] {
        let mut g = c.benchmark_group(format!("wal_append_{}", policy_name(policy)));
        g.throughput(Throughput::Elements(1));
        g.sample_size(10);
        g.warm_up_time(Duration::from_millis(500));
        g.measurement_time(Duration::from_secs(2));
        for size in SIZES {
            let payload = vec![0xA5u8; size];
            for threads in THREADS {
                let dir = tempdir();
                let wal = Wal::open(dir.path(), options(policy)).expect("open");
                g.bench_with_input(
                    BenchmarkId::new(format!("{size}B"), threads),
                    &threads,
                    |b, &threads| {
                        b.iter_custom(|iters| run_appends(&wal, &payload, threads, iters))
                    },
                );
            }
        }
        g.finish();
    }
}

/// One thread, `write` + `fdatasync` per record, on a file that grows.
fn naive_baseline(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_baseline_write_fdatasync");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for size in SIZES {
        let dir = tempdir();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("naive.log"))
            .expect("open");
        // Framed like a WAL record: an 8-byte header and the payload.
        let record = vec![0x5Au8; size + 8];
        g.bench_function(BenchmarkId::new(format!("{size}B"), 1), |b| {
            b.iter(|| {
                file.write_all(&record).expect("write");
                file.sync_data().expect("fdatasync");
            })
        });
    }
    g.finish();
}

/// Sequential write bandwidth: 64 MiB in 1 MiB `write`s to a new file, then `fdatasync`.
fn disk_bandwidth(c: &mut Criterion) {
    const TOTAL: usize = 64 << 20;
    let mut g = c.benchmark_group("wal_disk_sequential_write");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(4));
    let dir = tempdir();
    let chunk = vec![0x3Cu8; 1 << 20];
    g.bench_function("64MiB_1MiB_writes_fdatasync", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let path = dir.path().join(format!("seq{i}"));
                let mut f = std::fs::File::create(&path).expect("create");
                let start = Instant::now();
                for _ in 0..TOTAL / chunk.len() {
                    f.write_all(&chunk).expect("write");
                }
                f.sync_data().expect("fdatasync");
                total += start.elapsed();
                drop(f);
                std::fs::remove_file(&path).expect("remove");
            }
            total
        })
    });
    g.finish();
}

/// One writer, `Always`, 100 B records, appended 40 MiB into a 64 MiB segment that was filled
/// sequentially (1 MiB batches through the same mapping) just before.
fn append_deep_in_segment(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_append_always_deep");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    let dir = tempdir();
    let wal = Wal::open(dir.path(), WalOptions::new().sync(SyncPolicy::Always)).expect("open");
    let record = [0xA5u8; 100];
    let batch: Vec<&[u8]> = vec![&record[..]; (1 << 20) / kv_wal::layout::frame_len(100)];
    while wal.end_lsn().offset() < 40 << 20 {
        wal.append_batch(&batch).expect("fill");
    }
    g.bench_function(BenchmarkId::new("100B_at_40MiB", 1), |b| {
        b.iter(|| black_box(wal.append(&record).expect("append")))
    });
    g.finish();
}

/// `getrusage(RUSAGE_SELF)`: minor faults and CPU time (user + system) of the whole process.
fn rusage() -> (u64, Duration) {
    // SAFETY: `getrusage` writes into the zeroed struct we pass; no other preconditions.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (ru.ru_minflt as u64, tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// One writer under `Periodic(1 s)` through many 16 MiB segments, each sealed segment dropped
/// at the roll-over (see the file's docs). `KV_WAL_RECYCLE=n` sets
/// `WalOptions::recycle_segments(n)` where that option exists.
fn append_through_segments(c: &mut Criterion) {
    const SEGMENT: u32 = 16 << 20;
    let mut g = c.benchmark_group("wal_segments_periodic");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    for size in SIZES {
        let dir = tempdir();
        let opts = WalOptions::new()
            .segment_size(SEGMENT)
            .initial_segment_size(SEGMENT)
            .sync(SyncPolicy::Periodic(Duration::from_secs(1)));
        let opts = recycle_option(opts);
        let wal = Wal::open(dir.path(), opts).expect("open");
        let payload = vec![0xA5u8; size];
        let (mut appended, mut faults, mut cpu) = (0u64, 0u64, Duration::ZERO);
        g.bench_function(BenchmarkId::new(format!("{size}B"), 1), |b| {
            b.iter_custom(|iters| {
                let (f0, c0) = rusage();
                let mut seg = wal.end_lsn().segment();
                let start = Instant::now();
                for _ in 0..iters {
                    let lsn = wal.append(&payload).expect("append");
                    if lsn.segment() != seg {
                        seg = lsn.segment();
                        wal.truncate_before(lsn).expect("truncate_before");
                    }
                }
                let elapsed = start.elapsed();
                let (f1, c1) = rusage();
                appended += iters;
                faults += f1 - f0;
                cpu += c1 - c0;
                elapsed
            })
        });
        let mib = (appended * kv_wal::layout::frame_len(size) as u64) as f64 / f64::from(1 << 20);
        eprintln!(
            "wal_segments_periodic/{size}B: {:.1} minor faults per MiB, {:.0} ns CPU per append \
             ({appended} appends)",
            faults as f64 / mib,
            cpu.as_nanos() as f64 / appended.max(1) as f64,
        );
    }
    g.finish();
}

/// `WalOptions::recycle_segments` from `KV_WAL_RECYCLE` (unset: the option's default).
fn recycle_option(opts: WalOptions) -> WalOptions {
    match std::env::var("KV_WAL_RECYCLE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => opts.recycle_segments(n),
        None => opts,
    }
}

criterion_group!(
    benches,
    append_through_segments,
    naive_baseline,
    disk_bandwidth,
    append_deep_in_segment,
    appends
);
criterion_main!(benches);
